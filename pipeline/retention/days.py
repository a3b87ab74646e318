"""Dates of the retention report: parsing ``--as-of`` / ``--incident`` and walking days.

Everything in the report is by UTC day (the lake's ``event_date`` partition), so every value that
comes in (a date, an ISO datetime, a DuckDB timestamp) is reduced to its UTC day here, and a bad
value becomes a ``RetentionInputError`` that says what was expected.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable


class RetentionInputError(ValueError):
    """A bad --incident / --as-of value; the message says what was expected."""


def to_day(value: Any) -> date | None:
    """The UTC day of a date, datetime (aware ones converted to UTC) or ISO text."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value.astimezone(timezone.utc) if value.tzinfo else value).date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def parse_day(text: str | date | datetime | None, what: str = "date") -> date | None:
    """A YYYY-MM-DD (or ISO datetime, taken as its UTC day)."""
    if text is None or isinstance(text, (date, datetime)):
        return to_day(text)
    try:
        if len(text.strip()) <= 10:
            return date.fromisoformat(text.strip())
        return to_day(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
    except ValueError:
        raise RetentionInputError(f"{what} {text!r} is not a date (YYYY-MM-DD or an ISO datetime)") from None


def parse_window(text: str | tuple | None) -> tuple[date, date] | None:
    """``START..END`` (dates or ISO datetimes, both inclusive) -> (start, end)."""
    if text is None:
        return None
    if isinstance(text, tuple):
        start, end = (parse_day(v, "incident bound") for v in text)
    else:
        if ".." not in text:
            raise RetentionInputError(f"incident window {text!r} must be START..END, e.g. 2023-05-15..2023-06-16")
        a, b = text.split("..", 1)
        start, end = parse_day(a, "incident start"), parse_day(b, "incident end")
    if start is None or end is None:
        raise RetentionInputError("incident window needs both a start and an end")
    if end < start:
        raise RetentionInputError(f"incident window ends ({end}) before it starts ({start})")
    return start, end


def each_day(start: date, end: date) -> Iterable[date]:
    """Every day from ``start`` to ``end``, both included."""
    d = start
    while d <= end:
        yield d
        d += timedelta(days=1)


def runs(days: Iterable[date]) -> list[tuple[date, date]]:
    """Consecutive days -> (first, last) runs."""
    out: list[tuple[date, date]] = []
    for d in sorted(days):
        if out and d == out[-1][1] + timedelta(days=1):
            out[-1] = (out[-1][0], d)
        else:
            out.append((d, d))
    return out
