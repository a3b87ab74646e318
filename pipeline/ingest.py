"""Ingest: files -> sniffed format -> normalized rows -> validated -> deduplicated -> one atomic batch.

One input file is one batch: it becomes visible all at once or not at all, and its source hash in
the manifest makes ingesting the same file again a no-op. Records are streamed and flushed in
chunks, so memory is bounded by the chunk size, not the file size. A record that cannot be
normalized or breaks a schema check goes to ``quarantine`` with its reason; a file that cannot be
read at all gets one error naming it, and the other files still ingest.
"""

from __future__ import annotations

import hashlib
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pipeline import keys, schemas, sources
from pipeline.lake import Batch, Lake, TableCounts, file_sha256, utcnow
from pipeline.sources.base import Context, Emitted, RawRecord, SourceFormat, UnreadableFile, sniff_container
from pipeline.tokens import scrub_text

CHUNK_ROWS = 20_000
MAX_QUARANTINE_TEXT = 64 * 1024
# Exceptions a normalizer may raise for a bad record (anything else is a bug and fails the file).
RECORD_ERRORS = (ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError, RecursionError)

# Exit codes of `tokenhunt ingest` (documented in the README).
EXIT_OK = 0
EXIT_FILE_ERRORS = 1  # at least one file could not be read or failed; the others were ingested
EXIT_QUALITY_FAILED = 3  # a batch failed the quality gate with quality_policy = "fail"
EXIT_LAKE_BUSY = 4  # another run holds the lake lock

SKIP_NAMES = {".DS_Store", "README.md", "README.txt"}


@dataclass
class FileResult:
    path: Path
    format: str | None = None
    status: str = "ingested"  # ingested, unchanged, empty, error
    message: str | None = None
    batch_id: str | None = None
    records: int = 0
    skipped: int = 0  # records of a kind the lake does not keep (e.g. SharePoint events in a UAL export)
    counts: dict[str, TableCounts] = field(default_factory=dict)
    quality_status: str = "skipped"

    @property
    def quarantined(self) -> int:
        return sum(c.quarantined for c in self.counts.values())


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if any(f.status == "error" for f in self.files):
            return EXIT_FILE_ERRORS
        if any(f.quality_status == "failed" for f in self.files):
            return EXIT_QUALITY_FAILED
        return EXIT_OK

    def totals(self) -> dict[str, TableCounts]:
        out: dict[str, TableCounts] = defaultdict(TableCounts)
        for f in self.files:
            for table, c in f.counts.items():
                out[table].add(c)
        return dict(out)


def expand_paths(paths: Iterable[Path]) -> Iterator[Path]:
    """Files given, and every file under folders given (sorted, hidden files and READMEs skipped)."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and not any(part.startswith(".") for part in child.relative_to(path).parts):
                    if child.name not in SKIP_NAMES:
                        yield child
        else:
            yield path


class _FileIngest:
    """The state of one file's batch while it streams."""

    def __init__(self, lake: Lake, path: Path, fmt: SourceFormat, sha: str, options: dict[str, Any], result: FileResult):
        self.lake = lake
        self.path = path
        self.fmt = fmt
        self.sha = sha
        self.result = result
        self.batch: Batch = lake.begin()
        self.ctx = Context(path=path, source_format=fmt.name, batch_id=self.batch.batch_id, options=dict(options))
        self.pending: dict[str, list[dict]] = defaultdict(list)
        self.quarantine_rows: list[dict] = []
        self.min_time: datetime | None = None
        self.max_time: datetime | None = None
        self.started = utcnow()
        self.recheck = bool(options.get("_recheck"))
        result.batch_id = self.batch.batch_id

    def counts(self, table: str) -> TableCounts:
        return self.result.counts.setdefault(table, TableCounts())

    def quarantine(self, raw: RawRecord, table: str, reason: str) -> None:
        self.counts(table).read += 1
        self.counts(table).quarantined += 1
        # `known` also catches opaque (non-JWT) tokens the format registered before rejecting the record.
        text = scrub_text(raw.text or "", known=self.ctx.options.get("_raw_tokens"))
        if len(text) > MAX_QUARANTINE_TEXT:
            text = text[:MAX_QUARANTINE_TEXT] + f"... [truncated, {len(text)} chars]"
        now = utcnow()
        qid = hashlib.sha256(f"{table}|{self.sha}|{raw.number}".encode()).hexdigest()
        self.quarantine_rows.append(
            {
                "quarantine_id": qid,
                "event_date": now.strftime("%Y-%m-%d"),
                "quarantined_at": now,
                "target_table": table,
                "source_format": self.fmt.name,
                "source_file": str(self.path),
                "source_sha256": self.sha,
                "record_number": raw.number,
                "line_number": raw.line,
                "reason": scrub_text(reason)[:2000],
                "raw_record": text,
                "ingest_batch_id": self.batch.batch_id,
            }
        )

    def accept(self, raw: RawRecord) -> None:
        self.result.records += 1
        default_table = self.fmt.tables[0]
        if raw.error:
            self.quarantine(raw, default_table, raw.error)
            return
        if not isinstance(raw.data, dict):
            self.quarantine(raw, default_table, f"record is a JSON {type(raw.data).__name__}, not an object")
            return
        try:
            emitted = self.fmt.normalize(raw.data, self.ctx)
        except RECORD_ERRORS as exc:
            self.quarantine(raw, default_table, str(exc) or type(exc).__name__)
            return
        if not emitted:
            self.result.skipped += 1
            return
        problems: list[str] = []
        for item in emitted:
            item.row.setdefault("source_format", self.fmt.name)
            item.row.setdefault("ingest_batch_id", self.batch.batch_id)
            problems.extend(f"{item.table}: {p}" for p in schemas.table(item.table).violations(item.row))
        if problems:
            self.quarantine(raw, emitted[0].table, "; ".join(problems))
            return
        for item in emitted:
            self.counts(item.table).read += 1
            self.pending[item.table].append(item.row)
            t = item.row.get(schemas.table(item.table).time_column)
            if isinstance(t, datetime):
                self.min_time = t if self.min_time is None or t < self.min_time else self.min_time
                self.max_time = t if self.max_time is None or t > self.max_time else self.max_time
        if sum(len(v) for v in self.pending.values()) >= CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        written_all: list[Emitted] = []
        accepted_all: list[Emitted] = []
        for table, rows in self.pending.items():
            if not rows:
                continue
            written, duplicates = self.batch.add(table, rows)
            self.counts(table).written += len(written)
            self.counts(table).duplicates += duplicates
            written_all.extend(Emitted(table, r) for r in written)
            accepted_all.extend(Emitted(table, r) for r in rows)
        self.pending = defaultdict(list)
        # Derived rows (e.g. one `tokens` row per distinct token) come from the rows actually written;
        # a re-check (keys imported since the file was ingested) derives them from every accepted row
        # so signatures are verified again, but counts only what was newly written.
        source_rows = accepted_all if self.recheck else written_all
        if self.fmt.finish and source_rows:
            derived = self.fmt.finish(source_rows, self.ctx)
            if self.recheck:
                _recount(derived, written_all)
            for item in derived:
                item.row.setdefault("ingest_batch_id", self.batch.batch_id)
                problems = schemas.table(item.table).violations(item.row)
                if problems:
                    raise ValueError(f"{item.table} row derived by {self.fmt.name} is invalid: {'; '.join(problems)}")
                self.pending[item.table].append(item.row)
            for table, rows in self.pending.items():
                written, _ = self.batch.add(table, rows, dedup=False)
                self.counts(table).written += len(written)
                self.counts(table).read += len(rows)
            self.pending = defaultdict(list)
        if self.quarantine_rows:
            self.batch.add("quarantine", self.quarantine_rows)
            self.quarantine_rows = []

    def commit(self, quality: dict[str, Any], quality_status: str) -> None:
        counts = {t: vars(c) for t, c in self.result.counts.items()}
        now = utcnow()
        run_row = {
            "ingest_batch_id": self.batch.batch_id,
            "event_date": now.strftime("%Y-%m-%d"),
            "run_id": self.ctx.options.get("run_id"),
            "source_file": str(self.path),
            "source_sha256": self.sha,
            "source_format": self.fmt.name,
            "started_at": self.started,
            "committed_at": now,
            "records_read": self.result.records,
            "rows_written": sum(c.written for c in self.result.counts.values()),
            "duplicates": sum(c.duplicates for c in self.result.counts.values()),
            "quarantined": sum(c.quarantined for c in self.result.counts.values()),
            "counts": _json({**counts, "_skipped": self.result.skipped}),
            "min_event_time": self.min_time,
            "max_event_time": self.max_time,
            "quality_status": quality_status,
            "quality": _json(quality),
        }
        self.batch.add("ingest_runs", [run_row], dedup=False)
        record = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in run_row.items()}
        record["skipped"] = self.result.skipped
        record["tables"] = counts
        self.batch.commit(record)


def _recount(derived: list[Emitted], written: list[Emitted]) -> None:
    """In a re-check, a derived tokens row counts only requests that were newly written."""
    counts: dict[str, int] = defaultdict(int)
    for item in written:
        fp = item.row.get("token_fingerprint")
        if fp:
            counts[fp] += 1
    for item in derived:
        if item.table == "tokens":
            item.row["seen_count"] = counts.get(item.row["token_fingerprint"], 0)


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str, sort_keys=True, separators=(",", ":"))


def ingest_file(
    lake: Lake,
    path: Path,
    *,
    format_name: str | None = None,
    options: dict[str, Any] | None = None,
    quality_policy: str = "warn",
    already: dict[str, dict] | None = None,
    registry_version: str | None = None,
) -> FileResult:
    """Ingest one file as one batch. The caller holds the lake lock.

    A file already ingested is skipped, unless the key registry changed after it was ingested and
    the file carries tokens: then it is read again (rows de-duplicate) so signatures get checked.
    """
    result = FileResult(path=path)
    try:
        if not path.is_file():
            raise UnreadableFile(f"{path}: no such file")
        sha = file_sha256(path)
        known = already if already is not None else lake.ingested_sources()
        recheck = False
        if sha in known:
            previous = known[sha]
            fmt_name = previous.get("source_format")
            if not (registry_version and fmt_name and _derives_tokens(fmt_name) and registry_version > previous.get("batch_id", "")):
                result.status = "unchanged"
                result.format = fmt_name
                result.message = f"already ingested in batch {previous.get('batch_id')}"
                return result
            recheck = True  # keys imported since: verify this file's token signatures again
        sample = sniff_container(path)
        if sample.container == "empty":
            result.status = "empty"
            result.message = "empty or whitespace-only file: nothing to ingest"
            return result
        fmt = sources.by_name(format_name) if format_name else sources.sniff(sample)
        if fmt is None:
            hint = f"CSV header {', '.join(sample.header[:6])}" if sample.header else f"container {sample.container}"
            raise UnreadableFile(f"{path}: not a recognized export format ({hint}); use --format to force one")
        result.format = fmt.name
        state = _FileIngest(lake, path, fmt, sha, {**(options or {}), "_recheck": recheck}, result)
        try:
            for raw in fmt.records(path):
                state.accept(raw)
            state.flush()
            quality, quality_status = _run_quality(state, quality_policy)
            result.quality_status = quality_status
            state.commit(quality, quality_status)
        except BaseException:
            state.batch.abort()
            raise
    except UnreadableFile as exc:
        result.status = "error"
        result.message = scrub_text(str(exc))
    except (OSError, EOFError) as exc:
        result.status = "error"
        result.message = scrub_text(f"{path}: cannot read: {exc}")
    except Exception as exc:  # a bug or an unforeseen input: fail this file only, say where
        result.status = "error"
        where = traceback.extract_tb(exc.__traceback__)[-1]
        result.message = scrub_text(
            f"{path}: ingest failed at record {result.records + 1}: {type(exc).__name__}: {exc} "
            f"({Path(where.filename).name}:{where.lineno})"
        )
    return result


def _derives_tokens(format_name: str) -> bool:
    try:
        return sources.by_name(format_name).finish is not None
    except KeyError:
        return False


def _run_quality(state: _FileIngest, policy: str) -> tuple[dict[str, Any], str]:
    if policy == "off":
        return {}, "skipped"
    from pipeline import quality  # great-expectations is heavy: import only when a batch is checked

    return quality.check_staged_batch(state.batch, policy)


def ingest_paths(
    lake: Lake,
    paths: Iterable[Path],
    *,
    format_name: str | None = None,
    options: dict[str, Any] | None = None,
    quality_policy: str = "warn",
    on_file: Callable[[Path, int, int], None] | None = None,
) -> IngestReport:
    """Ingest every file under ``paths`` into ``lake``, each file its own atomic batch."""
    report = IngestReport()
    files = list(expand_paths(paths))
    with lake.lock():
        known = lake.ingested_sources()
        options = dict(options or {})
        version = keys.registry_version(lake)
        if version and "signature_checker" not in options:
            options["signature_checker"] = keys.verify_signatures(lake)  # registry loaded once per run
        for i, path in enumerate(files):
            if on_file:
                on_file(path, i, len(files))
            result = ingest_file(
                lake, path, format_name=format_name, options=options, quality_policy=quality_policy,
                already=known, registry_version=version,
            )
            report.files.append(result)
    return report
