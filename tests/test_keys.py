"""Signing-key registry, offline signature checks and the read-time ``tokens`` view.

Every key here is generated in the test (never committed); registries are imported from JWKS
files written to a temp dir; the view is run in DuckDB over in-memory tables.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import jwt
import pyarrow as pa
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import keys, schemas
from pipeline.lake import Lake

MSA = keys.MSA_TENANT_ID
T1 = "11111111-2222-3333-4444-555555555555"
T2 = "99999999-8888-7777-6666-555555555555"
ENT_ISSUER = "https://login.microsoftonline.com/{tenantid}/v2.0"
MSA_ISSUER = f"https://login.microsoftonline.com/{MSA}/v2.0"
STORM_KID = "1LTMzakihiRla_8z2BEJVXeWMqo"
UTC = timezone.utc
D0, D1, D2, D3 = (datetime(2024, m, 1, tzinfo=UTC) for m in (1, 2, 3, 4))
REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "jwks_panva_wellknown"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# ------------------------------------------------------------------ key material made in the test
def _cert(key, not_before: datetime, not_after: datetime, cn: str) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def _jwk(key, kid: str, issuer: str | None, cert: str | None = None) -> dict:
    pub = key.public_key()
    algo = jwt.algorithms.RSAAlgorithm if isinstance(pub, rsa.RSAPublicKey) else jwt.algorithms.ECAlgorithm
    jwk = algo.to_jwk(pub, as_dict=True)
    jwk.update({"kid": kid, "use": "sig"})
    if issuer:
        jwk["issuer"] = issuer
    if cert:
        jwk["x5c"] = [cert]
        der = base64.b64decode(cert)
        jwk["x5t"] = _b64(hashlib.sha1(der).digest())
    return jwk


@pytest.fixture(scope="module")
def km() -> dict:
    """Keys E (enterprise), X (enterprise, certificate expired 2023-12-31), R (enterprise, rotated
    in and out of the history), C (consumer), P (EC P-256, enterprise) and an unregistered key."""
    rsa_key = lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)  # noqa: E731
    out = {name: rsa_key() for name in ("E", "X", "R", "C", "U")}
    out["P"] = ec.generate_private_key(ec.SECP256R1())
    out["cert_X"] = _cert(out["X"], datetime(2019, 1, 1, tzinfo=UTC), datetime(2023, 12, 31, tzinfo=UTC), "expired")
    out["cert_E"] = _cert(out["E"], datetime(2023, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC), "enterprise")
    return out


def _write_registry_files(km: dict, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    E = _jwk(km["E"], "kid-E", ENT_ISSUER, km["cert_E"])
    X = _jwk(km["X"], "kid-X", ENT_ISSUER, km["cert_X"])
    R = _jwk(km["R"], "kid-R", ENT_ISSUER)
    P = _jwk(km["P"], "kid-P", ENT_ISSUER)
    history = {
        "source": "test",
        "snapshots": [  # any order: the importer sorts by date
            {"commit": "d", "commit_date": D3.isoformat(), "jwks": {"keys": [E, X, P]}},
            {"commit": "a", "commit_date": D0.isoformat(), "jwks": {"keys": [E, X, P]}},
            {"commit": "b", "commit_date": D1.isoformat(), "jwks": {"keys": [E, X, R, P]}},
            {"commit": "c", "commit_date": D2.isoformat(), "jwks": {"keys": [E, X, R, P]}},
        ],
    }
    hist = folder / "organizations-history.json"
    hist.write_text(json.dumps(history))
    consumers = folder / "consumers" / "keys.json"  # plain JWKS without per-key issuer ...
    consumers.parent.mkdir(exist_ok=True)
    c = _jwk(km["C"], "kid-C", None)
    consumers.write_text(json.dumps({"keys": [c]}))
    mtime = datetime(2024, 3, 15, tzinfo=UTC).timestamp()
    os.utime(consumers, (mtime, mtime))
    config = consumers.parent / "openid-configuration.json"  # ... whose issuer comes from the config beside it
    config.write_text(json.dumps({"issuer": MSA_ISSUER, "jwks_uri": "https://login.microsoftonline.com/consumers/discovery/v2.0/keys"}))
    return [hist, consumers.parent]


@pytest.fixture(scope="module")
def lake(km, tmp_path_factory) -> Lake:
    root = tmp_path_factory.mktemp("keys")
    lake = Lake(root / "lake")
    summary = keys.import_keys(lake, _write_registry_files(km, root / "jwks"))
    assert summary.problems == [] and summary.warnings == []
    return lake


# ------------------------------------------------------------------ tokens made in the test
def _sign(key, kid: str | None, claims: dict, alg: str = "RS256", extra: dict | None = None) -> str:
    headers = {"kid": kid} if kid else {}
    headers.update(extra or {})
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def _claims(tid: str, iat: datetime, iss: str | None = None, **more) -> dict:
    return {
        "iss": iss if iss is not None else f"https://login.microsoftonline.com/{tid}/v2.0",
        "tid": tid,
        "iat": int(iat.timestamp()),
        "nbf": int(iat.timestamp()),
        "exp": int((iat + timedelta(hours=1)).timestamp()),
        **more,
    }


def _unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(signature)}"


IAT = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def cases(km) -> dict[str, str]:
    E, C, X, U, P, R = km["E"], km["C"], km["X"], km["U"], km["P"], km["R"]
    good = _sign(E, "kid-E", _claims(T1, IAT))
    h, p, s = good.split(".")
    tampered_claims = json.loads(base64.urlsafe_b64decode(p + "=="))
    tampered_claims["tid"] = T2
    pem = E.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_header = _b64(json.dumps({"alg": "HS256", "kid": "kid-E", "typ": "JWT"}).encode())
    hs_payload = _b64(json.dumps(_claims(T1, IAT)).encode())
    hs_sig = hmac.new(pem, f"{hs_header}.{hs_payload}".encode(), hashlib.sha256).digest()
    return {
        "valid_enterprise": good,
        "valid_enterprise_v1": _sign(E, "kid-E", _claims(T1, IAT, iss=f"https://sts.windows.net/{T1}/")),
        "valid_ps256": _sign(E, "kid-E", _claims(T1, IAT), alg="PS256"),
        "valid_es256": _sign(P, "kid-P", _claims(T1, IAT), alg="ES256"),
        "valid_consumer": _sign(C, "kid-C", _claims(MSA, IAT)),
        "consumer_key_enterprise_tid": _sign(C, "kid-C", _claims(T1, IAT)),
        "expired_key": _sign(X, "kid-X", _claims(T1, IAT)),
        "unknown_kid": _sign(U, "kid-nobody", _claims(T1, IAT)),
        "wrong_key_same_kid": _sign(U, "kid-E", _claims(T1, IAT)),
        "tampered": f"{h}.{_b64(json.dumps(tampered_claims).encode())}.{s}",
        "alg_none": _unsigned({"alg": "none", "kid": "kid-E"}, _claims(T1, IAT)),
        "hs256_public_key": f"{hs_header}.{hs_payload}.{_b64(hs_sig)}",
        "jku_header": _sign(E, "kid-E", _claims(T1, IAT), extra={"jku": "https://attacker.example/keys"}),
        "jwk_header": _sign(E, "kid-E", _claims(T1, IAT), extra={"jwk": {"kty": "RSA"}}),
        "rsa_alg_on_ec_key": _sign(E, "kid-P", _claims(T1, IAT)),
        "issuer_not_tenant": _sign(E, "kid-E", _claims(T1, IAT, iss=f"https://login.microsoftonline.com/{T2}/v2.0")),
        "retired_after": _sign(R, "kid-R", _claims(T1, datetime(2024, 4, 5, tzinfo=UTC))),
        "retired_within_tolerance": _sign(R, "kid-R", _claims(T1, datetime(2024, 4, 2, tzinfo=UTC))),
        "retired_before_published": _sign(R, "kid-R", _claims(T1, datetime(2024, 1, 20, tzinfo=UTC))),
        "retired_in_window": _sign(R, "kid-R", _claims(T1, datetime(2024, 2, 15, tzinfo=UTC))),
        "present_from_start_old_iat": _sign(E, "kid-E", _claims(T1, datetime(2023, 6, 1, tzinfo=UTC))),
        "iat_in_future": _sign(E, "kid-E", _claims(T1, IAT + timedelta(minutes=10))),
        "storm_key_enterprise": _sign(U, STORM_KID, _claims(T1, datetime(2023, 6, 1, tzinfo=UTC))),
        "not_a_jws": "abc.def",
    }


EXPECTED_STATUS = {
    "valid_enterprise": "valid",
    "valid_enterprise_v1": "valid",
    "valid_ps256": "valid",
    "valid_es256": "valid",
    "valid_consumer": "valid",
    "consumer_key_enterprise_tid": "valid",  # the signature is fine: the key scope is what is wrong
    "expired_key": "valid",
    "unknown_kid": "unknown_key",
    "wrong_key_same_kid": "invalid",
    "tampered": "invalid",
    "alg_none": "unsupported_alg",
    "hs256_public_key": "unsupported_alg",
    "jku_header": "untrusted_header",
    "jwk_header": "untrusted_header",
    "rsa_alg_on_ec_key": "unsupported_alg",
    "issuer_not_tenant": "valid",
    "storm_key_enterprise": "invalid",  # the built-in Storm-0558 public key does not verify our forgery
    "not_a_jws": "not_checked",
}


def fp(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ================================================================== signatures
def test_signature_status_per_case(lake, cases):
    verifier = keys.SignatureVerifier.from_lake(lake)
    result = verifier.check({fp(t): t for t in cases.values()})
    got = {name: result[fp(tok)][0] for name, tok in cases.items() if name in EXPECTED_STATUS}
    assert got == EXPECTED_STATUS
    assert result[fp(cases["valid_enterprise"])][1] == "organizations-history.json"
    assert result[fp(cases["valid_consumer"])][1] == "keys.json"  # source = file name, also when a folder is imported
    assert result[fp(cases["tampered"])][1] is None


def test_hs256_with_public_key_never_validates_even_if_pinned(km, cases):
    """Algorithm confusion (RFC 8725 §2.1): a JWK that even claims HS256 never turns a public key into a secret."""
    jwk = _jwk(km["E"], "kid-E", ENT_ISSUER)
    jwk["alg"] = "HS256"
    verifier = keys.SignatureVerifier([{"kid": "kid-E", "public_jwk": json.dumps(jwk), "source": "s"}])
    assert verifier.check_one(cases["hs256_public_key"]) == ("unsupported_alg", None)
    assert verifier.check_one(cases["valid_enterprise"]) == ("unsupported_alg", None)  # key pins HS256: RS256 refused


def test_signature_check_parallel_matches_serial(lake, cases):
    verifier = keys.SignatureVerifier.from_lake(lake)
    tokens = {fp(t): t for t in cases.values()}
    assert verifier.check(tokens, workers=2) == verifier.check(tokens, workers=1)


def test_verifier_never_keeps_private_keys(km):
    priv = jwt.algorithms.RSAAlgorithm.to_jwk(km["E"], as_dict=True)  # has d, p, q, ...
    priv["kid"] = "k"
    verifier = keys.SignatureVerifier([{"kid": "k", "public_jwk": json.dumps(priv), "source": "s"}])
    (key,) = verifier.by_kid["k"]
    assert not hasattr(key.key, "private_numbers")


# ================================================================== registry
def test_registry_rows(lake):
    rows = {(r["kid"], r["source"]): r for r in keys.list_keys(lake)}
    e = rows[("kid-E", "organizations-history.json")]
    assert (e["scope"], e["status"], e["first_seen"], e["last_seen"], e["removed_seen"]) == ("enterprise", "active", D0, D3, None)
    assert (e["snapshot_count"], e["source_snapshot_count"], e["source_first_snapshot"]) == (4, 4, D0)
    assert e["cert_not_after"] == datetime(2028, 1, 1, tzinfo=UTC) and e["cert_subject"] == "CN=enterprise"
    r = rows[("kid-R", "organizations-history.json")]
    assert (r["status"], r["first_seen"], r["last_seen"], r["removed_seen"], r["snapshot_count"]) == ("retired", D1, D2, D3, 2)
    c = rows[("kid-C", "keys.json")]
    assert c["issuer"] == MSA_ISSUER and c["scope"] == "consumer"  # issuer from the OpenID configuration beside it
    assert c["first_seen"] == c["last_seen"] == datetime(2024, 3, 15, tzinfo=UTC)  # plain document: file mtime
    assert c["source_snapshot_count"] == 1
    storm = rows[(STORM_KID, "builtin:storm0558_keys.jwks.json")]
    assert (storm["scope"], storm["status"], storm["x5t_hex"]) == ("consumer", "compromised", "d4b4cccda9228624656bff33d8110955779632aa")
    assert (storm["cert_not_before"], storm["cert_not_after"]) == (ts("2016-04-05T14:43:35"), ts("2021-04-04T14:43:35"))
    for row in rows.values():
        assert not schemas.table("signing_keys").violations(row)
        jwk = json.loads(row["public_jwk"])
        assert not set(jwk) & set(keys.PRIVATE_MEMBERS)


def test_x5t_hex_from_certificate_when_x5t_missing(km):
    jwk = _jwk(km["X"], "k", ENT_ISSUER, km["cert_X"])
    del jwk["x5t"]
    info = keys.key_info(jwk, "f", [])
    der = base64.b64decode(km["cert_X"])
    assert info.x5t_hex == hashlib.sha1(der).hexdigest() and info.x5t == _b64(hashlib.sha1(der).digest())
    n = int.from_bytes(base64.urlsafe_b64decode(jwk["n"] + "=="), "big")
    assert info.modulus_sha256 == hashlib.sha256(n.to_bytes(256, "big")).hexdigest()


def test_private_members_stripped_and_symmetric_refused(km, tmp_path):
    priv = jwt.algorithms.RSAAlgorithm.to_jwk(km["E"], as_dict=True)
    priv["kid"] = "leaky"
    doc = tmp_path / "leaky.json"
    doc.write_text(json.dumps({"observed_at": "2024-05-01T00:00:00Z", "keys": [priv, {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"}]}))
    warnings: list[str] = []
    parsed = keys.read_documents([doc])
    rows = keys.registry_rows(parsed.snapshots, warnings)
    assert [r["kid"] for r in rows] == ["leaky"]
    assert rows[0]["first_seen"] == ts("2024-05-01T00:00:00")  # a date inside the document wins over mtime
    assert set(json.loads(rows[0]["public_jwk"])) - {"key_ops"} == {"kty", "n", "e", "kid"}
    assert any("private member(s) d, p, q, dp, dq, qi stripped" in w for w in warnings)
    assert any("sym" in w and "refused" in w for w in warnings)
    assert not any(priv["d"] in w for w in warnings)  # never echo key material


def test_bad_files_are_reported_and_others_imported(km, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"keys": [_jwk(km["E"], "kid-E", ENT_ISSUER)]}))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    (tmp_path / "hist.json").write_text(json.dumps([{"date": "2024-01-01", "jwks": {"keys": []}}, {"jwks": {"keys": []}}]))
    summary = keys.import_keys(Lake(tmp_path / "lake"), [tmp_path], scope_override="unknown")
    assert summary.sources["good.json"]["keys"] == 1 and summary.sources["good.json"]["unknown"] == 1  # override wins
    text = "\n".join(summary.problems)
    assert "broken.json: not JSON" in text and "other.json: not a JWKS document" in text and "hist.json snapshot 2: snapshot has no date" in text


def test_reimport_is_a_no_op_and_other_sources_are_kept(km, tmp_path):
    lake = Lake(tmp_path / "lake")
    files = _write_registry_files(km, tmp_path / "jwks")
    assert keys.registry_version(lake) is None
    first = keys.import_keys(lake, files)
    assert first.batch_id and first.changed and keys.registry_version(lake) == first.batch_id
    again = keys.import_keys(lake, files)
    assert again.batch_id is None and not again.changed and keys.registry_version(lake) == first.batch_id
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"date": "2024-06-01", "keys": [_jwk(km["U"], "kid-U", ENT_ISSUER)]}))
    keys.import_keys(lake, [extra])
    sources = {r["source"] for r in keys.list_keys(lake)}
    assert sources == {"organizations-history.json", "keys.json", "extra.json", "builtin:storm0558_keys.jwks.json"}


def test_mark_compromised_and_indicators(km, tmp_path):
    lake = Lake(tmp_path / "lake")
    keys.import_keys(lake, _write_registry_files(km, tmp_path / "jwks"))
    result = keys.mark_compromised(lake, "kid-E", "seen in a crash dump", source="IR ticket 42")
    assert result["changed"] and result["registry_rows"] == 1
    assert {r["kid"]: r["status"] for r in keys.list_keys(lake)}["kid-E"] == "compromised"
    ind = {(r["indicator_type"], r["value"]): r for r in lake.read_table("indicators").to_pylist()}
    assert ind[("kid", "kid-E")]["source"] == "IR ticket 42" and ind[("kid", "kid-E")]["scope"] == "enterprise"
    assert ind[("kid", STORM_KID)]["campaign"] == "Storm-0558"
    assert keys.load_indicators(lake)["changed"] is False  # idempotent, and the mark survives
    keys.import_keys(lake, _write_registry_files(km, tmp_path / "jwks"))  # the mark survives a re-import too
    assert {r["kid"]: r["status"] for r in keys.list_keys(lake)}["kid-E"] == "compromised"
    with pytest.raises(keys.KeyImportError):
        keys.mark_compromised(lake, "kid-E", "  ")


def test_builtin_indicator_lists_are_cited():
    rows = keys.builtin_indicators()
    by_type: dict[str, set] = {}
    for r in rows:
        by_type.setdefault(r["indicator_type"], set()).add(r["value"])
        assert r["source"] and ("microsoft.com" in r["source"] or "wiz.io" in r["source"])
        assert not schemas.table("indicators").violations({**r, "event_date": "2024-01-01", "ingest_batch_id": "b"})
    assert by_type["kid"] == {STORM_KID}
    assert by_type["x5t_hex"] == {"d4b4cccda9228624656bff33d8110955779632aa"}
    assert len(by_type["ip"]) == 38  # 8 token web panel + 27 SoftEther (IOC table) + 3 in-text only
    assert "Client=REST;Client=RESTSystem;;" in by_type["client_info_string"]
    ip = next(r for r in rows if r["value"] == "195.26.87.219")
    assert (ip["valid_from"], ip["valid_until"]) == (ts("2023-05-15T00:00:00"), ts("2023-06-25T23:59:59"))
    # The shipped key's thumbprint is the certificate's, and the kid is its base64url form.
    assert _b64(bytes.fromhex("d4b4cccda9228624656bff33d8110955779632aa")) == STORM_KID


# ================================================================== real JWKS history
@pytest.mark.skipif(not REALDATA.is_dir(), reason=f"shared real data not found at {REALDATA}")
def test_real_jwks_history(tmp_path):
    files = {"entra-common": REALDATA / "entra-common-jwks-history.json", "entra-organizations": REALDATA / "entra-organizations-jwks-history.json"}
    lake = Lake(tmp_path / "lake")
    summary = keys.import_keys(lake, list(files.values()))
    assert summary.problems == [] and summary.warnings == []
    reference = json.loads((REALDATA / "kid_summary.json").read_text())
    rows = keys.list_keys(lake)
    for name, path in files.items():
        ref = reference[name]["kid_summary"]
        mine = {r["kid"]: r for r in rows if r["source"] == path.name}
        assert set(mine) == set(ref)
        scopes = {s: sum(1 for v in ref.values() if keys.scope_of_issuer(v["issuer"]) == s) for s in keys.SCOPES}
        assert summary.sources[path.name]["snapshots"] == reference[name]["distinct_snapshots"]
        for scope in ("consumer", "enterprise"):
            assert summary.sources[path.name].get(scope, 0) == scopes[scope]
        snaps = json.loads(path.read_text())["snapshots"]
        dates = {s["commit_date"] for s in snaps}
        newest = max(dates)
        exact_first = 0
        for kid, v in ref.items():
            row = mine[kid]
            assert row["issuer"] == v["issuer"]
            assert row["last_seen"] == datetime.fromisoformat(v["last_seen_commit_date"]), kid
            assert row["status"] == ("active" if v["last_seen_commit_date"] == newest else "retired")
            ref_first = datetime.fromisoformat(v["first_seen_commit_date"])
            # The history keeps each distinct document once, dated by its latest capture; kid_summary
            # was computed over every commit. So first_seen is exact when that commit is in the history,
            # and otherwise a later upper bound (by at most ~6 days in this data).
            if v["first_seen_commit_date"] in dates:
                assert row["first_seen"] == ref_first, kid
                exact_first += 1
            else:
                assert ref_first < row["first_seen"] <= ref_first + timedelta(days=7), kid
        assert exact_first == {"entra-common": 14, "entra-organizations": 0}[name]
    common = [r for r in rows if r["source"] == files["entra-common"].name]
    assert sum(r["scope"] == "enterprise" for r in common) == 30 and sum(r["scope"] == "consumer" for r in common) == 12
    assert all(r["cert_not_after"] and r["x5t_hex"] and r["modulus_sha256"] for r in common)


# ================================================================== the tokens view
TOKENS_SPEC = schemas.table("tokens")
KEYS_SPEC = schemas.table("signing_keys")


def _arrow(spec, rows: list[dict]) -> pa.Table:
    schema = pa.schema([pa.field(c.name, c.arrow_type) for c in spec.stored_columns])
    return pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in rows], schema=schema)


def _stored_row(token: str, first_seen: datetime, status: str = "not_checked", source: str | None = None, batch: str = "b1", count: int = 1) -> dict:
    """A stored ``tokens`` row as the ingest writes it (decoded here, no dependency on pipeline.tokens)."""
    parts = token.split(".")
    row = {"token_fingerprint": fp(token), "event_date": first_seen.date().isoformat(), "first_seen": first_seen,
           "last_seen": first_seen + timedelta(minutes=count), "seen_count": count, "signature_status": status,
           "signature_key_source": source, "ingest_batch_id": batch}
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=="))
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=="))
    except Exception:  # noqa: BLE001
        row["parse_error"] = "not a JWT"
        return row
    for name in ("alg", "kid", "x5t", "typ", "jku", "x5u"):
        row[name] = header.get(name) if isinstance(header.get(name), str) else None
    row["has_jwk_header"] = "jwk" in header
    for name in ("iss", "tid", "uti", "sid", "ver", "oid"):
        row[name] = claims.get(name) if isinstance(claims.get(name), str) else None
    for name in ("iat", "nbf", "exp"):
        row[name] = datetime.fromtimestamp(claims[name], tz=UTC) if isinstance(claims.get(name), int) else None
    return row


def _view(stored: list[dict], registry: list[dict], **params) -> dict[str, dict]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("tokens_stored", _arrow(TOKENS_SPEC, stored))
    con.register("signing_keys", _arrow(KEYS_SPEC, registry))
    cur = con.execute(keys.tokens_view_sql("tokens_stored", "signing_keys", **params))
    names = [d[0] for d in cur.description]
    return {row[0]: dict(zip(names, row)) for row in cur.fetchall()}


@pytest.fixture(scope="module")
def view(lake, cases) -> dict[str, dict]:
    verifier = keys.SignatureVerifier.from_lake(lake)
    checked = verifier.check({fp(t): t for t in cases.values()})
    first_seen = IAT + timedelta(minutes=1)
    stored = []
    for name, tok in cases.items():
        seen = first_seen
        if name.startswith(("retired_", "present_from_start", "storm")):
            claims = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "=="))
            seen = datetime.fromtimestamp(claims["iat"], tz=UTC) + timedelta(minutes=1)
        stored.append(_stored_row(tok, seen, *checked[fp(tok)]))
    out = _view(stored, lake.read_table("signing_keys").to_pylist())
    return {name: out[fp(tok)] for name, tok in cases.items()}


def test_view_columns_follow_the_schema(view):
    row = next(iter(view.values()))
    assert list(row) == [c.name for c in TOKENS_SPEC.columns]


def test_view_valid_enterprise(view):
    v = view["valid_enterprise"]
    assert v["signature_status"] == "valid" and v["signature_key_source"] == "organizations-history.json"
    assert (v["key_scope"], v["key_status"], v["kid_known"], v["kid_in_issuer_jwks"]) == ("enterprise", "active", True, True)
    assert (v["issuer_tenant_mismatch"], v["key_issuer_mismatch"], v["key_expired_at_issue"]) == (False, False, False)
    assert (v["key_outside_jwks_window"], v["lifetime_seconds"], v["iat_in_future"]) == (False, 3600, False)
    assert view["valid_enterprise_v1"]["key_issuer_mismatch"] is False  # sts.windows.net v1 issuer accepted as .NET does


def test_view_consumer_key_scope(view):
    v = view["valid_consumer"]
    assert (v["key_scope"], v["kid_in_issuer_jwks"], v["key_issuer_mismatch"], v["issuer_tenant_mismatch"]) == ("consumer", True, False, False)
    assert v["key_outside_jwks_window"] is None  # one plain document: no history, no window verdict
    storm = view["consumer_key_enterprise_tid"]  # the Storm-0558 pattern
    assert (storm["signature_status"], storm["key_scope"], storm["kid_in_issuer_jwks"], storm["key_issuer_mismatch"]) == (
        "valid", "consumer", False, True
    )
    assert storm["issuer_tenant_mismatch"] is False


def test_view_expired_unknown_and_mismatch(view):
    assert view["expired_key"]["key_expired_at_issue"] is True
    assert view["valid_enterprise"]["key_expired_at_issue"] is False
    assert view["retired_after"]["key_expired_at_issue"] is None  # no certificate published
    u = view["unknown_kid"]
    assert (u["kid_known"], u["kid_in_issuer_jwks"], u["key_scope"], u["key_status"], u["key_issuer_mismatch"]) == (False, False, None, None, None)
    m = view["issuer_not_tenant"]
    # .NET rejects this at IDX40004 (iss lacks tid): that is issuer_tenant_mismatch. The key check proper
    # (IDX40005) passes because the key's issuer resolved for tid is the v2 issuer of that tid.
    assert (m["issuer_tenant_mismatch"], m["key_issuer_mismatch"]) == (True, False)
    assert view["not_a_jws"]["issuer_tenant_mismatch"] is None and view["not_a_jws"]["kid_known"] is False


def test_view_jwks_window(view):
    assert view["retired_after"]["key_outside_jwks_window"] is True
    assert view["retired_within_tolerance"]["key_outside_jwks_window"] is False
    assert view["retired_before_published"]["key_outside_jwks_window"] is True
    assert view["retired_in_window"]["key_outside_jwks_window"] is False
    assert view["retired_in_window"]["key_status"] == "retired"
    assert view["present_from_start_old_iat"]["key_outside_jwks_window"] is False  # may predate the history


def test_view_iat_in_future(view):
    assert view["iat_in_future"]["iat_in_future"] is True
    assert view["valid_enterprise"]["iat_in_future"] is False


def test_view_builtin_storm_key(view):
    s = view["storm_key_enterprise"]
    assert (s["key_status"], s["key_scope"], s["kid_known"], s["key_issuer_mismatch"], s["key_expired_at_issue"]) == (
        "compromised", "consumer", True, True, True
    )
    assert s["signature_status"] == "invalid"


def test_view_tolerance_is_a_parameter(lake, cases):
    tok = cases["retired_within_tolerance"]  # iat one day after removed_seen
    stored = [_stored_row(tok, datetime(2024, 4, 2, 0, 1, tzinfo=UTC), "valid", "x")]
    registry = lake.read_table("signing_keys").to_pylist()
    assert _view(stored, registry)[fp(tok)]["key_outside_jwks_window"] is False
    assert _view(stored, registry, tolerance_seconds=3600)[fp(tok)]["key_outside_jwks_window"] is True
    late = [_stored_row(cases["valid_enterprise"], IAT - timedelta(minutes=3))]
    assert _view(late, registry)[fp(cases["valid_enterprise"])]["iat_in_future"] is False
    assert _view(late, registry, skew_seconds=60)[fp(cases["valid_enterprise"])]["iat_in_future"] is True


def test_view_aggregates_batches(lake, cases):
    tok = cases["valid_enterprise"]
    t0 = IAT + timedelta(minutes=1)
    stored = [
        _stored_row(tok, t0 + timedelta(hours=1), "not_checked", None, batch="b2", count=3),
        _stored_row(tok, t0, "unknown_key", None, batch="b1", count=2),
        _stored_row(tok, t0 + timedelta(hours=2), "valid", "organizations-history.json", batch="b3", count=5),
    ]
    (row,) = _view(stored, lake.read_table("signing_keys").to_pylist()).values()
    assert (row["first_seen"], row["last_seen"], row["seen_count"]) == (t0, t0 + timedelta(hours=2, minutes=5), 10)
    assert (row["signature_status"], row["signature_key_source"], row["ingest_batch_id"]) == ("valid", "organizations-history.json", "b1")
    assert row["event_date"] == t0.date().isoformat()


def test_order_independence_keys_after_tokens(km, cases, tmp_path):
    """Tokens ingested with an empty registry; keys imported later: every claim/kid outcome follows,
    signature_status stays not_checked until the logs are ingested again."""
    names = ("valid_enterprise", "consumer_key_enterprise_tid", "expired_key", "retired_after", "unknown_kid")
    stored = [_stored_row(cases[n], IAT + timedelta(minutes=1), "not_checked") for n in names]
    before = _view(stored, [])
    for row in before.values():
        assert row["key_scope"] is None and row["kid_known"] is None and row["kid_in_issuer_jwks"] is None
        assert row["key_issuer_mismatch"] is None and row["key_expired_at_issue"] is None
        assert row["lifetime_seconds"] == 3600 and row["issuer_tenant_mismatch"] is False  # claim-only columns work anyway
    lake = Lake(tmp_path / "lake")
    keys.import_keys(lake, _write_registry_files(km, tmp_path / "jwks"))
    after = _view(stored, lake.read_table("signing_keys").to_pylist())
    got = {n: after[fp(cases[n])] for n in names}
    assert got["valid_enterprise"]["key_scope"] == "enterprise" and got["valid_enterprise"]["kid_known"] is True
    assert got["consumer_key_enterprise_tid"]["key_issuer_mismatch"] is True
    assert got["expired_key"]["key_expired_at_issue"] is True
    assert got["unknown_kid"]["kid_known"] is False
    assert all(r["signature_status"] == "not_checked" for r in got.values())
    # Re-ingesting the original logs adds rows checked against the now-known keys: the view takes the best.
    verifier = keys.SignatureVerifier.from_lake(lake)
    rechecked = verifier.check({fp(cases[n]): cases[n] for n in names})
    stored2 = stored + [_stored_row(cases[n], IAT + timedelta(minutes=1), *rechecked[fp(cases[n])], batch="b2") for n in names]
    final = _view(stored2, lake.read_table("signing_keys").to_pylist())
    assert final[fp(cases["valid_enterprise"])]["signature_status"] == "valid"
    assert final[fp(cases["unknown_kid"])]["signature_status"] == "unknown_key"


def test_view_sql_is_portable():
    import sqlglot

    sql = keys.tokens_view_sql("tokens_stored", "signing_keys")
    for dialect in ("spark", "trino"):
        assert sqlglot.transpile(sql, read="duckdb", write=dialect)
    assert "list_" not in sql.lower() and "struct_" not in sql.lower()


# ================================================================== properties: never raise
json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=True) | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
headers = st.dictionaries(st.sampled_from(["alg", "kid", "x5t", "jku", "jwk", "x5u", "typ", "crit", "zz"]), json_values, max_size=5)
claims = st.dictionaries(st.sampled_from(["iss", "tid", "iat", "nbf", "exp", "aud", "uti", "x"]), json_values, max_size=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=headers, body=claims, sig=st.binary(max_size=300), garbage=st.text(max_size=60))
def test_verifier_never_raises(lake_for_props, header, body, sig, garbage):
    verifier = lake_for_props
    token = _unsigned(header, body, sig)
    out = verifier.check({"a": token, "b": garbage, "c": token + "." + garbage, "d": None, "e": b"\xff.\x00.x"})  # type: ignore[dict-item]
    assert set(out) == {"a", "b", "c", "d", "e"}
    assert all(status in keys.STATUS_RANK for status, _ in out.values())


@pytest.fixture(scope="module")
def lake_for_props(lake):
    return keys.SignatureVerifier.from_lake(lake)


times = st.none() | st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {"kid": st.none() | st.sampled_from(["kid-E", "kid-C", "kid-R", "zz", ""]), "tid": st.none() | st.text(max_size=40) | st.just(MSA),
             "iss": st.none() | st.text(max_size=60), "iat": times, "nbf": times, "exp": times, "first_seen": times,
             "status": st.sampled_from(list(keys.STATUS_RANK) + ["bogus"])}
        ),
        min_size=1, max_size=4,
    )
)
def test_view_never_errors(registry_rows_for_props, rows):
    stored = []
    for i, r in enumerate(rows):
        stored.append({"token_fingerprint": f"{i:064x}", "event_date": "2024-01-01", "kid": r["kid"], "tid": r["tid"], "iss": r["iss"],
                       "iat": r["iat"], "nbf": r["nbf"], "exp": r["exp"], "first_seen": r["first_seen"], "last_seen": r["first_seen"],
                       "seen_count": 1, "signature_status": r["status"], "ingest_batch_id": "b"})
    out = _view(stored, registry_rows_for_props)
    assert len(out) == len(rows)


@pytest.fixture(scope="module")
def registry_rows_for_props(lake):
    return lake.read_table("signing_keys").to_pylist()


@pytest.mark.slow
def test_signature_throughput(km):
    """>= 20k distinct tokens/s on 2 cores is the target; this asserts a lenient floor and prints the figure."""
    import time

    jwk = _jwk(km["E"], "kid-E", ENT_ISSUER)
    verifier = keys.SignatureVerifier([{"kid": "kid-E", "public_jwk": json.dumps(jwk), "source": "s"}])
    base = [_sign(km["E"], "kid-E", _claims(T1, IAT, uti=str(i), pad="x" * 800)) for i in range(1000)]
    tokens = {f"{i:064x}": base[i % len(base)] for i in range(60_000)}  # every entry is verified: no per-raw cache
    start = time.perf_counter()
    out = verifier.check(tokens)
    rate = len(tokens) / (time.perf_counter() - start)
    print(f"signature checks: {rate:,.0f} tokens/s")
    assert all(s == "valid" for s, _ in out.values())
    assert rate > 10_000


def test_cli_import_list_mark(km, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    lake_dir = str(tmp_path / "lake")
    files = [str(p) for p in _write_registry_files(km, tmp_path / "jwks")]
    res = runner.invoke(app, ["keys", "import", *files, "--lake", lake_dir, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["sources"]["organizations-history.json"]["keys"] == 4
    res = runner.invoke(app, ["keys", "mark", "kid-R", "--reason", "test"])
    assert res.exit_code == 2  # --compromised is required
    res = runner.invoke(app, ["keys", "mark", "kid-R", "--compromised", "--reason", "leaked", "--lake", lake_dir])
    assert res.exit_code == 0 and "1 registry row(s)" in res.stdout
    res = runner.invoke(app, ["keys", "list", "--lake", lake_dir, "--status", "compromised", "--json"])
    assert sorted(r["kid"] for r in json.loads(res.stdout)) == [STORM_KID, "kid-R"]
    assert all("public_jwk" not in r for r in json.loads(res.stdout))
    res = runner.invoke(app, ["keys", "import", str(tmp_path / "missing.json"), "--lake", lake_dir])
    assert res.exit_code == 1 and "no such file or folder" in " ".join(res.output.split())
