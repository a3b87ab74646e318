"""The real exports in ../shared/realdata, end to end: exact counts in, no critical finding out."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import keys
from pipeline.detect import detect_lake
from pipeline.engines import duckdb as engine
from pipeline.ingest import ingest_paths
from pipeline.lake import Lake

# Files that are logs the lake keeps, with what each must yield (counted from the files themselves;
# see test_sources_*.py for the per-record checks).
LOG_FILES = {
    "extractor_suite_graph/servicePrincipal-SignInLogs.json": {"signins": 494},
    "extractor_suite_graph/managedIdentity-SignInLogs.json": {"signins": 28},
    "huntress_ctf2023_purview/purview.csv": {"mail_events": 116, "signins": 21},
    "otrf_goldensaml/OfficeActivityEvents.json": {"mail_events": 1},
}
# Entra directory audit logs: a real export tokenhunt does not ingest; it must be refused by name.
NOT_LOGS = ["extractor_suite_graph/AuditLogs.json", "otrf_goldensaml/AADAuditEvents.json"]


@pytest.fixture(scope="module")
def real_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, object]:
    from tests.conftest import REALDATA

    if not REALDATA.is_dir():
        pytest.fail(f"real exports not found at {REALDATA}")
    lake = Lake(tmp_path_factory.mktemp("real") / "lake")
    keys.import_keys(lake, [REALDATA / "jwks_panva_wellknown" / "entra-common-jwks-history.json"])
    report = ingest_paths(lake, [REALDATA / f for f in [*LOG_FILES, *NOT_LOGS]], quality_policy="warn")
    return lake, report


def test_real_exports_ingest_with_exact_counts(real_lake):
    lake, report = real_lake
    from tests.conftest import REALDATA

    by_file = {str(f.path.relative_to(REALDATA)): f for f in report.files}
    for name, expected in LOG_FILES.items():
        result = by_file[name]
        assert result.status == "ingested", (name, result.message)
        assert {t: c.written for t, c in result.counts.items() if t in expected} == expected, name
        assert result.quarantined == 0, name
        for c in result.counts.values():
            assert c.read == c.written + c.duplicates + c.quarantined
    for name in NOT_LOGS:
        assert by_file[name].status == "error" and name.split("/")[-1] in by_file[name].message
    con = engine.connect(lake)
    assert con.execute("SELECT count(*) FROM signins").fetchone()[0] == 494 + 28 + 21
    assert con.execute("SELECT count(*) FROM mail_events").fetchone()[0] == 117
    # named record: a real SP sign-in with its UTC time and token id
    row = con.execute(
        "SELECT event_time, unique_token_id, sign_in_type FROM signins WHERE event_id = '0c532507-b101-4090-b2f1-4d768e2f3500'"
    ).fetchone()
    assert row[0].isoformat() == "2025-05-02T00:32:36+00:00"
    assert row[1] == "ByVTDAGxkECy8U12ji81AA" and row[2] == "service_principal"


def test_real_exports_raise_no_critical_finding(real_lake):
    lake, _ = real_lake
    result = detect_lake(lake)
    assert not result.errors
    critical = [f for f in result.findings if f["severity"] == "critical" and f["outcome"] == "alert"]
    assert critical == []


def test_real_ingest_is_idempotent(real_lake):
    lake, _ = real_lake
    from tests.conftest import REALDATA

    before = engine.connect(lake).execute("SELECT count(*) FROM signins").fetchone()[0]
    again = ingest_paths(lake, [REALDATA / f for f in LOG_FILES], quality_policy="off")
    assert {f.status for f in again.files} == {"unchanged"}
    assert engine.connect(lake).execute("SELECT count(*) FROM signins").fetchone()[0] == before
