"""The retention report's data: per-source results, forensic windows, mail audit, detection coverage.

Plain dataclasses with no lake access, so the computing modules fill them and the renderers read
them; ``to_dict`` is the JSON report. ``RetentionReport`` gathers every reason into one list of
findings whose worst level is the status and the exit code of ``tokenhunt retention``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Iterable

from pipeline.retention.policy import Policy, SourceRule

# Exit codes of `tokenhunt retention` (documented in the README and the command's help).
EXIT_OK = 0
EXIT_WARNINGS = 20
EXIT_VIOLATIONS = 21

LEVELS = ("ok", "warn", "violation")
KID_SOURCES = ("token_events",)  # sources that record the kid of the token used: direct evidence
ISSUANCE_SOURCES = ("signins",)  # the issuance record that proves a token was minted by Entra


@dataclass
class Reason:
    level: str  # ok (a note), warn, violation
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level, "text": self.text}


def worst(levels: Iterable[str]) -> str:
    """The most severe of ``levels`` (ok when there are none)."""
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


def span_text(g: Gap) -> str:
    """A gap's days as text: one day, or ``start..end``."""
    return g.start.isoformat() if g.start == g.end else f"{g.start}..{g.end}"


def count_text(value: float) -> str:
    """A count for a reason's text: thousands separated, no decimals."""
    return f"{value:,.0f}"


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
        return worst(r.level for r in self.reasons)

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
        return worst(r.level for r in self.reasons)

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
        return worst(f.level for f in self.findings)

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
        from pipeline.retention.render import to_markdown

        return to_markdown(self)

    def to_html(self) -> str:
        from pipeline.retention.render import to_html

        return to_html(self)

    def to_text(self, width: int = 120) -> str:
        from pipeline.retention.render import to_text

        return to_text(self, width)
