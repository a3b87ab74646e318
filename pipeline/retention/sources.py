"""Per log source: what the lake holds (reach, gaps, volume) and its verdict against the policy.

A source is a lake table, one sign-in type or one mail operation. Its events per UTC day are read
once (``daily_counts``); everything else is pure functions of those counts and the source's rule:
missing days and days far under the source's own normal volume, how far back it reaches, whether
its export stopped, and when data not yet copied will age out at the source.
"""

from __future__ import annotations

import statistics
from collections import deque
from datetime import date, timedelta
from typing import Any

from pipeline.retention.days import each_day, runs
from pipeline.retention.model import Gap, Reason, SourceResult, count_text, span_text
from pipeline.retention.policy import LOG_TABLES, SUBSOURCE_COLUMN, Policy, SourceRule

AUTO_DAILY_SHARE = 0.5  # gap_check "auto": judge gaps only when the source has events on half its days
NORMAL_WINDOW = 28  # days with events the "normal volume" median looks back over
NORMAL_MIN_HISTORY = 7  # fewer days of history than this: no volume judgement yet


def find_gaps(daily: dict[date, int], rule: SourceRule) -> list[Gap]:
    """Days without events between the first and last event, and days far under the normal volume.

    The normal is the median of the previous NORMAL_WINDOW days that had events (so a source that
    grows is compared with its recent self); the last day is never called low (usually partial).
    """
    if not daily:
        return []
    first, last = min(daily), max(daily)
    missing = [d for d in each_day(first, last) if not daily.get(d)]
    gaps = [Gap(a, b, "missing") for a, b in runs(missing)]
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
        for a, b in runs(low):
            days = [d for d in each_day(a, b)]
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
    res.spans = runs(daily)
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
        out.append(Reason("violation", f"no {res.source} events on {span_text(g)} ({g.days} days); policy tolerates gaps of {rule.max_gap_days}"))
    if len(missing) > listed:
        out.append(Reason("violation", f"{res.source} has {len(missing) - listed} more gaps longer than {rule.max_gap_days} days"))
    low = [g for g in relevant if g.kind == "low_volume"]
    for g in low[:listed]:
        out.append(
            Reason(
                "warn",
                f"{res.source} volume was far below its normal on {span_text(g)}: {count_text(g.events)} events "
                f"(normal ~{count_text(g.normal or 0)}/day): partial export?",
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
        out.append(Reason("warn", f"{head} but {_at_source(rule)}: events of {span_text(lost)} are gone at the source (permanent gap)"))
    elif remaining <= rule.export_margin_days:
        out.append(
            Reason(
                "warn",
                f"{head} and {_at_source(rule)}: export within {remaining} day{'s' if remaining != 1 else ''} "
                f"or events after {latest} are lost for good",
            )
        )
    return out


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
