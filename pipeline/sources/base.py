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
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

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
    # The row columns ``finish`` reads (None: all). The parallel ingest keeps rows in Arrow and
    # builds only these as Python values for ``finish``.
    finish_columns: tuple[str, ...] | None = None
    # Optional fast path for many records at once (the parallel ingest's blocks): finished rows for
    # the records whose shape it knows, identical to what ``normalize`` and the ingest's checks
    # would make of them; every other record goes through ``normalize`` one at a time.
    normalize_many: Callable[[list[RawRecord], Context], "BatchRows"] | None = None


@dataclass
class BatchRows:
    """What a ``normalize_many`` took: per table, column name -> values (stored columns, storable
    and valid), the positions of the records each row came from, and the records it left."""

    columns: dict[str, dict[str, list[Any]]]
    owner: dict[str, list[int]]
    rest: list[int]


def split_block(
    records: list[RawRecord], row_of: Callable[[dict[str, Any]], Any], table: str, columns: Sequence[str]
) -> BatchRows:
    """Run a format's fast-path ``row_of`` (a tuple in ``columns`` order, or None) over a block.

    Records it cannot vouch for (a parse error, not an object, None, or any exception) are left in
    ``rest`` for the format's per-record ``normalize``, which decides them and words the reason.
    """
    cols: dict[str, list[Any]] = {c: [] for c in columns}
    owner: list[int] = []
    rest: list[int] = []
    for i, raw in enumerate(records):
        row = None
        if not raw.error and type(raw.data) is dict:
            try:
                row = row_of(raw.data)
            except Exception:  # noqa: BLE001 - anything unexpected: normalize decides
                row = None
        if row is None:
            rest.append(i)
            continue
        owner.append(i)
        for name, value in zip(columns, row):
            cols[name].append(value)
    if not owner:
        return BatchRows({}, {}, rest)
    return BatchRows({table: cols}, {table: owner}, rest)


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
    """Text with the BOM stripped. An undecodable byte becomes a lone surrogate (``surrogateescape``)
    so one bad byte never stops a file: the reader that meets it quarantines that record only
    (``invalid_utf8``)."""
    raw = open_binary(path)
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")


_ESCAPED_BYTE_RE = re.compile("[\udc80-\udcff]")


def invalid_utf8(text: str) -> str | None:
    """Why ``text`` (decoded with ``surrogateescape``) is not valid UTF-8, or None when it is."""
    if text.isascii():
        return None
    m = _ESCAPED_BYTE_RE.search(text)
    if m is None:
        return None
    return f"invalid UTF-8: byte 0x{ord(m.group()) - 0xDC00:02X} at character {m.start() + 1} of the record"


def printable(text: str) -> str:
    """Text that can be stored and printed: escaped bytes and other lone surrogates become U+FFFD."""
    return text if text.isascii() else _SURROGATE_RE.sub("\ufffd", text)


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def storable_text(value: str) -> str:
    """What ``ingest.storable`` makes of a text value: no JWT (``tokens.scrub_jwts``), printable.
    For ``normalize_many`` fast paths, which hand the ingest finished rows."""
    if "eyJ" in value:
        from pipeline.tokens import scrub_jwts

        value = scrub_jwts(value)
    return value if value.isascii() else printable(value)


def read_head(path: Path, size: int = 256 * 1024) -> str:
    """The first ``size`` bytes as text, for sniffing. A truncated gzip yields what it has: the
    reader then keeps the whole records before the cut and quarantines the rest."""
    chunks: list[bytes] = []
    try:
        with open_binary(path) as fh:
            got = 0
            while got < size:
                try:
                    chunk = fh.read(min(16 * 1024, size - got))
                except EOFError:
                    if not chunks:
                        raise
                    break
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise UnreadableFile(f"{path}: cannot read: {exc}") from exc
    data = b"".join(chunks)
    if data.startswith(codecs.BOM_UTF8):
        data = data[3:]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # Windows PowerShell's Out-File and `>` write UTF-16: say so instead of "not recognized".
        raise UnreadableFile(f"{path}: UTF-16 text; save or export it as UTF-8 (e.g. Export-Csv -Encoding utf8)")
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
                except (json.JSONDecodeError, RecursionError) as exc:
                    too_deep = isinstance(exc, RecursionError)
                    if not too_deep and not eof and len(buf) - pos < MAX_RECORD_CHARS and fill():
                        continue  # element spans the chunk boundary
                    number += 1
                    # resync: next '{' at line start or after a comma
                    nxt = buf.find("\n{", pos + 1)
                    nxt2 = buf.find(",{", pos + 1)
                    cands = [c for c in (nxt, nxt2) if c >= 0]
                    stop = min(cands) + 1 if cands else len(buf)
                    text = buf[pos:stop]
                    reason = "JSON nested too deeply" if too_deep else f"malformed JSON: {_msg(exc)}"  # type: ignore[arg-type]
                    yield RawRecord(number, start_line, text, None, f"{reason} (line {start_line})")
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
                bad = invalid_utf8(text)
                yield RawRecord(number, start_line, text, None if bad else value, bad)
                break


def _msg(exc: json.JSONDecodeError) -> str:
    """The decoder's message without its dangling "at" ("Unterminated string starting at")."""
    return exc.msg.removesuffix(" at")


def iter_json_array(path: Path) -> Iterator[RawRecord]:
    return _iter_json_stream(path, skip_to_array=True)


def _ndjson_pieces(stripped: bytes) -> list[bytes]:
    """One line, or its pieces when a lone CR (classic Mac / mixed newlines) separates records.

    A raw CR can never sit inside a JSON string, so a line whose CR-separated pieces each parse
    is several records; otherwise the line stays whole (and is judged as one record).
    """
    if b"\r" not in stripped:
        return [stripped]
    pieces = [p.strip(b" \t\x00") for p in stripped.split(b"\r")]
    pieces = [p for p in pieces if p]
    if len(pieces) < 2:
        return pieces or [stripped]
    for piece in pieces:
        try:
            json.loads(piece.decode("utf-8").lstrip("\ufeff"))
        except (ValueError, RecursionError):
            return [stripped]
    return pieces


def iter_ndjson(path: Path) -> Iterator[RawRecord]:
    """One JSON value per line; each bad line is its own quarantined record."""
    with open_binary(path) as fh:
        yield from ndjson_records(enumerate(fh, start=1))


def ndjson_records(lines: Iterable[tuple[int, bytes]]) -> Iterator[RawRecord]:
    """``iter_ndjson`` over (line number, raw line) pairs; record numbers count from 1 here.

    Split out so the parallel ingest (``pipeline.ingest_parallel``) reads blocks of a file with
    exactly this code: its numbers are then offset by the records of the blocks before.
    """
    number = 0
    for line_no, raw in lines:
        if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[3:]
        stripped = raw.strip(b" \t\r\n\x00")
        if not stripped:
            continue
        for piece in _ndjson_pieces(stripped):
            number += 1
            try:
                text = piece.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RawRecord(
                    number, line_no, piece.decode("utf-8", "replace"), None,
                    f"invalid UTF-8: byte 0x{piece[exc.start]:02X} at byte {exc.start + 1} of the line",
                )
                continue
            if text.startswith("\ufeff"):
                text = text.lstrip("\ufeff")
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield RawRecord(number, line_no, text, None, f"malformed JSON: {_msg(exc)} at column {exc.colno}")
                continue
            except RecursionError:
                yield RawRecord(number, line_no, text, None, "JSON nested too deeply")
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
        reader = csv.reader(_without_bom(fh))
        header = csv_header(reader, path)
        if header is None:
            return
        for number, line, cells in csv_rows(reader):
            yield csv_record(number, line, cells, header)


@dataclass(frozen=True)
class CsvHeader:
    names: list[str]  # stripped, duplicates suffixed .1, .2
    stripped: list[str]  # the header cells stripped (to recognize a repeated header row)


def csv_header(reader: Any, path: Path) -> CsvHeader | None:
    """The header of a ``csv.reader`` (None for an empty file); an unreadable one is UnreadableFile."""
    try:
        header_cells = next(reader)
    except StopIteration:
        return None
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
    return CsvHeader(header, [c.strip() for c in header_cells])


def csv_rows(reader: Any) -> Iterator[tuple[int, int, list[str] | str]]:
    """(record number, line, cells) of the non-blank rows after the header; for a row the csv
    module cannot read, the cells are its error message (text). Cheap: the parallel ingest runs
    this in the parent and ``csv_record`` in the workers."""
    number = 0
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            number += 1
            yield number, line, f"malformed CSV row: {exc}"
            continue
        if not cells or all(not c.strip() for c in cells):
            continue
        number += 1
        yield number, line, cells


def csv_record(number: int, line: int, cells: list[str] | str, header: CsvHeader) -> RawRecord:
    """One CSV row as a RawRecord: header -> cell dict, or the reason it is not a record."""
    if isinstance(cells, str):
        return RawRecord(number, line, "", None, cells)
    text = _csv_text(cells)
    if "\x00" in text:
        return RawRecord(number, line, text.replace("\x00", "\\x00"), None, "NUL byte in CSV row")
    bad = invalid_utf8(text)
    if bad:
        return RawRecord(number, line, text, None, bad)
    if [c.strip() for c in cells] == header.stripped:
        return RawRecord(number, line, text, None, "repeated CSV header row (exports concatenated?); not a record")
    if len(cells) != len(header.names):
        return RawRecord(
            number, line, text, None,
            f"CSV row has {len(cells)} cells, header has {len(header.names)}",
        )
    return RawRecord(number, line, text, dict(zip(header.names, cells)), None)


def _without_bom(lines: Iterator[str]) -> Iterator[str]:
    """Lines with U+FEFF removed: a BOM mid-file (exports concatenated with `cat`) is not data."""
    for line in lines:
        yield line.replace("\ufeff", "") if "\ufeff" in line else line


_CSV_OUT = threading.local()


def _csv_text(cells: list[str]) -> str:
    """The row as CSV text (for quarantine); one writer per thread, reused (~3x cheaper per row)."""
    state = getattr(_CSV_OUT, "state", None)
    if state is None:
        buffer = io.StringIO()
        state = _CSV_OUT.state = (buffer, csv.writer(buffer, lineterminator=""))
    buffer, writer = state
    buffer.seek(0)
    buffer.truncate()
    writer.writerow(cells)
    return buffer.getvalue()


# ---------------------------------------------------------------------- sniffing
_LINE_END_RE = re.compile(r"\r\n|\r|\n")


def _binary(text: str) -> bool:
    """Binary data, not text with a stray NUL: a NUL in the first line or in over 1% of the head."""
    head = text[:4096]
    if "\x00" not in head:
        return False
    return "\x00" in _LINE_END_RE.split(head, 1)[0] or head.count("\x00") * 100 > len(head)


def _first_ndjson_object(path: Path, lines: int = 20, cap: int = 8 * 1024 * 1024) -> dict[str, Any] | None:
    """The first JSON-object line of a file whose first line does not fit the sniffing head (a
    1 MB token in a gateway log). Reads at most ``lines`` lines, skipping any longer than ``cap``."""
    try:
        with open_binary(path) as fh:
            for _ in range(lines):
                line = fh.readline(cap)
                if not line:
                    return None
                if not line.endswith(b"\n") and len(line) >= cap:
                    while (rest := fh.readline(cap)) and not rest.endswith(b"\n"):
                        pass  # skip the rest of an over-long line without holding it
                    continue
                try:
                    obj = json.loads(line.decode("utf-8").strip().lstrip("\ufeff") or "null")
                except (ValueError, RecursionError):
                    continue
                if isinstance(obj, dict):
                    return obj
    except (OSError, EOFError, zlib.error):
        return None
    return None


def sniff_container(path: Path) -> FileSample:
    """Find the container shape and the first record, reading only the head of the file."""
    head = read_head(path)
    text = head.lstrip(_WS)
    if not text:
        return FileSample(path, "empty")
    if _binary(text) and text[:1] not in "[{":
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
        except (json.JSONDecodeError, RecursionError):
            pass
        # The earliest `"value": [` / `"records": [` is the wrapper (records may contain "value" keys later).
        m = _WRAPPER_RE.search(text)
        if m:
            first = next(iter_json_array_from_text(text[m.end() - 1 :]), None)
            return FileSample(path, "json_wrapped", wrapper_key=m.group(1), first=first if isinstance(first, dict) else None)
        try:
            obj = json.loads(text)
            return FileSample(path, "ndjson", first=obj if isinstance(obj, dict) else None)
        except (json.JSONDecodeError, RecursionError):
            # a single (possibly pretty-printed) object, or NDJSON whose first line is huge
            try:
                obj, _ = json.JSONDecoder().raw_decode(text)
                return FileSample(path, "ndjson", first=obj if isinstance(obj, dict) else None)
            except (json.JSONDecodeError, RecursionError):
                return FileSample(path, "ndjson", first=_first_ndjson_object(path))
    # CSV: header line (CRLF, LF or a lone CR ends it)
    first_line = _LINE_END_RE.split(text, 1)[0]
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
        except (json.JSONDecodeError, RecursionError):
            return
        yield value
