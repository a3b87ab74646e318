"""Hunts: saved hunts return the expected rows, hunts cannot write, parameters are inert, outputs round-trip."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import hunts
from pipeline.cli import app
from pipeline.engines import duckdb as engine

from tests.hunt_lake import ALICE, BAD_IP, BOB, EVIL_APP, EXO, FP_A, FP_B, FP_C, OUTLOOK, TEAMS, TENANT, build, ts

UTC = timezone.utc


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hunts") / "lake"
    build(root)
    return root


@pytest.fixture(scope="module")
def con(lake_root: Path) -> duckdb.DuckDBPyConnection:
    return hunts.open_session(lake_root)


def rows(table: pa.Table) -> list[tuple]:
    return [tuple(r) for r in zip(*(c.to_pylist() for c in table.columns))]


def lake_state(root: Path) -> dict[str, str]:
    """Every file under the lake with its content hash: a hunt must leave this unchanged."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- saved hunts: expected rows
# name -> (parameters, column names, expected rows). Every file in queries/hunts must appear here.
EXPECTED: dict[str, tuple[dict, list[str], list[tuple]]] = {
    "user_tokens": (
        {"user": "ALICE@contoso.com"},
        ["token_id", "token_fingerprint", "first_seen", "last_seen", "signins", "mail_events", "gateway_requests", "app_ids"],
        [
            ("uti-a1", FP_A, ts("2024-05-01 08:00"), ts("2024-05-01 08:10"), 1, 2, 2, OUTLOOK),
            ("uti-a2", None, ts("2024-05-01 12:00"), ts("2024-05-01 12:00"), 1, 0, 0, OUTLOOK),
            ("uti-forged", FP_B, ts("2024-05-02 03:00"), ts("2024-05-03 01:00"), 0, 1, 2, EVIL_APP),
            ("uti-a3", None, ts("2024-05-02 09:00"), ts("2024-05-02 09:00"), 1, 0, 0, TEAMS),
        ],
    ),
    "client_app_mail_access": (
        {"app_id": EVIL_APP.upper()},
        ["event_time", "operation", "mailbox_owner_upn", "user_id", "client_app_id", "client_ip", "mail_access_type",
         "item_count", "unique_token_id", "aad_session_id", "event_id"],
        [
            (ts("2024-05-02 03:00"), "MailItemsAccessed", ALICE, ALICE, EVIL_APP, BAD_IP, "Bind", 50, "uti-forged", None, "mail-3"),
            (ts("2024-05-02 03:30"), "MailItemsAccessed", BOB, BOB, EVIL_APP, BAD_IP, "Bind", 20, "uti-forged2", None, "mail-4"),
        ],
    ),
    "signins_without_mail": (
        {},
        ["event_time", "user_principal_name", "app_id", "app_display_name", "ip_address", "unique_token_id", "session_id", "event_id"],
        [(ts("2024-05-02 11:00"), BOB, OUTLOOK, None, "192.0.2.5", "uti-b3", "sess-b2", "00000000-0000-4000-8000-000000000006")],
    ),
    "mail_without_signin": (
        {},
        ["event_time", "operation", "mailbox_owner_upn", "user_id", "client_app_id", "client_ip", "unique_token_id",
         "token_issued_at", "event_id"],
        [
            (ts("2024-05-02 03:00"), "MailItemsAccessed", ALICE, ALICE, EVIL_APP, BAD_IP, "uti-forged", None, "mail-3"),
            (ts("2024-05-02 03:30"), "MailItemsAccessed", BOB, BOB, EVIL_APP, BAD_IP, "uti-forged2", None, "mail-4"),
        ],
    ),
    "top_client_apps_per_mailbox": (
        {},
        ["mailbox", "rank", "client_app_id", "events", "items", "ips", "first_seen", "last_seen"],
        [
            (ALICE, 1, OUTLOOK, 2, 13, 1, ts("2024-05-01 08:05"), ts("2024-05-01 08:10")),
            (ALICE, 2, EVIL_APP, 1, 50, 1, ts("2024-05-02 03:00"), ts("2024-05-02 03:00")),
            (BOB, 1, EVIL_APP, 1, 20, 1, ts("2024-05-02 03:30"), ts("2024-05-02 03:30")),
            (BOB, 2, OUTLOOK, 1, 1, 1, ts("2024-05-01 09:40"), ts("2024-05-01 09:40")),
        ],
    ),
    "tokens_per_kid_per_day": (
        {},
        ["day", "kid", "key_scope", "key_status", "tokens", "requests", "ips"],
        [
            ("2024-05-01", "kid-ent", "enterprise", "active", 1, 2, 1),
            ("2024-05-02", "kid-consumer", "consumer", "compromised", 2, 2, 1),
            ("2024-05-03", "kid-consumer", "consumer", "compromised", 1, 1, 1),
        ],
    ),
    "user_timeline": (
        {"user": ALICE, "since": "2024-05-01T08:00:00Z", "until": "2024-05-02T03:00:01Z"},
        ["event_time", "source_table", "action", "app_id", "ip", "detail", "ref"],
        [
            (ts("2024-05-01 08:00"), "signins", "sign-in ok", OUTLOOK, "203.0.113.10", EXO, "00000000-0000-4000-8000-000000000001"),
            (ts("2024-05-01 08:00"), "token_events", "GET outlook.office.com/api/v2.0/me/messages", OUTLOOK, "203.0.113.10",
             "token aaaaaaaaaaaa kid kid-ent", "gw-1"),
            (ts("2024-05-01 08:05"), "mail_events", "MailItemsAccessed", OUTLOOK, "203.0.113.10", f"mailbox {ALICE} items 3", "mail-1"),
            (ts("2024-05-01 08:10"), "mail_events", "MailItemsAccessed", OUTLOOK, "203.0.113.10", f"mailbox {ALICE} items 10", "mail-2"),
            (ts("2024-05-01 08:10"), "token_events", "GET outlook.office.com/api/v2.0/me/messages", OUTLOOK, "203.0.113.10",
             "token aaaaaaaaaaaa kid kid-ent", "gw-2"),
            (ts("2024-05-01 12:00"), "findings", "session_many_locations", None, None, "low resolved-by-user", f"{3:032x}"),
            (ts("2024-05-01 12:00"), "signins", "sign-in ok", OUTLOOK, "198.51.100.20", EXO, "00000000-0000-4000-8000-000000000002"),
            (ts("2024-05-02 03:00"), "findings", "new_mail_client_app", None, None, "high new", f"{1:032x}"),
            (ts("2024-05-02 03:00"), "mail_events", "MailItemsAccessed", EVIL_APP, BAD_IP, f"mailbox {ALICE} items 50", "mail-3"),
            (ts("2024-05-02 03:00"), "token_events", "GET outlook.office365.com/EWS/Exchange.asmx", EVIL_APP, BAD_IP,
             "token bbbbbbbbbbbb kid kid-consumer", "gw-3"),
        ],
    ),
    "first_seen_client_apps": (
        {"since": "2024-05-02"},
        ["client_app_id", "first_seen", "first_table", "first_principal", "last_seen", "signins", "mail_events", "principals"],
        [
            (EVIL_APP, ts("2024-05-02 03:00"), "mail_events", ALICE, ts("2024-05-02 03:30"), 0, 2, 2),
            (TEAMS, ts("2024-05-02 09:00"), "signins", ALICE, ts("2024-05-02 09:00"), 1, 0, 1),
        ],
    ),
    "sessions_many_ips": (
        {},
        ["session_id", "ips", "ip_list", "principals", "first_seen", "last_seen", "signins", "mail_events"],
        [("sess-a", 2, "198.51.100.20,203.0.113.10", ALICE, ts("2024-05-01 08:00"), ts("2024-05-01 12:00"), 2, 2)],
    ),
    "quarantine_by_reason": (
        {},
        ["target_table", "reason", "records", "files", "file_list", "first_quarantined", "last_quarantined"],
        [
            ("signins", "event_id 'x' is not a GUID", 2, 2, "a.json,b.json", ts("2024-05-03 00:10"), ts("2024-05-03 00:20")),
            ("mail_events", "operation is required but missing", 1, 1, "ual.csv", ts("2024-05-03 00:15"), ts("2024-05-03 00:15")),
            ("unknown", "not JSON", 1, 1, "junk.json", ts("2024-05-03 00:05"), ts("2024-05-03 00:05")),
        ],
    ),
    "key_registry_timeline": (
        {},
        ["kid", "source", "scope", "status", "first_seen", "last_seen", "removed_seen", "cert_not_after", "snapshot_count",
         "tokens", "first_token", "last_token"],
        [
            ("kid-old", "jwks-enterprise", "enterprise", "retired", ts("2016-01-01 00:00"), ts("2020-01-01 00:00"),
             ts("2020-02-01 00:00"), ts("2026-01-01 00:00"), 4, 0, None, None),
            ("kid-consumer", "jwks-consumer", "consumer", "compromised", ts("2016-04-05 00:00"), ts("2021-04-01 00:00"),
             ts("2021-05-01 00:00"), ts("2026-01-01 00:00"), 6, 2, ts("2024-05-02 03:00"), ts("2024-05-03 01:00")),
            ("kid-ent", "jwks-enterprise", "enterprise", "active", ts("2024-01-01 00:00"), ts("2024-05-01 00:00"), None,
             ts("2026-01-01 00:00"), 5, 1, ts("2024-05-01 08:00"), ts("2024-05-01 08:10")),
        ],
    ),
    "indicator_ip_matches": (
        {},
        ["event_time", "source_table", "ip", "principal", "app_id", "campaign", "reason", "event_id"],
        [
            (ts("2024-05-02 03:00"), "mail_events", BAD_IP, ALICE, EVIL_APP, "Storm-0558", "actor infrastructure", "mail-3"),
            (ts("2024-05-02 03:00"), "token_events", BAD_IP, ALICE, EVIL_APP, "Storm-0558", "actor infrastructure", "gw-3"),
            (ts("2024-05-02 03:30"), "mail_events", BAD_IP, BOB, EVIL_APP, "Storm-0558", "actor infrastructure", "mail-4"),
            (ts("2024-05-02 03:30"), "token_events", BAD_IP, BOB, EVIL_APP, "Storm-0558", "actor infrastructure", "gw-4"),
            (ts("2024-05-03 01:00"), "token_events", BAD_IP, ALICE, EVIL_APP, "Storm-0558", "actor infrastructure", "gw-5"),
        ],
    ),
    "suspicious_key_tokens": (
        {},
        ["token_fingerprint", "kid", "key_scope", "key_status", "kid_in_issuer_jwks", "signature_status", "upn", "appid", "tid",
         "first_seen", "last_seen", "seen_count", "hosts", "ips"],
        [
            (FP_B, "kid-consumer", "consumer", "compromised", False, "valid", ALICE, EVIL_APP, TENANT, ts("2024-05-02 03:00"),
             ts("2024-05-03 01:00"), 2, "outlook.office365.com", BAD_IP),
            (FP_C, "kid-consumer", "consumer", "compromised", False, "valid", BOB, EVIL_APP, TENANT, ts("2024-05-02 03:30"),
             ts("2024-05-02 03:30"), 1, "outlook.office365.com", BAD_IP),
        ],
    ),
    "ingest_history": (
        {"since": "2024-05-03"},
        ["started_at", "source_file", "source_format", "records_read", "rows_written", "duplicates", "quarantined",
         "min_event_time", "max_event_time", "quality_status", "ingest_batch_id"],
        [
            (ts("2024-05-03 00:20"), "ual.csv", "purview_csv", 7, 6, 0, 1, None, None, "degraded", "20240503T002000-000000000020"),
            (ts("2024-05-03 00:10"), "a.json", "graph_json", 10, 9, 0, 1, None, None, "passed", "20240503T001000-000000000010"),
        ],
    ),
    "open_findings": (
        {},
        ["severity", "detection_id", "principal", "event_time", "status", "hit_count", "first_seen", "last_seen", "entity_key",
         "finding_id"],
        [
            ("high", "new_mail_client_app", ALICE, ts("2024-05-02 03:00"), "new", 1, ts("2024-05-03 02:00"), ts("2024-05-03 02:00"),
             f"new_mail_client_app|{ALICE}", f"{1:032x}"),
            ("medium", "bulk_mailbox_access", BOB, ts("2024-05-02 03:30"), "seen", 3, ts("2024-05-03 02:00"), ts("2024-05-03 02:00"),
             f"bulk_mailbox_access|{BOB}", f"{2:032x}"),
        ],
    ),
}


def test_every_saved_hunt_has_a_test_and_there_are_enough():
    saved = hunts.load_hunts()
    assert len(saved) >= 12
    assert set(saved) == set(EXPECTED), f"hunts without expected rows: {sorted(set(saved) - set(EXPECTED))}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_saved_hunt_returns_expected_rows(con: duckdb.DuckDBPyConnection, name: str):
    params, columns, expected = EXPECTED[name]
    result = hunts.fetch_all(hunts.run_hunt(con, hunts.get_hunt(name), params))
    assert result.schema.names == columns
    assert rows(result) == expected


@pytest.mark.parametrize(
    "name,params,expected_count",
    [
        ("top_client_apps_per_mailbox", {"top": "1"}, 2),  # one app per mailbox
        ("top_client_apps_per_mailbox", {"operation": ""}, 4),  # Send counted with OUTLOOK: still 2 apps x 2 mailboxes
        ("sessions_many_ips", {"min_ips": "1"}, 4),  # sess-a, sess-a2, sess-b, sess-b2
        ("mail_without_signin", {"since": "2024-05-02T03:15:00Z"}, 1),
        ("key_registry_timeline", {"kid": "kid-ent"}, 1),
        ("open_findings", {"min_severity": "informational"}, 3),
        ("open_findings", {"min_severity": "high"}, 1),
        ("tokens_per_kid_per_day", {"since": "2024-05-03"}, 1),
        ("signins_without_mail", {"resource_id": "00000003-0000-0000-c000-000000000000"}, 1),  # the Teams/Graph sign-in
        ("signins_without_mail", {"since": "2024-05-02T11:00:01Z"}, 0),
        ("client_app_mail_access", {"app_id": OUTLOOK, "until": "2024-05-01T09:00:00Z"}, 2),
        ("user_timeline", {"user": BOB}, 9),  # 3 sign-ins, 3 mail events, 1 request, 2 findings
        ("user_tokens", {"user": "nobody@contoso.com"}, 0),
    ],
)
def test_saved_hunt_parameters_change_the_answer(con, name: str, params: dict, expected_count: int):
    assert hunts.fetch_all(hunts.run_hunt(con, hunts.get_hunt(name), params)).num_rows == expected_count


def test_saved_hunt_header_is_parsed(con):
    h = hunts.get_hunt("client_app_mail_access")
    assert h.title == "All mail access by one client app"
    assert [(p.name, p.type, p.required) for p in h.params] == [
        ("app_id", "string", True), ("since", "timestamp", False), ("until", "timestamp", False),
    ]
    assert h.param("since").default == datetime(1970, 1, 1, tzinfo=UTC)
    assert "mail_events" in h.requires
    assert hunts.get_hunt("tokens_per_kid_per_day").param("since").default == date(1970, 1, 1)


# --------------------------------------------------------------------------- read-only enforcement
REFUSED = [
    "CREATE TABLE t AS SELECT 1",
    "CREATE TEMP TABLE t AS SELECT 1",
    "CREATE OR REPLACE VIEW signins AS SELECT 1 AS x",
    "CREATE MACRO m() AS 1",
    "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "DROP VIEW signins",
    "ALTER VIEW signins RENAME TO s2",
    "INSERT INTO signins SELECT * FROM signins",
    "UPDATE signins SET user_id = 'x'",
    "DELETE FROM signins",
    "COPY (SELECT 1) TO '/tmp/tokenhunt-hunt-escape.csv'",
    "COPY (SELECT * FROM signins) TO '{lake}/signins/event_date=2024-05-01/part-evil.parquet'",
    "COPY (SELECT 1) TO '{lake}/x.csv'",
    "COPY signins FROM '{lake}/x.csv'",
    "EXPORT DATABASE '{lake}/export'",
    "ATTACH '{lake}/x.db' AS x",
    "ATTACH '/tmp/tokenhunt-hunt-escape.db'",
    "DETACH memory",
    "INSTALL httpfs",
    "LOAD httpfs",
    "FORCE INSTALL httpfs",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "RESET allowed_directories",
    "PRAGMA enable_profiling",
    "CALL pragma_version()",
    "USE memory",
    "CHECKPOINT",
    "VACUUM",
    "BEGIN TRANSACTION",
    "PREPARE p AS SELECT 1",
    "PIVOT signins ON sign_in_type USING count(*)",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '{lake}/e.csv'",
    "EXPLAIN COPY (SELECT 1) TO '{lake}/e.csv'",
    "/* hi */ EXPLAIN (FORMAT json) INSERT INTO signins SELECT * FROM signins",
    "EXPLAIN (ANALYZE, FORMAT ') SELECT 1 --') COPY (SELECT 1) TO '{lake}/f.csv'",
    "EXPLAIN (ANALYZE) COPY (SELECT 1) TO '{lake}/g.csv'",
    "SELECT 1; DROP VIEW signins",
    "SELECT 1; COPY (SELECT 1) TO '{lake}/y.csv'",
    "",
    "  -- only a comment\n",
]

OUTSIDE_READS = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT * FROM read_json('/etc/passwd')",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM read_parquet('{lake}/../../outside.parquet')",
    "SELECT * FROM read_csv('https://example.com/x.csv')",
    "SELECT * FROM read_csv('~/.bash_history')",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_write_statements_are_refused_before_running(lake_root: Path, con, sql: str):
    before = lake_state(lake_root)
    text = sql.replace("{lake}", str(lake_root))
    with pytest.raises(hunts.HuntRefused) as info:
        hunts.fetch_all(hunts.query(con, text))
    message = str(info.value)
    assert "refused" in message or "exactly one statement" in message or "no SQL statement" in message
    assert lake_state(lake_root) == before
    assert not Path("/tmp/tokenhunt-hunt-escape.csv").exists() and not Path("/tmp/tokenhunt-hunt-escape.db").exists()
    assert con.execute("SELECT count(*) FROM signins").fetchone()[0] == 6  # views intact


def test_refusal_names_the_statement(con):
    with pytest.raises(hunts.HuntRefused, match=r"refused INSTALL statement"):
        hunts.query(con, "INSTALL httpfs")
    with pytest.raises(hunts.HuntRefused, match=r"refused COPY statement"):
        hunts.query(con, "COPY (SELECT 1) TO 'x.csv'")
    with pytest.raises(hunts.HuntRefused, match=r"found 2 \(SELECT, DROP\)"):
        hunts.query(con, "SELECT 1; DROP VIEW signins")


@pytest.mark.parametrize("sql", OUTSIDE_READS)
def test_reads_outside_the_lake_are_refused(lake_root: Path, con, sql: str):
    with pytest.raises(hunts.HuntError, match=r"Permission Error|does not exist"):
        hunts.fetch_all(hunts.query(con, sql.replace("{lake}", str(lake_root))))


def test_query_table_function_cannot_smuggle_statements(lake_root: Path, con):
    before = lake_state(lake_root)
    with pytest.raises(hunts.HuntError):
        hunts.fetch_all(hunts.query(con, f"SELECT * FROM query('COPY (SELECT 1) TO ''{lake_root}/q.csv''')"))
    assert lake_state(lake_root) == before


def test_engine_session_is_locked_without_the_classifier(lake_root: Path):
    """Layer 2 alone (pipeline.engines.duckdb.connect): outside files, extensions and settings are refused."""
    raw = engine.connect(lake_root, read_only=True)
    for sql in ("SELECT * FROM read_csv('/etc/passwd')", "INSTALL httpfs", "LOAD httpfs", "ATTACH '/tmp/tokenhunt-x.db'",
                "COPY (SELECT 1) TO '/tmp/tokenhunt-x.csv'", "SET enable_external_access = true", "SET allowed_directories = ['/']"):
        with pytest.raises(duckdb.Error):
            raw.execute(sql)
    assert not Path("/tmp/tokenhunt-x.db").exists() and not Path("/tmp/tokenhunt-x.csv").exists()
    assert raw.execute("SELECT count(*) FROM signins").fetchone()[0] == 6


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 AS x",
        "  -- comment\n/* block */ WITH a AS (SELECT 1 AS x) SELECT * FROM a;",
        "VALUES (1), (2)",
        "FROM signins LIMIT 1",
        "DESCRIBE signins",
        "SHOW TABLES",
        "SUMMARIZE signins",
        "EXPLAIN SELECT * FROM signins",
        "EXPLAIN ANALYZE SELECT count(*) FROM signins",
        "EXPLAIN (ANALYZE, FORMAT json) SELECT count(*) FROM signins",
        "EXPLAIN (FORMAT 'json') SELECT 1",
        "(SELECT 1) UNION ALL (SELECT 2)",
        "SELECT * FROM (PIVOT signins ON sign_in_type IN ('interactive') USING count(*))",
        "SELECT count(*) FROM read_text('{lake}/_manifest/batches/*.json')",
        "SELECT * FROM duckdb_settings() WHERE name = 'enable_external_access'",
    ],
)
def test_read_statements_run(lake_root: Path, con, sql: str):
    result = hunts.fetch_all(hunts.query(con, sql.replace("{lake}", str(lake_root))))
    assert result.num_columns >= 1


# --------------------------------------------------------------------------- parameters
HOSTILE = [
    "alice@contoso.com' OR '1'='1",
    "x'; DROP VIEW signins; --",
    "'); COPY (SELECT 1) TO '/tmp/tokenhunt-hostile.csv'; --",
    '" OR ""="',
    "$user",
    "\\'; SELECT 1; --",
    "%",
    "alice@contoso.com\x00",
    "ünïcødé'\"`;--/*",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_parameter_values_are_inert(lake_root: Path, con, value: str):
    before = lake_state(lake_root)
    result = hunts.fetch_all(hunts.run_hunt(con, hunts.get_hunt("user_tokens"), {"user": value}))
    assert result.num_rows == 0
    echoed = hunts.fetch_all(hunts.query(con, "SELECT $v AS v, length($v) AS n", {"v": value}))
    assert rows(echoed) == [(value, len(value))]
    assert lake_state(lake_root) == before
    assert not Path("/tmp/tokenhunt-hostile.csv").exists()
    assert con.execute("SELECT count(*) FROM signins").fetchone()[0] == 6


def test_hostile_parameter_names_are_rejected():
    for arg in ("x;drop=1", "a b=1", "=1", "user", "1x=2"):
        with pytest.raises(hunts.HuntParamError):
            hunts.parse_param_args([arg])
    with pytest.raises(hunts.HuntParamError, match="unknown parameter 'bogus'"):
        hunts.resolve_params(hunts.get_hunt("user_tokens"), {"user": "a", "bogus": "1"})
    with pytest.raises(hunts.HuntParamError, match="given twice"):
        hunts.parse_param_args(["a=1", "a=2"])


@pytest.mark.parametrize(
    "ptype,text,value",
    [
        ("string", "a=b;c", "a=b;c"),
        ("int", " 42 ", 42),
        ("int", "-7", -7),
        ("float", "1.5", 1.5),
        ("bool", "yes", True),
        ("bool", "0", False),
        ("date", "2024-05-01", date(2024, 5, 1)),
        ("timestamp", "2024-05-01T08:00:00Z", datetime(2024, 5, 1, 8, tzinfo=UTC)),
        ("timestamp", "2024-05-01 08:00", datetime(2024, 5, 1, 8, tzinfo=UTC)),
        ("timestamp", "2024-05-01T10:00:00+02:00", datetime(2024, 5, 1, 8, tzinfo=UTC)),
        ("timestamp", "2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
    ],
)
def test_parameter_conversion(ptype: str, text: str, value):
    assert hunts.convert_value(hunts.HuntParam("p", ptype, ""), text) == value


@pytest.mark.parametrize(
    "ptype,text",
    [("int", "two"), ("int", "1.5"), ("int", "1; DROP"), ("float", "nan"), ("float", "inf"), ("bool", "maybe"),
     ("date", "2024-13-01"), ("date", "yesterday"), ("timestamp", "soon"), ("timestamp", "")],
)
def test_bad_parameter_values_give_clear_errors(ptype: str, text: str):
    with pytest.raises(hunts.HuntParamError, match=rf"parameter p \({ptype}\)"):
        hunts.convert_value(hunts.HuntParam("p", ptype, ""), text)


def test_typed_adhoc_parameters(con):
    values = hunts.adhoc_params(hunts.parse_param_args(["n:int=2", "since:timestamp=2024-05-02", "who=bob@contoso.com"]))
    result = hunts.fetch_all(hunts.query(
        con, "SELECT count(*) AS c FROM signins WHERE event_time >= $since AND user_principal_name = $who AND result_code = 0 LIMIT $n", values
    ))
    assert rows(result) == [(1,)]
    with pytest.raises(hunts.HuntParamError, match="declared string, not int"):
        hunts.resolve_params(hunts.get_hunt("user_tokens"), hunts.parse_param_args(["user:int=1"]))


def test_required_parameter_missing():
    with pytest.raises(hunts.HuntParamError, match="parameter user \\(string\\) is required"):
        hunts.resolve_params(hunts.get_hunt("user_tokens"), {})


# --------------------------------------------------------------------------- hunt files are checked
def test_malformed_hunt_files_report_every_problem(tmp_path: Path):
    (tmp_path / "bad.sql").write_text(
        '-- title = "x"\n-- [params.a]\n-- type = "uuid"\n-- description = "d"\n'
        "-- [params.b]\n-- type = \"int\"\n-- description = \"d\"\n-- default = \"three\"\n"
        "SELECT $a, $c\n",
        encoding="utf-8",
    )
    (tmp_path / "writes.sql").write_text('-- title = "w"\n-- description = "d"\nDELETE FROM signins\n', encoding="utf-8")
    (tmp_path / "Bad-Name.sql").write_text('-- title = "w"\n-- description = "d"\nSELECT 1\n', encoding="utf-8")
    with pytest.raises(hunts.HuntLoadError) as info:
        hunts.load_hunts(tmp_path)
    text = "\n".join(info.value.problems)
    assert "'description' is missing" in text
    assert "type 'uuid' is not one of" in text
    assert "param b: default: parameter b (int): 'three' is not a whole number" in text
    assert "SQL uses $c but the header declares no [params.c]" in text
    assert "refused DELETE statement" in text
    assert "'Bad-Name' is not snake_case" in text
    (tmp_path / "unused.sql").write_text(
        '-- title = "u"\n-- description = "d"\n-- [params.x]\n-- type = "int"\n-- description = "d"\n-- default = 1\nSELECT 1\n',
        encoding="utf-8",
    )
    with pytest.raises(hunts.HuntLoadError, match=r"param x is declared but the SQL never uses \$x"):
        hunts.load_hunt(tmp_path / "unused.sql")
    with pytest.raises(hunts.HuntError, match="no saved hunt 'nope'"):
        hunts.get_hunt("nope", tmp_path)


# --------------------------------------------------------------------------- SQL errors
def test_sql_errors_carry_duckdb_message_and_position(con):
    with pytest.raises(hunts.HuntSQLError) as info:
        hunts.query(con, "SELECT event_id,\n       no_such_column\nFROM signins")
    message = str(info.value)
    assert "Binder Error" in message and "no_such_column" in message
    assert "LINE 2:" in message and "^" in message
    with pytest.raises(hunts.HuntSQLError, match=r"(?s)Parser Error.*LINE 1: SELECT \* FORM signins"):
        hunts.query(con, "SELECT * FORM signins")
    assert hunts.HuntSQLError.exit_code == hunts.EXIT_SQL_ERROR


def test_saved_hunt_errors_name_the_file_and_runtime_errors_are_wrapped(con):
    with pytest.raises(hunts.HuntSQLError, match=r"open_findings\.sql: .*min_severity must be"):
        hunts.fetch_all(hunts.run_hunt(con, hunts.get_hunt("open_findings"), {"min_severity": "urgent"}))
    with pytest.raises(hunts.HuntSQLError, match="Conversion Error"):
        hunts.export(hunts.query(con, "SELECT CAST(user_principal_name AS INTEGER) FROM signins"), "table")


def test_error_messages_never_echo_a_raw_token(con):
    jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"
    with pytest.raises(hunts.HuntSQLError) as info:
        hunts.query(con, f"SELECT no_such_column FROM signins WHERE user_id = '{jwt}'")
    assert jwt not in str(info.value) and "<token sha256:" in str(info.value)


# --------------------------------------------------------------------------- output formats
ROUND_TRIP_SQL = """
SELECT * FROM (VALUES
    (1, 'plain', 1.5, true, TIMESTAMPTZ '2024-05-01 08:00:00+00', DATE '2024-05-01', ['a', 'b|c'], 10000000000::BIGINT),
    (2, 'comma, "quote" and ''apostrophe''', -0.25, false, TIMESTAMPTZ '2024-05-02 03:00:00.123456+00', DATE '2024-05-02', [], 0::BIGINT),
    (3, E'line\\nbreak | pipe \\\\ backslash', NULL, NULL, NULL, NULL, NULL, NULL),
    (4, '', 0.0, true, TIMESTAMPTZ '1970-01-01 00:00:00+00', DATE '1970-01-01', ['ünï'], -1::BIGINT),
    (5, NULL, 2.0, false, TIMESTAMPTZ '2024-12-31 23:59:59+00', DATE '2024-12-31', ['x'], 5::BIGINT)
) t(id, text, num, flag, seen_at, day, tags, big)
ORDER BY id
"""


@pytest.fixture()
def expected_table(con) -> pa.Table:
    table = hunts.fetch_all(hunts.query(con, ROUND_TRIP_SQL))
    assert table.num_rows == 5 and "\n" in table.column("text")[2].as_py()
    return table


def _export(con, fmt: str, path: Path, **kw) -> hunts.ExportSummary:
    return hunts.export(hunts.query(con, ROUND_TRIP_SQL, batch_rows=2), fmt, path, **kw)


def test_parquet_round_trips(con, expected_table: pa.Table, tmp_path: Path):
    out = tmp_path / "r.parquet"
    summary = _export(con, "parquet", out)
    assert summary.rows == 5 and out.is_file()
    assert pq.read_table(out).equals(expected_table)


def test_jsonl_round_trips(con, expected_table: pa.Table, tmp_path: Path):
    out = tmp_path / "r.jsonl"
    _export(con, "jsonl", out)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {k: hunts.json_value(v) for k, v in row.items()} for row in expected_table.to_pylist()
    ]
    back = json.loads(lines[1])
    assert back["text"] == "comma, \"quote\" and 'apostrophe'" and back["tags"] == []
    assert datetime.fromisoformat(back["seen_at"]) == datetime(2024, 5, 2, 3, 0, 0, 123456, tzinfo=UTC)
    assert back["big"] == 0 and json.loads(lines[0])["big"] == 10000000000


def test_csv_round_trips(con, expected_table: pa.Table, tmp_path: Path):
    out = tmp_path / "r.csv"
    _export(con, "csv", out)
    flat = {f.name: f.type for f in expected_table.schema if not pa.types.is_nested(f.type)}
    flat["tags"] = pa.string()
    back = pcsv.read_csv(
        out, convert_options=pcsv.ConvertOptions(column_types=flat, strings_can_be_null=True, quoted_strings_can_be_null=False)
    )
    assert back.schema.names == expected_table.schema.names
    for name in expected_table.schema.names:
        if name == "tags":
            assert [None if v is None else json.loads(v) for v in back.column(name).to_pylist()] == expected_table.column(name).to_pylist()
        else:
            assert back.column(name).to_pylist() == expected_table.column(name).to_pylist(), name
    # DuckDB reads it back too (what an analyst would do next)
    again = duckdb.connect().execute(f"SELECT count(*), max(big) FROM read_csv('{out}')").fetchone()
    assert again == (5, 10000000000)


def test_markdown_round_trips(con, expected_table: pa.Table, tmp_path: Path):
    out = tmp_path / "r.md"
    _export(con, "markdown", out)
    text = out.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "| id | text | num | flag | seen_at | day | tags | big |"
    back = hunts.read_markdown(text)
    expected = [{k: hunts.text_value(v) for k, v in row.items()} for row in expected_table.to_pylist()]
    assert back == expected
    assert back[2]["text"] == "line\nbreak | pipe \\ backslash"
    assert back[0]["seen_at"] == "2024-05-01 08:00:00Z" and json.loads(back[0]["tags"]) == ["a", "b|c"]


def test_table_format_counts_and_previews(con, expected_table: pa.Table):
    summary = hunts.export(hunts.query(con, ROUND_TRIP_SQL, batch_rows=2), "table", preview_rows=3)
    assert summary.rows == 5 and summary.preview.num_rows == 3
    assert summary.preview.equals(expected_table.slice(0, 3))
    assert hunts.count_line(summary) == "first 3 of 5 rows shown"
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(hunts.preview_table(summary))
    rendered = console.export_text()
    assert "b|c" in rendered and "2024-05-01 08:00:00Z" in rendered and "NULL" in rendered


def test_export_to_a_stream(con):
    sink = io.BytesIO()
    summary = hunts.export(hunts.query(con, "SELECT 1 AS a, 'x' AS b UNION ALL SELECT 2, NULL ORDER BY a"), "csv", sink)
    assert summary.rows == 2
    assert sink.getvalue().decode().splitlines() == ['"a","b"', '1,"x"', "2,"]


def test_empty_result_still_writes_headers(con, tmp_path: Path):
    for fmt in ("csv", "parquet", "markdown", "jsonl"):
        out = tmp_path / f"empty.{fmt}"
        summary = hunts.export(hunts.query(con, "SELECT event_id, event_time FROM signins WHERE false"), fmt, out)
        assert summary.rows == 0 and out.is_file()
    assert (tmp_path / "empty.csv").read_text().strip() == '"event_id","event_time"'
    assert pq.read_table(tmp_path / "empty.parquet").schema.names == ["event_id", "event_time"]
    assert (tmp_path / "empty.jsonl").read_text() == ""


def test_large_results_stream_with_limit_and_preview(con, tmp_path: Path):
    out = tmp_path / "big.parquet"
    reader = hunts.query(con, "SELECT i, 'row ' || i AS label FROM range(250000) t(i) ORDER BY i", batch_rows=10_000)
    summary = hunts.export(reader, "parquet", out, limit=123_456, preview_rows=5)
    assert summary.rows == 123_456 and summary.truncated and summary.preview.num_rows == 5
    written = pq.read_table(out)
    assert written.num_rows == 123_456 and written.column("i")[-1].as_py() == 123_455
    assert "stopped at --limit" in hunts.count_line(summary)
    exact = hunts.export(hunts.query(con, "SELECT * FROM range(10)"), "table", limit=10)
    assert exact.rows == 10 and not exact.truncated


def test_failed_export_leaves_no_partial_file(con, tmp_path: Path):
    out = tmp_path / "fail.csv"
    with pytest.raises(hunts.HuntSQLError):
        hunts.export(hunts.query(con, "SELECT CAST(user_principal_name AS INTEGER) AS n FROM signins"), "csv", out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_format_selection():
    assert hunts.format_for(Path("x.parquet"), None) == "parquet"
    assert hunts.format_for(Path("x.MD"), None) == "markdown"
    assert hunts.format_for(None, None) == "table"
    with pytest.raises(hunts.HuntError, match="for the terminal"):
        hunts.format_for(Path("x.txt"), "table")
    with pytest.raises(hunts.HuntError, match="cannot tell the format"):
        hunts.format_for(Path("x.txt"), None)
    with pytest.raises(hunts.HuntError, match="not one of"):
        hunts.format_for(None, "xml")


# --------------------------------------------------------------------------- shell
def test_shell_runs_sql_and_dot_commands(con):
    printed: list = []
    errors: list[str] = []
    shell = hunts.Shell(con, printed.append, errors.append)
    lines = iter([
        "SELECT count(*) AS n",
        "FROM signins;",
        ".tables",
        ".schema signins",
        "DROP VIEW signins;",
        "SELECT 'a;b' AS s; -- trailing comment",
        ".run sessions_many_ips min_ips=2",
        ".run user_tokens bogus=1",
        ".maxrows 1",
        ".nope",
        ".quit",
        "SELECT 'never reached';",
    ])
    shell.loop(lambda prompt: next(lines, None))
    texts = [p for p in printed if isinstance(p, str)]
    assert "1 row" in texts  # count(*) result, then 'a;b'
    assert any("9 rows" == t for t in texts)  # .tables: the 9 lake views (tokens_stored hidden)
    assert any("sess-a" in str(c) for p in printed if not isinstance(p, str) for c in p.columns[0]._cells)
    assert any("refused DROP statement" in e for e in errors)
    assert any("unknown parameter 'bogus'" in e for e in errors)
    assert any("unknown command .nope" in e for e in errors)
    assert shell.maxrows == 1
    assert not any("never reached" in str(p) for p in printed)
    assert con.execute("SELECT count(*) FROM signins").fetchone()[0] == 6


def test_statement_end_detection():
    assert hunts._ends_statement("SELECT 1;")
    assert hunts._ends_statement("SELECT 1; -- done")
    assert not hunts._ends_statement("SELECT ';'")
    assert not hunts._ends_statement("SELECT 1 -- ;")
    assert not hunts._ends_statement("SELECT /* ; */ 1")
    assert hunts._ends_statement('SELECT "a;b" FROM t;')


# --------------------------------------------------------------------------- command line
runner = CliRunner()


def test_cli_hunt_list_show_run(lake_root: Path, tmp_path: Path):
    listed = runner.invoke(app, ["hunt", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    names = {h["name"] for h in json.loads(listed.output)}
    assert names == set(EXPECTED)
    shown = runner.invoke(app, ["hunt", "show", "user_tokens"])
    assert shown.exit_code == 0 and "$user" in shown.output and "(required)" in shown.output
    out = tmp_path / "tokens.csv"
    ran = runner.invoke(app, ["hunt", "run", "user_tokens", "--param", f"user={ALICE}", "--lake", str(lake_root), "--out", str(out)])
    assert ran.exit_code == 0, ran.output
    assert "4 rows written to" in ran.output and "uti-a1" in ran.output
    assert pcsv.read_csv(out).num_rows == 4


def test_cli_hunt_sql_sources_and_formats(lake_root: Path, tmp_path: Path):
    base = ["hunt", "sql", "--lake", str(lake_root)]
    r = runner.invoke(app, base + ["SELECT event_id FROM signins ORDER BY 1", "--format", "jsonl"])
    assert r.exit_code == 0 and r.stdout.count("\n") == 6 and json.loads(r.stdout.splitlines()[0]) == {"event_id": "00000000-0000-4000-8000-000000000001"}
    sql_file = tmp_path / "q.sql"
    sql_file.write_text("SELECT count(*) AS n FROM mail_events", encoding="utf-8")
    r = runner.invoke(app, base + ["--file", str(sql_file), "--format", "csv"])
    assert r.exit_code == 0 and r.stdout.splitlines() == ['"n"', "6"]
    r = runner.invoke(app, base + ["--format", "markdown"], input="SELECT 'a|b' AS v")
    assert r.exit_code == 0 and "| a\\|b |" in r.stdout
    r = runner.invoke(app, base + ["SELECT * FROM range(50)", "--show", "3", "--limit", "40"])
    assert r.exit_code == 0 and "first 3 of 40 rows shown" in r.output
    r = runner.invoke(app, base + ["SELECT 1", "--format", "parquet"])
    assert r.exit_code == 2 and "needs --out" in r.output


def test_cli_errors_have_no_traceback(lake_root: Path):
    base = ["hunt", "sql", "--lake", str(lake_root)]
    r = runner.invoke(app, base + ["SELECT nope FROM signins"])
    assert r.exit_code == 1 and "LINE 1:" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, base + ["DROP VIEW signins"])
    assert r.exit_code == 2 and "refused DROP statement" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, base + ["SELECT * FROM read_csv('/etc/passwd')"])
    assert r.exit_code == 2 and "Permission Error" in r.output and "root:" not in r.output
    r = runner.invoke(app, ["hunt", "run", "sessions_many_ips", "-p", "min_ips=lots", "--lake", str(lake_root)])
    assert r.exit_code == 2 and "not a whole number" in r.output
    r = runner.invoke(app, ["hunt", "sql", "SELECT 1", "--lake", str(lake_root / "missing")])
    assert r.exit_code == 2 and "no lake at" in r.output


def test_cli_shell_reads_statements_from_stdin(lake_root: Path):
    r = runner.invoke(app, ["hunt", "shell", "--lake", str(lake_root)], input="SELECT count(*) AS n FROM signins;\nDELETE FROM signins;\n.quit\n")
    assert r.exit_code == 0, r.output
    assert "6" in r.output and "1 row" in r.output and "refused DELETE statement" in r.output


# --------------------------------------------------------------------------- the generated sample scenario
SAMPLE = Path(__file__).resolve().parents[1] / "sample_logs"


@pytest.fixture(scope="module")
def sample_con(tmp_path_factory: pytest.TempPathFactory) -> tuple[duckdb.DuckDBPyConnection, dict]:
    """sample_logs ingested (sign-ins, mail, gateway) and its JWKS history imported."""
    if not (SAMPLE / "expected.json").is_file():
        pytest.skip("sample_logs/ not generated (python -m pipeline.samplegen)")
    from pipeline import keys
    from pipeline.ingest import ingest_paths
    from pipeline.lake import Lake

    lake = Lake(tmp_path_factory.mktemp("sample") / "lake")
    report = ingest_paths(lake, [SAMPLE / "signins", SAMPLE / "mail", SAMPLE / "gateway"], quality_policy="off")
    assert report.exit_code == 0
    keys.import_keys(lake, [SAMPLE / "jwks"], None)
    return hunts.open_session(lake), json.loads((SAMPLE / "expected.json").read_text(encoding="utf-8"))


def test_saved_hunts_find_the_planted_attack_in_sample_logs(sample_con):
    con, expected = sample_con
    attack = expected["attack"]
    victims = set(expected["users"]["victims"])

    def run(name: str, **params) -> pa.Table:
        return hunts.fetch_all(hunts.run_hunt(con, hunts.get_hunt(name), params))

    forged_mail = {i for t in attack["forged_tokens"] for i in t.get("mail_items_accessed_ids", [])}
    assert set(run("mail_without_signin").column("event_id").to_pylist()) == forged_mail
    assert set(run("suspicious_key_tokens").column("token_fingerprint").to_pylist()) == {
        t["token_fingerprint"] for t in attack["forged_tokens"]
    }
    by_app = run("client_app_mail_access", app_id=attack["client_app_id"])
    assert set(by_app.column("mailbox_owner_upn").to_pylist()) == victims
    assert set(by_app.column("client_ip").to_pylist()) <= set(attack["attacker_ips"])
    new_apps = run("first_seen_client_apps", since=expected["mail_window"]["start"])
    assert attack["client_app_id"] in new_apps.column("client_app_id").to_pylist()
    assert attack["signing_key"] in run("tokens_per_kid_per_day").column("kid").to_pylist()
    # every saved hunt runs on the real scenario (required parameters filled from it)
    required = {"user": sorted(victims)[0], "app_id": attack["client_app_id"]}
    for name, hunt in hunts.load_hunts().items():
        run(name, **{p.name: required[p.name] for p in hunt.params if p.required})
