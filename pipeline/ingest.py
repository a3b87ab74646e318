"""Ingest: files -> sniffed format -> normalized rows -> validated -> deduplicated -> one atomic batch.

One input file is one batch: it becomes visible all at once or not at all, and its source hash in
the manifest makes ingesting the same file again a no-op. Records are streamed and flushed in
chunks, so memory is bounded by the chunk size, not the file size. A record that cannot be
normalized or breaks a schema check goes to ``quarantine`` with its reason; a file that cannot be
read at all gets one error naming it, and the other files still ingest.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
import traceback
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pipeline import keys, schemas, sources
from pipeline.lake import Batch, Lake, TableCounts, file_sha256, utcnow
from pipeline.sources.base import (
    Context, Emitted, FileSample, RawRecord, SourceFormat, UnreadableFile, iter_json_array, printable, sniff_container,
)
from pipeline.tokens import scrub_jwts, scrub_text

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
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# A compressed stream that ends early or breaks mid-file: the records before are whole and kept.
STREAM_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


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
        raw_text = raw.text or ""
        if len(raw_text) > 4 * MAX_QUARANTINE_TEXT:  # a 50 MB line: scrub only what is kept
            raw_text = raw_text[: 2 * MAX_QUARANTINE_TEXT]
        text = printable(scrub_text(raw_text, known=self.ctx.options.get("_raw_tokens")))
        if len(text) > MAX_QUARANTINE_TEXT or len(raw_text) < len(raw.text or ""):
            text = text[:MAX_QUARANTINE_TEXT] + f"... [truncated, {len(raw.text or '')} chars]"
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
                "reason": printable(scrub_text(reason))[:2000],
                "raw_record": text,
                "ingest_batch_id": self.batch.batch_id,
            }
        )

    def read_all(self) -> None:
        """Every record of the file through ``accept`` (``ingest_parallel`` reads large files in blocks)."""
        for raw in _records(self.fmt, self.path):
            self.accept(raw)

    def accept(self, raw: RawRecord) -> None:
        self.result.records += 1
        verdict = judge(self.fmt, self.ctx, raw)
        if verdict[0] == "quarantine":
            self.quarantine(raw, verdict[1], verdict[2])
            return
        if verdict[0] == "skip":
            self.result.skipped += 1
            return
        emitted: list[Emitted] = verdict[1]
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
        self.finish_flush(written_all, accepted_all)

    def finish_flush(self, written_all: list[Emitted], accepted_all: list[Emitted]) -> None:
        """Second half of a flush: rows the format derives from the chunk, then quarantine rows."""
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


def judge(fmt: SourceFormat, ctx: Context, raw: RawRecord) -> tuple[Any, ...]:
    """What becomes of one record: ("rows", [Emitted, ...]) valid and storable, ("skip",) out of
    the lake's scope, or ("quarantine", table, reason). Pure: the serial ingest and the parallel
    workers (``pipeline.ingest_parallel``) decide every record with this one function.
    """
    default_table = fmt.tables[0]
    if raw.error:
        return "quarantine", default_table, raw.error
    if not isinstance(raw.data, dict):
        return "quarantine", default_table, f"record is a JSON {type(raw.data).__name__}, not an object"
    try:
        emitted = fmt.normalize(raw.data, ctx)
    except RECORD_ERRORS as exc:
        return "quarantine", default_table, str(exc) or type(exc).__name__
    if not emitted:
        return ("skip",)
    problems: list[str] = []
    for item in emitted:
        item.row.setdefault("source_format", fmt.name)
        item.row.setdefault("ingest_batch_id", ctx.batch_id)
        problems.extend(f"{item.table}: {p}" for p in storable(item.row))
        problems.extend(f"{item.table}: {p}" for p in schemas.table(item.table).violations(item.row))
    if problems:
        return "quarantine", emitted[0].table, "; ".join(problems)
    return "rows", emitted


def storable(row: dict[str, Any]) -> list[str]:
    """Make ``row`` safe to store, in place; return what cannot be made so.

    Text Parquet can hold (a lone surrogate from a JSON ``\\ud800`` escape becomes U+FFFD), no
    JWT in any text value whatever the source (``tokens.scrub_jwts``), and integers within int64:
    a larger one is a problem that quarantines the record instead of failing the whole file.
    """
    problems: list[str] = []
    for name, value in row.items():
        kind = type(value)
        if kind is str:  # exact types first: the isinstance chain below costs ~10 us a row
            if "eyJ" in value or not value.isascii():
                row[name] = _safe_text(value)
        elif value is None or kind is datetime or kind is bool:
            continue
        elif isinstance(value, str):
            row[name] = _safe_text(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            if not INT64_MIN <= value <= INT64_MAX:
                problems.append(f"{name} {str(value)[:30]}... is outside the 64-bit integer range")
        elif isinstance(value, list):
            row[name] = [_safe_text(v) if isinstance(v, str) else v for v in value]
    return problems


def _safe_text(value: str) -> str:
    if "eyJ" in value:
        value = scrub_jwts(value)
    return value if value.isascii() else printable(value)


def _records(fmt: SourceFormat, path: Path) -> Iterator[RawRecord]:
    """The format's records; a compressed stream that breaks mid-file ends with one error record
    for the unreadable rest (the records before it are whole and get ingested)."""
    it = iter(fmt.records(path))
    last = 0
    while True:
        try:
            raw = next(it)
        except StopIteration:
            return
        except STREAM_ERRORS as exc:
            yield RawRecord(
                last + 1, None, "", None,
                f"the rest of the file is unreadable after record {last}: compressed data truncated or corrupt "
                f"({type(exc).__name__}: {exc})",
            )
            return
        last = raw.number
        yield raw


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
        if fmt is None and _no_records(sample):
            result.status = "empty"
            result.message = "no records (an empty JSON array or page): nothing to ingest"
            return result
        if fmt is None:
            hint = f"CSV header {', '.join(sample.header[:6])}" if sample.header else f"container {sample.container}"
            raise UnreadableFile(f"{path}: not a recognized export format ({hint}); use --format to force one")
        result.format = fmt.name
        from pipeline.ingest_parallel import file_ingest  # large NDJSON/CSV files: worker processes

        state = file_ingest(lake, path, fmt, sha, {**(options or {}), "_recheck": recheck}, result, sample)
        try:
            state.read_all()
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


def _no_records(sample: FileSample) -> bool:
    """An export with nothing in it (``[]``, ``{"value": []}``): a quiet day, not an unknown format."""
    if sample.container not in ("json_array", "json_wrapped") or sample.first is not None:
        return False
    return next(iter_json_array(sample.path), None) is None


def _inside(path: Path, root: Path) -> bool:
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return False
    return resolved == root or root in resolved.parents


def _derives_tokens(format_name: str) -> bool:
    try:
        return sources.by_name(format_name).finish is not None
    except KeyError:
        return False


QUALITY_CHUNK_ROWS = 250_000  # rows per great-expectations frame: pandas memory stays bounded
QUALITY_DIRECT_ROWS = 20_000  # up to this many staged rows, quality.check_staged_batch as it is


def _run_quality(state: _FileIngest, policy: str) -> tuple[dict[str, Any], str]:
    if policy == "off":
        return {}, "skipped"
    from pipeline import quality  # great-expectations is heavy: import only when a batch is checked

    return _check_staged_in_chunks(state.batch, policy, quality)


def _check_staged_in_chunks(batch: Batch, policy: str, quality: Any) -> tuple[dict[str, Any], str]:
    """``quality.check_staged_batch``, in bounded memory for large batches: each table's staged rows
    are read with only the columns its suite checks (a Graph sign-in's ~3 KB ``extra`` text cost
    ~13 KB of pandas memory a row) and validated QUALITY_CHUNK_ROWS at a time, the results merged.
    A batch that fits one chunk gets exactly ``check_staged_batch``'s result (expectations on absent
    columns are the only ones it skips, and no checked column is left out); small batches go
    through ``check_staged_batch`` itself."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files: dict[str, list[tuple[Path, int]]] = defaultdict(list)
    for staged, _final in batch.staged:
        table = staged.relative_to(batch.staging).parts[0]
        if table not in ("quarantine", "ingest_runs"):
            files[table].append((staged, pq.ParquetFile(staged).metadata.num_rows))
    if sum(n for parts in files.values() for _, n in parts) <= QUALITY_DIRECT_ROWS:
        return quality.check_staged_batch(batch, policy)
    results: dict[str, Any] = {}
    for table, parts in files.items():
        spec = schemas.table(table)
        checked = {e["kwargs"]["column"] for e in quality.suite_spec(table) if e["kwargs"].get("column")}
        columns = [c for c in spec.arrow_schema().names if c in checked or c in spec.key] or None
        chunks: list[list[Path]] = [[]]
        rows = 0
        for path, n in parts:
            if chunks[-1] and rows + n > QUALITY_CHUNK_ROWS:
                chunks.append([])
                rows = 0
            chunks[-1].append(path)
            rows += n
        checks = [
            quality.validate_frame(table, pa.concat_tables([pq.read_table(p, columns=columns) for p in chunk]))
            for chunk in chunks
        ]
        results[table] = checks[0] if len(checks) == 1 else _merge_quality(checks)
    if not results:
        return {}, "skipped"
    return results, quality.status_for(results, policy)


def _merge_quality(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One table's validation results over its chunks: failures summed per expectation and column."""
    rows = sum(p["rows"] for p in parts)
    failed: dict[tuple[Any, Any], dict[str, Any]] = {}
    for part in parts:
        for f in part["failed"]:
            agg = failed.setdefault((f["expectation"], f["column"]), {**f, "unexpected_count": 0})
            agg["unexpected_count"] = (agg["unexpected_count"] or 0) + (f.get("unexpected_count") or 0)
    for agg in failed.values():
        agg["unexpected_percent"] = 100.0 * agg["unexpected_count"] / rows if rows else None
    evaluated = max((p["evaluated"] or 0) for p in parts)
    return {
        "success": all(p["success"] for p in parts),
        "evaluated": evaluated,
        "successful": evaluated - len(failed),
        "failed": list(failed.values()),
        "rows": rows,
        "chunks": len(parts),
    }


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
    # A folder that holds the lake (`tokenhunt ingest . --lake lake`): never read the lake's own files.
    files = [f for f in expand_paths(paths) if not _inside(f, lake.root)]
    with lake.lock():
        known = lake.ingested_sources()
        options = dict(options or {})
        version = keys.registry_version(lake)
        if version and "signature_checker" not in options:
            options["signature_checker"] = keys.verify_signatures(lake)  # registry loaded once per run
        try:
            for i, path in enumerate(files):
                if on_file:
                    on_file(path, i, len(files))
                result = ingest_file(
                    lake, path, format_name=format_name, options=options, quality_policy=quality_policy,
                    already=known, registry_version=version,
                )
                report.files.append(result)
        finally:
            parallel = sys.modules.get("pipeline.ingest_parallel")
            if parallel is not None:
                parallel.shutdown()  # worker processes (and what they hold of the files) end with the run
    return report
