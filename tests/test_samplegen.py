"""The sample generator: deterministic, small, no private keys, and the scenario it promises holds.

Most checks read a fresh default-seed generation (a session fixture); one compares it byte for byte
with the committed sample_logs/, so the committed files cannot drift from the generator.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jwt
import pytest

from pipeline.normalize import BadValue, guid, normalize_ip, parse_time, unique_token_id_from_request_id
from pipeline.samplegen import DEFAULT_SEED, generate
from pipeline.samplegen import world as w
from pipeline.samplegen.keys import derive_rsa_key, is_probable_prime

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "sample_logs"
GRAPH_USER = "signins/graph_beta/interactiveUser-SignInLogs.json"
GRAPH_SP = "signins/graph_beta/servicePrincipal-SignInLogs.json"
LA_CSV = "signins/log_analytics/AADNonInteractiveUserSignInLogs.csv"
EVENTHUB = "signins/eventhub/SignInLogs-diagnostic.ndjson"
PURVIEW = "mail/purview/purview_audit_export.csv"
OFFICE_ACTIVITY = "mail/sentinel/OfficeActivity_VIP.ndjson"
GATEWAY = "gateway/gateway-access.jsonl"
JWKS = "jwks/common-discovery-v2.0-keys.json"
JWKS_HISTORY = "jwks/common-jwks-history.json"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("sample_default")
    summary = generate(out, seed=DEFAULT_SEED, scale=1.0)
    return out, summary


@pytest.fixture(scope="session")
def planted(sample: tuple[Path, dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """file -> record number -> planted bad record."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for p in sample[1]["planted_bad_records"]:
        out.setdefault(p["file"], {})[p["record"]] = p
    return out


def _graph(root: Path, rel: str) -> list[dict[str, Any]]:
    raw = (root / rel).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf[\n    {\n"), "Extractor-Suite layout: BOM, array, 4-space items"
    return json.loads(raw.decode("utf-8-sig"))


def _csv(root: Path, rel: str) -> tuple[list[str], list[list[str]]]:
    with open(root / rel, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _lines(root: Path, rel: str) -> list[str]:
    return (root / rel).read_text(encoding="utf-8").splitlines()


def _b64json(part: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _gateway_tokens(root: Path, skip: dict[int, dict[str, Any]]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Distinct bearer tokens of the gateway log -> (header, claims), planted lines skipped."""
    tokens: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for number, line in enumerate(_lines(root, GATEWAY), 1):
        if number in skip:
            continue
        token = json.loads(line)["authorization"].removeprefix("Bearer ")
        if token not in tokens:
            head, body, _ = token.split(".")
            tokens[token] = (_b64json(head), _b64json(body))
    return tokens


def _audit_rows(root: Path, skip: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    header, rows = _csv(root, PURVIEW)
    return [json.loads(row[header.index("AuditData")]) for n, row in enumerate(rows, 1) if n not in skip]


# ------------------------------------------------------------------------ determinism and size
def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    generate(tmp_path / "a", seed=7, scale=0.3)
    generate(tmp_path / "b", seed=7, scale=0.3)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) >= 10
    assert [name for name in a if a[name] != b[name]] == []
    generate(tmp_path / "c", seed=8, scale=0.3)
    c = _files(tmp_path / "c")
    assert c[GATEWAY] != a[GATEWAY] and c[JWKS] != a[JWKS]


def test_committed_sample_is_what_the_generator_writes(sample: tuple[Path, dict[str, Any]]) -> None:
    assert COMMITTED.is_dir(), "run: python -m pipeline.samplegen --out sample_logs"
    fresh, committed = _files(sample[0]), _files(COMMITTED)
    assert sorted(committed) == sorted(fresh)
    assert [name for name in fresh if fresh[name] != committed[name]] == [], "regenerate sample_logs/"


def test_committed_sample_is_under_2_mb() -> None:
    total = sum(p.stat().st_size for p in COMMITTED.rglob("*") if p.is_file())
    assert 0 < total < 2 * 1024 * 1024


def test_scale_grows_the_record_count(tmp_path: Path, sample: tuple[Path, dict[str, Any]]) -> None:
    small = generate(tmp_path / "small", seed=DEFAULT_SEED, scale=0.3)
    big = sample[1]
    assert big["users"]["members"] == 25 and small["users"]["members"] < 25
    assert small["records_total"] < big["records_total"]
    assert small["attack"]["forged_tokens"] == big["attack"]["forged_tokens"]  # the attack does not scale


# ------------------------------------------------------------------------ keys
def test_keys_are_derived_deterministically_and_prime() -> None:
    a = derive_rsa_key.__wrapped__("unit-test", 1024).private_numbers()
    b = derive_rsa_key.__wrapped__("unit-test", 1024).private_numbers()
    assert (a.p, a.q) == (b.p, b.q) and a.p != a.q
    assert a.public_numbers.n.bit_length() == 1024
    import random
    rng = random.Random(0)
    assert is_probable_prime(2**127 - 1, rng) and not is_probable_prime(2**127 + 1, rng)
    assert not is_probable_prime(561, rng)  # Carmichael number


def test_no_private_key_material_anywhere(sample: tuple[Path, dict[str, Any]]) -> None:
    for name, data in _files(sample[0]).items():
        assert b"PRIVATE KEY" not in data, name
    for rel in (JWKS,):
        for key in json.loads((sample[0] / rel).read_text())["keys"]:
            assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key), key["kid"]
    for snap in json.loads((sample[0] / JWKS_HISTORY).read_text())["snapshots"]:
        for key in snap["jwks"]["keys"]:
            assert "d" not in key


def test_jwks_history_shows_the_rollover(sample: tuple[Path, dict[str, Any]]) -> None:
    doc = json.loads((sample[0] / JWKS_HISTORY).read_text())
    assert {"source", "note", "snapshots"} <= set(doc) and len(doc["snapshots"]) == 7
    dates = [s["commit_date"] for s in doc["snapshots"]]
    assert dates == sorted(dates, reverse=True)
    keys = {k["label"]: k for k in sample[1]["keys"]}
    kid_b = keys["enterprise-b"]["kid"]
    first_with_b = min(s["commit_date"] for s in doc["snapshots"] if kid_b in {k["kid"] for k in s["jwks"]["keys"]})
    assert first_with_b.startswith("2026-10-23")
    current = json.loads((sample[0] / JWKS).read_text())["keys"]
    issuers = {k["kid"]: k["issuer"] for k in current}
    assert issuers[keys["consumer"]["kid"]].endswith("/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0")
    assert issuers[keys["enterprise-a"]["kid"]] == "https://login.microsoftonline.com/{tenantid}/v2.0"
    for k in current:  # kid == x5t == base64url(SHA-1(cert DER))
        der = base64.b64decode(k["x5c"][0])
        assert k["kid"] == k["x5t"] == base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()


# ------------------------------------------------------------------------ tokens
def test_every_gateway_jwt_verifies_against_the_published_jwks(sample, planted) -> None:
    root = sample[0]
    jwks = jwt.PyJWKSet.from_dict(json.loads((root / JWKS).read_text()))
    by_kid = {k.key_id: k for k in jwks.keys}
    tokens = _gateway_tokens(root, planted.get(GATEWAY, {}))
    assert len(tokens) > 50
    for token, (header, _) in tokens.items():
        assert header["alg"] == "RS256" and header["kid"] == header["x5t"]
        claims = jwt.decode(token, by_kid[header["kid"]].key, algorithms=["RS256"],
                            options={"verify_aud": False, "verify_exp": False, "verify_iat": False, "verify_nbf": False})
        assert claims["iss"] == f"https://login.microsoftonline.com/{claims['tid']}/v2.0"
    bad = planted[GATEWAY]
    assert len(bad) == 1
    line = _lines(root, GATEWAY)[next(iter(bad)) - 1]
    payload = json.loads(line)["authorization"].split(".")[1]
    with pytest.raises(ValueError):
        _b64json(payload)


def test_attack_tokens_use_the_consumer_key_and_claim_contoso(sample, planted) -> None:
    root, summary = sample
    keys = {k["label"]: k["kid"] for k in summary["keys"]}
    tokens = _gateway_tokens(root, planted.get(GATEWAY, {}))
    forged = {t: c for t, (h, c) in tokens.items() if h["kid"] == keys["consumer"] and c["tid"] == w.CONTOSO_TID}
    expected = {f["token_fingerprint"] for f in summary["attack"]["forged_tokens"]}
    assert {hashlib.sha256(t.encode()).hexdigest() for t in forged} == expected and len(expected) == 4
    assert {c["preferred_username"] for c in forged.values()} == {"megan.bowen@contoso.com", "lidia.holloway@contoso.com"}
    for c in forged.values():
        assert c["aud"] == "https://outlook.office365.com" and c["azp"] == w.ATTACK_CLIENT_APP_ID
    assert sorted(c["exp"] - c["iat"] > 7200 for c in forged.values()) == [False, False, False, True]
    consumer = [c for h, c in tokens.values() if h["kid"] == keys["consumer"] and c["tid"] == w.CONSUMER_TID]
    assert consumer and all(c["aud"] == "https://outlook.live.com" for c in consumer)
    benign = [c for t, (h, c) in tokens.items() if t not in forged]
    assert all(c["exp"] - c["iat"] <= 90 * 60 for c in benign)
    ips = {json.loads(line)["client_ip"] for line in _lines(root, GATEWAY)
           if hashlib.sha256(json.loads(line)["authorization"][7:].encode()).hexdigest() in expected}
    assert ips == set(w.ATTACKER_IPS)


def test_benign_enterprise_tokens_were_issued_by_a_graph_sign_in(sample, planted) -> None:
    root, summary = sample
    keys = {k["label"]: k for k in summary["keys"]}
    graph = [r for r in _graph(root, GRAPH_USER) + _graph(root, GRAPH_SP) if r["status"]["errorCode"] == 0]
    by_uti = {r["uniqueTokenIdentifier"]: r for r in graph}
    forged = {f["uti"] for f in summary["attack"]["forged_tokens"]}
    checked = 0
    for header, claims in _gateway_tokens(root, planted.get(GATEWAY, {})).values():
        if claims["tid"] != w.CONTOSO_TID or claims["uti"] in forged:
            continue
        assert header["kid"] in (keys["enterprise-a"]["kid"], keys["enterprise-b"]["kid"])
        signin = by_uti[claims["uti"]]  # KeyError = a benign token nobody issued
        assert parse_time(signin["createdDateTime"]) == datetime.fromtimestamp(claims["iat"], timezone.utc)
        if claims["idtyp"] == "user":
            assert claims["sid"] == signin["sessionId"] and claims["oid"] == signin["userId"]
        label = "enterprise-b" if claims["iat"] >= datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp() else "enterprise-a"
        assert header["kid"] == keys[label]["kid"]
        checked += 1
    assert checked > 40


def test_graph_records_follow_the_token_id_rule_and_b2b_shape(sample, planted) -> None:
    root = sample[0]
    bad = planted[GRAPH_USER]
    records = _graph(root, GRAPH_USER)
    guests = 0
    for n, rec in enumerate(records, 1):
        if n in bad:
            continue
        assert rec["uniqueTokenIdentifier"] == unique_token_id_from_request_id(rec["id"])
        assert rec["tokenIssuerType"] == "AzureAD" and rec["signInEventTypes"] == ["interactiveUser"]
        if rec["userType"] == "guest":
            guests += 1
            assert rec["homeTenantId"] == w.FABRIKAM_TID and rec["resourceTenantId"] == w.CONTOSO_TID
            assert rec["crossTenantAccessType"] == "b2bCollaboration"
    assert guests >= 1
    for rec in _graph(root, GRAPH_SP):
        assert rec["signInEventTypes"] == ["servicePrincipal"] and rec["userPrincipalName"] == ""
    kinds = {p["kind"]: records[n - 1] for n, p in bad.items()}
    with pytest.raises(BadValue):
        parse_time(kinds["impossible_date"]["createdDateTime"])
    with pytest.raises(BadValue):
        guid(kinds["non_guid_id"]["id"])


# ------------------------------------------------------------------------ sign-in CSV and Event Hub
def test_log_analytics_csv_shape_and_planted_rows(sample, planted) -> None:
    root = sample[0]
    raw = (root / LA_CSV).read_bytes()
    header, rows = _csv(root, LA_CSV)
    assert header[2] == "TimeGenerated [UTC]" and "CreatedDateTime [UTC]" in header and header[-1] == "Type"
    assert b"\r\n" in raw and any("\n" in cell for row in rows for cell in row), "multi-line cells expected"
    bad = planted[LA_CSV]
    for n, row in enumerate(rows, 1):
        if n in bad:
            continue
        rec = dict(zip(header, row, strict=True))
        assert rec["Type"] == "AADNonInteractiveUserSignInLogs" and rec["IsInteractive"] == "FALSE"
        assert parse_time(rec["CreatedDateTime [UTC]"]) <= parse_time(rec["TimeGenerated [UTC]"])
        assert rec["UniqueTokenIdentifier"] == unique_token_id_from_request_id(rec["Id"])
        normalize_ip(rec["IPAddress"])
    kinds = {p["kind"]: rows[n - 1] for n, p in bad.items()}
    assert len(kinds["missing_cell"]) == len(header) - 1
    with pytest.raises(BadValue):
        normalize_ip(kinds["invalid_ip"][header.index("IPAddress")])


def test_eventhub_copies_deduplicate_and_one_line_is_truncated(sample, planted) -> None:
    root = sample[0]
    graph_ids = {r["id"] for r in _graph(root, GRAPH_USER)}
    bad = planted[EVENTHUB]
    lines = _lines(root, EVENTHUB)
    for n, line in enumerate(lines, 1):
        if n in bad:
            with pytest.raises(json.JSONDecodeError):
                json.loads(line)
            continue
        rec = json.loads(line)
        assert rec["category"] == "SignInLogs" and rec["properties"]["id"] in graph_ids
        assert rec["properties"]["createdDateTime"].endswith("+00:00")
    assert len(lines) - len(bad) >= 2


# ------------------------------------------------------------------------ mail
def test_purview_csv_shape(sample, planted) -> None:
    root = sample[0]
    raw = (root / PURVIEW).read_bytes()
    assert raw.startswith(b"RecordId,CreationDate,RecordType,Operation,UserId,AuditData,AssociatedAdminUnits,"
                          b"AssociatedAdminUnitsNames\r\n")
    header, rows = _csv(root, PURVIEW)
    bad = planted[PURVIEW]
    ops = set()
    for n, row in enumerate(rows, 1):
        if n in bad:
            with pytest.raises(json.JSONDecodeError):
                json.loads(row[5])
            continue
        audit = json.loads(row[5])
        assert row[0] == audit["Id"] and int(row[2]) == audit["RecordType"] and row[3] == audit["Operation"]
        assert not audit["CreationTime"].endswith("Z")
        assert parse_time(row[1]) == parse_time(audit["CreationTime"])
        ops.add(audit["Operation"])
        if audit["Operation"] == "UserLoggedIn":
            assert audit["RecordType"] == 15 and audit["IntraSystemId"] == audit["Id"]
            assert any(p["Name"] == "SessionId" for p in audit["DeviceProperties"])
    assert ops == {"MailItemsAccessed", "Send", "New-InboxRule", "UserLoggedIn"}


def test_benign_mail_matches_an_issued_token_and_attack_mail_matches_none(sample, planted) -> None:
    root, summary = sample
    signins: dict[str, dict[str, Any]] = {}
    for rec in _graph(root, GRAPH_USER):
        signins[rec["uniqueTokenIdentifier"]] = {"user": rec["userPrincipalName"], "session": rec["sessionId"],
                                                 "time": rec["createdDateTime"]}
    header, rows = _csv(root, LA_CSV)
    for n, row in enumerate(rows, 1):
        if n not in planted[LA_CSV]:
            rec = dict(zip(header, row))
            signins[rec["UniqueTokenIdentifier"]] = {"user": rec["UserPrincipalName"], "session": rec["SessionId"],
                                                     "time": rec["CreatedDateTime [UTC]"]}
    sessions = {s["session"] for s in signins.values()}
    finding = next(f for f in summary["expected_findings"] if f["id"] == "mail_token_never_issued")
    attack_ids = set(finding["event_ids"])
    seen_attack = set()
    benign = 0
    for audit in _audit_rows(root, planted[PURVIEW]):
        if audit["Operation"] == "UserLoggedIn":
            continue
        ctx = audit["AppAccessContext"]
        assert audit["TokenTenantId" if "TokenTenantId" in audit else "OrganizationId"] == w.CONTOSO_TID
        if audit["Id"] in attack_ids:
            seen_attack.add(audit["Id"])
            assert ctx["UniqueTokenId"] not in signins and ctx["AADSessionId"] not in sessions
            assert audit["ClientInfoString"] == w.ATTACK_CLIENT_INFO and audit["AppId"] == w.ATTACK_CLIENT_APP_ID
            continue
        issued = signins[ctx["UniqueTokenId"]]
        assert issued["user"] == audit["UserId"] and issued["session"] == ctx["AADSessionId"]
        assert parse_time(issued["time"]).replace(microsecond=0) == parse_time(ctx["IssuedAtTime"])
        assert audit["AppId"] != w.ATTACK_CLIENT_APP_ID
        benign += 1
    assert seen_attack == attack_ids and len(attack_ids) == 13 and benign > 50


def test_office_activity_duplicates_purview_rows(sample, planted) -> None:
    root = sample[0]
    purview_ids = {a["Id"] for a in _audit_rows(root, planted[PURVIEW])}
    bad = planted[OFFICE_ACTIVITY]
    for n, line in enumerate(_lines(root, OFFICE_ACTIVITY), 1):
        rec = json.loads(line)
        if n in bad:
            with pytest.raises(BadValue):
                parse_time(rec["TimeGenerated"])
            continue
        assert rec["RecordType"] == "ExchangeItemAggregated" and rec["OfficeId"] in purview_ids
        assert json.loads(rec["AppAccessContext"])["UniqueTokenId"] == rec["UniqueTokenId"]
        assert isinstance(rec["Folders"], str) and "<" not in line


def test_mail_reaches_back_less_far_than_sign_ins(sample) -> None:
    files = sample[1]["files"]
    mail = min(files[PURVIEW]["reach_days"], files[OFFICE_ACTIVITY]["reach_days"])
    signin = min(files[GRAPH_USER]["reach_days"], files[LA_CSV]["reach_days"])
    assert mail <= 21.5 and signin >= 38 and files[GATEWAY]["reach_days"] >= 38
    first_mail = parse_time(files[PURVIEW]["first_event"])
    assert first_mail >= w.MAIL_START and parse_time(files[GRAPH_USER]["first_event"]) < first_mail - timedelta(days=14)


def test_planted_records_are_documented(sample) -> None:
    summary = sample[1]
    planted = summary["planted_bad_records"]
    assert 5 <= len(planted) <= 10 and len({p["kind"] for p in planted}) == len(planted)
    assert {p["handling"] for p in planted} == {"quarantine", "token_parse_error"}
    readme = (sample[0] / "README.md").read_text()
    for p in planted:
        assert p["kind"] in readme and p["file"] in readme
    assert json.loads((sample[0] / "expected.json").read_text())["planted_bad_records"] == planted


def test_project_ingest_quarantines_exactly_the_planted_records(sample, tmp_path: Path) -> None:
    """End to end with pipeline.ingest: the planted records, and only they, are quarantined."""
    from pipeline.ingest import ingest_paths
    from pipeline.lake import Lake

    root, summary = sample
    lake = Lake(tmp_path / "lake")
    data = [root / "signins", root / "mail", root / "gateway"]
    report = ingest_paths(lake, data, quality_policy="off")
    assert not [f for f in report.files if f.status == "error"], [f.path for f in report.files if f.status == "error"]
    got = sorted((Path(r["source_file"]).relative_to(root).as_posix(), r["record_number"], r["line_number"])
                 for r in lake.read_table("quarantine").to_pylist())
    want = sorted((p["file"], p["record"], p["line"]) for p in summary["planted_bad_records"] if p["handling"] == "quarantine")
    assert got == want
    errors = [r["parse_error"] for r in lake.read_table("tokens").to_pylist() if r["parse_error"]]
    assert len(errors) == 1
