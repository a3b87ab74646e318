"""What every source format provides, and the streaming readers they share.

A source format is data, not an ``if`` chain: a ``SourceFormat`` names itself, says whether it
recognizes a file from a ``FileSample`` (the container shape and the first record), streams raw
records, and normalizes one parsed record into rows for one or more lake tables. The ingest
(``pipeline.ingest``) does everything else: batching, validation against ``schemas/``,
quarantine, dedup and the atomic commit.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

# CSV cells with whole JSON records (AuditData) exceed the csv module's 128 KiB default.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

GZIP_MAGIC = b"\x1f\x8b"
MAX_RECORD_CHARS = 64 * 1024 * 1024  # one JSON record larger than this is quarantined, not parsed


class UnreadableFile(Exception):
    """The whole file cannot be read as any supported format (one clear error line names it)."""


@dataclass
class RawRecord:
    """One record as read: its position, its raw text (for quarantine) and the parsed value."""

    number: int  # 1-based record number within the file
    line: int | None  # 1-based line where the record starts, when known
    text: str  # raw text (a JSON value, a CSV row re-serialized, a line)
    data: Any = None  # parsed value: a dict for JSON, a header->cell dict for CSV
    error: str | None = None  # why it could not be parsed (then data is None)


@dataclass
class FileSample:
    """What sniffing sees: the container shape and the first parsed record."""

    path: Path
    container: str  # json_array, json_wrapped, ndjson, csv, empty, unknown
    wrapper_key: str | None = None  # "value" / "records" for wrapped JSON
    first: dict[str, Any] | None = None  # first record (CSV: header -> cell)
    header: list[str] = field(default_factory=list)  # CSV header cells, stripped


@dataclass
class Context:
    """Per-file facts a normalizer may use."""

    path: Path
    source_format: str
    batch_id: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Emitted:
    table: str
    row: dict[str, Any]


@dataclass(frozen=True)
class SourceFormat:
    name: str
    tables: tuple[str, ...]
    description: str
    sniff: Callable[[FileSample], bool]
    records: Callable[[Path], Iterator[RawRecord]]
    normalize: Callable[[dict[str, Any], Context], list[Emitted]]
    # Some formats read several records as one unit (e.g. tokens aggregated per batch): optional hook
    # called with every row the batch accepted, returning extra rows for other tables.
    finish: Callable[[list[Emitted], Context], list[Emitted]] | None = None


# ---------------------------------------------------------------------- opening files
def open_binary(path: Path) -> io.BufferedIOBase:
    """Open plain or gzip (by magic bytes, not by name); a '.gz' that is not gzip is an error."""
    fh = open(path, "rb")
    magic = fh.read(2)
    fh.seek(0)
    if magic == GZIP_MAGIC:
        return gzip.open(fh)  # type: ignore[return-value]
    if path.suffix == ".gz":
        fh.close()
        raise UnreadableFile(f"{path}: named .gz but is not gzip data")
    return fh


def open_text(path: Path) -> io.TextIOBase:
    """Text with the BOM stripped; undecodable bytes become U+FFFD so one bad byte never stops a file."""
    raw = open_binary(path)
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")


def read_head(path: Path, size: int = 256 * 1024) -> str:
    try:
        with open_binary(path) as fh:
            data = fh.read(size)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UnreadableFile(f"{path}: cannot read: {exc}") from exc
    if data.startswith(codecs.BOM_UTF8):
        data = data[3:]
    return data.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------- JSON streaming
_WS = " \t\r\n\ufeff\x00"
_WRAPPER_RE = re.compile(r'"(value|records|Records|keys)"\s*:\s*\[')


def _iter_json_stream(path: Path, *, skip_to_array: bool) -> Iterator[RawRecord]:
    """Stream the elements of a top-level JSON array (or a ``{"value": [...]}`` wrapper).

    Reads in chunks and ``raw_decode``s one element at a time, so memory is bounded by the largest
    record, not the file. A malformed element is reported and the reader resynchronizes at the next
    top-level ``{`` it can find.
    """
    decoder = json.JSONDecoder()
    with open_text(path) as fh:
        buf = ""
        pos = 0
        line = 1
        number = 0
        eof = False

        def fill() -> bool:
            nonlocal buf, pos, eof
            chunk = fh.read(1 << 20)
            if not chunk:
                eof = True
                return False
            buf = buf[pos:] + chunk
            pos = 0
            return True

        fill()
        if skip_to_array:
            while True:
                idx = buf.find("[", pos)
                if idx >= 0:
                    line += buf.count("\n", pos, idx)
                    pos = idx + 1
                    break
                if not fill():
                    return
        while True:
            # skip whitespace and commas between elements
            while True:
                while pos < len(buf) and (buf[pos] in _WS or buf[pos] == ","):
                    if buf[pos] == "\n":
                        line += 1
                    pos += 1
                if pos < len(buf) or not fill():
                    break
            if pos >= len(buf):
                return
            if buf[pos] == "]":
                return
            start_line = line
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    if not eof and len(buf) - pos < MAX_RECORD_CHARS and fill():
                        continue  # element spans the chunk boundary
                    number += 1
                    # resync: next '{' at line start or after a comma
                    nxt = buf.find("\n{", pos + 1)
                    nxt2 = buf.find(",{", pos + 1)
                    cands = [c for c in (nxt, nxt2) if c >= 0]
                    stop = min(cands) + 1 if cands else len(buf)
                    text = buf[pos:stop]
                    yield RawRecord(number, start_line, text, None, f"malformed JSON: {exc.msg} (line {start_line})")
                    line += text.count("\n")
                    pos = stop
                    break
                # A value that ends exactly at the buffer end may be a truncated number/literal.
                if end >= len(buf) and not eof and fill():
                    continue
                number += 1
                text = buf[pos:end]
                line += text.count("\n")
                pos = end
                yield RawRecord(number, start_line, text, value, None)
                break


def iter_json_array(path: Path) -> Iterator[RawRecord]:
    return _iter_json_stream(path, skip_to_array=True)


def iter_ndjson(path: Path) -> Iterator[RawRecord]:
    """One JSON value per line; each bad line is its own quarantined record."""
    with open_binary(path) as fh:
        number = 0
        for line_no, raw in enumerate(fh, start=1):
            if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[3:]
            stripped = raw.strip(b" \t\r\n\x00")
            if not stripped:
                continue
            number += 1
            try:
                text = stripped.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RawRecord(number, line_no, stripped.decode("utf-8", "replace"), None, f"invalid UTF-8 at byte {exc.start}")
                continue
            if text.startswith("\ufeff"):
                text = text.lstrip("\ufeff")
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield RawRecord(number, line_no, text, None, f"malformed JSON: {exc.msg} at column {exc.colno}")
                continue
            yield RawRecord(number, line_no, text, value, None)


def iter_json_records(path: Path) -> Iterator[RawRecord]:
    """Array, ``{"value"|"records": [...]}`` wrapper, single object or NDJSON: whichever the file is."""
    sample = sniff_container(path)
    if sample.container in ("json_array", "json_wrapped"):
        yield from iter_json_array(path)
    elif sample.container == "ndjson":
        yield from iter_ndjson(path)


# ---------------------------------------------------------------------- CSV streaming
def iter_csv(path: Path) -> Iterator[RawRecord]:
    """CSV rows as header->cell dicts. Quoted multi-line cells, CRLF, duplicate headers handled.

    Header cells are stripped of surrounding spaces; a duplicated header gets ``.1`` (as pandas does),
    so the Entra portal's twice-written ``Incoming token type`` keeps both values.
    """
    with open_text(path) as fh:
        reader = csv.reader(fh)
        try:
            header_cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise UnreadableFile(f"{path}: CSV header unreadable: {exc}") from exc
        header: list[str] = []
        for cell in header_cells:
            name = cell.strip().lstrip("\ufeff")
            base, n = name, 0
            while name in header:
                n += 1
                name = f"{base}.{n}"
            header.append(name)
        number = 0
        while True:
            line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                number += 1
                yield RawRecord(number, line, "", None, f"malformed CSV row: {exc}")
                continue
            if not cells or all(not c.strip() for c in cells):
                continue
            number += 1
            text = _csv_text(cells)
            if "\x00" in text:
                yield RawRecord(number, line, text.replace("\x00", "\\x00"), None, "NUL byte in CSV row")
                continue
            if len(cells) != len(header):
                yield RawRecord(
                    number, line, text, None,
                    f"CSV row has {len(cells)} cells, header has {len(header)}",
                )
                continue
            yield RawRecord(number, line, text, dict(zip(header, cells)), None)


def _csv_text(cells: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(cells)
    return out.getvalue()


# ---------------------------------------------------------------------- sniffing
def sniff_container(path: Path) -> FileSample:
    """Find the container shape and the first record, reading only the head of the file."""
    head = read_head(path)
    text = head.lstrip(_WS)
    if not text:
        return FileSample(path, "empty")
    if "\x00" in head[:4096] and text[:1] not in "[{":
        return FileSample(path, "unknown")
    if text[0] == "[":
        first = next(iter_json_array_from_text(text), None)
        return FileSample(path, "json_array", first=first if isinstance(first, dict) else None)
    if text[0] == "{":
        first_line = text.split("\n", 1)[0].strip()
        try:
            obj = json.loads(first_line)
            if isinstance(obj, dict) and "\n" in text.strip():
                return FileSample(path, "ndjson", first=obj)
        except json.JSONDecodeError:
            pass
        # The earliest `"value": [` / `"records": [` is the wrapper (records may contain "value" keys later).
        m = _WRAPPER_RE.search(text)
        if m:
            first = next(iter_json_array_from_text(text[m.end() - 1 :]), None)
            return FileSample(path, "json_wrapped", wrapper_key=m.group(1), first=first if isinstance(first, dict) else None)
        try:
            obj = json.loads(text)
            return FileSample(path, "ndjson", first=obj if isinstance(obj, dict) else None)
        except json.JSONDecodeError:
            # a single (possibly pretty-printed) object, or NDJSON whose first line is huge
            try:
                obj, _ = json.JSONDecoder().raw_decode(text)
                return FileSample(path, "ndjson", first=obj if isinstance(obj, dict) else None)
            except json.JSONDecodeError:
                return FileSample(path, "ndjson", first=None)
    # CSV: header line
    first_line = text.split("\n", 1)[0].rstrip("\r")
    if "," in first_line or "\t" in first_line:
        try:
            header = [c.strip() for c in next(csv.reader([first_line]))]
        except (csv.Error, StopIteration):
            header = []
        if header:
            return FileSample(path, "csv", header=header, first=dict.fromkeys(header, ""))
    return FileSample(path, "unknown")


def iter_json_array_from_text(text: str) -> Iterator[Any]:
    """First elements of a JSON array held in a string (sniffing only)."""
    decoder = json.JSONDecoder()
    pos = text.find("[") + 1
    while pos < len(text):
        while pos < len(text) and (text[pos] in _WS or text[pos] == ","):
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return
        yield value
