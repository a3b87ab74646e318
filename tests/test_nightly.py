"""The nightly job: exit codes, idempotency, reports, no raw token in any output, cost bounded by new data."""

from __future__ import annotations

import json
import sys
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import jwt
import pytest

from pipeline import nightly
from pipeline.lake import Lake
from pipeline.nightly import EXIT_FAILURE, EXIT_NEW_FINDINGS, EXIT_OK, EXIT_RETENTION, run_nightly

from tests import graphgen

DAY1 = date(2026, 11, 2)
# A retention policy every tiny test lake meets, so exit codes depend on findings only.
LENIENT_POLICY = """
name = "test-lenient"
description = "nightly tests: nothing required"

[defaults]
required_days = 0
max_gap_days = 3650
gap_check = "never"
max_staleness_days = 36500

[sources.signins]
required_sign_in_types = []

[sources.mail_events]
required_operations = []
"""


# --------------------------------------------------------------------------- input builders
def _rid(*parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "tokenhunt-nightly-test/" + "/".join(map(str, parts))))


def _signin(day: date, n: int, minute: int, ip: str, session: str, country: str = "NL") -> dict:
    when = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(minutes=minute)
    rec = graphgen.record(
        n,
        id=_rid(day, n, minute),
        createdDateTime=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        ipAddress=ip,
        sessionId=session,
        location={"city": "Amsterdam", "countryOrRegion": country},
    )
    rec.pop("uniqueTokenIdentifier", None)  # derived from the request id by the ingest
    return rec


def signins_file(folder: Path, day: date, replay: bool = False, users: int = 12) -> Path:
    """One day of Graph sign-ins: each user one session from one IP; ``replay`` adds a stolen session."""
    records = [_signin(day, i, 8 * 60 + 10 * i, f"203.0.113.{i + 1}", _rid("session", day, i)) for i in range(users)]
    if replay:
        stolen = _rid("stolen", day)
        records += [
            _signin(day, 100, 120, "198.51.100.10", stolen, "NL"),
            _signin(day, 101, 140, "185.38.142.229", stolen, "DE"),
            _signin(day, 102, 160, "51.89.156.153", stolen, "FR"),
        ]
    folder.mkdir(parents=True, exist_ok=True)
    return graphgen.write_array(folder / f"signins-{day.isoformat()}.json", records)


def forged_token(i: int) -> str:
    """An HS256 token with a jku header (algorithm confusion): detection unsafe_token_alg_or_header."""
    claims = {"iss": f"https://sts.windows.net/{graphgen.TENANT}/", "tid": graphgen.TENANT, "aud": "https://outlook.office365.com",
              "upn": f"victim{i}@contoso.com", "iat": 1793520000 + i, "nbf": 1793520000 + i, "exp": 1793524500 + i}
    return jwt.encode(claims, f"not-a-secret-{i}" * 3, algorithm="HS256", headers={"jku": "https://attacker.example/keys.json"})


def gateway_file(folder: Path, day: date, tokens: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"gateway-{day.isoformat()}.jsonl"
    lines = []
    for i, tok in enumerate(tokens):
        when = datetime(day.year, day.month, day.day, 3, i, tzinfo=timezone.utc)
        lines.append(json.dumps({"time": when.isoformat().replace("+00:00", "Z"), "authorization": f"Bearer {tok}",
                                 "client_ip": "185.38.142.229", "host": "outlook.contoso.com", "method": "GET",
                                 "path": f"/owa/service.svc?action=GetItem&access_token={tok}", "status": 200,
                                 "request_id": _rid("req", day, i)}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class _QuietRetention:
    """Stand-in retention report: tiny test lakes lack most tables, which the real report (rightly)
    calls blind detections; tests of findings and windows should not depend on that."""

    status = "ok"
    exit_code = 0
    findings: list = []

    def counts(self) -> dict:
        return {"warn": 0, "violation": 0}

    def to_dict(self) -> dict:
        return {"status": "ok", "exit_code": 0, "counts": self.counts(), "findings": []}

    def to_markdown(self) -> str:
        return "# retention (test stub)\n"


@pytest.fixture
def quiet_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import retention

    monkeypatch.setattr(retention, "retention_report", lambda *a, **k: _QuietRetention())


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "lenient-policy.toml"
    path.write_text(LENIENT_POLICY, encoding="utf-8")
    return path


def _run(inputs: list[Path], lake: Path, out: Path, policy: Path | None, **kw) -> nightly.NightlyRun:
    return run_nightly(inputs, lake, out=out, quality_policy="off", policy=policy, as_of="2026-11-06", **kw)


def _all_output_text(out: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(out.rglob("*")) if p.is_file())


# --------------------------------------------------------------------------- tests
def test_new_findings_then_idempotent_second_run(tmp_path: Path, policy: Path, quiet_retention: None) -> None:
    drop, lake, out = tmp_path / "drop", tmp_path / "lake", tmp_path / "out"
    signins_file(drop, DAY1, replay=True)
    tokens = [forged_token(i) for i in range(2)]
    gateway_file(drop, DAY1, tokens)

    first = _run([drop], lake, out, policy)
    assert first.errors == []
    assert first.exit_code == EXIT_NEW_FINDINGS
    new_ids = {r["detection_id"] for r in first.new_findings}
    assert {"session_many_locations", "unsafe_token_alg_or_header"} <= new_ids
    stored = Lake(lake).read_table("findings").num_rows
    assert stored == len(first.findings) > 0

    # Reports: markdown, JSON, findings as JSON lines and as OCSF 2004, in <out>/<YYYY-MM-DD>/.
    day_dir = out / first.started.strftime("%Y-%m-%d")
    for kind in ("report_md", "report_json", "findings_jsonl", "findings_ocsf"):
        assert Path(first.files[kind]).parent == day_dir and Path(first.files[kind]).is_file(), kind
    report = json.loads(Path(first.files["report_json"]).read_text())
    assert report["run_id"] == first.run_id and report["exit_code"] == EXIT_NEW_FINDINGS
    assert {f["status"] for f in report["ingest"]["files"]} == {"ingested"}
    assert report["detect"]["ran"] is True
    per_detection = {d["id"]: d for d in report["detect"]["detections"]}
    assert per_detection["session_many_locations"]["new"] == 1
    jsonl = [json.loads(line) for line in Path(first.files["findings_jsonl"]).read_text().splitlines()]
    assert {r["finding_id"] for r in jsonl} == {r["finding_id"] for r in first.new_findings}
    ocsf = [json.loads(line) for line in Path(first.files["findings_ocsf"]).read_text().splitlines()]
    assert len(ocsf) == len(jsonl) and all(d["class_uid"] == 2004 for d in ocsf)
    md = Path(first.files["report_md"]).read_text()
    assert "## Ingest" in md and "## Detections" in md and "## Findings" in md and "## Retention" in md

    second = _run([drop], lake, out, policy)
    assert second.exit_code == EXIT_OK, second.exit_reason
    assert second.new_findings == [] and not second.detect_ran
    assert {f.status for f in second.ingest.files} == {"unchanged"}
    assert Lake(lake).read_table("findings").num_rows == stored
    assert second.files["report_md"] != first.files["report_md"]  # a new dated report, not an overwrite
    again = json.loads(Path(second.files["report_json"]).read_text())
    assert again["exit_code"] == EXIT_OK and again["detect"]["ran"] is False


def test_reports_hold_no_raw_token(tmp_path: Path, policy: Path, quiet_retention: None) -> None:
    drop, lake, out = tmp_path / "drop", tmp_path / "lake", tmp_path / "out"
    tokens = [forged_token(i) for i in range(3)]
    gateway_file(drop, DAY1, tokens)
    run = _run([drop], lake, out, policy)
    assert run.exit_code == EXIT_NEW_FINDINGS
    assert len([r for r in run.new_findings if r["detection_id"] == "unsafe_token_alg_or_header"]) == 3
    text = _all_output_text(out)
    for tok in tokens:
        header, payload, signature = tok.split(".")
        assert signature not in text
        assert f"{header}.{payload}" not in text


def test_second_day_restricts_the_detection_window(tmp_path: Path, policy: Path, quiet_retention: None) -> None:
    drop, lake, out = tmp_path / "drop", tmp_path / "lake", tmp_path / "out"
    days = [DAY1 + timedelta(days=i) for i in range(31)]
    history = []
    for d in days[:30]:
        history += json.loads(signins_file(tmp_path / "tmp", d, users=2).read_text())
    graphgen.write_array(drop.mkdir(parents=True) or drop / "history.json", history)
    first = _run([drop], lake, out, policy)
    assert first.detect_ran and first.since is None  # first examined run: the whole lake
    assert first.partitions_read["signins"] == {"read": 30, "total": 30}

    new_file = signins_file(drop, days[30])
    second = _run([drop], lake, out, policy)
    assert second.exit_code == EXIT_OK, second.errors
    assert [f.status for f in second.ingest.files].count("ingested") == 1
    earliest_new = datetime(days[30].year, days[30].month, days[30].day, 8, 0, tzinfo=timezone.utc)
    assert second.since == earliest_new
    assert second.detect.window[0] == earliest_new
    lookback = max(d.lookback_days for d in second.detections)
    assert lookback < 30  # otherwise this test cannot show the pruning
    assert second.min_partition_date == (days[30] - timedelta(days=lookback)).isoformat()
    read = second.partitions_read["signins"]
    assert read == {"read": lookback + 1, "total": 31}
    # The view the detections ran on held only those partitions (the engine prunes by min_date).
    from pipeline.engines.duckdb import stored_relation_sql

    pruned = stored_relation_sql(Lake(lake), "signins", second.min_partition_date)
    assert pruned.count("event_date=") == read["read"]
    assert len(second.pending_batches) == 1
    assert new_file.name in second.ingest_batches[second.pending_batches[0]]["source_file"]


def test_unreadable_input_fails_but_ingests_the_rest(tmp_path: Path, policy: Path, quiet_retention: None) -> None:
    drop, lake, out = tmp_path / "drop", tmp_path / "lake", tmp_path / "out"
    signins_file(drop, DAY1, replay=True)
    (drop / "notes.csv").write_text("what,is,this\n1,2,3\n", encoding="utf-8")
    run = _run([drop, tmp_path / "missing.json"], lake, out, policy)
    assert run.exit_code == EXIT_FAILURE  # wins over the new findings this run also produced
    assert run.new_findings
    assert any("notes.csv" in e for e in run.errors) and any("missing.json" in e for e in run.errors)
    statuses = {Path(f.path).name: f.status for f in run.ingest.files}
    assert statuses[f"signins-{DAY1.isoformat()}.json"] == "ingested"
    report = json.loads(Path(run.files["report_json"]).read_text())
    assert report["exit_code"] == EXIT_FAILURE and report["errors"]


def test_retention_below_policy_is_20_only_without_new_findings(tmp_path: Path) -> None:
    drop, lake, out = tmp_path / "drop", tmp_path / "lake", tmp_path / "out"
    signins_file(drop, DAY1)
    quiet = run_nightly([drop], lake, out=out, quality_policy="off", as_of="2026-11-06")  # default policy: 913 days
    assert quiet.new_findings == [] and quiet.retention_status == "violation"
    assert quiet.exit_code == EXIT_RETENTION
    signins_file(drop, DAY1 + timedelta(days=1), replay=True)
    loud = run_nightly([drop], lake, out=out, quality_policy="off", as_of="2026-11-06")
    assert loud.retention_status == "violation" and loud.new_findings
    assert loud.exit_code == EXIT_NEW_FINDINGS


def test_keys_folder_inside_the_input_is_imported_not_ingested(tmp_path: Path, policy: Path, quiet_retention: None) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    drop, lake, out = tmp_path / "drop", tmp_path / "lake", tmp_path / "out"
    signins_file(drop, DAY1)
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()

    def b64(n: int) -> str:
        return jwt.utils.base64url_encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).decode()

    jwks = {"keys": [{"kty": "RSA", "use": "sig", "kid": "test-kid-1", "n": b64(numbers.n), "e": b64(numbers.e),
                      "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"}]}
    (drop / "jwks").mkdir()
    (drop / "jwks" / "keys.json").write_text(json.dumps(jwks), encoding="utf-8")
    (drop / "expected.json").write_text("{}", encoding="utf-8")
    run = _run([drop], lake, out, policy, keys_dir=drop / "jwks", exclude=["expected.json"])
    assert run.errors == []
    assert run.keys is not None and run.keys["files"] == 1
    assert any(r["kid"] == "test-kid-1" for r in Lake(lake).read_table("signing_keys").to_pylist())
    ingested = {Path(f.path).name for f in run.ingest.files}
    assert "keys.json" not in ingested and "expected.json" not in ingested
    assert any("keys.json" in e for e in run.excluded) and any("expected.json" in e for e in run.excluded)


def test_lake_busy_and_crash_still_write_a_report(
    tmp_path: Path, policy: Path, quiet_retention: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop, lake, out = tmp_path / "drop", tmp_path / "lake", tmp_path / "out"
    signins_file(drop, DAY1)
    with Lake(lake).lock():
        busy = _run([drop], lake, out, policy)
    assert busy.exit_code == EXIT_FAILURE and any("busy" in e for e in busy.errors)
    assert Path(busy.files["report_md"]).is_file()

    from pipeline import detect

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("detector exploded")

    real_detect_lake = detect.detect_lake
    monkeypatch.setattr(detect, "detect_lake", boom)
    crashed = _run([drop], lake, out, policy)
    assert crashed.exit_code == EXIT_FAILURE and any("detector exploded" in e for e in crashed.errors)
    assert json.loads(Path(crashed.files["report_json"]).read_text())["exit_code"] == EXIT_FAILURE
    # The batches the crashed run did not examine are examined by the next run.
    monkeypatch.setattr(detect, "detect_lake", real_detect_lake)
    retry = _run([drop], lake, out, policy)
    assert retry.detect_ran and retry.errors == []


def test_missing_retention_module_is_a_note_not_a_failure(tmp_path: Path, policy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drop, lake, out = tmp_path / "drop", tmp_path / "lake", tmp_path / "out"
    signins_file(drop, DAY1)
    monkeypatch.setitem(sys.modules, "pipeline.retention", None)  # import fails like a missing module
    run = _run([drop], lake, out, policy)
    assert run.errors == [] and run.retention is None
    assert run.exit_code == EXIT_OK
    assert "not available" in (run.retention_note or "")
    assert "Not checked" in Path(run.files["report_md"]).read_text()


def test_cli_nightly_prints_findings_and_exit_code(tmp_path: Path, policy: Path, quiet_retention: None) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    drop, lake, out = tmp_path / "drop", tmp_path / "lake", tmp_path / "out"
    signins_file(drop, DAY1, replay=True)
    tokens = [forged_token(7)]
    gateway_file(drop, DAY1, tokens)
    result = CliRunner().invoke(
        app, ["nightly", str(drop), "--lake", str(lake), "--out", str(out), "--quality", "off", "--policy", str(policy),
              "--as-of", "2026-11-06"],
    )
    assert result.exit_code == EXIT_NEW_FINDINGS, result.output
    assert "session_many_locations" in result.output and "retention:" in result.output
    assert tokens[0].split(".")[2] not in result.output


def test_quality_gate_failure_is_a_failure(tmp_path: Path, policy: Path, quiet_retention: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import quality

    drop, lake, out = tmp_path / "drop", tmp_path / "lake", tmp_path / "out"
    signins_file(drop, DAY1)
    monkeypatch.setattr(quality, "check_staged_batch", lambda batch, policy: ({"signins": {"success": False}}, "failed"))
    run = run_nightly([drop], lake, out=out, quality_policy="fail", policy=policy, as_of="2026-11-06")
    assert run.exit_code == EXIT_FAILURE
    assert any("quality gate" in e for e in run.errors)
