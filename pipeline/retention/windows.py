"""Forensic windows: how much of an incident window, and of every compromised or retired key's
windows, each source covers, and from which day use could be confirmed or ruled out.

Storm-0558's key had expired two years before it was used: a key's windows (certificate validity,
JWKS publication, indicator of known use, and their hull) are where its misuse would show, so each
is measured against every source like the incident window is.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from pipeline.retention.days import runs, to_day
from pipeline.retention.model import ForensicWindow, Reason, SourceResult, WindowCoverage
from pipeline.retention.policy import SourceRule


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
    spans = runs(covered)
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


def _key_windows(con: Any, as_of: date) -> list[ForensicWindow]:
    """Windows of every compromised or retired key: certificate, JWKS publication, indicator, hull."""
    keys: dict[str, dict[str, Any]] = {}
    for kid, nb, na, fs, ls, rank in con.execute(
        """SELECT kid, min(cert_not_before), max(cert_not_after), min(first_seen), max(last_seen),
                  max(CASE status WHEN 'compromised' THEN 2 WHEN 'retired' THEN 1 ELSE 0 END)
           FROM signing_keys GROUP BY kid"""
    ).fetchall():
        status = {2: "compromised", 1: "retired"}.get(rank)
        keys[kid] = {"cert": (to_day(nb), to_day(na)), "published": (to_day(fs), to_day(ls)), "status": status}
    for kid, vf, vu, open_end, campaign in con.execute(
        """SELECT value, min(valid_from), max(valid_until), bool_or(valid_until IS NULL), min(campaign)
           FROM indicators WHERE indicator_type = 'kid' GROUP BY value"""
    ).fetchall():
        entry = keys.setdefault(kid, {"cert": (None, None), "published": (None, None)})
        entry["status"] = "compromised"
        entry["indicator"] = (to_day(vf), as_of if open_end else to_day(vu))
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
