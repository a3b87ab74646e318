"""The local Parquet lake: atomic partitioned batch writes, manifest, quarantine and the lock.

Layout (readable as-is by DuckDB, Spark and Trino)::

    <lake>/<table>/event_date=YYYY-MM-DD/part-<batch_id>-<seq>.parquet
    <lake>/_manifest/batches/<batch_id>.json     commit records (the commit point)
    <lake>/_manifest/pending/<batch_id>.json     journal of a batch being published
    <lake>/_staging/<batch_id>/...               files written before the commit
    <lake>/.tokenhunt.lock                       one writer at a time

Why this shape: a batch is written to staging first, its final paths are journaled, the files are
renamed into place and the commit record is written last. Readers only see files whose batch has a
commit record (``table_files``), so a crash at any point leaves no partial batch visible, and the
next writer rolls the journal back (``recover``) before doing anything else.

Crash tests: every step that changes the lake calls ``checkpoint(label)``. With
``TOKENHUNT_CRASH_AT=n`` in the environment the n-th checkpoint of the process kills it with
SIGKILL (no cleanup, like a power cut for the process); ``TOKENHUNT_CRASH_TRACE=FILE`` appends each
label to FILE so a test can count them. Unset (always, outside tests), a checkpoint does nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import uuid
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schemas
from pipeline.config import lake_path_problem

MANIFEST_DIR = "_manifest"
STAGING_DIR = "_staging"
LOCK_FILE = ".tokenhunt.lock"
CRASH_AT_ENV = "TOKENHUNT_CRASH_AT"
CRASH_TRACE_ENV = "TOKENHUNT_CRASH_TRACE"
# Data files this code writes: part-<batch id from new_batch_id()>-<seq>.parquet. Recovery deletes
# nothing else, so a lake pointed at a folder with foreign Parquet files never loses them.
_OWN_PART_RE = re.compile(r"^part-\d{8}T\d{6}(?:\d{6})?-[0-9a-f]{12}-\d{5}\.parquet$")


class LakeBusy(RuntimeError):
    """Another tokenhunt process is writing to the same lake."""


class LakePathError(ValueError):
    """The lake path cannot hold a lake (a file, or a folder holding something else)."""


_checkpoints = 0


def checkpoint(label: str) -> None:
    """A point where a crash must leave the lake consistent (see the module docstring)."""
    at = os.environ.get(CRASH_AT_ENV)
    trace = os.environ.get(CRASH_TRACE_ENV)
    if not at and not trace:
        return
    global _checkpoints
    _checkpoints += 1
    if trace:
        with open(trace, "a", encoding="utf-8") as fh:
            fh.write(f"{_checkpoints} {label}\n")
    if at and _checkpoints == int(at):
        os.kill(os.getpid(), signal.SIGKILL)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


_last_batch_time = ""


def new_batch_id() -> str:
    """Sortable, unique batch id: UTC time to the microsecond, then random hex.

    Ids of one process strictly increase (a clock that has not moved is nudged), so "was this file
    ingested before the key registry changed" is a plain string comparison of batch ids.
    """
    global _last_batch_time
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
    if stamp <= _last_batch_time:
        stamp = str(int(_last_batch_time[:8] + _last_batch_time[9:]) + 1)
        stamp = stamp[:8] + "T" + stamp[8:]
    _last_batch_time = stamp
    return stamp + "-" + uuid.uuid4().hex[:12]


def _write_json_atomic(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, default=str, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    checkpoint(f"json-written {path.parent.name}/{path.name}")
    os.replace(tmp, path)
    checkpoint(f"json-replaced {path.parent.name}/{path.name}")


def _batch_of(path: Path) -> str | None:
    """Batch id encoded in a data file name ``part-<batch_id>-<seq>.parquet``."""
    stem = path.name
    if not stem.startswith("part-") or not stem.endswith(".parquet"):
        return None
    return stem[len("part-") :].rsplit("-", 1)[0]


@dataclass
class Lake:
    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser().resolve()

    # ------------------------------------------------------------------ reading
    def committed(self) -> dict[str, dict]:
        """Commit records of every committed batch, by batch id."""
        out: dict[str, dict] = {}
        batches = self.root / MANIFEST_DIR / "batches"
        if not batches.is_dir():
            return out
        for path in batches.glob("*.json"):
            try:
                out[path.stem] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue  # a torn commit record never happens (atomic rename); be tolerant anyway
        return out

    def table_files(self, table: str, partitions: Iterable[str] | None = None) -> list[Path]:
        """Committed, not superseded data files of ``table`` (optionally only some partitions)."""
        commits = self.committed()
        superseded = {p for rec in commits.values() for p in rec.get("removes", [])}
        base = self.root / table
        if not base.is_dir():
            return []
        part_col = schemas.table(table).partition
        dirs = (
            [base / f"{part_col}={p}" for p in partitions]
            if partitions is not None
            else sorted(d for d in base.iterdir() if d.is_dir() and d.name.startswith(part_col + "="))
        )
        files: list[Path] = []
        for d in dirs:
            if not d.is_dir():
                continue
            for f in sorted(d.glob("part-*.parquet")):
                if _batch_of(f) in commits and str(f.relative_to(self.root)) not in superseded:
                    files.append(f)
        return files

    def partitions(self, table: str) -> list[str]:
        part_col = schemas.table(table).partition
        return sorted({f.parent.name.split("=", 1)[1] for f in self.table_files(table)} - {""}) if part_col else []

    def read_table(self, table: str, columns: list[str] | None = None, partitions: Iterable[str] | None = None) -> pa.Table:
        """Read committed rows of a table into Arrow (partition column included)."""
        spec = schemas.table(table)
        files = self.table_files(table, partitions)
        target = pa.schema([pa.field(c.name, c.arrow_type) for c in spec.stored_columns])
        if columns:
            target = pa.schema([target.field(c) for c in columns])
        pieces = []
        for f in files:
            file_cols = [c for c in target.names if c != spec.partition]
            t = pq.read_table(f, columns=file_cols)
            if spec.partition in target.names:
                value = f.parent.name.split("=", 1)[1]
                t = t.append_column(spec.partition, pa.array([value] * t.num_rows, pa.string()))
            pieces.append(t.select(target.names))
        if not pieces:
            return target.empty_table()
        return pa.concat_tables(pieces).cast(target)

    def ingested_sources(self) -> dict[str, dict]:
        """Commit records by source file SHA-256: the file-level idempotency check."""
        newest_last = sorted(self.committed().items())  # batch ids sort by time
        return {rec["source_sha256"]: rec for _, rec in newest_last if rec.get("source_sha256")}

    # ------------------------------------------------------------------ writing
    def _inside(self, rel: str) -> Path | None:
        """``root / rel`` when it stays inside the lake (a journal or record is data: never trust it)."""
        path = (self.root / rel).resolve()
        return path if self.root in path.parents else None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the lake's writer lock; a second writer gets a clear LakeBusy at once."""
        with self._flock(LOCK_FILE, "writing to"):
            self.recover()
            checkpoint("locked")
            yield

    @contextmanager
    def run_lock(self, name: str) -> Iterator[None]:
        """A lock for a whole multi-step run (e.g. ``nightly``), beside the writer lock.

        The writer lock is taken and released by each step; this one keeps a second run of the same
        kind from interleaving its steps with ours.
        """
        with self._flock(f".tokenhunt-{name}.lock", f"running {name} on"):
            yield

    @contextmanager
    def _flock(self, file_name: str, doing: str) -> Iterator[None]:
        problem = lake_path_problem(self.root)
        if problem:
            raise LakePathError(problem)
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / file_name
        fh = open(path, "a+")
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "unknown"
                raise LakeBusy(
                    f"another tokenhunt run is {doing} {self.root} (lock {path}, held by {holder}); "
                    "wait for it to finish or run on another --lake"
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} since {utcnow().isoformat()}")
            fh.flush()
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()

    def recover(self) -> list[str]:
        """Roll back batches that crashed before their commit record. Returns the rolled-back ids."""
        rolled: list[str] = []
        commits = self.committed()
        pending = self.root / MANIFEST_DIR / "pending"
        if pending.is_dir():
            for journal in pending.glob("*.json"):
                batch_id = journal.stem
                if batch_id not in commits:
                    try:
                        doc = json.loads(journal.read_text(encoding="utf-8"))
                    except (OSError, json.JSONDecodeError):
                        doc = {"files": []}
                    for rel in doc.get("files", []):
                        target = self._inside(str(rel))
                        if target is not None:
                            target.unlink(missing_ok=True)
                            checkpoint("recover-unlink")
                    rolled.append(batch_id)
                journal.unlink(missing_ok=True)
        # Files whose batch never committed (a crash between rename and journal cannot happen,
        # but a copied-in or half-deleted lake can hold them): remove so they never resurface.
        for table in schemas.all_tables():
            base = self.root / table
            if base.is_dir():
                for f in base.glob("*/part-*.parquet"):
                    if _OWN_PART_RE.match(f.name) and _batch_of(f) not in commits:
                        f.unlink(missing_ok=True)
        # Superseded files of committed batches: finish their deletion.
        for rec in commits.values():
            for rel in rec.get("removes", []):
                target = self._inside(str(rel))
                if target is not None:
                    target.unlink(missing_ok=True)
        shutil.rmtree(self.root / STAGING_DIR, ignore_errors=True)
        return rolled

    def begin(self, batch_id: str | None = None) -> "Batch":
        return Batch(self, batch_id or new_batch_id())


@dataclass
class TableCounts:
    read: int = 0
    written: int = 0
    duplicates: int = 0
    quarantined: int = 0

    def add(self, other: "TableCounts") -> None:
        self.read += other.read
        self.written += other.written
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined


@dataclass
class Batch:
    """One atomic unit of writes. Call ``add`` / ``replace`` any number of times, then ``commit``."""

    lake: Lake
    batch_id: str
    staged: list[tuple[Path, Path]] = field(default_factory=list)  # (staging path, final path)
    removes: list[str] = field(default_factory=list)
    _seq: int = 0
    _keys: dict[tuple[str, str], set] = field(default_factory=dict)  # (table, partition) -> keys present

    @property
    def staging(self) -> Path:
        return self.lake.root / STAGING_DIR / self.batch_id

    def _key_of(self, spec: schemas.TableSchema, row: dict) -> Any:
        return tuple(row.get(k) for k in spec.key) if len(spec.key) > 1 else row.get(spec.key[0])

    def _present_keys(self, spec: schemas.TableSchema, partition: str) -> set:
        """Keys already in the lake for one partition (read once per batch, key columns only)."""
        cache_key = (spec.name, partition)
        if cache_key not in self._keys:
            keys: set = set()
            for f in self.lake.table_files(spec.name, [partition]):
                t = pq.read_table(f, columns=list(spec.key))
                cols = [t.column(k).to_pylist() for k in spec.key]
                keys.update(zip(*cols) if len(cols) > 1 else cols[0])
            self._keys[cache_key] = keys
        return self._keys[cache_key]

    def add(self, table: str, rows: list[dict], dedup: bool = True) -> tuple[list[dict], int]:
        """Stage rows (already validated). Returns (the rows written, number of duplicates).

        With ``dedup`` a row whose key the lake or this batch already holds is skipped: that is what
        makes re-ingesting and overlapping exports idempotent.
        """
        spec = schemas.table(table)
        by_partition: dict[str, list[dict]] = defaultdict(list)
        duplicates = 0
        for row in rows:
            part = row[spec.partition]
            if dedup:
                present = self._present_keys(spec, part)
                key = self._key_of(spec, row)
                if key in present:
                    duplicates += 1
                    continue
                present.add(key)
            by_partition[part].append(row)
        written: list[dict] = []
        for part, part_rows in by_partition.items():
            self._stage(spec, part, part_rows)
            written.extend(part_rows)
        return written, duplicates

    def add_arrow(self, table: str, data: pa.Table, dedup: bool = True) -> tuple[pa.Table, int]:
        """``add`` for rows already in Arrow (the parallel ingest): the same dedup, the same files.

        ``data`` has the table's ``arrow_schema()`` columns plus the partition column. Returns the
        rows written (grouped by partition in first-seen order, as ``add`` returns them) and the
        number of duplicates. Only the key and partition columns become Python values.
        """
        spec = schemas.table(table)
        parts = data.column(spec.partition).to_pylist()
        by_partition: dict[str, list[int]] = {}
        duplicates = 0
        if dedup:
            if len(spec.key) > 1:
                keys: list[Any] = list(zip(*(data.column(k).to_pylist() for k in spec.key)))
            else:
                keys = data.column(spec.key[0]).to_pylist()
            present_of: dict[str, set] = {}
            for i, (part, key) in enumerate(zip(parts, keys)):
                present = present_of.get(part)
                if present is None:
                    present = present_of[part] = self._present_keys(spec, part)
                if key in present:
                    duplicates += 1
                    continue
                present.add(key)
                by_partition.setdefault(part, []).append(i)
        else:
            for i, part in enumerate(parts):
                by_partition.setdefault(part, []).append(i)
        names = spec.arrow_schema().names
        pieces = []
        for part, indices in by_partition.items():
            if indices[-1] - indices[0] + 1 == len(indices):  # one run of rows (time-ordered input): no copy
                piece = data.slice(indices[0], len(indices))
            else:
                piece = data.take(indices)
            self._stage_table(spec, part, piece.select(names))
            pieces.append(piece)
        return (pa.concat_tables(pieces) if pieces else data.slice(0, 0)), duplicates

    def replace(self, table: str, rows: list[dict], partitions: Iterable[str] | None = None) -> int:
        """Stage rows that replace every committed file of the given partitions (all when None)."""
        spec = schemas.table(table)
        old = self.lake.table_files(table, partitions)
        self.removes.extend(str(f.relative_to(self.lake.root)) for f in old)
        by_partition: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            by_partition[row[spec.partition]].append(row)
        for part, part_rows in by_partition.items():
            self._stage(spec, part, part_rows)
        return len(rows)

    def _stage(self, spec: schemas.TableSchema, partition: str, rows: list[dict]) -> None:
        arrow_schema = spec.arrow_schema()
        # Column lists, not row dicts: from_pydict converts ~3x faster than from_pylist (same values).
        table = pa.Table.from_pydict({c: [r.get(c) for r in rows] for c in arrow_schema.names}, schema=arrow_schema)
        self._stage_table(spec, partition, table)

    def _stage_table(self, spec: schemas.TableSchema, partition: str, table: pa.Table) -> None:
        rel = Path(spec.name) / f"{spec.partition}={partition}" / f"part-{self.batch_id}-{self._seq:05d}.parquet"
        self._seq += 1
        staged = self.staging / rel
        staged.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, staged, compression="zstd")
        self.staged.append((staged, self.lake.root / rel))
        checkpoint(f"staged {rel}")

    def commit(self, record: dict) -> dict:
        """Publish every staged file at once; ``record`` becomes the commit record (manifest)."""
        root = self.lake.root
        journal = root / MANIFEST_DIR / "pending" / f"{self.batch_id}.json"
        files = [str(final.relative_to(root)) for _, final in self.staged]
        _write_json_atomic(journal, {"batch_id": self.batch_id, "files": files})
        for staged, final in self.staged:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
            checkpoint(f"published {final.relative_to(root)}")
        record = {**record, "batch_id": self.batch_id, "files": files, "removes": self.removes}
        _write_json_atomic(root / MANIFEST_DIR / "batches" / f"{self.batch_id}.json", record)
        journal.unlink(missing_ok=True)
        checkpoint("journal-removed")
        for rel in self.removes:
            (root / rel).unlink(missing_ok=True)
            checkpoint(f"superseded-removed {rel}")
        shutil.rmtree(self.staging, ignore_errors=True)
        return record

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
