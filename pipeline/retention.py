"""Retention-gap report: would the lake let a team answer an incident, before the incident happens?

Storm-0558 is the reason: Microsoft could not confirm how its key was stolen "due to log retention
policies"; customers without premium licences had no MailItemsAccessed history to search; the
stolen key had expired two years before it was used. For every log source (each lake table, each
sign-in type, each mail operation) this module measures what the lake holds (reach, gaps, volume),
judges it against a policy (``pipeline.retention_policy``), says when data not yet copied will
vanish at the source, how much of an incident window and of every compromised or retired key's
windows each source covers, whether MailItemsAccessed auditing is complete, and which detections
are blind because their tables or lookback are not covered.

Computation is pure functions over a DuckDB connection whose views carry the logical table names
(``pipeline.engines.duckdb.connect``); rendering lives in ``pipeline.retention_report``.
Everything is by UTC day (the lake's ``event_date`` partition).
"""

from __future__ import annotations

import statistics
import tomllib
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

from pipeline.retention_policy import LOG_TABLES, SUBSOURCE_COLUMN, Policy, PolicyError, SourceRule, load_policy

# Exit codes of `tokenhunt retention` (documented in the README and the command's help).
EXIT_OK = 0
EXIT_WARNINGS = 20
EXIT_VIOLATIONS = 21

LEVELS = ("ok", "warn", "violation")
CONSUMER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
REFERENCE_TABLES = ("signing_keys", "indicators")  # not time series: covered when not empty
AUTO_DAILY_SHARE = 0.5  # gap_check "auto": judge gaps only when the source has events on half its days
NORMAL_WINDOW = 28  # days with events the "normal volume" median looks back over
NORMAL_MIN_HISTORY = 7  # fewer days of history than this: no volume judgement yet
MIA_THROTTLE_RECORDS = 1000  # MailItemsAccessed records per mailbox and day that trigger throttling
MAX_LISTED = 50  # rows listed per mail-audit table (the counts are always complete)
KID_SOURCES = ("token_events",)  # sources that record the kid of the token used: direct evidence
ISSUANCE_SOURCES = ("signins",)  # the issuance record that proves a token was minted by Entra


class RetentionInputError(ValueError):
    """A bad --incident / --as-of value; the message says what was expected."""


# --------------------------------------------------------------------------- small helpers
def _day(value: Any) -> date | None:
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
        return _day(text)
    try:
        if len(text.strip()) <= 10:
            return date.fromisoformat(text.strip())
        return _day(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
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


def _days(start: date, end: date) -> Iterable[date]:
    d = start
    while d <= end:
        yield d
        d += timedelta(days=1)


def _runs(days: Iterable[date]) -> list[tuple[date, date]]:
    """Consecutive days -> (first, last) runs."""
    out: list[tuple[date, date]] = []
    for d in sorted(days):
        if out and d == out[-1][1] + timedelta(days=1):
            out[-1] = (out[-1][0], d)
        else:
            out.append((d, d))
    return out


def _n(value: float) -> str:
    return f"{value:,.0f}"


# --------------------------------------------------------------------------- result types
@dataclass
class Reason:
    level: str  # ok (a note), warn, violation
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level, "text": self.text}


def _worst(levels: Iterable[str]) -> str:
    return max(levels, key=LEVELS.index, default="ok")


@dataclass
class Gap:
    start: date
    end: date
    kind: str  # missing (no events) | low_volume (far under the source's own normal)
    events: int = 0
    normal: float | None = None  # the median it was compared with (low_volume)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "days": self.days,
            "kind": self.kind,
            "events": self.events,
            "normal_per_day": round(self.normal, 1) if self.normal is not None else None,
        }


@dataclass
class SourceResult:
    source: str  # signins, signins.interactive, mail_events.MailItemsAccessed, ...
    table: str
    kind: str  # table | sign_in_type | operation
    rule: SourceRule
    as_of: date
    must_exist: bool = False  # the policy requires events here at all (table judged, or a required value)
    daily: dict[date, int] = field(repr=False, default_factory=dict)
    events: int = 0
    earliest: date | None = None
    latest: date | None = None
    days_covered: int = 0
    gap_mode: str = "off"  # daily (gaps judged) | sparse (auto, too few days with events) | off
    gaps: list[Gap] = field(default_factory=list)
    spans: list[tuple[date, date]] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)

    @property
    def span_days(self) -> int:
        return (self.latest - self.earliest).days + 1 if self.earliest and self.latest else 0

    @property
    def reach_days(self) -> int | None:
        """How many days back from the report date the oldest event lies."""
        return (self.as_of - self.earliest).days if self.earliest else None

    @property
    def staleness_days(self) -> int | None:
        return (self.as_of - self.latest).days if self.latest else None

    @property
    def events_per_day(self) -> float:
        return self.events / self.days_covered if self.days_covered else 0.0

    @property
    def median_per_day(self) -> float:
        return float(statistics.median(self.daily.values())) if self.daily else 0.0

    @property
    def required_window(self) -> tuple[date, date] | None:
        """[as_of - required_days, as_of - 1]: what "reaches back N days" must cover."""
        if self.rule.required_days <= 0:
            return None
        return self.as_of - timedelta(days=self.rule.required_days), self.as_of - timedelta(days=1)

    @property
    def required_window_share(self) -> float | None:
        window = self.required_window
        if window is None:
            return None
        covered = sum(1 for d in self.daily if window[0] <= d <= window[1])
        return covered / self.rule.required_days

    @property
    def verdict(self) -> str:
        return _worst(r.level for r in self.reasons)

    def to_dict(self) -> dict[str, Any]:
        window = self.required_window
        share = self.required_window_share
        return {
            "source": self.source,
            "table": self.table,
            "kind": self.kind,
            "verdict": self.verdict,
            "must_exist": self.must_exist,
            "reasons": [r.to_dict() for r in self.reasons],
            "events": self.events,
            "earliest": self.earliest.isoformat() if self.earliest else None,
            "latest": self.latest.isoformat() if self.latest else None,
            "span_days": self.span_days,
            "days_covered": self.days_covered,
            "reach_days": self.reach_days,
            "staleness_days": self.staleness_days,
            "events_per_day": round(self.events_per_day, 1),
            "median_per_day": round(self.median_per_day, 1),
            "gap_mode": self.gap_mode,
            "gaps": [g.to_dict() for g in self.gaps],
            "spans": [[a.isoformat(), b.isoformat()] for a, b in self.spans],
            "policy": {
                "listed": self.rule.listed,
                "required_days": self.rule.required_days,
                "required_window": [window[0].isoformat(), window[1].isoformat()] if window else None,
                "required_window_share": round(share, 4) if share is not None else None,
                "max_gap_days": self.rule.max_gap_days,
                "gap_check": self.rule.gap_check,
                "tier": self.rule.tier,
                "source_retention_days": self.rule.source_retention_days,
                "required_values": list(self.rule.required_values),
            },
        }


@dataclass
class WindowCoverage:
    source: str
    window_days: int
    covered_days: int
    answerable_from: date | None  # from here to the window end the source is continuous
    spans: list[tuple[date, date]]

    @property
    def share(self) -> float | None:
        return self.covered_days / self.window_days if self.window_days else None

    def to_dict(self) -> dict[str, Any]:
        share = self.share
        return {
            "source": self.source,
            "window_days": self.window_days,
            "covered_days": self.covered_days,
            "share": round(share, 4) if share is not None else None,
            "answerable_from": self.answerable_from.isoformat() if self.answerable_from else None,
            "spans": [[a.isoformat(), b.isoformat()] for a, b in self.spans],
        }


@dataclass
class ForensicWindow:
    """An incident window, or one window of a compromised / retired signing key."""

    label: str
    kind: str  # incident | key_certificate | key_published | key_indicator | key_exposure
    start: date
    end: date
    kid: str | None = None
    key_status: str | None = None
    note: str = ""
    coverage: list[WindowCoverage] = field(default_factory=list)

    def _from(self, sources: tuple[str, ...]) -> date | None:
        dates = []
        for cov in self.coverage:
            if cov.source in sources:
                if cov.answerable_from is None:
                    return None
                dates.append(cov.answerable_from)
        return max(dates) if len(dates) == len(sources) else None

    @property
    def confirm_from(self) -> date | None:
        """Earliest day from which a token used in this window would be in a kid-bearing log."""
        return self._from(KID_SOURCES)

    @property
    def rule_out_from(self) -> date | None:
        """Earliest day from which use could be ruled out: token logs plus the sign-ins proving issuance."""
        return self._from(KID_SOURCES + ISSUANCE_SOURCES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind,
            "kid": self.kid,
            "key_status": self.key_status,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "days": (self.end - self.start).days + 1,
            "note": self.note,
            "confirm_from": self.confirm_from.isoformat() if self.confirm_from else None,
            "rule_out_from": self.rule_out_from.isoformat() if self.rule_out_from else None,
            "coverage": [c.to_dict() for c in self.coverage],
        }


@dataclass
class MailAudit:
    throttled: list[dict[str, Any]] = field(default_factory=list)  # mailboxes with IsThrottled records
    throttled_total: int = 0
    heavy_days: list[dict[str, Any]] = field(default_factory=list)  # mailbox-days at the 1,000-record threshold
    heavy_days_total: int = 0
    tenants: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)

    @property
    def tenants_without_mail_items_accessed(self) -> list[str]:
        return [t["tenant"] for t in self.tenants if not t["mail_items_accessed"]]

    @property
    def verdict(self) -> str:
        return _worst(r.level for r in self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reasons": [r.to_dict() for r in self.reasons],
            "throttled_mailboxes": self.throttled,
            "throttled_mailboxes_total": self.throttled_total,
            "threshold_mailbox_days": self.heavy_days,
            "threshold_mailbox_days_total": self.heavy_days_total,
            "tenants": self.tenants,
            "tenants_without_mail_items_accessed": self.tenants_without_mail_items_accessed,
        }


@dataclass
class DetectionMeta:
    id: str
    title: str
    requires: list[str]
    lookback_days: int
    path: str | None = None


@dataclass
class DetectionCoverage:
    meta: DetectionMeta
    status: str  # covered | partial | blind
    reasons: list[Reason] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.meta.id,
            "title": self.meta.title,
            "requires": self.meta.requires,
            "lookback_days": self.meta.lookback_days,
            "status": self.status,
            "reasons": [r.to_dict() for r in self.reasons],
        }


@dataclass
class Finding:
    """One line of the report's verdict: what, where, how bad."""

    level: str
    area: str  # source | mail_audit | detection | incident
    subject: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level, "area": self.area, "subject": self.subject, "text": self.text}


@dataclass
class RetentionReport:
    as_of: date
    lake: str
    policy: Policy
    sources: list[SourceResult]
    windows: list[ForensicWindow]
    mail_audit: MailAudit
    detections: list[DetectionCoverage]
    incident: tuple[date, date] | None = None
    notes: list[str] = field(default_factory=list)
    incident_reasons: list[Reason] = field(default_factory=list)

    def source(self, name: str) -> SourceResult:
        for s in self.sources:
            if s.source == name:
                return s
        raise KeyError(f"no source {name!r} in the report; sources: {', '.join(s.source for s in self.sources)}")

    @property
    def findings(self) -> list[Finding]:
        out = [Finding(r.level, "source", s.source, r.text) for s in self.sources for r in s.reasons if r.level != "ok"]
        out += [Finding(r.level, "mail_audit", "MailItemsAccessed", r.text) for r in self.mail_audit.reasons if r.level != "ok"]
        out += [Finding(r.level, "detection", d.meta.id, r.text) for d in self.detections for r in d.reasons if r.level != "ok"]
        out += [Finding(r.level, "incident", "incident window", r.text) for r in self.incident_reasons if r.level != "ok"]
        return sorted(out, key=lambda f: -LEVELS.index(f.level))

    @property
    def status(self) -> str:
        return _worst(f.level for f in self.findings)

    @property
    def exit_code(self) -> int:
        return {"ok": EXIT_OK, "warn": EXIT_WARNINGS, "violation": EXIT_VIOLATIONS}[self.status]

    def counts(self) -> dict[str, int]:
        findings = self.findings
        return {level: sum(1 for f in findings if f.level == level) for level in ("warn", "violation")}

    def to_dict(self) -> dict[str, Any]:
        return {
            "report": "tokenhunt retention",
            "as_of": self.as_of.isoformat(),
            "lake": self.lake,
            "status": self.status,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "policy": self.policy.to_dict(),
            "incident": [self.incident[0].isoformat(), self.incident[1].isoformat()] if self.incident else None,
            "findings": [f.to_dict() for f in self.findings],
            "sources": [s.to_dict() for s in self.sources],
            "windows": [w.to_dict() for w in self.windows],
            "mail_audit": self.mail_audit.to_dict(),
            "detections": [d.to_dict() for d in self.detections],
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        from pipeline.retention_report import to_markdown

        return to_markdown(self)

    def to_html(self) -> str:
        from pipeline.retention_report import to_html

        return to_html(self)

    def to_text(self, width: int = 120) -> str:
        from pipeline.retention_report import to_text

        return to_text(self, width)


# --------------------------------------------------------------------------- per-source analysis (pure)
def find_gaps(daily: dict[date, int], rule: SourceRule) -> list[Gap]:
    """Days without events between the first and last event, and days far under the normal volume.

    The normal is the median of the previous NORMAL_WINDOW days that had events (so a source that
    grows is compared with its recent self); the last day is never called low (usually partial).
    """
    if not daily:
        return []
    first, last = min(daily), max(daily)
    missing = [d for d in _days(first, last) if not daily.get(d)]
    gaps = [Gap(a, b, "missing") for a, b in _runs(missing)]
    if rule.low_volume_ratio > 0:
        history: deque[int] = deque(maxlen=NORMAL_WINDOW)
        low: dict[date, tuple[int, float]] = {}
        for d in sorted(daily):
            count = daily[d]
            if count <= 0:
                continue
            if d != last and len(history) >= NORMAL_MIN_HISTORY:
                normal = float(statistics.median(history))
                if normal >= rule.min_normal_per_day and count < rule.low_volume_ratio * normal:
                    low[d] = (count, normal)
                    continue  # a bad day does not lower the normal
            history.append(count)
        for a, b in _runs(low):
            days = [d for d in _days(a, b)]
            gaps.append(Gap(a, b, "low_volume", sum(low[d][0] for d in days), statistics.median(low[d][1] for d in days)))
    return sorted(gaps, key=lambda g: g.start)


def analyze_source(
    source: str, table: str, kind: str, daily: dict[date, int], rule: SourceRule, as_of: date, must_exist: bool
) -> SourceResult:
    """Reach, gaps and verdict of one source from its events per day."""
    daily = {d: n for d, n in daily.items() if n > 0 and d <= as_of}
    res = SourceResult(source=source, table=table, kind=kind, rule=rule, as_of=as_of, must_exist=must_exist, daily=daily)
    res.events = sum(daily.values())
    res.days_covered = len(daily)
    res.spans = _runs(daily)
    if not daily:
        res.reasons.append(_empty_reason(res))
        return res
    res.earliest, res.latest = min(daily), max(daily)
    if rule.gap_check == "never":
        res.gap_mode = "off"
    elif rule.gap_check == "always" or res.days_covered / res.span_days >= AUTO_DAILY_SHARE:
        res.gap_mode = "daily"
        res.gaps = find_gaps(daily, rule)
    else:
        res.gap_mode = "sparse"
    if not rule.judged:
        if not rule.listed:
            res.reasons.append(Reason("ok", f"{source} is not in the policy: reported, not judged"))
        return res
    res.reasons += _reach_reasons(res) + _gap_reasons(res) + _freshness_reasons(res)
    if not res.reasons:
        share = res.required_window_share or 0
        res.reasons.append(
            Reason("ok", f"{source} reaches back {res.reach_days} days (policy {rule.required_days}); {share:.0%} of those days have events")
        )
    return res


def _at_source(rule: SourceRule) -> str:
    return f"the source ({rule.tier or 'source_retention_days'}) keeps {rule.source_retention_days} days"


def _empty_reason(res: SourceResult) -> Reason:
    rule = res.rule
    if not res.must_exist:
        return Reason("ok", f"{res.source} has no events (not required to be present)")
    text = f"{res.source} has no events; policy requires it"
    text += f" for {rule.required_days} days" if rule.required_days else " to be present"
    if rule.source_retention_days:
        text += f"; {_at_source(rule)}: export them now"
    return Reason("violation", text)


def _reach_reasons(res: SourceResult) -> list[Reason]:
    rule, reach = res.rule, res.reach_days or 0
    if reach >= rule.required_days:
        return []
    text = f"{res.source} reaches back {reach} days (earliest event {res.earliest}); policy requires {rule.required_days}"
    ret = rule.source_retention_days
    if ret and ret > reach:
        back = res.as_of - timedelta(days=min(ret, rule.required_days))
        text += f"; {_at_source(rule)} and still holds events from {back}: backfill them now"
    return [Reason("violation", text)]


def _gap_reasons(res: SourceResult, listed: int = 5) -> list[Reason]:
    """Gaps overlapping the required window: long missing runs violate, low volume warns."""
    rule, window = res.rule, res.required_window
    relevant = [g for g in res.gaps if window and g.end >= window[0]]
    out: list[Reason] = []
    missing = [g for g in relevant if g.kind == "missing" and g.days > rule.max_gap_days]
    for g in missing[:listed]:
        out.append(Reason("violation", f"no {res.source} events on {_span(g)} ({g.days} days); policy tolerates gaps of {rule.max_gap_days}"))
    if len(missing) > listed:
        out.append(Reason("violation", f"{res.source} has {len(missing) - listed} more gaps longer than {rule.max_gap_days} days"))
    low = [g for g in relevant if g.kind == "low_volume"]
    for g in low[:listed]:
        out.append(
            Reason(
                "warn",
                f"{res.source} volume was far below its normal on {_span(g)}: {_n(g.events)} events "
                f"(normal ~{_n(g.normal or 0)}/day): partial export?",
            )
        )
    if len(low) > listed:
        out.append(Reason("warn", f"{res.source} has {len(low) - listed} more low-volume periods"))
    return out


def _freshness_reasons(res: SourceResult) -> list[Reason]:
    """A stopped export, and data not yet copied that the source is about to delete (or has)."""
    rule, stale, latest = res.rule, res.staleness_days or 0, res.latest
    assert latest is not None
    out: list[Reason] = []
    if stale > rule.max_staleness_days:
        out.append(Reason("warn", f"{res.source} newest event is {stale} days old ({latest}); the export may have stopped"))
    ret = rule.source_retention_days
    if not ret:
        return out
    remaining = ret - stale + 1  # days until the first day not yet copied ages out at the source
    head = f"{res.source} newest copy in the lake is {stale} days old"
    if remaining <= 0:
        lost = Gap(latest + timedelta(days=1), res.as_of - timedelta(days=ret), "missing")
        out.append(Reason("warn", f"{head} but {_at_source(rule)}: events of {_span(lost)} are gone at the source (permanent gap)"))
    elif remaining <= rule.export_margin_days:
        out.append(
            Reason(
                "warn",
                f"{head} and {_at_source(rule)}: export within {remaining} day{'s' if remaining != 1 else ''} "
                f"or events after {latest} are lost for good",
            )
        )
    return out


def _span(g: Gap) -> str:
    return g.start.isoformat() if g.start == g.end else f"{g.start}..{g.end}"


def window_coverage(source: str, daily: dict[date, int], start: date, end: date, as_of: date, rule: SourceRule) -> WindowCoverage:
    """Share of [start, end] (clipped to the report date) with events, and from when it is continuous.

    ``answerable_from``: the earliest day from which, up to the window end, the source has no gap
    longer than the policy tolerates (at the report date the usual export lag is tolerated too).
    None when the source has nothing near the window end.
    """
    end_c = min(end, as_of)
    if start > end_c:
        return WindowCoverage(source, 0, 0, None, [])
    covered = sorted(d for d in daily if start <= d <= end_c and daily[d] > 0)
    window_days = (end_c - start).days + 1
    spans = _runs(covered)
    answerable: date | None = None
    if covered:
        trailing = (end_c - covered[-1]).days
        tolerance = rule.max_gap_days + (rule.max_staleness_days if end_c == as_of else 0)
        if trailing <= tolerance:
            answerable = start
            for i in range(len(spans) - 1, -1, -1):
                previous_end = spans[i - 1][1] if i else start - timedelta(days=1)
                if (spans[i][0] - previous_end).days - 1 > rule.max_gap_days:
                    answerable = spans[i][0]
                    break
    return WindowCoverage(source, window_days, len(covered), answerable, spans)


# --------------------------------------------------------------------------- reading the lake
def _relation(con: Any, table: str) -> str:
    """The stored relation of a table (``tokens_stored`` skips the key-registry join when bound)."""
    if table == "tokens":
        names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "tokens_stored" in names:
            return "tokens_stored"
    return table


def daily_counts(con: Any, table: str, as_of: date, by: str | None = None) -> dict[str | None, dict[date, int]]:
    """Events per UTC day (the ``event_date`` partition), optionally split by a column."""
    rel = _relation(con, table)
    key = by or "CAST(NULL AS VARCHAR)"
    rows = con.execute(
        f"SELECT {key}, event_date, count(*) FROM {rel} WHERE event_date <= ? GROUP BY 1, 2", [as_of.isoformat()]
    ).fetchall()
    out: dict[str | None, dict[date, int]] = {}
    for key, day, n in rows:
        try:
            d = date.fromisoformat(day)
        except (TypeError, ValueError):
            continue
        out.setdefault(key, {})[d] = out.get(key, {}).get(d, 0) + int(n)
    return out


def analyze_sources(con: Any, policy: Policy, as_of: date) -> list[SourceResult]:
    """Every log table, then its sub-sources (listed in the policy, required, or present)."""
    results: list[SourceResult] = []
    for table in LOG_TABLES:
        rule = policy.rule(table)
        total = daily_counts(con, table, as_of).get(None, {})
        results.append(analyze_source(table, table, "table", total, rule, as_of, must_exist=rule.judged))
        column = SUBSOURCE_COLUMN.get(table)
        if not column:
            continue
        per_value = {k: v for k, v in daily_counts(con, table, as_of, by=column).items() if k is not None}
        names = [n.split(".", 1)[1] for n in policy.listed_subsources(table)]
        names += [v for v in rule.required_values if v not in names]
        names += sorted(v for v in per_value if v not in names)
        kind = "sign_in_type" if column == "sign_in_type" else "operation"
        for value in names:
            sub_rule = policy.rule(f"{table}.{value}")
            must = value in rule.required_values
            res = analyze_source(f"{table}.{value}", table, kind, per_value.get(value, {}), sub_rule, as_of, must_exist=must)
            if must and not res.daily and value == "MailItemsAccessed":
                res.reasons[-1].text += ": Audit licence (E5/G5, or E3/G3 since 2024) or mailbox audit setting missing"
            results.append(res)
    return results


def _key_windows(con: Any, as_of: date) -> list[ForensicWindow]:
    """Windows of every compromised or retired key: certificate, JWKS publication, indicator, hull."""
    keys: dict[str, dict[str, Any]] = {}
    for kid, nb, na, fs, ls, rank in con.execute(
        """SELECT kid, min(cert_not_before), max(cert_not_after), min(first_seen), max(last_seen),
                  max(CASE status WHEN 'compromised' THEN 2 WHEN 'retired' THEN 1 ELSE 0 END)
           FROM signing_keys GROUP BY kid"""
    ).fetchall():
        status = {2: "compromised", 1: "retired"}.get(rank)
        keys[kid] = {"cert": (_day(nb), _day(na)), "published": (_day(fs), _day(ls)), "status": status}
    for kid, vf, vu, open_end, campaign in con.execute(
        """SELECT value, min(valid_from), max(valid_until), bool_or(valid_until IS NULL), min(campaign)
           FROM indicators WHERE indicator_type = 'kid' GROUP BY value"""
    ).fetchall():
        entry = keys.setdefault(kid, {"cert": (None, None), "published": (None, None)})
        entry["status"] = "compromised"
        entry["indicator"] = (_day(vf), as_of if open_end else _day(vu))
        entry["campaign"] = campaign
    windows: list[ForensicWindow] = []
    for kid in sorted(keys, key=lambda k: (keys[k].get("status") != "compromised", k)):
        entry = keys[kid]
        if entry.get("status") not in ("compromised", "retired"):
            continue
        parts = [
            ("key_certificate", "certificate validity", entry["cert"]),
            ("key_published", "published in JWKS", entry["published"]),
            ("key_indicator", "indicator window (known use)", entry.get("indicator", (None, None))),
        ]
        found = [(k, lbl, w) for k, lbl, w in parts if w[0] and w[1] and w[0] <= w[1]]
        campaign = f" ({entry['campaign']})" if entry.get("campaign") else ""
        for kind, lbl, (a, b) in found:
            windows.append(ForensicWindow(f"{kid}{campaign}: {lbl}", kind, a, b, kid, entry["status"]))
        if len(found) > 1:
            a, b = min(w[0] for _, _, w in found), max(w[1] for _, _, w in found)
            note = ""
            cert_end = entry["cert"][1]
            if cert_end and b > cert_end:
                note = f"trusted or used {(b - cert_end).days} days after its certificate expired on {cert_end}"
            windows.append(ForensicWindow(f"{kid}{campaign}: exposure", "key_exposure", a, b, kid, entry["status"], note))
        if not found:
            windows.append(
                ForensicWindow(f"{kid}{campaign}: no dates", "key_exposure", as_of, as_of, kid, entry["status"], "the registry has no window for this key")
            )
    return windows


def forensic_windows(con: Any, sources: list[SourceResult], incident: tuple[date, date] | None, as_of: date) -> list[ForensicWindow]:
    windows: list[ForensicWindow] = []
    if incident:
        windows.append(ForensicWindow(f"incident {incident[0]}..{incident[1]}", "incident", incident[0], incident[1]))
    windows += _key_windows(con, as_of)
    for w in windows:
        if w.note == "the registry has no window for this key":
            continue
        w.coverage = [window_coverage(s.source, s.daily, w.start, w.end, as_of, s.rule) for s in sources]
        if w.start > as_of:
            w.note = (w.note + "; " if w.note else "") + "the window starts after the report date"
    return windows


def incident_reasons(window: ForensicWindow | None, sources: list[SourceResult]) -> list[Reason]:
    """Sources the policy judges that do not cover the whole incident window."""
    if window is None:
        return []
    # Sparse sources (rare operations) legitimately miss days; empty ones only matter when required.
    judged = {s.source for s in sources if s.rule.judged and (s.gap_mode == "daily" or (s.must_exist and not s.daily))}
    out = []
    for cov in window.coverage:
        if cov.source in judged and cov.window_days and cov.covered_days < cov.window_days:
            since = f"; continuous from {cov.answerable_from}" if cov.answerable_from else ""
            out.append(Reason("warn", f"{cov.source} covers {cov.share:.0%} of the incident window {window.start}..{window.end}{since}"))
    return out


def mail_audit(con: Any, policy: Policy, as_of: date, partner_tenants: Iterable[str] = ()) -> MailAudit:
    """MailItemsAccessed completeness: throttled mailboxes, threshold days, tenants without it."""
    out = MailAudit()
    day = as_of.isoformat()
    mailbox = "coalesce(mailbox_owner_upn, user_id, mailbox_guid, '(unknown)')"
    rows = con.execute(
        f"""SELECT coalesce(lower(organization_id), '(unknown)') AS tenant, {mailbox} AS mailbox,
                   count(DISTINCT event_date) AS days, min(event_date), max(event_date), count(*)
            FROM mail_events WHERE is_throttled AND event_date <= ?
            GROUP BY 1, 2 ORDER BY days DESC, mailbox""",
        [day],
    ).fetchall()
    out.throttled_total = len(rows)
    out.throttled = [dict(zip(("tenant", "mailbox", "days", "first", "last", "records"), r)) for r in rows[:MAX_LISTED]]
    rows = con.execute(
        f"""SELECT coalesce(lower(organization_id), '(unknown)') AS tenant, {mailbox} AS mailbox, event_date, count(*) AS n
            FROM mail_events WHERE operation = 'MailItemsAccessed' AND event_date <= ?
            GROUP BY 1, 2, 3 HAVING count(*) >= {MIA_THROTTLE_RECORDS} ORDER BY n DESC, event_date""",
        [day],
    ).fetchall()
    out.heavy_days_total = len(rows)
    out.heavy_days = [dict(zip(("tenant", "mailbox", "date", "records"), r)) for r in rows[:MAX_LISTED]]

    tenants: dict[str, dict[str, Any]] = {}
    for tenant, events, mia in con.execute(
        """SELECT lower(organization_id), count(*), count(*) FILTER (WHERE operation = 'MailItemsAccessed')
           FROM mail_events WHERE organization_id IS NOT NULL AND event_date <= ? GROUP BY 1""",
        [day],
    ).fetchall():
        tenants[tenant] = {"tenant": tenant, "seen_in": ["mail_events"], "mail_events": events, "mail_items_accessed": mia}
    # Own tenants from sign-ins: a member or app signing in to its home tenant (outbound
    # cross-tenant sign-ins and the consumer tenant are not ours to audit).
    skip = {CONSUMER_TENANT} | {t.lower() for t in partner_tenants}
    for (tenant,) in con.execute(
        """SELECT DISTINCT lower(tenant_id) FROM signins
           WHERE tenant_id IS NOT NULL AND (home_tenant_id IS NULL OR lower(home_tenant_id) = lower(tenant_id))
             AND event_date <= ?""",
        [day],
    ).fetchall():
        if tenant in skip:
            continue
        entry = tenants.setdefault(tenant, {"tenant": tenant, "seen_in": [], "mail_events": 0, "mail_items_accessed": 0})
        entry["seen_in"].append("signins")
    out.tenants = sorted(tenants.values(), key=lambda t: t["tenant"])

    required = "MailItemsAccessed" in policy.rule("mail_events").required_values
    for t in out.tenants:
        if t["mail_items_accessed"]:
            continue
        where = (
            f"has {_n(t['mail_events'])} mail audit events but no MailItemsAccessed"
            if t["mail_events"]
            else "appears in sign-ins but has no mail audit events at all"
        )
        out.reasons.append(
            Reason(
                "violation" if required else "warn",
                f"tenant {t['tenant']} {where}: Audit licence or mailbox audit setting missing, or not exported",
            )
        )
    if out.throttled_total:
        names = ", ".join(str(t["mailbox"]) for t in out.throttled[:5]) + (", ..." if out.throttled_total > 5 else "")
        out.reasons.append(
            Reason(
                "warn",
                f"{out.throttled_total} mailbox(es) had MailItemsAccessed auditing throttled (IsThrottled; after "
                f"{MIA_THROTTLE_RECORDS:,} records in 24 h, 24 h go unaudited): {names}",
            )
        )
    if out.heavy_days_total:
        out.reasons.append(
            Reason(
                "warn",
                f"{out.heavy_days_total} mailbox-day(s) reached {MIA_THROTTLE_RECORDS:,} MailItemsAccessed records, "
                "where auditing stops for 24 hours",
            )
        )
    return out


# --------------------------------------------------------------------------- detections
def _detections_dir() -> Path:
    try:
        from pipeline.detect import QUERIES_DIR  # type: ignore[attr-defined]

        return Path(QUERIES_DIR) / "detections"
    except (ImportError, AttributeError):
        return Path(__file__).resolve().parent.parent / "queries" / "detections"


def read_detection_headers(directory: Path) -> tuple[list[DetectionMeta], list[str]]:
    """Minimal reader of the TOML header of queries/detections/*.sql: id, title, requires, lookback.

    Used when ``pipeline.detect.load_detections`` is unavailable or rejects a file (strict), so a
    broken detection file never hides the coverage of the others. Returns (metas, problems).
    """
    metas: list[DetectionMeta] = []
    problems: list[str] = []
    for path in sorted(Path(directory).glob("*.sql")):
        lines = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("--"):
                break
            lines.append(line[3:] if line.startswith("-- ") else line[2:])
        try:
            doc = tomllib.loads("\n".join(lines))
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{path}: header is not valid TOML: {exc}")
            continue
        requires = doc.get("requires", [])
        lookback = doc.get("lookback_days", 0)
        if not isinstance(requires, list) or not isinstance(lookback, int):
            problems.append(f"{path}: requires must be a list and lookback_days an integer")
            continue
        metas.append(DetectionMeta(str(doc.get("id", path.stem)), str(doc.get("title", "")), [str(r) for r in requires], lookback, str(path)))
    return metas, problems


def load_detection_metas(directory: Path | None = None) -> tuple[list[DetectionMeta], list[str]]:
    """Detection metadata through pipeline.detect when it loads, else the minimal header reader."""
    directory = Path(directory) if directory else _detections_dir()
    if not directory.is_dir():
        return [], [f"no detections directory at {directory}"]
    try:
        from pipeline.detect import load_detections  # type: ignore[attr-defined]
    except ImportError:
        return read_detection_headers(directory)
    try:
        loaded = load_detections(directory)
    except Exception as exc:  # noqa: BLE001 - strict loader: fall back so the other detections still count
        metas, problems = read_detection_headers(directory)
        detail = " ".join(str(exc).split())[:600]
        return metas, [f"pipeline.detect.load_detections failed ({detail}); detection headers read minimally"] + problems
    metas = []
    for d in loaded:
        meta = getattr(d, "meta", d)
        get = (lambda k, default=None: meta.get(k, default)) if isinstance(meta, dict) else (lambda k, default=None: getattr(meta, k, default))
        metas.append(
            DetectionMeta(
                str(get("id")),
                str(get("title", "") or ""),
                [str(r) for r in (get("requires", []) or [])],
                int(get("lookback_days", 0) or 0),
                str(get("path", "") or "") or None,
            )
        )
    return metas, []


def detection_coverage(
    metas: list[DetectionMeta], sources: list[SourceResult], reference_rows: dict[str, int], as_of: date
) -> list[DetectionCoverage]:
    """Detections whose silence means nothing: a required table empty, stale, short, or gappy."""
    by_name = {s.source: s for s in sources}
    out = []
    for meta in metas:
        reasons: list[Reason] = []
        for table in meta.requires:
            if table in REFERENCE_TABLES:
                if not reference_rows.get(table):
                    reasons.append(Reason("violation", f"needs {table}, which is empty"))
                continue
            src = by_name.get(table)
            if src is None:
                continue  # findings or an unknown name: not a log source
            if not src.daily:
                reasons.append(Reason("violation", f"needs {table}, which has no events"))
                continue
            stale_limit = src.rule.max_staleness_days
            if (src.staleness_days or 0) > stale_limit:
                reasons.append(Reason("violation", f"needs {table}, whose newest event is {src.staleness_days} days old ({src.latest})"))
                continue
            need = meta.lookback_days + 1
            if (src.reach_days or 0) < need:
                reasons.append(Reason("warn", f"looks back {meta.lookback_days} days but {table} reaches back {src.reach_days}"))
            start = as_of - timedelta(days=need)
            inside = [g for g in src.gaps if g.kind == "missing" and g.end >= start]
            if inside:
                reasons.append(Reason("warn", f"{table} has no events on {', '.join(_span(g) for g in inside[:3])} inside its lookback"))
        level = _worst(r.level for r in reasons)
        status = {"ok": "covered", "warn": "partial", "violation": "blind"}[level]
        if not reasons:
            reasons.append(Reason("ok", "every required table is fresh and reaches back far enough"))
        else:
            for r in reasons:
                r.text = f"{meta.id} is {status}: {r.text}"
        out.append(DetectionCoverage(meta, status, reasons))
    return out


# --------------------------------------------------------------------------- the report
def compute_report(
    con: Any,
    policy: Policy,
    as_of: date,
    incident: tuple[date, date] | None = None,
    detections: list[DetectionMeta] | None = None,
    partner_tenants: Iterable[str] = (),
    lake_label: str = "",
    notes: list[str] | None = None,
) -> RetentionReport:
    """The whole report from a connection whose views carry the logical table names."""
    sources = analyze_sources(con, policy, as_of)
    windows = forensic_windows(con, sources, incident, as_of)
    reference_rows = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in REFERENCE_TABLES}
    incident_window = next((w for w in windows if w.kind == "incident"), None)
    return RetentionReport(
        as_of=as_of,
        lake=lake_label,
        policy=policy,
        sources=sources,
        windows=windows,
        mail_audit=mail_audit(con, policy, as_of, partner_tenants),
        detections=detection_coverage(detections or [], sources, reference_rows, as_of),
        incident=incident,
        notes=list(notes or []),
        incident_reasons=incident_reasons(incident_window, sources),
    )


def retention_report(
    lake: Any,
    policy: Path | str | Policy | None = None,
    profile: str | None = None,
    incident: str | tuple | None = None,
    as_of: str | date | None = None,
    *,
    detections_dir: Path | None = None,
    partner_tenants: Iterable[str] = (),
) -> RetentionReport:
    """Build the retention-gap report for a lake (a ``Lake`` or its directory).

    Raises ``PolicyError`` for a bad policy and ``RetentionInputError`` for a bad incident window or
    date; the caller (CLI, nightly) turns those into a clear message.
    """
    from pipeline.engines.duckdb import connect
    from pipeline.lake import Lake

    lake = lake if isinstance(lake, Lake) else Lake(Path(lake))
    pol = policy if isinstance(policy, Policy) else load_policy(Path(policy) if policy else None, profile)
    day = parse_day(as_of, "--as-of") if as_of is not None else datetime.now(timezone.utc).date()
    assert day is not None
    window = parse_window(incident)
    metas, problems = load_detection_metas(detections_dir)
    con = connect(lake)
    try:
        return compute_report(con, pol, day, window, metas, partner_tenants, str(lake.root), problems)
    finally:
        con.close()


__all__ = [
    "EXIT_OK",
    "EXIT_VIOLATIONS",
    "EXIT_WARNINGS",
    "PolicyError",
    "RetentionInputError",
    "RetentionReport",
    "compute_report",
    "load_policy",
    "retention_report",
]
