"""End to end on the sample logs: `tokenhunt nightly` finds exactly the planted attack and nothing benign.

The sample (``pipeline.samplegen``, deterministic) is generated into a temporary folder, so the test
never depends on a stale ``sample_logs/``; ``expected.json`` written beside it names the forged
tokens, victims, attacker IPs and planted bad records this test checks against. The run is the
demo's: keys from ``jwks/``, the scenario indicators (the Storm-0558 IPs windowed to the attack
week), ``expected.json`` excluded from the ingest.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from pipeline.lake import Lake
from pipeline.nightly import EXIT_NEW_FINDINGS, EXIT_RETENTION, NightlyRun, run_nightly

AS_OF = "2026-11-20"  # the sample's last day: the retention verdicts do not depend on today's date
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.samplegen import generate

    out = tmp_path_factory.mktemp("sample_logs")
    generate(out)
    return out


@pytest.fixture(scope="module")
def expected(sample: Path) -> dict:
    return json.loads((sample / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def runs(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[NightlyRun, NightlyRun, Path, Path]:
    work = tmp_path_factory.mktemp("e2e")
    lake, out = work / "lake", work / "out"
    kwargs = dict(
        keys_dir=sample / "jwks", out=out, indicators=[sample / "indicators"], exclude=["expected.json"],
        profile="minimal", as_of=AS_OF,
    )
    first = run_nightly([sample], lake, **kwargs)
    rows_after_first = Lake(lake).read_table("findings").num_rows
    second = run_nightly([sample], lake, **kwargs)
    assert Lake(lake).read_table("findings").num_rows == rows_after_first
    return first, second, lake, out


def _by_detection(run: NightlyRun, outcome: str = "alert") -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in run.new_findings:
        if row["outcome"] == outcome:
            out.setdefault(row["detection_id"], []).append(row)
    return out


def test_first_run_finds_exactly_the_planted_attack(runs: tuple, expected: dict) -> None:
    first = runs[0]
    assert first.errors == []
    assert first.exit_code == EXIT_NEW_FINDINGS
    attack = expected["attack"]
    forged = attack["forged_tokens"]
    fps = {f["token_fingerprint"] for f in forged}
    long_lived = {f["token_fingerprint"] for f in forged if f["lifetime_minutes"] > 120}
    victims = set(expected["users"]["victims"])
    tenant = expected["tenant"]["id"]
    alerts = _by_detection(first)

    assert {r["entity_key"] for r in alerts.pop("consumer_key_enterprise_mailbox")} == fps
    assert {r["entity_key"] for r in alerts.pop("token_lifetime_anomaly")} == long_lived
    never_issued = alerts.pop("token_never_issued")
    assert len(never_issued) == len(forged) and {r["principal"] for r in never_issued} == victims
    no_session = alerts.pop("session_never_created")
    assert len(no_session) == len(forged) and {r["principal"] for r in no_session} == victims
    assert [r["entity_key"] for r in alerts.pop("new_mail_client_app")] == [f"{tenant}|{attack['client_app_id']}"]
    infra = alerts.pop("storm0558_infrastructure")
    ip_hits = [r for r in infra if r["entity_key"].startswith("ip|")]
    string_hits = [r for r in infra if r["entity_key"].startswith("client_info_string|")]
    assert len(ip_hits) + len(string_hits) == len(infra)
    assert {r["entity_key"].split("|")[1] for r in ip_hits} == {f["client_ip"] for f in forged}
    assert {r["principal"] for r in ip_hits} <= victims
    assert {r["principal"] for r in string_hits} == victims
    assert alerts == {}, f"benign traffic flagged: {sorted(alerts)}"

    # The only verdict that is not an alert: the mail audit starts three weeks back, so the first
    # 14 days of it cannot be judged for new client apps.
    inconclusive = _by_detection(first, "inconclusive")
    assert {k: [r["entity_key"] for r in v] for k, v in inconclusive.items()} == {
        "new_mail_client_app": [f"{tenant}|baseline-incomplete"]
    }


def test_benign_principals_are_never_flagged(runs: tuple, expected: dict) -> None:
    victims = set(expected["users"]["victims"])
    for row in runs[0].new_findings:
        if row["outcome"] == "alert":
            principal = (row["principal"] or "").split(" (+")[0]
            assert principal in victims, (row["detection_id"], row["principal"])


def test_planted_bad_records_are_quarantined_not_dropped(runs: tuple, expected: dict) -> None:
    first, _, lake, _ = runs
    planted = Counter(p["file"] for p in expected["planted_bad_records"] if p["kind"] != "malformed_token")
    quarantined = {Path(f.path).as_posix(): f.quarantined for f in first.ingest.files}
    for rel, count in planted.items():
        matches = [n for path, n in quarantined.items() if path.endswith(rel)]
        assert matches == [count], rel
    assert sum(quarantined.values()) == sum(planted.values())
    # A malformed bearer token is kept, undecoded, with the reason (not a quarantined request).
    tokens = Lake(lake).read_table("tokens", columns=["token_fingerprint", "parse_error"]).to_pylist()
    assert len({t["token_fingerprint"] for t in tokens if t["parse_error"]}) == sum(1 for p in expected["planted_bad_records"] if p["kind"] == "malformed_token")


def test_retention_flags_the_short_mail_audit(runs: tuple) -> None:
    first = runs[0]
    violations = [v for v in first.retention.findings if v.level == "violation"]
    assert any(v.area == "source" and v.subject == "mail_events" for v in violations)
    assert not any(v.area == "source" and v.subject.startswith("signins") for v in violations)


def test_second_run_is_quiet_and_reports_retention(runs: tuple) -> None:
    second = runs[1]
    assert second.errors == [] and second.new_findings == [] and not second.detect_ran
    assert second.exit_code == EXIT_RETENTION  # nothing new; the mail audit is still too short


def test_no_raw_token_reaches_any_output(runs: tuple, sample: Path) -> None:
    out = runs[3]
    signatures = {m.group(0).split(".")[2] for m in JWT_RE.finditer((sample / "gateway" / "gateway-access.jsonl").read_text())}
    assert len(signatures) > 50
    text = "\n".join(p.read_text(encoding="utf-8") for p in out.rglob("*") if p.is_file())
    assert not JWT_RE.search(text)
    assert not [s for s in signatures if len(s) > 20 and s in text]
