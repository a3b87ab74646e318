"""schemas/*.toml is the one source of truth: every derived artifact follows it."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline import quality, schemas

EXPECTED_SIGNINS = """event_id event_time event_date source_format sign_in_type tenant_id home_tenant_id
user_principal_name user_id app_id app_display_name resource_id resource_display_name ip_address user_agent
client_app_used is_interactive result_code unique_token_id session_id correlation_id token_issuer_type
token_issuer_name incoming_token_type authentication_protocol cross_tenant_access_type country city extra
ingest_batch_id""".split()


def test_every_table_loads_with_snake_case_columns():
    tables = schemas.all_tables()
    assert {"signins", "mail_events", "token_events", "tokens", "signing_keys", "indicators", "findings", "quarantine", "ingest_runs"} <= set(tables)
    for t in tables.values():
        for c in t.columns:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", c.name), (t.name, c.name)
            assert c.description


def test_signins_has_the_contract_columns():
    names = [c.name for c in schemas.table("signins").columns]
    missing = [c for c in EXPECTED_SIGNINS if c not in names]
    assert not missing


def test_arrow_schema_follows_the_file():
    spec = schemas.table("signins")
    arrow = spec.arrow_schema()
    assert "event_date" not in arrow.names  # partition lives in the path
    assert arrow.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert arrow.field("is_interactive").type == pa.bool_()
    assert arrow.field("event_id").nullable is False
    assert len(arrow) == len(spec.stored_columns) - 1


def test_violations_report_every_problem_at_once():
    row = {"event_id": "nope", "event_time": datetime(2026, 1, 1), "event_date": "2026-01-01", "sign_in_type": "weird", "ip_address": "1.2.3"}
    problems = schemas.table("signins").violations(row)
    text = " | ".join(problems)
    assert "event_id 'nope' is not a GUID" in text
    assert "UTC timestamp" in text  # naive datetime refused
    assert "sign_in_type 'weird' is not one of" in text
    assert "ip_address '1.2.3' is not an IP address" in text
    assert "source_format is required" in text


def test_valid_row_has_no_violations():
    row = {
        "event_id": "0c532507-b101-4090-b2f1-4d768e2f3500",
        "event_time": datetime(2026, 1, 1, tzinfo=timezone.utc),
        "event_date": "2026-01-01",
        "source_format": "graph_json",
        "sign_in_type": "interactive",
        "ip_address": "2001:db8::1",
        "ingest_batch_id": "b",
    }
    assert schemas.table("signins").violations(row) == []


def test_malformed_schema_file_names_file_and_every_problem(tmp_path: Path):
    (tmp_path / "bad.toml").write_text(
        'name = "bad"\ndescription = "x"\nkey = ["nope"]\npartition = "event_date"\ntime_column = "t"\n'
        '[[columns]]\nname = "Bad-Name"\ntype = "string"\ndescription = "d"\n'
        '[[columns]]\nname = "t"\ntype = "decimal"\ndescription = "d"\n'
    )
    with pytest.raises(schemas.SchemaError) as info:
        schemas._load_table(tmp_path / "bad.toml")
    msg = str(info.value)
    assert "bad.toml" in msg and "Bad-Name" in msg and "decimal" in msg and "'nope' is referenced" in msg


def test_markdown_reference_lists_every_column():
    md = schemas.markdown_reference()
    for t in schemas.all_tables().values():
        for c in t.columns:
            assert f"`{c.name}`" in md


def test_quality_suite_is_generated_from_schema():
    suite = quality.suite_spec("signins")
    kinds = {(e["type"], e["kwargs"].get("column")) for e in suite}
    assert ("ExpectColumnValuesToNotBeNull", "event_id") in kinds
    assert ("ExpectColumnValuesToMatchRegex", "event_id") in kinds
    assert ("ExpectColumnValuesToBeInSet", "sign_in_type") in kinds
    assert ("ExpectColumnValuesToBeUnique", "event_id") in kinds
    # Every regex/in-set expectation comes from a column check in the file, nothing else.
    spec = schemas.table("signins")
    for e in suite:
        col = e["kwargs"].get("column")
        if e["type"] == "ExpectColumnValuesToMatchRegex":
            assert spec.column(col).check
        if e["type"] == "ExpectColumnValuesToBeInSet":
            assert list(spec.column(col).allowed) == e["kwargs"]["value_set"]


def test_docs_schema_reference_is_current():
    """docs/schema.md is generated from schemas/: regenerate with `tokenhunt schema --format markdown`."""
    committed = (Path(__file__).resolve().parents[1] / "docs" / "schema.md").read_text(encoding="utf-8")
    assert committed.strip() == schemas.markdown_reference().strip(), "docs/schema.md is stale: run `tokenhunt schema --format markdown > docs/schema.md`"
