"""Hunt results out: streaming csv/jsonl/parquet/markdown writers, the terminal preview and count.

DuckDB's Arrow record-batch reader feeds the writers batch by batch (parquet via pyarrow: the
locked session itself cannot write files), keeping only the first rows for the terminal preview and
the count, so memory stays bounded whatever the result size. Values are rendered the same way
everywhere: times ISO 8601, decimals exact, bytes base64, nested values as JSON.
"""

from __future__ import annotations

import base64
import io
import json
import math
import sys
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import duckdb
import pyarrow as pa

from pipeline.hunts.errors import HuntError, reading_errors

FORMATS = ("table", "csv", "jsonl", "parquet", "markdown")
FILE_FORMATS = ("csv", "jsonl", "parquet", "markdown")
EXTENSION_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".md": "markdown", ".markdown": "markdown"}
PREVIEW_ROWS = 20


def format_for(out: Path | None, fmt: str | None) -> str:
    """The output format: explicit, else from the file extension, else the terminal table."""
    if fmt:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise HuntError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
        if fmt == "table" and out is not None:
            raise HuntError(f"--format table is for the terminal; write {out} as one of {', '.join(FILE_FORMATS)}")
        return fmt
    if out is not None:
        found = EXTENSION_FORMATS.get(out.suffix.lower())
        if not found:
            raise HuntError(f"cannot tell the format of {out} from its extension; give --format ({', '.join(FILE_FORMATS)})")
        return found
    return "table"


def _is_nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or pa.types.is_union(t)


def _needs_text(t: pa.DataType) -> bool:
    """Types pyarrow's CSV writer cannot write: written as JSON text instead."""
    return (
        _is_nested(t)
        or pa.types.is_interval(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_dictionary(t)
    )


def json_value(value: Any) -> Any:
    """A Python value (from Arrow) as JSON-able data: times ISO 8601, decimals exact, bytes base64."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 2**63 else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):  # Arrow map -> [(k, v)]
            return {str(k): json_value(v) for k, v in value}
        return [json_value(v) for v in value]
    return str(value)  # intervals (MonthDayNano), UUID, ...


def text_value(value: Any) -> str:
    """One cell as text for the terminal and markdown: JSON for nested values, ISO for times."""
    if value is None:
        return ""
    if isinstance(value, datetime) and value.utcoffset() is not None and not value.utcoffset():
        return value.replace(tzinfo=None).isoformat(sep=" ") + "Z"  # compact: every lake time is UTC
    v = json_value(value)
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _textual_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with the columns the CSV writer cannot handle turned into JSON text."""
    if not any(_needs_text(f.type) for f in batch.schema):
        return batch
    arrays = []
    fields = []
    for f, col in zip(batch.schema, batch.columns):
        if _needs_text(f.type):
            if pa.types.is_dictionary(f.type):
                col = col.cast(f.type.value_type)
                if not _needs_text(col.type):
                    arrays.append(col)
                    fields.append(pa.field(f.name, col.type))
                    continue
            values = [None if v is None else json.dumps(json_value(v), ensure_ascii=False) for v in col.to_pylist()]
            arrays.append(pa.array(values, pa.string()))
            fields.append(pa.field(f.name, pa.string()))
        else:
            arrays.append(col)
            fields.append(f)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _md_cell(value: Any) -> str:
    text = text_value(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "\\n").replace("\r", "\\r")


class _Writer:
    """Streams batches to one sink in one format."""

    def __init__(self, fmt: str, sink: IO[bytes], schema: pa.Schema) -> None:
        self.fmt = fmt
        self.sink = sink
        self.schema = schema
        self._csv = None
        self._parquet = None
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(sink, schema, compression="zstd")
        elif fmt == "markdown":
            names = [n.replace("|", "\\|") for n in schema.names]
            sink.write(("| " + " | ".join(names) + " |\n").encode("utf-8"))
            sink.write(("|" + "---|" * len(names) + "\n").encode("utf-8"))

    def write(self, batch: pa.RecordBatch) -> None:
        if self.fmt == "parquet":
            self._parquet.write_batch(batch)
        elif self.fmt == "csv":
            import pyarrow.csv as pcsv

            batch = _textual_batch(batch)
            if self._csv is None:
                self._csv = pcsv.CSVWriter(self.sink, batch.schema)
            self._csv.write_batch(batch)
        elif self.fmt == "jsonl":
            names = batch.schema.names
            lines = []
            for row in zip(*(c.to_pylist() for c in batch.columns)):
                lines.append(json.dumps({n: json_value(v) for n, v in zip(names, row)}, ensure_ascii=False))
            if lines:
                self.sink.write(("\n".join(lines) + "\n").encode("utf-8"))
        elif self.fmt == "markdown":
            out = io.StringIO()
            for row in zip(*(c.to_pylist() for c in batch.columns)):
                out.write("| " + " | ".join(_md_cell(v) for v in row) + " |\n")
            self.sink.write(out.getvalue().encode("utf-8"))
        else:  # pragma: no cover - checked by format_for
            raise HuntError(f"cannot write format {self.fmt}")

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        elif self.fmt == "csv" and self._csv is None:  # no rows: still write the header line
            import pyarrow.csv as pcsv

            empty = _textual_batch(pa.RecordBatch.from_pylist([], schema=self.schema))
            pcsv.write_csv(pa.Table.from_batches([empty], schema=empty.schema), self.sink)
        elif self._csv is not None:
            self._csv.close()
        self.sink.flush()


@dataclass
class ExportSummary:
    """What an export did: rows written (after --limit), whether the limit cut the result, the preview."""

    rows: int
    truncated: bool
    preview: pa.Table
    schema: pa.Schema
    out: Path | None = None
    format: str = "table"


def export(
    reader: pa.RecordBatchReader,
    fmt: str,
    sink: Path | IO[bytes] | None = None,
    *,
    limit: int | None = None,
    preview_rows: int = PREVIEW_ROWS,
) -> ExportSummary:
    """Stream ``reader`` into ``sink`` in ``fmt`` (table: no sink, count only), batch by batch.

    Memory stays bounded by one batch plus the preview, whatever the result size. A file sink is
    written to a temporary name and renamed when complete, so a failed query leaves no half file.
    """
    if limit is not None and limit < 0:
        raise HuntError("--limit must be >= 0")
    schema = reader.schema
    path = Path(sink) if isinstance(sink, (str, Path)) else None
    tmp: Path | None = None
    fh: IO[bytes] | None = None
    writer: _Writer | None = None
    if fmt != "table":
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.partial")
            fh = open(tmp, "wb")
        else:
            fh = sink if sink is not None else sys.stdout.buffer  # type: ignore[assignment]
        writer = _Writer(fmt, fh, schema)
    rows = 0
    truncated = False
    preview: list[pa.RecordBatch] = []
    kept = 0
    try:
        with reading_errors():
            for batch in reader:
                if limit is not None and rows + batch.num_rows > limit:
                    batch = batch.slice(0, limit - rows)
                    truncated = True
                if batch.num_rows:
                    if kept < preview_rows:
                        piece = batch.slice(0, preview_rows - kept)
                        preview.append(piece)
                        kept += piece.num_rows
                    if writer is not None:
                        writer.write(batch)
                    rows += batch.num_rows
                if truncated or (limit is not None and rows >= limit):
                    truncated = truncated or _has_more(reader)
                    reader.close()  # stop the query: its cursor's streaming result is released
                    break
        if writer is not None:
            writer.close()
    except BaseException:
        if path is not None and fh is not None:
            fh.close()
            tmp.unlink(missing_ok=True)  # type: ignore[union-attr]
        raise
    if path is not None and fh is not None:
        fh.close()
        tmp.replace(path)  # type: ignore[union-attr]
    return ExportSummary(rows, truncated, pa.Table.from_batches(preview, schema=schema), schema, path, fmt)


def _has_more(reader: pa.RecordBatchReader) -> bool:
    """Whether the stream holds another row (read one more batch; called only at the limit)."""
    try:
        for batch in reader:
            if batch.num_rows:
                return True
    except (duckdb.Error, pa.ArrowException):
        return False
    return False


_UNESCAPE = {"n": "\n", "r": "\r"}


def read_markdown(text: str) -> list[dict[str, str]]:
    """Parse a markdown table written by ``export`` back to rows of cell text (the round trip)."""
    lines = [ln for ln in text.split("\n") if ln.startswith("|")]
    if len(lines) < 2:
        return []

    def cells(line: str) -> list[str]:
        out, cur, i = [], [], 1
        body = line.rstrip()
        while i < len(body):
            ch = body[i]
            if ch == "\\" and i + 1 < len(body):
                cur.append(_UNESCAPE.get(body[i + 1], body[i + 1]))
                i += 2
                continue
            if ch == "|":
                cell = "".join(cur)
                out.append(cell[1:-1] if cell.startswith(" ") and cell.endswith(" ") and len(cell) >= 2 else cell.strip())
                cur = []
            else:
                cur.append(ch)
            i += 1
        return out

    names = cells(lines[0])
    return [dict(zip(names, cells(line))) for line in lines[2:]]


def preview_table(summary: ExportSummary, title: str | None = None) -> Any:
    """A rich Table of the preview rows (imported lazily: tests and library callers need no rich)."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for name in summary.schema.names:
        table.add_column(name, overflow="fold")
    for row in zip(*(c.to_pylist() for c in summary.preview.columns)):
        table.add_row(*(_escape_markup(text_value(v)) if v is not None else "[dim]NULL[/dim]" for v in row))
    return table


def _escape_markup(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def count_line(summary: ExportSummary) -> str:
    """``12 rows`` / ``first 20 of 12,345 rows shown`` / ``... (stopped at --limit)``, plus the file."""
    shown = summary.preview.num_rows
    noun = "row" if summary.rows == 1 else "rows"
    text = f"{summary.rows:,} {noun}"
    if summary.format == "table" and 0 < shown < summary.rows:
        text = f"first {shown:,} of {text} shown"
    if summary.truncated:
        text += " (stopped at --limit; more rows match)"
    if summary.out is not None:
        text += f" written to {summary.out} ({summary.format})"
    return text
