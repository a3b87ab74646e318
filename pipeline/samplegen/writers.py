"""Output plumbing: export time formats, PowerShell-style JSON, and streaming per-file writers.

Why a day buffer: records are produced one simulated day at a time, sorted by event time within the
buffer, and flushed up to the next midnight, so memory holds about a day of records whatever the
scale, and every file is in time order.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)


# --------------------------------------------------------------------------- time formats (formats.md 7)
def micros(dt: datetime) -> int:
    return (dt - _EPOCH) // _ONE_US


def iso_z(dt: datetime) -> str:
    """Graph: ``2026-11-02T08:15:01Z``."""
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}Z"


def iso_ms_z(dt: datetime) -> str:
    """Gateway and Log Analytics JSON: ``2026-11-02T08:15:01.123Z``."""
    return f"{iso_z(dt)[:-1]}.{dt.microsecond // 1000:03d}Z"


def ual(dt: datetime) -> str:
    """UAL CreationTime / IssuedAtTime: ``2026-11-02T08:15:01``, no Z (UTC implied)."""
    return iso_z(dt)[:-1]


def iso_7z(dt: datetime) -> str:
    """OfficeActivity IssuedAtTime: ``2026-11-02T08:15:01.0000000Z``."""
    return f"{iso_z(dt)[:-1]}.{dt.microsecond:06d}0Z"


def iso_7_offset(dt: datetime) -> str:
    """Event Hub properties.createdDateTime: ``2026-11-02T08:15:01.1234560+00:00``."""
    return f"{iso_z(dt)[:-1]}.{dt.microsecond:06d}0+00:00"


def _h12(dt: datetime) -> tuple[int, str]:
    h = dt.hour % 12 or 12
    return h, "AM" if dt.hour < 12 else "PM"


def la_csv_time(dt: datetime) -> str:
    """Log Analytics portal CSV: ``11/2/2026, 8:15:01.123 AM`` (always 3 fractional digits)."""
    h, ampm = _h12(dt)
    return f"{dt.month}/{dt.day}/{dt.year}, {h}:{dt.minute:02d}:{dt.second:02d}.{dt.microsecond // 1000:03d} {ampm}"


def purview_time(dt: datetime) -> str:
    """Purview CSV CreationDate: ``11/2/2026 8:15:01 AM``."""
    h, ampm = _h12(dt)
    return f"{dt.month}/{dt.day}/{dt.year} {h}:{dt.minute:02d}:{dt.second:02d} {ampm}"


# --------------------------------------------------------------------------- JSON dialects
def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def ual_json(value: Any) -> str:
    """AuditData as the Purview portal writes it: compact, with ``/`` escaped as ``\\/``."""
    return json.dumps(value, separators=(",", ":")).replace("/", "\\/")


def ms_json_line(value: Any) -> str:
    """Azure's JSON writers escape ``<`` and ``>`` (``\\u003c``); both only occur inside strings."""
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")


_PAD = [" " * i for i in range(256)]


def _ps_str(value: str) -> str:
    # Windows PowerShell 5.1 ConvertTo-Json (JavaScriptSerializer) escapes ' < > & as \uXXXX
    text = json.dumps(value, ensure_ascii=False)
    if "'" in text or "<" in text or ">" in text or "&" in text:
        text = (text.replace("'", "\\u0027").replace("<", "\\u003c").replace(">", "\\u003e")
                .replace("&", "\\u0026"))
    return text


def ps_json(value: Any, col: int = 0) -> str:
    """Windows PowerShell ``ConvertTo-Json`` layout (as Microsoft-Extractor-Suite writes it).

    ``"key":  value`` with two spaces; a nested object or array is indented from the column where
    it opens; an empty array is ``[`` blank line ``]``. ``col`` is the column of the opening brace.
    """
    if isinstance(value, str):
        return _ps_str(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return repr(value)
    pad = _PAD[col + 4]
    if isinstance(value, dict):
        if not value:
            return "{\n\n" + _PAD[col] + "}"
        parts = []
        for key, item in value.items():
            prefix = f'{pad}"{key}":  '
            parts.append(prefix + ps_json(item, len(prefix)))
        return "{\n" + ",\n".join(parts) + "\n" + _PAD[col] + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[\n\n" + _PAD[col] + "]"
        return "[\n" + ",\n".join(pad + ps_json(item, col + 4) for item in value) + "\n" + _PAD[col] + "]"
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


_CSV_BUF = io.StringIO()
_CSV_WRITER = csv.writer(_CSV_BUF, lineterminator="\r\n")


def csv_row(cells: list[Any]) -> str:
    """One CSV row (minimal quoting, ``""`` escaping, CRLF), as text."""
    _CSV_BUF.seek(0)
    _CSV_BUF.truncate()
    _CSV_WRITER.writerow(cells)
    return _CSV_BUF.getvalue()


# --------------------------------------------------------------------------- streaming writers
@dataclass
class Planted:
    """A deliberately bad record: what it is and what the ingest should say about it."""

    kind: str
    expected: str
    handling: str = "quarantine"  # what the ingest should do: quarantine, or keep with a token parse error


@dataclass
class StreamWriter:
    """One output file. ``add`` buffers; ``flush_until`` writes everything older than a limit, sorted."""

    path: Path
    rel: str
    fmt: str  # ps_json_array, csv, ndjson
    description: str
    header: str = ""  # CSV header line (with terminator)
    records: int = 0
    first_event: datetime | None = None
    last_event: datetime | None = None
    planted: list[dict[str, Any]] = field(default_factory=list)
    _buf: list[tuple[int, int, str, datetime | None, Planted | None]] = field(default_factory=list)
    _seq: int = 0
    _line: int = 1
    _fh: Any = None

    def open(self) -> "StreamWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", encoding="utf-8", newline="")
        if self.fmt == "ps_json_array":
            self._fh.write("\ufeff[\n")
            self._line = 2
        elif self.fmt == "csv":
            self._fh.write(self.header)
            self._line = 1 + self.header.count("\n")
        return self

    def add(self, when: datetime, text: str, planted: Planted | None = None, *, event_time: datetime | None = None) -> None:
        """Queue ``text`` to be written in time order at ``when``; ``event_time`` feeds the reach (default ``when``)."""
        self._seq += 1
        self._buf.append((micros(when), self._seq, text, event_time or when, planted))

    def flush_until(self, limit: datetime | None) -> None:
        if not self._buf:
            return
        self._buf.sort(key=lambda e: (e[0], e[1]))
        if limit is None:
            ready, self._buf = self._buf, []
        else:
            cut = micros(limit)
            idx = next((i for i, e in enumerate(self._buf) if e[0] >= cut), len(self._buf))
            ready, self._buf = self._buf[:idx], self._buf[idx:]
        fh = self._fh
        for _, _, text, event_time, planted in ready:
            if self.fmt == "ps_json_array":
                if self.records:
                    fh.write(",\n")
                    self._line += 1
                start = self._line
                fh.write(text)
                self._line += text.count("\n")
            else:
                start = self._line
                if self.fmt == "ndjson":
                    text += "\n"
                fh.write(text)
                self._line += text.count("\n")
            self.records += 1
            if planted is not None:
                self.planted.append({"file": self.rel, "record": self.records, "line": start,
                                     "kind": planted.kind, "expected": planted.expected, "handling": planted.handling})
            elif event_time is not None:
                if self.first_event is None or event_time < self.first_event:
                    self.first_event = event_time
                if self.last_event is None or event_time > self.last_event:
                    self.last_event = event_time

    def close(self) -> None:
        self.flush_until(None)
        if self.fmt == "ps_json_array":
            self._fh.write("\n]\n" if self.records else "]\n")
        self._fh.close()
