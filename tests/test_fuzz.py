"""Fuzzing with hypothesis: records of every source format, raw file bytes, tokens and JWKs.

The contract: the ingest and the token validator never raise an unhandled exception. A bad record
ends in quarantine with a reason (the ingest's accept/flush path, Parquet writing included); a bad
token gets a parse_error or a signature status; a bad key is a warning.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import keys, sources, tokens
from pipeline.ingest import FileResult, _FileIngest, ingest_paths
from pipeline.lake import Lake
from pipeline.sources.base import RawRecord

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TENANT = "2b8f4c1e-7d3a-4e59-9c06-5a1f8e2d3b47"
APP = "d3590ed6-52b3-4102-aeff-aad2292ab01c"
RID = "0badf00d-0000-4000-8000-000000000001"
JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJ0aWQiOiIyYjhmNGMxZSIsImlhdCI6MTc5MzUyMDAwMH0."
    "bWFkZS11cC1zaWduYXR1cmUtbm90LXNpZ25lZA"
)

# ------------------------------------------------------------------ hostile values
TRICKY = [
    "", " ", "False", "TRUE", "0", "-0", "1e400", "NaN", "99999999999999999999", "0x10", "1.5", "\x00", "\ufeff", "\ud800",
    "2026-02-30T00:00:00Z", "2026-11-02T08:00:00Z", "11/2/2026 8:15:01 AM", "31/12/2026 25:61:61", "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59-01:00", "1793520000", "1793520000000000000000", "[2001:db8::1]:443", "999.1.1.1", "fe80::1%eth0",
    "::ffff:192.0.2.1", "[", "{", '{"a": [1, {"b": null}]}', "[1, 2]", "null", "Bearer " + JWT, JWT, "Basic dXNlcjpwYXNz",
    RID, RID.upper(), "{" + RID + "}", "Interactive", "interactiveUser", "SignInLogs", "Exchange", "MailItemsAccessed",
    "x" * 5000,
]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(TRICKY),
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=30),
    # hypothesis rarely draws lone surrogates by itself; JSON "\ud800" escapes make them common in logs
    st.builds(str.__add__, st.text(max_size=5), st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=2)),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
CELLS = st.one_of(st.sampled_from(TRICKY), st.text(max_size=30), st.integers(min_value=-(2**70), max_value=2**70).map(str))


def mutate(base: dict[str, Any], values: st.SearchStrategy) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with some fields replaced by hostile values, some removed, some extra fields."""
    keys_ = sorted(base)
    return st.builds(
        lambda repl, drop, extra: {**{k: v for k, v in base.items() if k not in drop}, **repl, **extra},
        st.dictionaries(st.sampled_from(keys_), values, max_size=4),
        st.sets(st.sampled_from(keys_), max_size=2),
        st.dictionaries(st.text(max_size=10), values, max_size=2),
    )


# ------------------------------------------------------------------ one good record per format
GRAPH = {"id": RID, "createdDateTime": "2026-11-02T08:00:00Z", "userPrincipalName": "u@contoso.com", "appId": APP,
         "resourceTenantId": TENANT, "ipAddress": "203.0.113.1", "isInteractive": True, "signInEventTypes": ["interactiveUser"],
         "status": {"errorCode": 0}, "location": {"city": "Oslo", "countryOrRegion": "NO"}}
DIAG = {"time": "2026-11-02T08:00:00Z", "category": "SignInLogs", "tenantId": TENANT, "resultType": "0",
        "callerIpAddress": "203.0.113.1", "operationName": "Sign-in activity", "properties": GRAPH}
LA = {"TimeGenerated": "2026-11-02T08:00:30Z", "CreatedDateTime": "2026-11-02T08:00:00Z", "Id": RID, "UserPrincipalName": "u@c.com",
      "AppId": APP, "ResourceIdentity": APP, "IPAddress": "203.0.113.1", "IsInteractive": "true", "ResultType": "0",
      "Status": '{"errorCode": 0}', "Type": "SigninLogs"}
LA_CSV = {"TimeGenerated [UTC]": "11/2/2026, 8:00:30.000 AM", "CreatedDateTime [UTC]": "11/2/2026, 8:00:00.000 AM", "Id": RID,
          "UserPrincipalName": "u@c.com", "AppId": APP, "ResourceIdentity": APP, "IPAddress": "203.0.113.1:443",
          "IsInteractive": "TRUE", "ResultType": "0", "Type": "SigninLogs"}
PORTAL = {"Date (UTC)": "2026-11-02T08:00:00Z", "Request ID": RID, "Username": "u@c.com", "Application ID": APP,
          "Resource tenant ID": TENANT, "IP address": "198.51.100.4", "Location": "Oslo, Oslo, NO", "Sign-in error code": "0"}
AUDIT = {"CreationTime": "2026-11-02T10:00:00", "Id": RID, "Operation": "MailItemsAccessed", "OrganizationId": TENANT,
         "RecordType": 50, "UserType": 0, "Workload": "Exchange", "ClientIP": "203.0.113.30:443", "UserId": "u@c.com",
         "AppId": APP, "OperationProperties": [{"Name": "MailAccessType", "Value": "Bind"}, {"Name": "IsThrottled", "Value": "False"}],
         "AppAccessContext": {"UniqueTokenId": "abc", "IssuedAtTime": "2026-11-02T09:00:00"}, "OperationCount": 1,
         "Folders": [{"Path": "\\Inbox", "FolderItems": [{"Id": "a"}]}]}
OFFICE = {"TimeGenerated": "2026-11-04T09:00:20Z", "Operation": "MailItemsAccessed", "OfficeWorkload": "Exchange", "OfficeId": RID,
          "RecordType": "ExchangeItemAggregated", "UserId": "u@c.com", "Client_IPAddress": "203.0.113.42", "Logon_Type": "Owner",
          "OperationProperties": '[{"Name": "MailAccessType", "Value": "Sync"}]', "Type": "OfficeActivity"}
GATEWAY = {"time": "2026-11-02T03:00:00Z", "authorization": "Bearer " + JWT, "client_ip": "185.38.142.229", "host": "h",
           "path": "/owa?access_token=" + JWT, "status": 200, "request_id": "r1", "headers": {"x-token": JWT}}


def _audit_records(wrap: Callable[[dict], dict], cells: bool) -> st.SearchStrategy[dict[str, Any]]:
    """UAL wrappers: the hostile values go inside AuditData too."""
    inner = mutate(AUDIT, VALUES)
    outer = st.builds(lambda a: wrap(a), inner)
    return outer.map(lambda r: {k: (v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in r.items()}) if cells else outer


def _purview_row(a: dict) -> dict:
    return {"RecordId": RID, "CreationDate": "11/2/2026 10:00:00 AM", "RecordType": "50", "Operation": "MailItemsAccessed",
            "UserId": "u@c.com", "AuditData": json.dumps(a, default=str), "AssociatedAdminUnits": ""}


def _ual_row(a: dict) -> dict:
    return {"CreationDate": "11/2/2026 10:00:00 AM", "UserIds": "u@c.com", "Operations": "MailItemsAccessed",
            "AuditData": json.dumps(a, default=str), "ResultIndex": "1", "ResultCount": "1"}


def _str_cells(base: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    return mutate(base, CELLS).map(lambda r: {k: v if isinstance(v, str) else str(v) for k, v in r.items()})


RECORDS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "graph_json": mutate(GRAPH, VALUES),
    "diagnostic_json": st.one_of(mutate(DIAG, VALUES), mutate(GRAPH, VALUES).map(lambda p: {**DIAG, "properties": p})),
    "log_analytics_json": mutate(LA, VALUES),
    "log_analytics_csv": _str_cells(LA_CSV),
    "entra_portal_csv": _str_cells(PORTAL),
    "purview_csv": st.one_of(_audit_records(_purview_row, cells=True), _str_cells(_purview_row(AUDIT))),
    "ual_csv": _audit_records(_ual_row, cells=True),
    "ual_json": st.one_of(mutate(AUDIT, VALUES), _audit_records(lambda a: {"AuditData": a, "Operations": "x"}, cells=False)),
    "office_activity_json": mutate(OFFICE, VALUES),
    "office_activity_csv": _str_cells({("TimeGenerated [UTC]" if k == "TimeGenerated" else k): v for k, v in OFFICE.items()}),
    "gateway_jsonl": mutate(GATEWAY, VALUES),
    "gateway_csv": _str_cells({k: v for k, v in GATEWAY.items() if k != "headers"} | {"status": "200"}),
}


@pytest.fixture(scope="module")
def scratch_lake() -> Iterator[Lake]:
    with tempfile.TemporaryDirectory(prefix="tokenhunt-fuzz-") as tmp:
        yield Lake(Path(tmp) / "lake")


def test_every_format_has_a_record_strategy() -> None:
    assert set(RECORDS) == {f.name for f in sources.all_formats()}


def _text_of(record: dict[str, Any]) -> str:
    return json.dumps(record, default=str)


@pytest.mark.parametrize("fmt_name", sorted(RECORDS))
def test_normalize_validate_and_stage_never_raise(fmt_name: str, scratch_lake: Lake) -> None:
    """Any record of any format: rows staged as Parquet, or the record quarantined. Nothing else."""
    fmt = sources.by_name(fmt_name)
    name = "InteractiveSignIns_fuzz.csv" if fmt_name == "entra_portal_csv" else f"fuzz-{fmt_name}.log"

    @FUZZ
    @given(st.lists(RECORDS[fmt_name], min_size=1, max_size=4))
    def check(records: list[dict[str, Any]]) -> None:
        result = FileResult(path=Path(name))
        state = _FileIngest(scratch_lake, Path(name), fmt, "0" * 64, {}, result)
        try:
            for i, rec in enumerate(records, start=1):
                state.accept(RawRecord(i, i, _text_of(rec), rec, None))
            state.flush()  # validation passed rows are written to Parquet (staging) here
        finally:
            state.batch.abort()
        assert result.records == len(records)
        for table, c in result.counts.items():
            assert c.read == c.written + c.duplicates + c.quarantined, (table, vars(c))
        if fmt.finish is None:
            handled = sum(c.written + c.duplicates + c.quarantined for c in result.counts.values()) + result.skipped
            assert handled >= len(records)  # every record written, duplicate, quarantined or skipped

    check()


# ------------------------------------------------------------------ whole files, byte-level damage
def _csv_bytes(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue().encode()


SEED_FILES: dict[str, bytes] = {
    "graph.json": json.dumps([GRAPH, {**GRAPH, "id": RID.replace("1", "2")}], indent=2).encode(),
    "diag.ndjson": (json.dumps(DIAG) + "\n" + json.dumps({**DIAG, "category": "AuditLogs"}) + "\n").encode(),
    "ual.json": json.dumps({"value": [AUDIT, {**AUDIT, "Id": RID.replace("1", "3")}]}).encode(),
    "InteractiveSignIns_x.csv": _csv_bytes([PORTAL, {**PORTAL, "Request ID": RID.replace("1", "4")}]),
    "purview.csv": _csv_bytes([_purview_row(AUDIT)]),
    "gateway.jsonl": (json.dumps(GATEWAY) + "\n" + json.dumps({**GATEWAY, "request_id": "r2"}) + "\n").encode(),
}
SPICE = [b"\x00", b"\xef\xbb\xbf", b"\r", b"\n", b"\xff", b"\xc3", b'"', b",", b"{", b"]", b"\\u", b"\x1f\x8b"]


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(SEED_FILES)))
    data = bytearray(SEED_FILES[name])
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "truncate", "flip"]))
        if op == "insert":
            data[pos:pos] = draw(st.sampled_from(SPICE) | st.binary(max_size=6))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        elif op == "truncate":
            del data[pos:]
        elif data and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
    return name, bytes(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_damaged_files_never_crash_the_ingest(sample: tuple[str, bytes]) -> None:
    name, data = sample
    with tempfile.TemporaryDirectory(prefix="tokenhunt-fuzz-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        lake = Lake(Path(tmp) / "lake")
        report = ingest_paths(lake, [path], quality_policy="off")
        (f,) = report.files
        assert "ingest failed at record" not in (f.message or ""), f.message
        assert f.status in ("ingested", "empty", "error")
        if f.status == "error":
            assert name in (f.message or "")  # one clear line naming the file
        for table, c in f.counts.items():
            assert c.read == c.written + c.duplicates + c.quarantined, (table, vars(c))
        if f.status == "ingested":
            assert lake.read_table("quarantine").num_rows == f.quarantined
            stored = "".join(str(v) for r in lake.read_table("quarantine").to_pylist() for v in r.values())
            assert "eyJ" not in stored


# ------------------------------------------------------------------ tokens
def _b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value, default=str).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


HEADER_VALUES = st.one_of(SCALARS, st.sampled_from(["RS256", "none", "HS256", "ES256", "PS512", "k1", "https://evil.example/k"]))
HEADERS = st.dictionaries(
    st.sampled_from(["alg", "kid", "typ", "jku", "jwk", "x5u", "x5t", "crit", "zip"]) | st.text(max_size=5), HEADER_VALUES, max_size=5
)
SEGMENT = st.one_of(HEADERS.map(_b64), st.binary(max_size=64).map(_b64), st.text(max_size=40), st.just(""))
STRUCTURED = st.builds(lambda parts: ".".join(parts), st.lists(SEGMENT, min_size=1, max_size=6))
TOKENS = st.one_of(STRUCTURED, st.text(max_size=200), st.sampled_from(["", ".", "..", "eyJ", "eyJ.eyJ.", JWT, JWT + "\x00"]))


@pytest.fixture(scope="module")
def verifier() -> Iterator[keys.SignatureVerifier]:
    """A registry with one RSA and one EC key (public halves only; private keys live in memory)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    rsa_pub = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()
    ec_pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()

    def b(n: int, size: int | None = None) -> str:
        return _b64(n.to_bytes(size or (n.bit_length() + 7) // 8, "big"))

    jwks = {"keys": [
        {"kty": "RSA", "kid": "k1", "use": "sig", "n": b(rsa_pub.n), "e": b(rsa_pub.e)},
        {"kty": "EC", "kid": "RS256", "crv": "P-256", "x": b(ec_pub.x, 32), "y": b(ec_pub.y, 32)},
    ]}
    with tempfile.TemporaryDirectory(prefix="tokenhunt-fuzz-") as tmp:
        path = Path(tmp) / "jwks.json"
        path.write_text(json.dumps(jwks), encoding="utf-8")
        lake = Lake(Path(tmp) / "lake")
        keys.import_keys(lake, [path])
        yield keys.SignatureVerifier.from_lake(lake)


@settings(max_examples=300, deadline=None)
@given(TOKENS)
def test_token_decode_never_raises(token: str) -> None:
    decoded = tokens.decode(token)
    assert isinstance(decoded.header, dict) and isinstance(decoded.claims, dict)
    row = tokens.decoded_columns(tokens.fingerprint(token), decoded)
    assert set(row) == set(tokens.DECODED_COLUMNS)
    if decoded.parse_error:
        assert token not in decoded.parse_error or len(token) < 4  # a reason, never the token


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=TOKENS)
def test_signature_validator_never_raises(token: str, verifier: keys.SignatureVerifier) -> None:
    status, source = verifier.check_one(token)
    assert status in tokens.SIGNATURE_STATUSES
    assert source is None or status == "valid"
    assert verifier.check({"fp": token}, workers=1) == {"fp": (status, source)}


@settings(max_examples=200, deadline=None)
@given(HEADERS.filter(lambda h: bool(h) and str(next(iter(h)))[:1].isascii() and str(next(iter(h)))[:1].isalpha()),
       st.dictionaries(st.text(max_size=6), VALUES, max_size=4), st.binary(min_size=8, max_size=64),
       st.sampled_from(["{}", "Bearer {}", "x={}&y=1", '{{"authorization": "{}"}}', "<{}>", "{}.", "path/{}/x"]))
def test_scrubbed_text_never_holds_the_signature(header: dict, claims: dict, signature: bytes, frame: str) -> None:
    # Headers as every JOSE library writes them (compact JSON, first member a name like "alg"):
    # '{"a' encodes to "eyJ". A header written '{ "alg"', '{}' or '{"1' is caught only in a
    # Bearer / token-named context, not bare in prose (see the report of the hardening task).
    token = f"{_b64(header)}.{_b64(claims)}.{_b64(signature)}"
    text = frame.format(token)
    scrubbed = tokens.scrub_text(text)
    assert _b64(signature) not in scrubbed and token not in scrubbed
    assert _b64(signature) not in tokens.scrub_jwts(text)


JWK_FIELDS = st.dictionaries(
    st.sampled_from(["kty", "kid", "n", "e", "x", "y", "crv", "alg", "use", "x5c", "x5t", "d", "k", "issuer"]) | st.text(max_size=4),
    st.one_of(VALUES, st.sampled_from(["RSA", "EC", "oct", "AQAB", "k1", "P-256"]), st.lists(st.text(max_size=20), max_size=2)),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(JWK_FIELDS, VALUES))
def test_jwk_import_never_raises(jwk: Any) -> None:
    warnings: list[str] = []
    info = keys.key_info(jwk, "fuzz.json key 1", warnings)
    assert info is not None or warnings
    if info is not None:
        assert '"d"' not in info.public_jwk and '"k"' not in info.public_jwk  # never private or symmetric material


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(VALUES, st.builds(lambda k: {"keys": k}, st.lists(JWK_FIELDS, max_size=3)),
                 st.builds(lambda s: {"snapshots": s}, st.lists(st.dictionaries(st.sampled_from(["date", "jwks", "commit_date"]), VALUES), max_size=2))))
def test_jwks_documents_never_raise(doc: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="tokenhunt-fuzz-") as tmp:
        path = Path(tmp) / "doc.json"
        path.write_text(json.dumps(doc, default=str), encoding="utf-8")
        parsed = keys.read_documents([path])
        warnings: list[str] = []
        keys.registry_rows(parsed.snapshots, warnings)
        for problem in parsed.problems:
            assert "doc.json" in problem  # names the file
