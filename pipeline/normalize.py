"""Value normalizers shared by every source: times, IPs, booleans, integers, token ids, `extra`.

Each one takes what an export holds (often a string in some locale) and returns the canonical
Python value, or raises ``BadValue`` with a reason that goes into the quarantine row.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable


class BadValue(ValueError):
    """A field holds a value that cannot be normalized; the message is the quarantine reason."""


_ISO_RE = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)"
    r"(?:[.,](?P<frac>\d+))?\s*(?P<tz>Z|z|[+-]\d{2}:?\d{2}|UTC)?$"
)
# US-style locale formats written by the Purview portal, Log Analytics portal CSV and
# Search-UnifiedAuditLog on en-US hosts: "9/20/2023 4:05:03 AM", "6/15/2026, 12:40:24.178 PM".
_LOCALE_RE = re.compile(
    r"^(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4}),?\s+(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<frac>\d+))?)?"
    r"\s*(?P<ampm>AM|PM|am|pm)?(?:\s*(?P<tz>[+-]\d{2}:?\d{2}))?$"
)


def _tz_offset(tz: str | None) -> timezone:
    if not tz or tz in ("Z", "z", "UTC"):
        return timezone.utc
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    from datetime import timedelta

    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _utc_iso(m: re.Match[str], frac: str) -> datetime | None:
    """The datetime of an ISO match in UTC with every field in range, built directly; else None.

    Why: ``strptime`` + ``replace`` + ``astimezone`` cost ~15 us a value and every record has a
    time. This gives the same datetime for exactly the values that path accepts without error
    (anything else, and other zones, go through it for its messages).
    """
    tz = m.group("tz")
    if tz is not None and tz not in ("Z", "z", "UTC"):
        return None
    date, clock = m.group("date"), m.group("time")
    if not (date.isascii() and clock.isascii()):  # other Unicode digits: strptime decides
        return None
    year, month, day = int(date[:4]), int(date[5:7]), int(date[8:10])
    hour, minute = int(clock[:2]), int(clock[3:5])
    second = int(clock[6:8]) if len(clock) == 8 else 0
    if not (year >= 1 and 1 <= month <= 12 and hour <= 23 and minute <= 59 and second <= 59 and day >= 1):
        return None
    limit = 29 if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else _DAYS_IN_MONTH[month]
    if day > limit:
        return None
    return datetime(year, month, day, hour, minute, second, int(frac), tzinfo=timezone.utc)


def parse_time(value: Any, *, day_first: bool = False) -> datetime | None:
    """Parse an event time to an aware UTC datetime (microsecond precision).

    Accepts ISO 8601 with or without Z/offset (naive means UTC, as UAL writes it), 1-9
    fractional digits, epoch seconds/milliseconds, and the US locale formats of portal CSVs.
    ``day_first`` reads D/M/Y locale dates (en-AU/en-GB hosts). Empty means None.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, bool):
        raise BadValue(f"time {value!r} is not a timestamp")
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError) as exc:
            raise BadValue(f"time {value!r} is out of range") from exc
    text = str(value).strip()
    if not text:
        return None
    m = _ISO_RE.match(text)
    try:
        if m:
            frac = (m.group("frac") or "0")[:6].ljust(6, "0")
            fast = _utc_iso(m, frac)
            if fast is not None:
                return fast
            hms = m.group("time") if m.group("time").count(":") == 2 else m.group("time") + ":00"
            base = datetime.strptime(f"{m.group('date')}T{hms}", "%Y-%m-%dT%H:%M:%S")
            return base.replace(microsecond=int(frac), tzinfo=_tz_offset(m.group("tz"))).astimezone(timezone.utc)
        m = _LOCALE_RE.match(text)
        if m:
            month, day = (int(m.group("d")), int(m.group("m"))) if day_first else (int(m.group("m")), int(m.group("d")))
            hour = int(m.group("H"))
            if m.group("ampm"):
                if not 1 <= hour <= 12:
                    raise BadValue(f"time {text!r} has hour {hour} with AM/PM")
                hour = hour % 12 + (12 if m.group("ampm").upper() == "PM" else 0)
            frac = (m.group("frac") or "0")[:6].ljust(6, "0")
            return datetime(
                int(m.group("y")), month, day, hour, int(m.group("M")), int(m.group("S") or 0), int(frac),
                tzinfo=_tz_offset(m.group("tz")),
            ).astimezone(timezone.utc)
    except ValueError as exc:  # impossible dates such as 2023-02-30
        raise BadValue(f"time {text!r} is not a valid date/time: {exc}") from exc
    except OverflowError as exc:  # 9999-12-31T23:59:59-01:00 is in year 10000 in UTC
        raise BadValue(f"time {text!r} is out of range in UTC") from exc
    raise BadValue(f"time {text!r} is in no known format")


def normalize_ip(value: Any) -> str | None:
    """Canonical IP text: port, brackets, zone and the ``::ffff:`` IPv4 mapping stripped."""
    if value is None:
        return None
    text = str(value).strip()
    if not text or text in ("-", "null", "None"):
        return None
    if text.startswith("["):  # [v6]:port or [v4]:port
        end = text.find("]")
        if end < 0:
            raise BadValue(f"IP {text!r} has an unclosed bracket")
        text = text[1:end]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]
    if CANONICAL_IPV4_RE.fullmatch(text):  # the common case, printed back unchanged by ipaddress
        return text
    try:
        ip = ipaddress.ip_address(text)
    except ValueError as exc:
        raise BadValue(f"IP {value!r:.80} is not an IP address") from exc
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip)


_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def to_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadValue(f"boolean {value!r:.60} is neither true nor false")


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def to_int(value: Any) -> int | None:
    """An integer column value (int64: what Parquet, DuckDB and Spark store); raises BadValue."""
    number = _to_int(value)
    if number is not None and not _INT64_MIN <= number <= _INT64_MAX:
        raise BadValue(f"integer {value!r:.40} is outside the 64-bit integer range")
    return number


def _to_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")) or not value.is_integer():
            raise BadValue(f"integer {value!r} is not a whole number")
        return int(value)
    text = str(value).strip()
    if len(text) > 40:  # int("9" * 5000) is slow and not a log value
        raise BadValue(f"integer {text[:40]!r}... is {len(text)} characters long")
    try:
        return int(text)
    except ValueError:
        try:
            as_float = float(text)
        except ValueError as exc:
            raise BadValue(f"integer {value!r:.60} is not a number") from exc
        if as_float != as_float or as_float in (float("inf"), float("-inf")) or not as_float.is_integer():
            raise BadValue(f"integer {value!r:.60} is not a whole number")
        return int(as_float)


def to_text(value: Any) -> str | None:
    """Plain text, or None for null/empty. Structures become compact JSON."""
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    text = str(value).strip()
    return text or None


def lower(value: Any) -> str | None:
    text = to_text(value)
    return text.lower() if text else None


_CANONICAL_GUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Dotted-quad IPv4 exactly as ipaddress prints it (no leading zeros, octets <= 255, ASCII digits).
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
CANONICAL_IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def guid(value: Any) -> str | None:
    """A GUID in canonical lower-case form, or None; non-GUID text raises."""
    text = to_text(value)
    if text is None:
        return None
    if _CANONICAL_GUID_RE.fullmatch(text):  # already canonical: what str(uuid.UUID(...)) returns
        return text
    try:
        return str(uuid.UUID(text.strip("{}")))
    except ValueError as exc:
        raise BadValue(f"{text!r:.80} is not a GUID") from exc


def unique_token_id_from_request_id(request_id: str) -> str:
    """Entra's uniqueTokenIdentifier: base64url without padding of the request GUID's little-endian bytes.

    Checked on all 522 real Graph records in shared/realdata (formats.md section 0.2).
    """
    raw = uuid.UUID(request_id).bytes_le
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def maybe_json(value: Any) -> Any:
    """Log Analytics and OfficeActivity serialize nested columns as JSON strings; parse those."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("{", "[") and text[-1:] in ("}", "]"):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return value
    return value


def name_value_list(value: Any) -> dict[str, Any]:
    """``[{"Name": k, "Value": v}, ...]`` (OperationProperties, DeviceProperties) as a dict."""
    value = maybe_json(value)
    out: dict[str, Any] = {}
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                key = item.get("Name", item.get("name", item.get("key")))
                if key is not None:
                    out[str(key)] = item.get("Value", item.get("value"))
    elif isinstance(value, dict):
        out.update(value)
    return out


def extra_json(record: dict[str, Any], mapped: Iterable[str]) -> str | None:
    """JSON text of the record's fields that no column took, so hunts can still reach them."""
    skip = mapped if isinstance(mapped, (set, frozenset)) else set(mapped)
    # `v or ...`: a truthy JSON value is never one of the empties, so most values skip the comparisons
    rest = {k: v for k, v in record.items() if k not in skip and (v or v not in (None, "", [], {}))}
    if not rest:
        return None
    return json.dumps(rest, separators=(",", ":"), ensure_ascii=False, default=str, sort_keys=True)


def first(record: dict[str, Any], *names: str) -> Any:
    """The first present, non-empty value among ``names`` (exports spell one field many ways)."""
    for name in names:
        value = record.get(name)
        if value not in (None, "", [], {}):
            return value
    return None
