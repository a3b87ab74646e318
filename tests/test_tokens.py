"""pipeline.tokens: decoding real-shaped and malformed tokens, fingerprints, scrubbing."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import datetime, timezone

import jwt
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline import schemas, tokens

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
T1 = datetime(2024, 5, 2, 8, 30, tzinfo=timezone.utc)
TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def seg(obj: object) -> str:
    return b64(json.dumps(obj).encode())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def entra_v1_claims() -> dict:
    return {
        "aud": "00000003-0000-0000-c000-000000000000",
        "iss": f"https://sts.windows.net/{TID}/",
        "iat": 1714564800, "nbf": 1714564800, "exp": 1714568700,
        "appid": "14d82eec-204b-4c2f-b7e8-296a70dab67e",
        "oid": "6e5c1d77-6ae4-4f43-9b50-000000000001",
        "scp": "Mail.Read User.Read openid profile",
        "tid": TID,
        "unique_name": "Jane.Doe@Contoso.com",
        "upn": "Jane.Doe@Contoso.com",
        "uti": "ByVTDAGxkECy8U12ji81AA",
        "ver": "1.0",
        "sid": "004ca149-c18f-a151-12cf-ebb662153620",
    }


@pytest.fixture(scope="module")
def rs256(rsa_key: rsa.RSAPrivateKey) -> str:
    return jwt.encode(entra_v1_claims(), rsa_key, algorithm="RS256",
                      headers={"kid": "1LTMzakihiRla_8z2BEJVXeWMqo", "x5t": "1LTMzakihiRla_8z2BEJVXeWMqo"})


def full_row(token: str) -> dict:
    row = tokens.token_row(token, T0, T1, 7)
    row["ingest_batch_id"] = "batch-1"
    return row


def assert_storable(row: dict) -> None:
    table = schemas.table("tokens")
    assert table.violations(row) == []
    pa.Table.from_pylist([row], schema=table.arrow_schema())  # types and UTF-8 really store


# ---------------------------------------------------------------------- decode
def test_fingerprint_is_sha256_of_full_token(rs256: str) -> None:
    assert tokens.fingerprint(rs256) == hashlib.sha256(rs256.encode()).hexdigest()
    assert tokens.fingerprint(rs256) != tokens.fingerprint(rs256[:-1])
    assert tokens.fingerprint("\ud800") == hashlib.sha256("\ud800".encode("utf-8", "surrogatepass")).hexdigest()


def test_decode_real_rs256_token(rs256: str) -> None:
    d = tokens.decode(rs256)
    assert d.parse_error is None
    assert d.header == {"alg": "RS256", "typ": "JWT", "kid": "1LTMzakihiRla_8z2BEJVXeWMqo", "x5t": "1LTMzakihiRla_8z2BEJVXeWMqo"}
    assert d.claims == entra_v1_claims()


def test_token_row_columns(rs256: str) -> None:
    row = full_row(rs256)
    assert row["token_fingerprint"] == tokens.fingerprint(rs256)
    assert (row["alg"], row["kid"], row["typ"]) == ("RS256", "1LTMzakihiRla_8z2BEJVXeWMqo", "JWT")
    assert row["has_jwk_header"] is False and row["jku"] is None
    assert row["iss"] == f"https://sts.windows.net/{TID}/" and row["tid"] == TID
    assert row["aud"] == "00000003-0000-0000-c000-000000000000"
    assert row["appid"] == "14d82eec-204b-4c2f-b7e8-296a70dab67e"
    assert row["upn"] == "jane.doe@contoso.com"
    assert row["scp"] == "Mail.Read User.Read openid profile"
    assert row["iat"] == datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert row["exp"] == datetime(2024, 5, 1, 13, 5, tzinfo=timezone.utc)
    assert row["uti"] == "ByVTDAGxkECy8U12ji81AA" and row["ver"] == "1.0"
    assert (row["first_seen"], row["last_seen"], row["seen_count"]) == (T0, T1, 7)
    assert row["event_date"] == "2024-05-01"
    assert row["signature_status"] == "not_checked" and row["signature_key_source"] is None
    assert row["parse_error"] is None
    assert_storable(row)
    assert rs256.split(".")[2] not in json.dumps(row, default=str)


def test_v2_claims_lists_and_fallbacks(rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(
        {"aud": ["api://one", "api://two"], "azp": "app-2", "preferred_username": "Bob@Fabrikam.COM",
         "roles": ["Mail.Read", "User.Read.All"], "scp": ["a", "b"], "ver": 2.0, "iat": "1714564800"},
        rsa_key, algorithm="RS256")
    row = full_row(token)
    assert row["aud"] == '["api://one","api://two"]'
    assert json.loads(row["aud"]) == ["api://one", "api://two"]
    assert row["appid"] == "app-2"
    assert row["upn"] == "bob@fabrikam.com"
    assert row["roles"] == "Mail.Read User.Read.All"
    assert row["scp"] == "a b"
    assert row["ver"] == "2.0"
    assert row["iat"] == datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    one = full_row(jwt.encode({"aud": ["only"]}, rsa_key, algorithm="RS256"))
    assert one["aud"] == "only"
    assert_storable(row)


def test_alg_none_jku_and_jwk_headers_are_decoded(rsa_key: rsa.RSAPrivateKey) -> None:
    unsigned = jwt.encode(entra_v1_claims(), None, algorithm="none")
    assert unsigned.endswith(".")
    row = full_row(unsigned)
    assert row["alg"] == "none" and row["parse_error"] is None and row["tid"] == TID
    jku = jwt.encode({"tid": TID}, rsa_key, algorithm="RS256",
                     headers={"jku": "https://attacker.example/keys", "x5u": "https://attacker.example/c.pem",
                              "jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}})
    row = full_row(jku)
    assert row["jku"] == "https://attacker.example/keys"
    assert row["x5u"] == "https://attacker.example/c.pem"
    assert row["has_jwk_header"] is True
    assert_storable(row)


HEADER = seg({"alg": "RS256", "kid": "k1"})
CLAIMS = seg({"tid": TID})
SIG = b64(os.urandom(64))


@pytest.mark.parametrize(
    ("token", "error", "kid"),
    [
        ("", "empty token", None),
        (HEADER + "." + CLAIMS, "not three segments (2)", "k1"),
        (HEADER, "not three segments (1)", "k1"),
        (".".join([HEADER, CLAIMS, SIG, "x"]), "not three segments (4)", "k1"),
        (".".join([seg({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "k1"}), "a", "b", "c", "d"]), "encrypted JWE", "k1"),
        ("eyJ!!!." + CLAIMS + "." + SIG, "header: bad base64url", None),
        (HEADER.replace("e", "+", 1) + "." + CLAIMS + "." + SIG, "header: bad base64url", None),
        ("abcde." + CLAIMS + "." + SIG, "header: bad base64url", None),  # impossible length
        (b64(b"not json") + "." + CLAIMS + "." + SIG, "header not JSON", None),
        (b64(b"\xff\xfe\x00") + "." + CLAIMS + "." + SIG, "header not UTF-8", None),
        (seg([1, 2]) + "." + CLAIMS + "." + SIG, "header not a JSON object", None),
        (HEADER + "." + b64(b"{oops") + "." + SIG, "claims not JSON", "k1"),
        (HEADER + "." + CLAIMS + ".sig$$", "signature: bad base64url", "k1"),
        (HEADER + "." + CLAIMS + "." + SIG + "\u00e9", "non-ASCII", None),
        ("eyJ" + "A" * (1024 * 1024), "too large", None),
        (HEADER + "." + b64(b"[" * 20_000 + b"]" * 20_000) + "." + SIG, "claims not", "k1"),
    ],
    ids=["empty", "two-segments", "one-segment", "four-segments", "jwe", "bad-char", "plus-sign", "bad-length",
         "header-not-json", "header-not-utf8", "header-array", "claims-not-json", "bad-signature", "non-ascii",
         "one-megabyte", "deep-nesting"],
)
def test_malformed_tokens_never_raise(token: str, error: str, kid: str | None) -> None:
    d = tokens.decode(token)
    assert d.parse_error is not None and error in d.parse_error
    row = full_row(token)
    assert row["parse_error"] == d.parse_error
    assert row["kid"] == kid
    assert row["token_fingerprint"] == hashlib.sha256(token.encode()).hexdigest()
    assert_storable(row)


@pytest.mark.parametrize("value", [None, 123, b"eyJ.a.b", ["x"], {"a": 1}])
def test_decode_non_text(value: object) -> None:
    assert tokens.decode(value).parse_error.startswith("not text")


def test_time_claims_out_of_range_or_odd_are_null() -> None:
    token = ".".join([HEADER, seg({"iat": 1e30, "nbf": True, "exp": "soon"}), SIG])
    row = full_row(token)
    assert row["iat"] is None and row["nbf"] is None and row["exp"] is None
    assert row["parse_error"] is None
    assert_storable(row)


def test_lone_surrogates_and_odd_claim_types_store() -> None:
    claims = '{"upn": "\\ud800X@y.com", "tid": {"nested": [1, 2]}, "oid": 5, "roles": "one two", "aud": []}'
    row = full_row(".".join([HEADER, b64(claims.encode()), SIG]))
    assert row["upn"] == "\ufffdx@y.com"
    assert row["tid"] == '{"nested":[1,2]}' and row["oid"] == "5" and row["roles"] == "one two"
    assert row["aud"] is None
    assert_storable(row)


def test_padded_segments_are_tolerated() -> None:
    padded = base64.urlsafe_b64encode(b'{"alg":"RS25"}').decode()
    assert padded.endswith("=")
    assert tokens.decode(padded + "." + CLAIMS + "." + SIG).header == {"alg": "RS25"}


def test_decode_many_matches_token_row(rs256: str) -> None:
    batch = [rs256, "garbage", HEADER + "." + CLAIMS + "."]
    rows = tokens.decode_many(batch)
    assert [r["token_fingerprint"] for r in rows] == [tokens.fingerprint(t) for t in batch]
    for token, row in zip(batch, rows):
        expected = tokens.token_row(token, T0, T1, 1)
        assert {k: expected[k] for k in tokens.DECODED_COLUMNS} == row
    assert rows[1]["parse_error"].startswith("not three segments")


def test_raw_token_store_never_reveals_tokens(rs256: str) -> None:
    store = tokens.RawTokenStore()
    fp = store.add(rs256)
    store[tokens.fingerprint("x" * 70_000)] = "x" * 70_000
    assert fp in store and store.raw(fp) == rs256 and len(store) == 2
    assert store.raw(tokens.fingerprint("x" * 70_000)) is None
    assert store.oversized(tokens.fingerprint("x" * 70_000)) == 70_000
    assert rs256 not in repr(store) and rs256 not in str({"_raw_tokens": store})
    with pytest.raises(TypeError) as exc:
        json.dumps({"_raw_tokens": store})
    assert rs256 not in str(exc.value)


# ---------------------------------------------------------------------- scrubbing
def marker(token: str) -> str:
    return f"<token sha256:{tokens.fingerprint(token)}>"


def test_scrub_plain_json_and_escaped(rs256: str) -> None:
    sig = rs256.split(".")[2]
    record = {"authorization": f"Bearer {rs256}", "path": f"/api?access_token={rs256}&x=1", "note": f"see {rs256}."}
    plain = json.dumps(record)
    escaped = json.dumps(json.dumps(record))
    double = json.dumps(escaped)
    for text in (plain, escaped, double, f"Authorization: Bearer {rs256}\r\n", f"token={rs256} user=x"):
        out = tokens.scrub_text(text)
        assert sig not in out and rs256.split(".")[1] not in out
        assert marker(rs256) in out
        assert tokens.scrub_text(out) == out  # idempotent
    assert tokens.scrub_text(plain) == json.dumps(
        {"authorization": f"Bearer {marker(rs256)}", "path": f"/api?access_token={marker(rs256)}&x=1",
         "note": f"see {marker(rs256)}."})


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET / Bearer opaque-Tok3n_value~+/= done", "opaque-Tok3n_value~+/="),
        ('{"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}', "dXNlcjpwYXNzd29yZA=="),
        ('{"x-api-token": "0123456789abcdef"}', "0123456789abcdef"),
        ('{\\"id_token\\":\\"opaque123\\"}', "opaque123"),
        ("a=1&refresh_token=R3fr3sh&b=2", "R3fr3sh"),
        ("X-Ms-Token-Aad-Access-Token: secretvalue42", "secretvalue42"),
        ("Authorization: Bearer%20encodedtok", "encodedtok"),
        ("unsigned " + HEADER + "." + CLAIMS + " end", CLAIMS),
        ("jwe " + ".".join([HEADER, "a1", "b2", "c3", "d4"]), "d4"),
        ('"authorization":"DPoP abc.def"', "abc.def"),
    ],
)
def test_scrub_shapes(text: str, secret: str) -> None:
    out = tokens.scrub_text(text)
    assert secret not in out and "<token sha256:" in out
    assert tokens.find_tokens(text)


def test_scrub_leaves_ordinary_text_and_fingerprints_alone() -> None:
    fp = "a" * 64
    for text in (
        "2024-05-01T12:00:00Z GET /api/users 200 1.2.3.4 Mozilla/5.0",
        json.dumps({"token_fingerprint": fp, "unique_token_id": "ByVTDAGxkECy8U12ji81AA",
                    "token_source_field": "authorization", "token_type": "Bearer"}),
        f"token {marker('x')} was seen",
        "6e5c1d77-6ae4-4f43-9b50-000000000001",
        "",
    ):
        assert tokens.scrub_text(text) == text


def test_scrub_known_catches_opaque_csv_token() -> None:
    store = tokens.RawTokenStore()
    store.add("opaque-CSV-token.v1")
    line = '2024-05-01,"opaque-CSV-token.v1",10.0.0.1'
    assert "opaque-CSV-token.v1" in tokens.scrub_text(line)  # no shape to recognize without help
    out = tokens.scrub_text(line, known=store)
    assert "opaque-CSV-token" not in out and marker("opaque-CSV-token.v1") in out


def test_find_tokens_returns_distinct_raw_tokens(rs256: str) -> None:
    text = f"a {rs256} b Bearer {rs256} c {HEADER}.{CLAIMS}"
    assert tokens.find_tokens(text) == [rs256, f"{HEADER}.{CLAIMS}"]
    assert tokens.find_tokens("nothing here") == []


def test_scrub_obj(rs256: str) -> None:
    obj = {"headers": {"Authorization": f"Bearer {rs256}", "Cookie": f"a={rs256}", "X-Token": "opaque1"},
           "list": [rs256, 5, None, {"access_token": "opaque2"}], "n": 3,
           "id_token": {"value": "opaque3", "n": 1}, "tokens_seen": ["plain"]}
    out = tokens.scrub_obj(obj)
    text = json.dumps(out)
    assert rs256.split(".")[2] not in text and "opaque1" not in text and "opaque2" not in text and "opaque3" not in text
    assert out["id_token"]["n"] == 1 and out["tokens_seen"] == ["plain"]
    assert out["headers"]["Authorization"] == f"Bearer {marker(rs256)}"
    assert out["headers"]["X-Token"] == marker("opaque1")
    assert out["list"][1:3] == [5, None] and out["n"] == 3
    assert obj["headers"]["X-Token"] == "opaque1"  # input untouched
    assert tokens.scrub_obj(out) == out


def test_scrub_one_megabyte_token_is_fast() -> None:
    import time

    big = "eyJ" + "A" * (1024 * 1024) + "." + "B" * 1000 + ".SIGSIGSIG"
    text = json.dumps({"token": big, "msg": "x" * 100_000 + " token: " + "y" * 100_000})
    start = time.perf_counter()
    out = tokens.scrub_text(text)
    assert time.perf_counter() - start < 2.0
    assert "SIGSIGSIG" not in out and len(out) < 300_000


# ---------------------------------------------------------------------- properties
B64URL = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))
claims_st = st.dictionaries(st.text(max_size=10), json_scalars, max_size=6)


# Arbitrary text, and text made of the characters that could glue onto or split a token.
TRICKY_TEXT = st.one_of(st.text(), st.text(alphabet='eyJ.-_A=/\\"\': %+<>token'))


@st.composite
def random_jwts(draw: st.DrawFn) -> tuple[str, str]:
    header = {"alg": draw(st.sampled_from(["RS256", "none", "HS256", "ES256"])), "kid": draw(st.text(max_size=12))}
    claims = draw(claims_st)
    sig = b64(draw(st.binary(min_size=32, max_size=300)))
    token = ".".join([seg(header), seg(claims), sig])
    return token, sig


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(st.text(), B64URL, st.builds(lambda a, b, c: f"eyJ{a}.{b}.{c}", st.text(), st.text(), st.text()),
                 st.binary().map(lambda b: b.decode("latin-1"))))
def test_decode_never_raises(text: str) -> None:
    d = tokens.decode(text)
    assert isinstance(d.header, dict) and isinstance(d.claims, dict)
    row = tokens.token_row(text, T0, T0, 1)
    row["ingest_batch_id"] = "b"
    assert schemas.table("tokens").violations(row) == []


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text())
def test_scrub_never_raises(text: str) -> None:
    out = tokens.scrub_text(text)
    assert isinstance(out, str)
    assert tokens.scrub_text(out) == out


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(TRICKY_TEXT, random_jwts(), TRICKY_TEXT, st.sampled_from(["", "Bearer ", "Authorization: Bearer ", "token=", '"access_token": "']))
def test_scrub_removes_signature_of_inserted_token(prefix: str, token_sig: tuple[str, str], suffix: str, lead: str) -> None:
    token, sig = token_sig
    text = prefix + lead + token + suffix
    for candidate in (text, json.dumps(text), json.dumps({"a": [text]})):
        out = tokens.scrub_text(candidate)
        assert sig not in out
    assert sig not in json.dumps(tokens.scrub_obj({"k": text, "authorization": token}))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text(), st.sampled_from([" ", '"', ",", ":", "\t"]),
       st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/", min_size=12),
       st.sampled_from([" ", '"', ",", "\n", ""]), st.text())
def test_scrub_removes_opaque_bearer_value(prefix: str, sep: str, opaque: str, sep2: str, suffix: str) -> None:
    assume(opaque not in prefix and opaque not in suffix)
    out = tokens.scrub_text(prefix + sep + "Bearer " + opaque + sep2 + suffix)
    assert opaque not in out
