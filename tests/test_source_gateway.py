"""pipeline.sources.gateway: field variants, mapping, finish() aggregation, and no raw token anywhere."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jwt
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import schemas, tokens
from pipeline.normalize import BadValue
from pipeline.sources import gateway, sniff
from pipeline.sources.base import Context, Emitted, sniff_container

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_token(key: rsa.RSAPrivateKey, upn: str = "jane@contoso.com", kid: str = "k1") -> str:
    claims = {"iss": f"https://sts.windows.net/{TID}/", "tid": TID, "upn": upn, "iat": 1714564800,
              "exp": 1714568400, "aud": "https://graph.microsoft.com", "uti": "abc"}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def tok(key: rsa.RSAPrivateKey) -> str:
    return make_token(key)


@pytest.fixture(scope="module")
def tok2(key: rsa.RSAPrivateKey) -> str:
    return make_token(key, upn="bob@contoso.com", kid="k2")


def ctx(fmt: str = "gateway_jsonl", **options: Any) -> Context:
    return Context(Path("gw.log"), fmt, "batch-1", dict(options))


def sig(token: str) -> str:
    return token.split(".")[2]


def check_rows(rows: list[Emitted], *raw_tokens: str) -> None:
    """Every row is valid for its table, stores as Arrow, and holds no part of any raw token."""
    for item in rows:
        table = schemas.table(item.table)
        assert table.violations(item.row) == [], item.row
        pa.Table.from_pylist([item.row], schema=table.arrow_schema())
    dump = json.dumps([e.row for e in rows], default=str)
    for raw in raw_tokens:
        if "." in raw:
            assert sig(raw) not in dump
        assert raw not in dump


def one(record: dict, context: Context | None = None) -> dict:
    rows = gateway.normalize(record, context or ctx())
    assert len(rows) == 1 and rows[0].table == "token_events"
    return rows[0].row


# ---------------------------------------------------------------------- field variants
@pytest.mark.parametrize(
    ("build", "source_field"),
    [
        (lambda t: {"authorization": f"Bearer {t}"}, "authorization"),
        (lambda t: {"Authorization": f"bearer {t}"}, "Authorization"),
        (lambda t: {"headers": {"authorization": f"Bearer {t}"}}, "headers.authorization"),
        (lambda t: {"headers": {"Authorization": f"Bearer {t}", "accept": "*/*"}}, "headers.Authorization"),
        (lambda t: {"headers": json.dumps({"Authorization": f"Bearer {t}"})}, "headers.Authorization"),
        (lambda t: {"headers.authorization": f"Bearer {t}"}, "headers.authorization"),
        (lambda t: {"token": t}, "token"),
        (lambda t: {"access_token": t}, "access_token"),
        (lambda t: {"id_token": f"Bearer {t}"}, "id_token"),
        (lambda t: {"authorization": "Basic dXNlcjpwdw==", "access_token": t}, "access_token"),
    ],
    ids=["authorization", "Authorization", "headers.authorization", "headers.Authorization", "headers-json-string",
         "flat-dotted-key", "token", "access_token", "id_token", "basic-then-access_token"],
)
def test_token_field_variants(tok: str, build: Any, source_field: str) -> None:
    record = {"time": "2024-05-01T12:00:00Z", **build(tok)}
    row = one(record)
    assert row["token_fingerprint"] == tokens.fingerprint(tok)
    assert row["token_source_field"] == source_field
    check_rows([Emitted("token_events", row)], tok)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("time", "2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
        ("timestamp", "2024-05-01T14:00:00.123456+02:00", datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)),
        ("@timestamp", 1714564800000, datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
        ("time", "1714564800", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
        ("time", "1714564800123456789", datetime(2024, 5, 1, 12, 0, 0, 123457, tzinfo=timezone.utc)),
        ("time", "[01/May/2024:14:00:00 +0200]", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
        ("time", "5/1/2024 12:00:00 PM", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
    ],
)
def test_time_variants(tok: str, field: str, value: Any, expected: datetime) -> None:
    row = one({field: value, "authorization": f"Bearer {tok}"})
    assert row["event_time"] == expected
    assert row["event_date"] == expected.strftime("%Y-%m-%d")


def test_context_columns_and_extra(tok: str, tok2: str) -> None:
    record = {
        "@timestamp": "2024-05-01T12:00:00Z", "authorization": f"Bearer {tok}",
        "src_ip": "[2001:db8::1]:443", "host": "API.Contoso.com", "url": f"/v1/me?access_token={tok}&x=1",
        "method": "get", "user_agent": "curl/8.0", "status": "401", "requestId": "req-123",
        "id_token": tok2, "upstream": {"cookie": f"session={tok2}", "latency_ms": 12}, "empty": "",
    }
    row = one(record)
    assert row["client_ip"] == "2001:db8::1"
    assert row["host"] == "api.contoso.com"
    assert row["path"] == f"/v1/me?access_token=<token sha256:{tokens.fingerprint(tok)}>&x=1"
    assert (row["method"], row["user_agent"], row["status"]) == ("GET", "curl/8.0", 401)
    assert row["request_id"] == row["event_id"] == "req-123"
    assert (row["source_format"], row["ingest_batch_id"]) == ("gateway_jsonl", "batch-1")
    extra = json.loads(row["extra"])
    assert set(extra) == {"id_token", "upstream"}  # mapped and empty fields left out
    assert extra["id_token"] == f"<token sha256:{tokens.fingerprint(tok2)}>"
    assert extra["upstream"] == {"cookie": f"session=<token sha256:{tokens.fingerprint(tok2)}>", "latency_ms": 12}
    check_rows([Emitted("token_events", row)], tok, tok2)


def test_x_forwarded_for_list_takes_first(tok: str) -> None:
    row = one({"time": "2024-05-01T12:00:00Z", "token": tok, "remote_addr": "203.0.113.9, 10.0.0.1"})
    assert row["client_ip"] == "203.0.113.9"


def test_bad_ip_and_status_stay_in_extra(tok: str) -> None:
    row = one({"time": "2024-05-01T12:00:00Z", "token": tok, "client_ip": "unknown", "status": "n/a"})
    assert row["client_ip"] is None and row["status"] is None
    assert json.loads(row["extra"]) == {"client_ip": "unknown", "status": "n/a"}


def test_event_id_without_request_id_hashes_scrubbed_record(tok: str, tok2: str) -> None:
    record = {"time": "2024-05-01T12:00:00Z", "authorization": f"Bearer {tok}", "path": "/x"}
    row = one(record)
    scrubbed = json.dumps(tokens.scrub_obj(record), separators=(",", ":"), ensure_ascii=True, sort_keys=True)
    assert row["event_id"] == hashlib.sha256(scrubbed.encode()).hexdigest()
    assert tok not in scrubbed
    assert one(dict(record))["event_id"] == row["event_id"]  # same request, same id (dedup works)
    assert one({**record, "authorization": f"Bearer {tok2}"})["event_id"] != row["event_id"]
    assert row["request_id"] is None
    numbered = one({**record, "id": 42})
    assert numbered["request_id"] == "42" and numbered["event_id"] != "42"  # a line counter is not unique


def test_custom_field_mapping(tok: str) -> None:
    record = {"ts": "2024-05-01 12:00:00", "my_hdr": f"Bearer {tok}", "peer": "10.1.2.3", "rid": "r-9", "time": "garbage"}
    with pytest.raises(BadValue, match="no token found"):
        gateway.normalize(record, ctx())
    options = {"token_fields": {"token": "my_hdr", "time": "ts", "client_ip": ["nope", "peer"], "request_id": "rid"}}
    row = one(record, ctx(**options))
    assert row["token_fingerprint"] == tokens.fingerprint(tok)
    assert row["token_source_field"] == "my_hdr"
    assert row["event_time"] == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert (row["client_ip"], row["event_id"]) == ("10.1.2.3", "r-9")
    assert json.loads(row["extra"]) == {"time": "garbage"}  # default name no longer mapped
    nested = one({"req": {"hdrs": {"X-Auth": tok}}, "when": 1714564800}, ctx(token_fields={"token": "req.hdrs.x-auth", "time": "when"}))
    assert nested["token_source_field"] == "req.hdrs.X-Auth"
    with pytest.raises(BadValue, match="unknown column"):
        gateway.normalize(record, ctx(token_fields={"tokn": "x"}))


def test_missing_token_or_time_is_rejected_without_leaking(tok: str) -> None:
    context = ctx()
    with pytest.raises(BadValue, match="no token found") as exc:
        gateway.normalize({"time": "2024-05-01T12:00:00Z", "authorization": "Basic dXNlcjpwYXNz"}, context)
    assert tokens.scrub_text(str(exc.value)) == str(exc.value)  # the reason survives scrubbing intact
    for record in ({"authorization": f"Bearer {tok}"}, {"authorization": f"Bearer {tok}", "time": "not a time"},
                   {"authorization": f"Bearer {tok}", "time": "x" * 10_000},
                   {"authorization": f"Bearer {tok}", "time": -3.06e16}, {"authorization": f"Bearer {tok}", "time": "0999-12-31T00:00:00Z"}):
        with pytest.raises(BadValue) as exc:
            gateway.normalize(record, context)
        assert "time" in str(exc.value) and sig(tok) not in str(exc.value) and len(str(exc.value)) < 200
    with pytest.raises(BadValue, match="not an object"):
        gateway.normalize(["a"], context)  # type: ignore[arg-type]


def test_rejected_csv_row_with_opaque_token_is_scrubbable() -> None:
    context = ctx("gateway_csv")
    record = {"time": "", "token": "opaque,ref-token-1234", "client_ip": "10.0.0.1"}
    with pytest.raises(BadValue):
        gateway.normalize(record, context)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(record.values())
    text = buf.getvalue()
    store = context.options[gateway.RAW_TOKENS_OPTION]
    scrubbed = tokens.scrub_text(text, known=store)
    assert "ref-token-1234" not in scrubbed and "opaque" not in scrubbed
    assert repr(store).startswith("<RawTokenStore")


# ---------------------------------------------------------------------- finish
def test_finish_aggregates_per_token(tok: str, tok2: str) -> None:
    context = ctx()
    bad = "eyJub3QganNvbg.e30.c2ln"  # header not JSON
    records = [
        {"time": "2024-05-02T10:00:00Z", "authorization": f"Bearer {tok}", "request_id": "1"},
        {"time": "2024-05-01T09:00:00Z", "authorization": f"Bearer {tok}", "request_id": "2"},
        {"time": "2024-05-03T23:59:59Z", "token": tok, "request_id": "3"},
        {"time": "2024-05-02T00:00:00Z", "authorization": f"Bearer {tok2}", "request_id": "4"},
        {"time": "2024-05-02T01:00:00Z", "authorization": f"Bearer {bad}", "request_id": "5"},
        {"time": "2024-05-02T02:00:00Z", "authorization": "Bearer short", "request_id": "6"},
    ]
    events = [e for r in records for e in gateway.normalize(r, context)]
    out = gateway.finish(events, context)
    assert all(e.table == "tokens" for e in out)
    by_fp = {e.row["token_fingerprint"]: e.row for e in out}
    assert set(by_fp) == {tokens.fingerprint(t) for t in (tok, tok2, bad, "short")}
    first = by_fp[tokens.fingerprint(tok)]
    assert first["seen_count"] == 3
    assert first["first_seen"] == datetime(2024, 5, 1, 9, tzinfo=timezone.utc)
    assert first["last_seen"] == datetime(2024, 5, 3, 23, 59, 59, tzinfo=timezone.utc)
    assert first["event_date"] == "2024-05-01"
    assert (first["kid"], first["upn"], first["tid"], first["parse_error"]) == ("k1", "jane@contoso.com", TID, None)
    assert first["signature_status"] == "not_checked" and first["ingest_batch_id"] == "batch-1"
    assert by_fp[tokens.fingerprint(tok2)]["seen_count"] == 1
    assert by_fp[tokens.fingerprint(bad)]["parse_error"] == "header not JSON"
    assert by_fp[tokens.fingerprint("short")]["parse_error"].startswith("not three segments")
    check_rows(events + out, tok, tok2, bad)
    # only the rows the lead actually wrote count: after dedup drops two of them
    fewer = gateway.finish([e for e in events if e.row["request_id"] not in ("1", "3")], context)
    row = next(e.row for e in fewer if e.row["token_fingerprint"] == tokens.fingerprint(tok))
    assert (row["seen_count"], row["last_seen"]) == (1, datetime(2024, 5, 1, 9, tzinfo=timezone.utc))
    assert gateway.finish([], context) == []


def test_one_megabyte_token_is_kept_but_not_held(tok: str) -> None:
    context = ctx()
    huge = "eyJ" + "A" * (1024 * 1024) + ".e30.Zm9vYmFyYmF6cXV4"
    events = gateway.normalize({"time": "2024-05-01T12:00:00Z", "authorization": f"Bearer {huge}"}, context)
    store = context.options[gateway.RAW_TOKENS_OPTION]
    fp = tokens.fingerprint(huge)
    assert events[0].row["token_fingerprint"] == fp and store.raw(fp) is None
    out = gateway.finish(events, context)
    assert out[0].row["parse_error"] == f"too large ({len(huge)} bytes > 65536)"
    check_rows(events + out, huge)


def test_signature_checker_hook(tok: str, tok2: str) -> None:
    seen: dict[str, str] = {}

    def checker(raw: dict[str, str]) -> dict[str, tuple[str, str | None]]:
        seen.update(raw)
        return {
            tokens.fingerprint(tok): ("valid", "jwks:entra-common"),
            tokens.fingerprint(tok2): ("made-up-status", None),  # ignored, stays not_checked
            "f" * 64: ("valid", "x"),  # not asked for: ignored
        }

    context = ctx(signature_checker=checker)
    events = [e for t in (tok, tok2, "garbage") for e in gateway.normalize({"time": 1714564800, "token": t}, context)]
    out = {e.row["token_fingerprint"]: e.row for e in gateway.finish(events, context)}
    assert seen == {tokens.fingerprint(tok): tok, tokens.fingerprint(tok2): tok2}  # malformed ones not sent
    assert (out[tokens.fingerprint(tok)]["signature_status"], out[tokens.fingerprint(tok)]["signature_key_source"]) == ("valid", "jwks:entra-common")
    assert out[tokens.fingerprint(tok2)]["signature_status"] == "not_checked"
    assert out[tokens.fingerprint("garbage")]["signature_status"] == "not_checked"
    check_rows(list(map(lambda r: Emitted("tokens", r), out.values())), tok, tok2)
    seen.clear()  # the ingest calls finish once per chunk: a token is verified only once per file
    again = gateway.finish(gateway.normalize({"time": 1714564900, "token": tok}, context), context)
    assert seen == {} and again[0].row["signature_status"] == "valid"


def test_failing_checker_leaves_not_checked_and_logs_no_token(tok: str, caplog: pytest.LogCaptureFixture) -> None:
    def checker(raw: dict[str, str]) -> dict:
        raise ValueError(f"cannot verify {next(iter(raw.values()))}")

    context = ctx(signature_checker=checker)
    events = gateway.normalize({"time": 1714564800, "token": tok}, context)
    with caplog.at_level(logging.WARNING):
        out = gateway.finish(events, context)
    assert out[0].row["signature_status"] == "not_checked"
    assert "ValueError" in caplog.text and sig(tok) not in caplog.text


def test_finish_without_shared_context_decodes_nothing(tok: str, caplog: pytest.LogCaptureFixture) -> None:
    events = gateway.normalize({"time": 1714564800, "token": tok}, ctx())
    with caplog.at_level(logging.WARNING):
        assert gateway.finish(events, ctx()) == []
    assert "not decoded" in caplog.text


# ---------------------------------------------------------------------- files, sniffing
def test_jsonl_file_end_to_end(tmp_path: Path, tok: str, tok2: str) -> None:
    path = tmp_path / "gw.jsonl"
    lines = [
        {"time": "2024-05-01T12:00:00Z", "authorization": f"Bearer {tok}", "path": "/a", "status": 200},
        {"timestamp": "2024-05-01T12:00:01Z", "headers": {"Authorization": f"Bearer {tok2}"}, "status": 200},
        {"time": "2024-05-01T12:00:02Z", "path": "/no-token"},
    ]
    path.write_text("\ufeff" + "\n".join(json.dumps(x) for x in lines) + "\n{broken json " + tok + "\n", encoding="utf-8")
    fmt = sniff(sniff_container(path))
    assert fmt is not None and fmt.name == "gateway_jsonl"
    context = Context(path, fmt.name, "b")
    events, rejected = [], []
    for raw in fmt.records(path):
        if raw.error:
            rejected.append(tokens.scrub_text(raw.text, known=context.options.get("_raw_tokens")))
            continue
        try:
            events.extend(fmt.normalize(raw.data, context))
        except BadValue as exc:
            rejected.append(str(exc))
    assert len(events) == 2 and len(rejected) == 2
    out = fmt.finish(events, context)
    assert sorted(e.row["seen_count"] for e in out) == [1, 1]
    check_rows(events + out, tok, tok2)
    assert all(sig(tok) not in r for r in rejected)


def test_csv_file_end_to_end(tmp_path: Path, tok: str) -> None:
    path = tmp_path / "gw.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "Authorization", "client_ip", "method", "path", "status", "note"])
        w.writerow(["2024-05-01T12:00:00Z", f"Bearer {tok}", "10.0.0.5", "POST", "/x", "201", "a,b"])
        w.writerow(["2024-05-01T12:05:00Z", f"Bearer {tok}", "-", "GET", "/y", "", ""])
    fmt = sniff(sniff_container(path))
    assert fmt is not None and fmt.name == "gateway_csv"
    context = Context(path, fmt.name, "b")
    events = [e for raw in fmt.records(path) for e in fmt.normalize(raw.data, context)]
    assert [e.row["status"] for e in events] == [201, None]
    assert events[0].row["extra"] == '{"note":"a,b"}'
    assert events[1].row["client_ip"] is None
    out = fmt.finish(events, context)
    assert len(out) == 1 and out[0].row["seen_count"] == 2
    check_rows(events + out, tok)


def test_sniff_needs_a_token_and_a_time(tmp_path: Path, tok: str) -> None:
    cases = {
        "no_time.jsonl": [{"authorization": f"Bearer {tok}"}],
        "no_token.jsonl": [{"time": "2024-05-01T12:00:00Z", "authorization": "Basic abc"}],
        "opaque.jsonl": [{"time": "2024-05-01T12:00:00Z", "token": "opaque"}],
    }
    for name, rows in cases.items():
        path = tmp_path / name
        path.write_text("\n".join(json.dumps(r) for r in rows * 2), encoding="utf-8")
        assert not gateway.sniff_json(sniff_container(path)), name
    plain = tmp_path / "plain.csv"
    plain.write_text("time,token\n2024-05-01T12:00:00Z,opaque\n", encoding="utf-8")
    assert not gateway.sniff_csv(sniff_container(plain))
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"@timestamp": "2024-05-01T12:00:00Z", "access_token": tok}]), encoding="utf-8")
    assert gateway.sniff_json(sniff_container(array))


@pytest.mark.skipif(not REALDATA.is_dir(), reason=f"shared real exports not found at {REALDATA}")
def test_sniff_does_not_claim_real_exports() -> None:
    files = [p for p in REALDATA.rglob("*") if p.suffix in (".json", ".csv")]
    assert files
    for path in files:
        sample = sniff_container(path)
        assert not gateway.sniff_json(sample) and not gateway.sniff_csv(sample), path


# ---------------------------------------------------------------------- property
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)
field_names = st.sampled_from(["time", "timestamp", "authorization", "token", "headers", "client_ip", "status",
                               "host", "path", "method", "request_id", "id", "x"]) | st.text(max_size=8)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(field_names, json_values, max_size=8),
       st.sampled_from([None, "Bearer eyJhbGciOiJSUzI1NiJ9.e30." + "S" * 43, "eyJ.e30.x", "Bearer "]))
def test_normalize_returns_valid_rows_or_bad_value(record: dict, token: str | None) -> None:
    if token is not None:
        record = {**record, "authorization": token}
    context = ctx()
    try:
        rows = gateway.normalize(record, context)
    except BadValue:
        return
    rows += gateway.finish(rows, context)
    check_rows(rows, *(["S" * 43] if token and "S" * 43 in token else []))
