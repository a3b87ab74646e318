"""The bad-input corpus (tests/badinput/cases.toml): every hostile file ends in a finished run,
its bad records in quarantine with a reason, its good records in the lake, and counts that add up.

Big inputs (a 50 MB single line, a 1 MB token) and tokens signed with throwaway keys are made here
in tmp_path at test time, never committed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jwt
import pytest

from pipeline import schemas
from pipeline.engines import duckdb as engine
from pipeline.ingest import FileResult, ingest_file, ingest_paths
from pipeline.lake import Lake
from tests.graphgen import record

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parent / "badinput"
CASES: list[dict[str, Any]] = tomllib.loads((CORPUS / "cases.toml").read_text(encoding="utf-8"))["case"]
BUG_MARK = "ingest failed at record"  # the ingest's message for an exception nobody foresaw


def _ingest(lake: Lake, path: Path, fmt: str | None = None) -> FileResult:
    report = ingest_paths(lake, [path], format_name=fmt, quality_policy="off")
    assert len(report.files) == 1
    return report.files[0]


def _batch_rows(lake: Lake, table: str, batch_id: str | None) -> list[dict]:
    return [r for r in lake.read_table(table).to_pylist() if r.get("ingest_batch_id") == batch_id]


def _all_text(lake: Lake) -> str:
    """Every stored value of every table as text (Parquet is compressed: scan decoded values)."""
    parts = []
    for name in schemas.all_tables():
        for row in lake.read_table(name).to_pylist():
            parts.extend(str(v) for v in row.values() if v is not None)
    return "\n".join(parts)


def assert_counts_add_up(result: FileResult) -> None:
    for table, c in result.counts.items():
        assert c.read == c.written + c.duplicates + c.quarantined, (table, vars(c))


# ------------------------------------------------------------------ the corpus
def test_corpus_is_complete_and_small() -> None:
    """Every file has a case and every case a file; 40+ cases over every source format; no key material."""
    from pipeline import sources

    files = {p.name for p in CORPUS.iterdir() if p.name != "cases.toml"}
    named = [c["file"] for c in CASES]
    assert len(named) == len(set(named)), "a file is listed twice"
    assert files == set(named)
    assert len(CASES) >= 40
    covered = {c.get("format") for c in CASES}
    assert {f.name for f in sources.all_formats()} <= covered
    for path in CORPUS.iterdir():
        data = path.read_bytes()
        assert len(data) < 64 * 1024, f"{path.name}: keep committed inputs small; make big ones at test time"
        assert b"PRIVATE KEY" not in data and b'"d":' not in data, path.name


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_bad_input_case(case: dict[str, Any], tmp_path: Path) -> None:
    path = CORPUS / case["file"]
    lake = Lake(tmp_path / "lake")
    result = _ingest(lake, path, case.get("force"))

    # The run finished with the expected outcome, never an unforeseen exception.
    assert BUG_MARK not in (result.message or ""), result.message
    assert result.status == case.get("status", "ingested"), result.message
    if "message" in case:
        assert case["message"] in (result.message or ""), result.message
        assert case["file"] in result.message or result.status == "empty", "the error line names the file"
    if result.status != "ingested":
        assert result.counts == {} and not lake.read_table("quarantine").num_rows
        return
    assert result.format == case["format"]

    # Counts: exact, and read = written + duplicates + quarantined.
    got = {t: [c.read, c.written, c.duplicates, c.quarantined] for t, c in result.counts.items()}
    assert got == case["counts"]
    assert_counts_add_up(result)
    assert result.skipped == case.get("skipped", 0)

    # Every bad record is in quarantine, with its reason, named by file and record number.
    quarantined = _batch_rows(lake, "quarantine", result.batch_id)
    want = sorted((n, reason) for n, reason in case["quarantine"])
    have = sorted((q["record_number"], q["reason"]) for q in quarantined)
    assert [n for n, _ in have] == [n for n, _ in want], have
    for (n, reason), (_, stored) in zip(want, have):
        assert reason in stored, f"record {n}: {reason!r} not in {stored!r}"
    assert all(q["source_file"] == str(path) and q["source_sha256"] for q in quarantined)
    assert sum(c.quarantined for c in result.counts.values()) == len(quarantined)

    # Every good record of the file is in the lake, under the file's batch.
    for table, c in result.counts.items():
        assert len(_batch_rows(lake, table, result.batch_id)) == c.written, table

    # Stored values of the good records.
    if case.get("sql"):
        con = engine.connect(lake)
        for sql, expected in case["sql"]:
            assert con.execute(sql).fetchone()[0] == expected, sql

    # No token text reaches the lake (JWTs become fingerprint markers; opaque tokens too).
    text = _all_text(lake)
    for forbidden in ["eyJ", *case.get("forbid", [])]:
        assert forbidden not in text


def test_parallel_ingest_agrees_on_the_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The block-parallel ingest (large NDJSON/CSV files) forced onto every small hostile file:
    the same status, counts and quarantined record numbers as the serial ingest."""
    monkeypatch.setenv("TOKENHUNT_PARALLEL_MIN_BYTES", "0")
    monkeypatch.setenv("TOKENHUNT_INGEST_WORKERS", "2")
    for case in CASES:
        lake = Lake(tmp_path / case["file"])
        result = _ingest(lake, CORPUS / case["file"], case.get("force"))
        assert result.status == case.get("status", "ingested"), (case["file"], result.message)
        got = {t: [c.read, c.written, c.duplicates, c.quarantined] for t, c in result.counts.items()}
        assert got == case.get("counts", {}), case["file"]
        numbers = sorted(q["record_number"] for q in _batch_rows(lake, "quarantine", result.batch_id))
        assert numbers == sorted(n for n, _ in case.get("quarantine", [])), case["file"]


def test_whole_corpus_in_one_cli_run(tmp_path: Path) -> None:
    """One `tokenhunt ingest` over the folder finishes: exit 1 names the unreadable files, the rest ingests."""
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "ingest", "--json", "--quality", "off", "--lake", str(tmp_path / "lake"), str(CORPUS)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    by_name = {Path(f["path"]).name: f for f in doc["files"]}
    assert "cases.toml" not in by_name or by_name["cases.toml"]["status"] == "error"
    for case in CASES:
        f = by_name[case["file"]]
        assert BUG_MARK not in (f["message"] or "")
        if "force" not in case:  # a forced format is not forced here
            assert f["status"] == case.get("status", "ingested"), (case["file"], f["message"])
        for table, c in f["tables"].items():
            assert c["read"] == c["written"] + c["duplicates"] + c["quarantined"], (case["file"], table)
    assert "Traceback" not in out.stderr


# ------------------------------------------------------------------ made at test time
@pytest.mark.slow
def test_50mb_single_line_array(tmp_path: Path) -> None:
    """A minified export: one 50 MB line holding ~30,000 records, all ingested."""
    path = tmp_path / "one_line.json"
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[")
        while fh.tell() < 50 * 1024 * 1024:
            fh.write(("," if n else "") + json.dumps(record(n), separators=(",", ":")))
            n += 1
        fh.write("]")
    assert b"\n" not in path.read_bytes()
    lake = Lake(tmp_path / "lake")
    result = _ingest(lake, path)
    c = result.counts["signins"]
    assert (result.status, c.read, c.written, c.quarantined) == ("ingested", n, n, 0)
    assert lake.read_table("signins", columns=["event_id"]).num_rows == n


@pytest.mark.slow
def test_50mb_garbage_line_between_good_lines(tmp_path: Path) -> None:
    """One 50 MB line of garbage: quarantined with its reason and a 64 KiB excerpt; the other lines ingest."""
    path = tmp_path / "garbage.ndjson"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(record(1)) + "\n")
        fh.write('{"id": "' + "x" * (50 * 1024 * 1024))  # never closed
        fh.write("\n" + json.dumps(record(2)) + "\n")
    lake = Lake(tmp_path / "lake")
    result = _ingest(lake, path)
    c = result.counts["signins"]
    assert (c.read, c.written, c.quarantined) == (3, 2, 1)
    (q,) = _batch_rows(lake, "quarantine", result.batch_id)
    assert q["record_number"] == 2 and "malformed JSON" in q["reason"]
    assert len(q["raw_record"]) < 70 * 1024 and "truncated" in q["raw_record"]


def _b64(data: bytes | dict) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _gateway_line(i: int, token: str) -> str:
    return json.dumps({"time": f"2026-11-02T03:{i:02d}:00Z", "authorization": f"Bearer {token}", "client_ip": "203.0.113.9",
                       "request_id": f"req-{i}", "path": f"/api?access_token={token}"})


def test_1mb_token(tmp_path: Path) -> None:
    """A 1 MB 'token' (JWT-shaped, and one with a 1 MB claim): recorded as too large, never stored."""
    huge_claim = f"{_b64({'alg': 'RS256', 'kid': 'k'})}.{_b64({'pad': 'A' * (1 << 20)})}.{_b64(b'sig')}"
    blob = "eyJ" + "B" * (1 << 20)
    path = tmp_path / "gateway.jsonl"
    path.write_text(_gateway_line(1, huge_claim) + "\n" + _gateway_line(2, blob) + "\n", encoding="utf-8")
    lake = Lake(tmp_path / "lake")
    result = _ingest(lake, path)
    assert result.format == "gateway_jsonl"
    assert [result.counts[t].written for t in ("token_events", "tokens")] == [2, 2]
    errors = [r["parse_error"] for r in lake.read_table("tokens").to_pylist()]
    assert all(e and "too large" in e for e in errors), errors
    text = _all_text(lake)
    assert "AAAAAAAA" not in text and "BBBBBBBB" not in text and "eyJ" not in text
    assert max(len(part) for part in text.split("\n")) < 4096


def test_hostile_signed_tokens_get_the_right_signature_status(tmp_path: Path) -> None:
    """Tokens signed at test time with a throwaway key (memory only) against an imported JWKS:
    alg none, jku and embedded jwk pointing elsewhere, HMAC with the public key, tampered claims."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from pipeline import keys

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key()
    numbers = public.public_numbers()
    n = _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"))
    e = _b64(numbers.e.to_bytes(3, "big"))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{"kty": "RSA", "use": "sig", "kid": "k1", "n": n, "e": e}]}), encoding="utf-8")
    lake = Lake(tmp_path / "lake")
    keys.import_keys(lake, [jwks])

    claims = {"iss": "https://sts.windows.net/t/", "aud": "https://outlook.office365.com", "iat": 1793520000, "exp": 1793523600}
    valid = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    h, p, s = valid.split(".")
    tampered = f"{h}.{_b64({**claims, 'upn': 'ceo@contoso.com'})}.{s}"
    with_jku = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1", "jku": "https://attacker.example/keys"})
    with_jwk = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1", "jwk": {"kty": "RSA", "n": n, "e": e}})
    alg_none = f"{_b64({'alg': 'none', 'kid': 'k1'})}.{_b64(claims)}."
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_input = f"{_b64({'alg': 'HS256', 'kid': 'k1'})}.{_b64(claims)}"
    hs_confused = hs_input + "." + _b64(hmac.new(pem, hs_input.encode(), hashlib.sha256).digest())
    unknown_kid = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "not-in-the-registry"})
    expected = {
        valid: "valid", tampered: "invalid", with_jku: "untrusted_header", with_jwk: "untrusted_header",
        alg_none: "unsupported_alg", hs_confused: "unsupported_alg", unknown_kid: "unknown_key",
    }
    path = tmp_path / "gateway.jsonl"
    path.write_text("".join(_gateway_line(i, t) + "\n" for i, t in enumerate(expected)), encoding="utf-8")
    result = _ingest(lake, path)
    assert result.counts["token_events"].written == len(expected)
    status = {r["token_fingerprint"]: r["signature_status"] for r in lake.read_table("tokens").to_pylist()}
    from pipeline.tokens import fingerprint

    assert {fingerprint(t): v for t, v in expected.items()} == status
    text = _all_text(lake)
    for token in expected:
        signature = token.rsplit(".", 1)[1]
        assert (not signature or signature not in text) and token.split(".")[1] not in text


def test_truncated_gzip_keeps_every_whole_record_before_the_cut(tmp_path: Path) -> None:
    """Regression: a gzip cut mid-stream failed the whole file; now the whole records before the cut ingest."""
    import gzip
    import zlib

    data = "".join(json.dumps(record(i)) + "\n" for i in range(400)).encode()
    gz = gzip.compress(data, mtime=0)
    path = tmp_path / "cut.ndjson.gz"
    path.write_bytes(gz[: len(gz) // 2])
    recoverable = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(path.read_bytes()).count(b"\n")
    lake = Lake(tmp_path / "lake")
    result = _ingest(lake, path)
    c = result.counts["signins"]
    assert result.status == "ingested" and c.quarantined == 1
    assert recoverable - 20 <= c.written <= recoverable  # all but what the last gzip buffer held
    assert_counts_add_up(result)


def test_ingest_never_reads_the_lake_it_writes(tmp_path: Path) -> None:
    """Regression: `tokenhunt ingest . --lake ./lake` used to read the lake's own Parquet and manifests."""
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "signins.json").write_text(json.dumps([record(i) for i in range(3)]), encoding="utf-8")
    lake = Lake(drop / "lake")
    first = ingest_paths(lake, [drop], quality_policy="off")
    assert [f.path.name for f in first.files] == ["signins.json"]
    (drop / "more.json").write_text(json.dumps([record(i) for i in range(3, 5)]), encoding="utf-8")
    second = ingest_paths(lake, [drop], quality_policy="off")
    assert {f.path.name: f.status for f in second.files} == {"more.json": "ingested", "signins.json": "unchanged"}
    assert second.exit_code == 0


def test_ingest_file_api_on_hostile_values_directly(tmp_path: Path) -> None:
    """Regression: a lone surrogate or a 2^70 integer used to fail the whole file in the Parquet writer."""
    recs = [record(1, userPrincipalName="a\ud800b@contoso.com"), record(2, status={"errorCode": 2**70}), record(3)]
    path = tmp_path / "signins.json"
    path.write_text(json.dumps(recs), encoding="utf-8")
    lake = Lake(tmp_path / "lake")
    result = ingest_file(lake, path, quality_policy="off")
    c = result.counts["signins"]
    assert (result.status, c.written, c.quarantined) == ("ingested", 2, 1), result.message
    (q,) = lake.read_table("quarantine").to_pylist()
    assert q["record_number"] == 2 and "64-bit" in q["reason"]
