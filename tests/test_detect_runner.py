"""pipeline.detect: strict loading, safe parameter rendering, running, findings persistence, outputs."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings as hsettings, strategies as st
from typer.testing import CliRunner

from pipeline import detect
from pipeline.config import Settings
from pipeline.detect import (
    Detection,
    DetectionLoadError,
    DetectionParamError,
    DetectionRunError,
    detect_lake,
    finding_id,
    load_detection,
    load_detections,
    render_sql,
    run_detections,
    sql_literal,
)
from pipeline.detect_fixtures import FIXTURES_DIR, load_cases, memory_connection
from pipeline.findings_output import COLUMNS, format_findings
from pipeline.lake import Lake
from tests.test_detections import RUNNER_DETECTIONS

UTC = timezone.utc
CONTOSO = "3f2a1c9e-5b7d-4e8f-9a01-6c2d4e8b7a10"
CONSUMER = detect.CONSUMER_TENANT
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjFMVE16YWtpaFJsYV84ejJCRUpWWGVXTXFvIn0.eyJ0aWQiOiJ4In0.c2lnbmF0dXJlLWJ5dGVz"

GOOD_HEADER = """-- id = "{id}"
-- title = "A test detection"
-- severity = "low"
-- status = "test"
-- description = "Used by the runner tests."
-- references = ["https://example.org/"]
-- requires = ["mail_events"]
"""
GOOD_BODY = """SELECT 'x' AS detection_id, 'low' AS severity, min(event_time) AS event_time,
  CAST(NULL AS VARCHAR) AS tenant_id, CAST(NULL AS VARCHAR) AS principal, 'k' AS entity_key,
  CAST(NULL AS VARCHAR) AS token_fingerprint, CAST(json_object('n', count(*)) AS VARCHAR) AS evidence,
  'alert' AS outcome FROM mail_events
"""


def _detection(sql: str, params: dict | None = None, det_id: str = "probe") -> Detection:
    return Detection(
        id=det_id,
        title="probe",
        severity="low",
        status="test",
        description="probe",
        requires=("mail_events",),
        sql=sql,
        path=Path(f"{det_id}.sql"),
        params=params or {},
    )


# --------------------------------------------------------------------------- strict loading
def test_loading_reports_every_problem_of_every_file_at_once(tmp_path: Path) -> None:
    (tmp_path / "bad_toml.sql").write_text("-- id = \"bad_toml\n-- title = 'x'\nSELECT 1\n")
    (tmp_path / "bad_meta.sql").write_text(
        '-- id = "bad_meta"\n-- severity = "urgent"\n-- status = "stable"\n-- description = "d"\n'
        '-- requires = ["mail_events", "secret_table"]\n-- colour = "red"\n' + GOOD_BODY
    )
    (tmp_path / "bad_sql.sql").write_text(
        GOOD_HEADER.format(id="bad_sql") + "-- [params]\n-- unused = 1\n"
        "SELECT {{ nope }} FROM mail_events; SELECT 2\n"
    )
    (tmp_path / "wrong_name.sql").write_text(GOOD_HEADER.format(id="other_name") + GOOD_BODY)
    (tmp_path / "reads_files.sql").write_text(GOOD_HEADER.format(id="reads_files") + "SELECT * FROM tokens_stored\n")
    (tmp_path / "quoted_param.sql").write_text(
        GOOD_HEADER.format(id="quoted_param") + "-- [params]\n-- p = 'a'\nSELECT '{{ p }}' AS x FROM mail_events\n"
    )
    (tmp_path / "no_header.sql").write_text(GOOD_BODY)
    (tmp_path / "fine.sql").write_text(GOOD_HEADER.format(id="fine") + GOOD_BODY)
    with pytest.raises(DetectionLoadError) as info:
        load_detections(tmp_path)
    text = "\n".join(info.value.problems)
    expected = [
        ("bad_toml.sql", "not valid TOML"),
        ("bad_meta.sql", "'title' is missing"),
        ("bad_meta.sql", "severity 'urgent'"),
        ("bad_meta.sql", "'secret_table', not a logical table"),
        ("bad_meta.sql", "unknown key 'colour'"),
        ("bad_sql.sql", "{{ nope }} is neither a declared param"),
        ("bad_sql.sql", "param unused: declared but not used"),
        ("wrong_name.sql", "differs from the file name"),
        ("reads_files.sql", "reads 'tokens_stored', not a logical table"),
        ("quoted_param.sql", "inside a quoted string"),
        ("no_header.sql", "no metadata header"),
    ]
    for name, fragment in expected:
        assert any(name in p and fragment in p for p in info.value.problems), f"missing {name}: {fragment}\n{text}"
    assert not any("fine.sql" in p for p in info.value.problems)
    # the statement count is checked too (the placeholder problem alone does not hide it)
    (tmp_path / "bad_sql.sql").write_text(GOOD_HEADER.format(id="bad_sql") + "SELECT 1 AS a FROM mail_events; SELECT 2\n")
    with pytest.raises(DetectionLoadError, match="exactly one SELECT"):
        load_detection(tmp_path / "bad_sql.sql")


def test_shipped_detections_load_with_typed_metadata() -> None:
    detections = {d.id: d for d in load_detections()}
    storm = detections["consumer_key_enterprise_mailbox"]
    assert storm.severity == "critical" and "T1606.001" in storm.mitre
    assert isinstance(storm.params["exchange_audience_pattern"], str)
    assert detections["token_never_issued"].lookback_days == 1
    assert detections["token_never_issued"].params == {"issue_skew_minutes": 5, "missing_issued_at_hours": 24}


# --------------------------------------------------------------------------- parameters
HOSTILE = [
    "x'); DROP TABLE mail_events; --",
    "' OR '1'='1",
    "back\\slash\\' and quote",
    "{{ window_start }}",
    "multi\nline; SELECT 1",
    "unicode ☃ 𝔘 ‮",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_strings_render_as_inert_literals(value: str) -> None:
    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE mail_events (x INTEGER)")
    d = _detection("SELECT {{ p }} AS v", {"p": "default"})
    sql = render_sql(d, {"p": value})
    assert con.execute(sql).fetchall() == [(value,)]
    assert con.execute("SELECT count(*) FROM mail_events").fetchall() == [(0,)]  # table still there


def test_hostile_list_items_render_as_a_tuple() -> None:
    con = duckdb.connect(":memory:")
    d = _detection("SELECT 'a''b' IN {{ xs }} AS hit, 'zzz' IN {{ xs }} AS miss", {"xs": ["q"]})
    assert con.execute(render_sql(d, {"xs": ["a'b", "'); DROP TABLE t; --"]})).fetchall() == [(True, False)]


def test_empty_list_keeps_not_in_true() -> None:
    con = duckdb.connect(":memory:")
    d = _detection("SELECT 'x' NOT IN {{ xs }} AS kept, 'x' IN {{ xs }} AS matched", {"xs": ["a"]})
    assert con.execute(render_sql(d, {"xs": []})).fetchall() == [(True, False)]


@hsettings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))))
def test_any_text_round_trips_through_a_literal(value: str) -> None:
    con = duckdb.connect(":memory:")
    assert con.execute(f"SELECT {sql_literal(value)}").fetchone()[0] == value


def test_literals_of_other_types() -> None:
    assert sql_literal(True) == "TRUE" and sql_literal(7) == "7" and sql_literal(None) == "NULL"
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    ts = datetime(2026, 11, 15, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    assert con.execute(f"SELECT {sql_literal(ts)}").fetchone()[0] == ts
    assert con.execute(f"SELECT {sql_literal(date(2026, 11, 15))}").fetchone()[0] == date(2026, 11, 15)
    for bad in ("nul\x00byte", float("nan"), [["nested"]], {"a": 1}, b"bytes"):
        with pytest.raises(DetectionParamError):
            sql_literal(bad)


def test_unknown_or_mistyped_overrides_are_rejected() -> None:
    d = _detection("SELECT {{ n }} AS v", {"n": 5})
    with pytest.raises(DetectionParamError, match="unknown parameter 'm'"):
        render_sql(d, {"m": 1})
    with pytest.raises(DetectionParamError, match="must be int"):
        render_sql(d, {"n": "5; DROP TABLE x"})
    undeclared = _detection("SELECT {{ secret }} AS v")
    with pytest.raises(DetectionParamError, match="not a declared or built-in"):
        render_sql(undeclared)
    detections = load_detections()
    with pytest.raises(DetectionParamError) as info:
        detect.params_from_settings({"no_such_detection": {}, "token_never_issued": {"issue_skew": 1}}, detections)
    assert "no_such_detection" in str(info.value) and "issue_skew" in str(info.value)
    assert detect.params_from_settings({"token_never_issued": {"issue_skew_minutes": 10}}, detections) == {
        "token_never_issued": {"issue_skew_minutes": 10}
    }


def test_builtin_window_and_partner_tenants() -> None:
    d = _detection("SELECT {{ window_start }} AS s, {{ window_end }} AS e, 'p1' IN {{ partner_tenants }} AS p, {{ consumer_tenant }} AS c")
    start, end = datetime(2026, 11, 15, tzinfo=UTC), datetime(2026, 11, 16, tzinfo=UTC)
    con = duckdb.connect(":memory:")
    row = con.execute(render_sql(d, window=(start, end), partner_tenants=["P1"])).fetchone()
    assert row == (start, end, True, CONSUMER)


# --------------------------------------------------------------------------- running
def _all_fixture_rows() -> list[dict]:
    rows: list[dict] = []
    for path in sorted(FIXTURES_DIR.glob("*.toml")):
        for case in load_cases(path):
            rows += case.rows
    # every case's rows in one database: positives and negatives side by side
    return rows


def test_parallel_run_equals_sequential_and_evidence_holds_no_token() -> None:
    # detections 1-6: their evidence is deterministic (no string_agg without an order)
    detections = [d for d in load_detections() if d.id in RUNNER_DETECTIONS]
    con = memory_connection(_all_fixture_rows())
    try:
        parallel = run_detections(con, detections, workers=4)
        sequential = run_detections(con, detections, workers=1)
    finally:
        con.close()
    assert parallel == sequential and len(parallel) >= 6
    assert {r["detection_id"] for r in parallel} >= {"consumer_key_enterprise_mailbox", "consumer_tenant_mail_audit"}
    for row in parallel:
        assert row["finding_id"] == finding_id(row["detection_id"], row["entity_key"])
        assert "eyJ" not in row["evidence"]
        assert isinstance(json.loads(row["evidence"]), dict)


def test_runner_scrubs_a_token_a_detection_leaks_into_evidence() -> None:
    con = memory_connection([{"table": "mail_events", "event_id": "e1", "event_time": datetime(2026, 11, 15, tzinfo=UTC), "operation": "Send"}])
    leaky = _detection(GOOD_BODY.replace("'x' AS detection_id", "'probe' AS detection_id").replace(
        "json_object('n', count(*))", f"json_object('auth', 'Bearer {JWT}', 'raw', '{JWT}')"
    ))
    rows, runs = detect.execute(con, [leaky])
    assert runs["probe"].scrubbed == 1 and not runs["probe"].error
    assert JWT not in rows[0]["evidence"] and "<token sha256:" in rows[0]["evidence"]
    assert JWT not in format_findings(rows, "ocsf") and JWT not in format_findings(rows, "jsonl")


def test_contract_violations_fail_that_detection_only() -> None:
    con = memory_connection([{"table": "mail_events", "event_id": "e1", "event_time": datetime(2026, 11, 15, tzinfo=UTC), "operation": "Send"}])
    good = _detection(GOOD_BODY.replace("'x' AS detection_id", "'good' AS detection_id"), det_id="good")
    wrong_columns = _detection("SELECT 1 AS detection_id FROM mail_events", det_id="wrong_columns")
    bad_values = _detection(
        GOOD_BODY.replace("'x' AS detection_id", "'bad_values' AS detection_id").replace("'low' AS severity", "'urgent' AS severity")
        .replace("CAST(json_object('n', count(*)) AS VARCHAR)", "'not json'"),
        det_id="bad_values",
    )
    broken = _detection("SELECT * FROM no_such_table", det_id="broken")
    with pytest.raises(DetectionRunError) as info:
        run_detections(con, [good, wrong_columns, bad_values, broken])
    errors = info.value.errors
    assert set(errors) == {"wrong_columns", "bad_values", "broken"}
    assert "contract" in errors["wrong_columns"]
    assert "urgent" in errors["bad_values"] and "JSON object" in errors["bad_values"]
    assert [r["detection_id"] for r in info.value.findings] == ["good"]


def test_only_selects_and_rejects_unknown_ids() -> None:
    detections = load_detections()
    con = memory_connection([])
    assert run_detections(con, detections, only=["key_validity"]) == []
    with pytest.raises(DetectionParamError, match="unknown detection id"):
        run_detections(con, detections, only=["nope"])


# --------------------------------------------------------------------------- lake persistence
def _mail_row(n: int, when: datetime, token_tenant: str = CONSUMER, mailbox: str = "diane.ross@contoso.com") -> dict:
    return {
        "event_id": f"a1f3c2d4-{n:04d}-4b5e-9c8d-7e6f5a4b3c2d",
        "event_time": when,
        "event_date": when.strftime("%Y-%m-%d"),
        "source_format": "purview_csv",
        "operation": "MailItemsAccessed",
        "organization_id": CONTOSO,
        "user_id": mailbox,
        "mailbox_owner_upn": mailbox,
        "client_app_id": "9199bf20-a13f-4107-85dc-02114787ef48",
        "client_ip": "195.26.87.219",
        "client_info_string": "Client=REST;Client=RESTSystem;;",
        "unique_token_id": f"dG9rZW4tMDAw{n}",
        "token_tenant_id": token_tenant,
        "ingest_batch_id": "fixture-batch",
    }


@pytest.fixture
def mail_lake(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path / "lake")
    batch = lake.begin()
    batch.add(
        "mail_events",
        [
            _mail_row(1, datetime(2026, 11, 10, 1, 0, tzinfo=UTC)),
            _mail_row(2, datetime(2026, 11, 15, 1, 14, tzinfo=UTC)),
            _mail_row(3, datetime(2026, 11, 15, 2, 0, tzinfo=UTC), mailbox="raj.patel@contoso.com"),
            _mail_row(4, datetime(2026, 11, 15, 3, 0, tzinfo=UTC), token_tenant=CONTOSO),
        ],
    )
    batch.commit({"kind": "test"})
    return lake


def _stored(lake: Lake) -> dict[str, dict]:
    return {r["finding_id"]: r for r in lake.read_table("findings").to_pylist()}


def test_second_run_adds_nothing_new(mail_lake: Lake) -> None:
    only = ["consumer_tenant_mail_audit"]
    first = detect_lake(mail_lake, only=only, now=datetime(2026, 11, 16, 2, 0, tzinfo=UTC))
    assert len(first.findings) == 2 and len(first.new) == 2 and first.exit_code == detect.EXIT_NEW_FINDINGS
    assert {r["status"] for r in first.findings} == {"new"} and {r["hit_count"] for r in first.findings} == {1}
    assert first.per_detection["consumer_tenant_mail_audit"].new == 2

    second = detect_lake(mail_lake, only=only, now=datetime(2026, 11, 17, 2, 0, tzinfo=UTC))
    assert second.new == [] and second.exit_code == detect.EXIT_OK
    assert {r["status"] for r in second.findings} == {"seen"} and {r["hit_count"] for r in second.findings} == {2}
    stored = _stored(mail_lake)
    assert len(stored) == 2
    for row in stored.values():
        assert row["status"] == "seen" and row["hit_count"] == 2
        assert row["first_seen"] == datetime(2026, 11, 16, 2, 0, tzinfo=UTC)
        assert row["last_seen"] == datetime(2026, 11, 17, 2, 0, tzinfo=UTC)
    assert set(stored) == {r["finding_id"] for r in first.findings}


def test_resolved_by_user_stays_resolved(mail_lake: Lake) -> None:
    only = ["consumer_tenant_mail_audit"]
    detect_lake(mail_lake, only=only)
    rows = list(_stored(mail_lake).values())
    rows[0]["status"] = "resolved-by-user"
    with mail_lake.lock():
        batch = mail_lake.begin()
        batch.replace("findings", rows)
        batch.commit({"kind": "test-resolve"})
    again = detect_lake(mail_lake, only=only)
    by_id = {r["finding_id"]: r for r in again.findings}
    assert by_id[rows[0]["finding_id"]]["status"] == "resolved-by-user"
    assert by_id[rows[0]["finding_id"]]["hit_count"] == 2
    assert again.new == []


def test_findings_of_other_detections_survive_an_only_run(mail_lake: Lake) -> None:
    detect_lake(mail_lake, only=["consumer_tenant_mail_audit"])
    detect_lake(mail_lake, only=["token_never_issued"])
    ids = {r["detection_id"] for r in _stored(mail_lake).values()}
    assert ids == {"consumer_tenant_mail_audit", "token_never_issued"}


def test_inconclusive_turning_into_alert_is_new_again() -> None:
    run = datetime(2026, 11, 16, tzinfo=UTC)
    base = {"detection_id": "d", "severity": "high", "event_time": run, "tenant_id": None, "principal": None,
            "entity_key": "k", "token_fingerprint": None, "evidence": "{}", "finding_id": finding_id("d", "k")}
    stored, first = detect.merge_findings([], [{**base, "outcome": "inconclusive"}], run, "b1")
    stored, second = detect.merge_findings(stored, [{**base, "outcome": "alert"}], run + timedelta(days=1), "b2")
    assert first[0]["status"] == "new" and second[0]["status"] == "new" and second[0]["hit_count"] == 2
    stored, third = detect.merge_findings(stored, [{**base, "outcome": "alert"}], run + timedelta(days=2), "b3")
    assert third[0]["status"] == "seen" and third[0]["hit_count"] == 3 and len(stored) == 1


def test_since_until_restrict_the_window_and_the_partitions_read(mail_lake: Lake) -> None:
    only = ["consumer_tenant_mail_audit"]
    early = detect_lake(mail_lake, since="2026-11-09", until="2026-11-10", only=only)
    assert [r["event_time"].day for r in early.findings] == [10]
    late = detect_lake(mail_lake, since="2026-11-15", only=only)
    days = {r["principal"]: r["event_time"].day for r in late.findings}
    # raj's reads are on the 15th only; diane's finding keeps the earliest event of any run (the 10th)
    assert days == {"raj.patel@contoso.com": 15, "diane.ross@contoso.com": 10}
    assert {r["hit_count"] for r in late.findings} == {1, 2}
    none = detect_lake(mail_lake, since="2026-11-16", only=only)
    assert none.findings == [] and none.batch_id is None
    from pipeline.engines.duckdb import connect

    con = connect(mail_lake, min_date="2026-11-15")
    assert con.execute("SELECT count(*) FROM mail_events").fetchone()[0] == 3
    con.close()


def test_window_parsing() -> None:
    assert detect.parse_time_bound("2026-11-15") == datetime(2026, 11, 15, tzinfo=UTC)
    assert detect.parse_time_bound("2026-11-15", end=True) == datetime(2026, 11, 16, tzinfo=UTC)
    assert detect.parse_time_bound("2026-11-15T10:00:00Z") == datetime(2026, 11, 15, 10, tzinfo=UTC)
    now = datetime(2026, 11, 20, tzinfo=UTC)
    assert detect.parse_time_bound("7d", now=now) == datetime(2026, 11, 13, tzinfo=UTC)
    with pytest.raises(DetectionParamError):
        detect.parse_time_bound("last tuesday")
    with pytest.raises(DetectionParamError, match="empty"):
        detect.resolve_window("2026-11-15", "2026-11-14")
    detections = load_detections()
    assert detect.min_partition_date(datetime(2026, 11, 15, tzinfo=UTC), detections) <= "2026-11-14"


def test_settings_feed_params_and_partner_tenants(mail_lake: Lake) -> None:
    partner = Settings(partner_tenants=[CONSUMER])  # a (silly) config allowing the consumer tenant...
    result = detect_lake(mail_lake, only=["consumer_tenant_mail_audit"], settings=partner)
    assert len(result.findings) == 2  # ...changes nothing: the consumer tenant is never a partner
    with pytest.raises(DetectionParamError, match="unknown parameter"):
        detect_lake(mail_lake, settings=Settings(detections={"consumer_tenant_mail_audit": {"bogus": 1}}))


# --------------------------------------------------------------------------- output formats
@pytest.fixture
def findings(mail_lake: Lake) -> list[dict]:
    return detect_lake(mail_lake, only=["consumer_tenant_mail_audit", "token_never_issued"]).findings


def test_jsonl_round_trips(findings: list[dict]) -> None:
    parsed = [json.loads(line) for line in format_findings(findings, "jsonl").splitlines()]
    assert len(parsed) == len(findings)
    for doc, row in zip(parsed, findings):
        assert tuple(doc) == COLUMNS
        assert doc["finding_id"] == row["finding_id"] and doc["status"] == row["status"]
        assert doc["evidence"] == json.loads(row["evidence"])
        assert datetime.fromisoformat(doc["event_time"]) == row["event_time"]


def test_csv_round_trips(findings: list[dict]) -> None:
    reader = csv.DictReader(io.StringIO(format_findings(findings, "csv")))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    back = list(reader)
    assert [r["finding_id"] for r in back] == [r["finding_id"] for r in findings]
    assert [int(r["hit_count"]) for r in back] == [r["hit_count"] for r in findings]
    assert [json.loads(r["evidence"]) for r in back] == [json.loads(r["evidence"]) for r in findings]


def test_ocsf_detection_finding(findings: list[dict]) -> None:
    detections = load_detections()
    docs = [json.loads(line) for line in format_findings(findings, "ocsf", detections).splitlines()]
    assert len(docs) == len(findings)
    for doc, row in zip(docs, findings):
        assert doc["class_uid"] == 2004 and doc["category_uid"] == 2 and doc["type_uid"] == 200401
        assert doc["finding_info"]["uid"] == row["finding_id"]
        assert doc["finding_info"]["types"] == [row["detection_id"]]
        assert doc["finding_info"]["title"] != row["detection_id"]  # the detection's title
        assert doc["severity_id"] == {"informational": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}[row["severity"]]
        assert doc["metadata"]["product"]["name"] == "tokenhunt"
        assert doc["time"] == int(row["last_seen"].timestamp() * 1000)
        assert doc["finding_info"]["first_seen_time"] == int(row["event_time"].timestamp() * 1000)
        assert doc["evidences"][0]["data"] == json.loads(row["evidence"])
        assert doc["unmapped"]["entity_key"] == row["entity_key"]
        assert doc["is_alert"] == (row["outcome"] == "alert")


def test_table_and_markdown_carry_every_column(findings: list[dict]) -> None:
    table = format_findings(findings, "table")
    assert all(c in table.splitlines()[0] for c in COLUMNS)
    assert all(r["finding_id"] in table for r in findings)
    md = format_findings(findings, "markdown").splitlines()
    assert md[0] == "| " + " | ".join(COLUMNS) + " |" and len(md) == 2 + len(findings)
    with pytest.raises(ValueError):
        format_findings(findings, "xml")


# --------------------------------------------------------------------------- CLI
def test_cli_detect_exit_codes_and_output(mail_lake: Lake, tmp_path: Path) -> None:
    from pipeline.cli import app

    runner = CliRunner()
    args = ["detect", "--lake", str(mail_lake.root), "--only", "consumer_tenant_mail_audit", "--format", "jsonl"]
    first = runner.invoke(app, args)
    assert first.exit_code == 10, first.output
    lines = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 2 and all(l["status"] == "new" and l["finding_id"] for l in lines)
    out = tmp_path / "findings.ocsf.jsonl"
    second = runner.invoke(app, args[:-1] + ["ocsf", "--out", str(out)])
    assert second.exit_code == 0, second.output
    assert all(json.loads(line)["class_uid"] == 2004 for line in out.read_text().splitlines())
    assert runner.invoke(app, args + ["--engine", "nosuch"]).exit_code == 2  # spark is an engine now (tests/test_spark_parity.py)
    assert runner.invoke(app, ["detect", "--lake", str(mail_lake.root), "--only", "nope"]).exit_code == 2
    assert runner.invoke(app, ["detect", "--lake", str(mail_lake.root), "--since", "someday"]).exit_code == 2


# --------------------------------------------------------------------------- real exports
def test_real_purview_tokens_match_their_userloggedin_signins(realdata: Path, tmp_path: Path) -> None:
    """Huntress CTF 2023 Purview export: 38 New-InboxRule records carry a UniqueTokenId, and the
    same export's UserLoggedIn rows (ingested as sign-ins) issued those tokens, five minutes after
    IssuedAtTime. Its only session ids sit on UserLoggedIn records, which are sign-ins themselves.
    So both detections stay silent; with the sign-ins hidden, token_never_issued turns
    inconclusive, never an alert."""
    from pipeline.ingest import ingest_paths

    lake = Lake(tmp_path / "lake")
    report = ingest_paths(lake, [realdata / "huntress_ctf2023_purview"], quality_policy="off")
    assert report.exit_code == 0
    only = ["token_never_issued", "session_never_created"]
    result = detect_lake(lake, only=only)
    assert result.errors == {} and result.findings == []
    rows = lake.read_table("mail_events").to_pylist()
    assert sum(r["unique_token_id"] is not None for r in rows) == 38
    con = memory_connection([{"table": "mail_events", **r} for r in rows])  # sign-ins hidden
    blind = run_detections(con, load_detections(), only=only)
    assert len(blind) == 1 and blind[0]["outcome"] == "inconclusive"  # one token id, used 38 times
    assert blind[0]["detection_id"] == "token_never_issued" and json.loads(blind[0]["evidence"])["events"] == 38
