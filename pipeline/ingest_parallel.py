"""Parallel ingest of one large file: the parent reads and commits, worker processes normalize.

Why: normalizing a record is pure Python (~30-150 us: parse, map, validate) and the machine has
more than one core. For an NDJSON or CSV file above ``MIN_BYTES`` the parent cuts the file into
blocks of raw lines (CSV: parsed rows), worker processes run exactly the serial code on them
(``base.ndjson_records`` / ``base.csv_record``, the format's page expansion, then
``ingest.judge``) and return the accepted rows as Arrow tables plus, per record, what became of it.
The parent then does what the serial ingest does, in record order: quarantine rows, flushes at the
same row counts (so derived ``tokens`` rows are the same), de-duplication against the lake and
the batch (``Batch.add_arrow``), one atomic commit. JSON arrays, pretty streams and small files
stay serial.

The raw tokens a worker registered (gateway logs) come back to the parent's in-memory store with
the block's results, through the pool's pipe; nothing is written on the way. Settings:
``options["ingest_workers"]`` or ``$TOKENHUNT_INGEST_WORKERS`` (default: the CPU count; 1 = the
same blocks in this process, no pool; 0 = the record-at-a-time serial path) and
``$TOKENHUNT_PARALLEL_MIN_BYTES`` (default 8 MiB).

Spawned workers import the caller's ``__main__`` module: a script that ingests needs the usual
``if __name__ == "__main__":`` guard (without it the workers die and the ingest goes serial).
"""

from __future__ import annotations

import atexit
import csv
import gc
import multiprocessing
import os
import pickle
from bisect import bisect_right
from collections import defaultdict, deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas, sources
from pipeline.ingest import CHUNK_ROWS, STREAM_ERRORS, _FileIngest, judge
from pipeline.sources import base
from pipeline.sources.base import Context, Emitted, FileSample, RawRecord, SourceFormat
from pipeline.tokens import RawTokenStore

MIN_BYTES = 8 * 1024 * 1024
BLOCK_BYTES = 1024 * 1024  # raw text per block: ~300 Graph sign-ins, ~550 gateway requests
RAW_TOKENS = "_raw_tokens"
_UNSHARED_OPTIONS = ("signature_checker", RAW_TOKENS, "_signature_results", "_memo")


# --------------------------------------------------------------------------- which files
@dataclass(frozen=True)
class Layout:
    kind: str  # "ndjson" or "csv"
    page_key: str | None = None  # graph formats: {"value"|"records": [...]} pages are expanded


def workers_for(options: dict[str, Any]) -> int:
    value = options.get("ingest_workers", os.environ.get("TOKENHUNT_INGEST_WORKERS"))
    try:
        return int(value) if value not in (None, "") else (os.cpu_count() or 1)
    except (TypeError, ValueError):
        return 1


def layout_of(fmt: SourceFormat, path: Path, sample: FileSample) -> Layout | None:
    """How to cut ``path`` into blocks so the workers read exactly what ``fmt.records`` reads; None
    when the file is not one of those layouts (arrays, pretty streams: read serially)."""
    from pipeline.sources import gateway, graph

    reader = fmt.records
    if reader is base.iter_csv:
        return Layout("csv")
    if reader in (base.iter_json_records, gateway._json_records):
        return Layout("ndjson") if sample.container == "ndjson" else None
    for paged, key in ((graph.records_graph, "value"), (graph.records_diagnostic, "records")):
        if reader is paged:
            return Layout("ndjson", key) if graph.paged_layout(path) == "ndjson" else None
    return None


def file_ingest(
    lake: Any, path: Path, fmt: SourceFormat, sha: str, options: dict[str, Any], result: Any, sample: FileSample
) -> _FileIngest:
    """The ingest state for one file: parallel when ``plan`` says so, else the serial one."""
    layout = plan(fmt, path, sample, options)
    if layout is None:
        return _FileIngest(lake, path, fmt, sha, options, result)
    return ParallelFileIngest(lake, path, fmt, sha, options, result, layout=layout, workers=workers_for(options))


def plan(fmt: SourceFormat, path: Path, sample: FileSample, options: dict[str, Any]) -> Layout | None:
    """The layout to ingest ``path`` in parallel, or None to ingest it serially."""
    if workers_for(options) < 1:
        return None
    try:
        minimum = int(os.environ.get("TOKENHUNT_PARALLEL_MIN_BYTES", MIN_BYTES))
        if path.stat().st_size < minimum:
            return None
    except (OSError, ValueError):
        return None
    return layout_of(fmt, path, sample)


# --------------------------------------------------------------------------- the pool
_POOL: ProcessPoolExecutor | None = None
_POOL_SIZE = 0
_DISABLED = False  # set when workers cannot start in this process


def _pool(workers: int) -> ProcessPoolExecutor:
    """One pool per process, reused by every file (a spawned worker takes ~0.5 s to import)."""
    global _POOL, _POOL_SIZE
    if _POOL is None or _POOL_SIZE != workers:
        shutdown()
        # spawn, never fork: the parent may hold DuckDB or other threads
        _POOL = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_watch_parent, initargs=(os.getpid(),)
        )
        _POOL_SIZE = workers
    return _POOL


def shutdown() -> None:
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(wait=True, cancel_futures=True)
        _POOL = None


atexit.register(shutdown)


# --------------------------------------------------------------------------- worker side
# Per file (batch id), what a format's ``normalize_many`` may remember across the blocks of one
# file (the gateway: each token's fingerprint). Holds raw tokens: dropped with the file.
MEMO_OPTION = "_memo"
_MEMOS: dict[str, dict[str, Any]] = {}

def _watch_parent(parent: int) -> None:
    """Exit when the parent dies (a killed ``tokenhunt`` must not leave idle workers behind: a pool
    worker blocked on its task queue never notices on its own)."""
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="tokenhunt-parent-watch", daemon=True).start()


def _block_schema(table: str) -> pa.Schema:
    spec = schemas.table(table)
    return spec.arrow_schema().append(pa.field(spec.partition, pa.string(), nullable=False))


def run_block(job: tuple[Any, ...]) -> dict[str, Any]:
    """Worker: judge every record of one block; accepted rows come back as Arrow tables.

    ``events`` has one entry per record in order: the number of rows it added, 0 when it was out of
    scope, or (number, line, table, reason, raw text) when it goes to quarantine.

    The cyclic garbage collector is paused for the block: a block's parsed records are thousands of
    small containers, which made collections cost a third of the time (Graph: 95 -> 65 us a
    record); the records hold no cycles, and collection resumes between blocks.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _run_block(job)
    finally:
        if enabled:
            gc.enable()


def _run_block(job: tuple[Any, ...]) -> dict[str, Any]:
    fmt_name, layout, options, batch_id, path, header, payload = job
    fmt = sources.by_name(fmt_name)
    ctx = Context(path=Path(path), source_format=fmt.name, batch_id=batch_id, options=dict(options))
    for other in [b for b in _MEMOS if b != batch_id]:
        del _MEMOS[other]  # one file at a time: what a format remembered of the last file goes
    ctx.options[MEMO_OPTION] = _MEMOS.setdefault(batch_id, {})
    records: Iterator[RawRecord]
    if layout.kind == "csv":
        records = (base.csv_record(number, line, cells, header) for number, line, cells in payload)
    else:
        records = base.ndjson_records(payload)
        if layout.page_key:
            from pipeline.sources.graph import expand_pages

            records = expand_pages(records, layout.page_key)
    block = list(records)
    taken = fmt.normalize_many(block, ctx) if fmt.normalize_many else None
    events: list[Any] = [0] * len(block)
    rows: dict[str, list[dict]] = {}
    owner: dict[str, list[int]] = {}
    for i in (taken.rest if taken else range(len(block))):
        raw = block[i]
        verdict = judge(fmt, ctx, raw)
        if verdict[0] == "rows":
            events[i] = len(verdict[1])
            for item in verdict[1]:
                rows.setdefault(item.table, []).append(item.row)
                owner.setdefault(item.table, []).append(i)
        elif verdict[0] == "quarantine":
            events[i] = (raw.number, raw.line, verdict[1], verdict[2], raw.text)
    tables = {}
    for table in dict.fromkeys([*(taken.columns if taken else ()), *rows]):
        schema = _block_schema(table)
        pieces, owners = [], []
        if taken and table in taken.columns:
            columns, fast_owner = taken.columns[table], taken.owner[table]
            empty = [None] * len(fast_owner)
            pieces.append(pa.Table.from_pydict({c: columns.get(c, empty) for c in schema.names}, schema=schema))
            owners += fast_owner
            for i in fast_owner:
                events[i] += 1
        if table in rows:
            slow = rows[table]
            pieces.append(pa.Table.from_pydict({c: [r.get(c) for r in slow] for c in schema.names}, schema=schema))
            owners += owner[table]
        data = pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)
        if len(pieces) > 1:  # back to record order (stable: a record's rows keep their order)
            order = sorted(range(len(owners)), key=owners.__getitem__)
            data, owners = data.take(order), [owners[k] for k in order]
        tables[table] = (data, owners)
    store = ctx.options.get(RAW_TOKENS)
    tokens = store.export() if isinstance(store, RawTokenStore) else []
    return {"events": events, "tables": tables, "tokens": tokens}


# --------------------------------------------------------------------------- parent side
def _blocks(layout: Layout, path: Path) -> Iterator[tuple[Any, Any, str | None]]:
    """(header, payload, error) blocks of raw input, read exactly as the serial readers read it.

    A compressed stream that breaks ends the blocks with its error text (the serial ``_records``
    turns the same into one quarantined record for the unreadable rest).
    """
    if layout.kind == "csv":
        with base.open_text(path) as fh:
            reader = csv.reader(base._without_bom(fh))
            header = base.csv_header(reader, path)
            if header is None:
                return
            block: list[Any] = []
            size = 0
            try:
                for number, line, cells in base.csv_rows(reader):
                    block.append((number, line, cells))
                    size += sum(len(c) for c in cells) if isinstance(cells, list) else 64
                    if size >= BLOCK_BYTES:
                        yield header, block, None
                        block, size = [], 0
            except STREAM_ERRORS as exc:
                yield header, block, f"{type(exc).__name__}: {exc}"
                return
            if block:
                yield header, block, None
        return
    with base.open_binary(path) as fh:
        lines: list[tuple[int, bytes]] = []
        size = 0
        try:
            for item in enumerate(fh, start=1):
                lines.append(item)
                size += len(item[1])
                if size >= BLOCK_BYTES:
                    yield None, lines, None
                    lines, size = [], 0
        except STREAM_ERRORS as exc:
            yield None, lines, f"{type(exc).__name__}: {exc}"
            return
        if lines:
            yield None, lines, None


class ParallelFileIngest(_FileIngest):
    """``_FileIngest`` whose pending rows are Arrow tables built by the workers."""

    def __init__(self, *args: Any, layout: Layout, workers: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.layout = layout
        self.workers = workers
        self.pending_arrow: dict[str, list[pa.Table]] = defaultdict(list)
        self.pending_rows = 0
        self._options: dict[str, Any] | None = None

    # ---- the run
    def read_all(self) -> None:
        layout, workers = self.layout, self.workers
        global _DISABLED
        if _DISABLED:
            super().read_all()
            return
        if workers <= 1:  # one process: the same blocks and fast paths, without a pool
            offset = 0
            try:
                for header, payload, error in _blocks(layout, self.path):
                    if payload:
                        block = run_block(self._job(layout, header, payload))
                        self.apply_block(block, 0 if layout.kind == "csv" else offset)
                        offset += len(block["events"])
                    if error:
                        self._unreadable_rest(error)
            finally:
                _MEMOS.clear()
            return
        pool = _pool(workers)
        in_flight: deque[Future] = deque()
        offset = 0  # records of the blocks before (NDJSON numbers count per block)
        broken: str | None = None
        try:
            for header, payload, error in _blocks(layout, self.path):
                if payload:
                    in_flight.append(pool.submit(run_block, self._job(layout, header, payload)))
                while len(in_flight) > 2 * workers:
                    offset = self._apply_next(in_flight, layout, offset)
                if error:
                    broken = error
                    break
            while in_flight:
                offset = self._apply_next(in_flight, layout, offset)
        except BrokenProcessPool:
            shutdown()  # the next file gets a fresh pool
            if self.result.records or self.pending_rows:
                raise
            # No worker ever answered (e.g. a script without a __main__ guard: spawned workers
            # re-run it and die): read this file, and the next ones, serially.
            _DISABLED = True
            super().read_all()
            return
        finally:
            for future in in_flight:
                future.cancel()
        if broken:
            self._unreadable_rest(broken)

    def _job(self, layout: Layout, header: Any, payload: Any) -> tuple[Any, ...]:
        if self._options is None:
            self._options = {k: v for k, v in self.ctx.options.items() if k not in _UNSHARED_OPTIONS and _picklable(v)}
        return (self.fmt.name, layout, self._options, self.batch.batch_id, str(self.path), header, payload)

    def _unreadable_rest(self, error: str) -> None:
        """What the serial ``_records`` yields when a compressed stream breaks: one record for the rest."""
        last = self.result.records
        self.accept(RawRecord(
            last + 1, None, "", None,
            f"the rest of the file is unreadable after record {last}: compressed data truncated or corrupt ({error})",
        ))

    def _apply_next(self, in_flight: deque, layout: Layout, offset: int) -> int:
        block = in_flight.popleft().result()
        self.apply_block(block, 0 if layout.kind == "csv" else offset)
        return offset + len(block["events"]) if layout.kind != "csv" else offset

    def apply_block(self, block: dict[str, Any], offset: int) -> None:
        """What ``accept`` does for each record of the block, in order, with Arrow rows."""
        if block["tokens"]:
            store = self.ctx.options.get(RAW_TOKENS)
            if not isinstance(store, RawTokenStore):
                store = self.ctx.options[RAW_TOKENS] = RawTokenStore()
            store.absorb(block["tokens"])
        tables: dict[str, tuple[pa.Table, list[int]]] = block["tables"]
        for table, (data, _) in tables.items():
            self.counts(table).read += data.num_rows
        cursor = dict.fromkeys(tables, 0)
        for i, event in enumerate(block["events"]):
            self.result.records += 1
            if type(event) is int:
                if event == 0:
                    self.result.skipped += 1
                    continue
                self.pending_rows += event
                if self.pending_rows >= CHUNK_ROWS:
                    self._take(tables, cursor, i)
                    self.flush()
            else:
                number, line, table, reason, text = event
                self.quarantine(RawRecord(number + offset, line, text), table, reason)
        self._take(tables, cursor, len(block["events"]))

    def _take(self, tables: dict[str, tuple[pa.Table, list[int]]], cursor: dict[str, int], upto: int) -> None:
        """Move the block's rows of records <= ``upto`` to the pending tables, in first-row order."""
        cuts = []
        for table, (data, owner) in tables.items():
            start = cursor[table]
            end = bisect_right(owner, upto, lo=start)
            if end > start:
                cuts.append((owner[start], table, data.slice(start, end - start)))
                cursor[table] = end
        for _, table, piece in sorted(cuts, key=lambda c: c[0]):
            self.pending_arrow[table].append(piece)

    def _times(self, table: str, data: pa.Table) -> None:
        column = schemas.table(table).time_column
        if column not in data.column_names or data.num_rows == 0:
            return
        bounds = pc.min_max(data.column(column))
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if isinstance(low, datetime):
            low, high = low.astimezone(timezone.utc), high.astimezone(timezone.utc)
            self.min_time = low if self.min_time is None or low < self.min_time else self.min_time
            self.max_time = high if self.max_time is None or high > self.max_time else self.max_time

    # ---- flushing
    def flush(self) -> None:
        if not any(self.pending_arrow.values()):
            super().flush()  # nothing from the workers: the serial flush (quarantine rows, fallback)
            return
        written_all: list[Emitted] = []
        accepted_all: list[Emitted] = []
        for table, pieces in self.pending_arrow.items():
            if not pieces:
                continue
            data = pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)
            self._times(table, data)  # over accepted rows, duplicates included, as accept() does
            written, duplicates = self.batch.add_arrow(table, data)
            self.counts(table).written += written.num_rows
            self.counts(table).duplicates += duplicates
            if self.fmt.finish:
                written_all.extend(Emitted(table, r) for r in _rows(written, self.fmt.finish_columns))
                if self.recheck:
                    accepted_all.extend(Emitted(table, r) for r in _rows(data, self.fmt.finish_columns))
        self.pending_arrow = defaultdict(list)
        self.pending_rows = 0
        self.finish_flush(written_all, accepted_all)


def _rows(data: pa.Table, columns: tuple[str, ...] | None) -> list[dict[str, Any]]:
    """Python rows of ``data`` for ``finish`` (only the columns it reads, when the format says)."""
    if columns is None:
        return data.to_pylist()
    names = [c for c in columns if c in data.column_names]
    values = [data.column(c).to_pylist() for c in names]
    return [dict(zip(names, row)) for row in zip(*values)]


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # noqa: BLE001 - anything that cannot cross to a worker stays in the parent
        return False
    return True
