"""Retention-gap report: would the lake let a team answer an incident, before the incident happens?

Storm-0558 is the reason: Microsoft could not confirm how its key was stolen "due to log retention
policies"; customers without premium licences had no MailItemsAccessed history to search; the
stolen key had expired two years before it was used. For every log source (each lake table, each
sign-in type, each mail operation) the report measures what the lake holds (reach, gaps, volume),
judges it against a policy, says when data not yet copied will vanish at the source, how much of an
incident window and of every compromised or retired key's windows each source covers, whether
MailItemsAccessed auditing is complete, and which detections are blind because their tables or
lookback are not covered. Everything is by UTC day (the lake's ``event_date`` partition).

Where things live:

- ``policy``     the policy TOML (built-in profiles in ``pipeline/policies/``), strict validation
- ``days``       ``--as-of`` / ``--incident`` parsing, UTC days and runs of days
- ``model``      the result dataclasses and ``RetentionReport`` (findings, status, exit code, JSON)
- ``sources``    per log source: daily counts, gaps, reach, freshness, verdict
- ``windows``    incident and signing-key windows: coverage, confirm / rule-out dates
- ``mail``       MailItemsAccessed completeness: throttling, tenants without it
- ``detections`` detection metadata and which detections are blind
- ``compute``    ``retention_report`` / ``compute_report``: every check over one lake session
- ``render``     terminal tables, Markdown, self-contained HTML with an SVG timeline

Computation is pure functions over a DuckDB connection whose views carry the logical table names
(``pipeline.engines.duckdb.connect``); rendering reads only the finished report.
"""

from __future__ import annotations

from pipeline.retention.compute import compute_report, retention_report
from pipeline.retention.days import RetentionInputError, parse_day, parse_window
from pipeline.retention.detections import (
    REFERENCE_TABLES,
    detection_coverage,
    load_detection_metas,
    read_detection_headers,
)
from pipeline.retention.mail import CONSUMER_TENANT, MAX_LISTED, MIA_THROTTLE_RECORDS, mail_audit
from pipeline.retention.model import (
    EXIT_OK,
    EXIT_VIOLATIONS,
    EXIT_WARNINGS,
    ISSUANCE_SOURCES,
    KID_SOURCES,
    LEVELS,
    DetectionCoverage,
    DetectionMeta,
    Finding,
    ForensicWindow,
    Gap,
    MailAudit,
    Reason,
    RetentionReport,
    SourceResult,
    WindowCoverage,
)
from pipeline.retention.policy import LOG_TABLES, SUBSOURCE_COLUMN, Policy, PolicyError, SourceRule, load_policy, profiles
from pipeline.retention.render import rich_renderables
from pipeline.retention.sources import (
    AUTO_DAILY_SHARE,
    NORMAL_MIN_HISTORY,
    NORMAL_WINDOW,
    analyze_source,
    analyze_sources,
    daily_counts,
    find_gaps,
)
from pipeline.retention.windows import forensic_windows, incident_reasons, window_coverage

__all__ = [
    "AUTO_DAILY_SHARE",
    "CONSUMER_TENANT",
    "EXIT_OK",
    "EXIT_VIOLATIONS",
    "EXIT_WARNINGS",
    "ISSUANCE_SOURCES",
    "KID_SOURCES",
    "LEVELS",
    "LOG_TABLES",
    "MAX_LISTED",
    "MIA_THROTTLE_RECORDS",
    "NORMAL_MIN_HISTORY",
    "NORMAL_WINDOW",
    "REFERENCE_TABLES",
    "SUBSOURCE_COLUMN",
    "DetectionCoverage",
    "DetectionMeta",
    "Finding",
    "ForensicWindow",
    "Gap",
    "MailAudit",
    "Policy",
    "PolicyError",
    "Reason",
    "RetentionInputError",
    "RetentionReport",
    "SourceResult",
    "SourceRule",
    "WindowCoverage",
    "analyze_source",
    "analyze_sources",
    "compute_report",
    "daily_counts",
    "detection_coverage",
    "find_gaps",
    "forensic_windows",
    "incident_reasons",
    "load_detection_metas",
    "load_policy",
    "mail_audit",
    "parse_day",
    "parse_window",
    "profiles",
    "read_detection_headers",
    "retention_report",
    "rich_renderables",
    "window_coverage",
]
