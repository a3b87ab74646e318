"""The whole report: every check run over one read-only session of the lake.

``retention_report`` is the entry point of the CLI and the nightly job: it loads the policy, parses
the dates, opens the lake and runs the checks (sources, windows, mail audit, detections) in order.
``compute_report`` does the same over any connection whose views carry the logical table names.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from pipeline.retention.days import parse_day, parse_window
from pipeline.retention.detections import REFERENCE_TABLES, detection_coverage, load_detection_metas
from pipeline.retention.mail import mail_audit
from pipeline.retention.model import DetectionMeta, RetentionReport
from pipeline.retention.policy import Policy, load_policy
from pipeline.retention.sources import analyze_sources
from pipeline.retention.windows import forensic_windows, incident_reasons


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
