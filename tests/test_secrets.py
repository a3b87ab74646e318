"""Secrets: after a full nightly run on token logs, no token signature segment is anywhere: not in
any file under the lake (Parquet decoded, manifests, lock), the run outputs and reports, or the
captured terminal output. Private keys exist only in memory or in a temp dir that is removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jwt
import pyarrow.parquet as pq
import pytest

from tests.graphgen import TENANT, record

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_logs"
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*")
PEM_PRIVATE_RE = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")
JWK_PRIVATE_RE = re.compile(rb'"(?:d|p|q|dp|dq|qi)"\s*:\s*"[A-Za-z0-9_\-]{16,}')


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def nightly_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One full nightly run (CLI, a fresh TMPDIR and HOME) on the sample gateway log plus hostile token logs."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    root = tmp_path_factory.mktemp("secrets")
    drop = root / "drop"
    shutil.copytree(SAMPLE, drop, ignore=shutil.ignore_patterns("jwks", "indicators", "README.md", "expected.json"))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # in memory only
    pub = key.public_key().public_numbers()
    keys_dir = root / "jwks"
    shutil.copytree(SAMPLE / "jwks", keys_dir)
    (keys_dir / "test-keys.json").write_text(json.dumps({"keys": [{
        "kty": "RSA", "use": "sig", "kid": "secret-test-kid", "n": _b64(pub.n.to_bytes(256, "big")), "e": _b64(pub.e.to_bytes(3, "big")),
        "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"}]}), encoding="utf-8")

    claims = {"iss": f"https://sts.windows.net/{TENANT}/", "tid": TENANT, "aud": "https://outlook.office365.com",
              "upn": "ceo@contoso.com", "iat": 1793520000, "nbf": 1793520000, "exp": 1793523600}
    made = {
        "valid": jwt.encode(claims, key, algorithm="RS256", headers={"kid": "secret-test-kid"}),
        "jku": jwt.encode(claims, key, algorithm="RS256", headers={"kid": "secret-test-kid", "jku": "https://attacker.example/k"}),
        "hs256": jwt.encode(claims, "shared-secret-value-1234567890abcdef", algorithm="HS256"),
        "none": jwt.encode(claims, None, algorithm="none"),
        "in_quarantine": jwt.encode({**claims, "upn": "q@contoso.com"}, key, algorithm="RS256", headers={"kid": "secret-test-kid"}),
        "in_signin": jwt.encode({**claims, "upn": "s@contoso.com"}, key, algorithm="RS256", headers={"kid": "secret-test-kid"}),
        "huge": jwt.encode({**claims, "pad": "P" * 300_000}, key, algorithm="RS256", headers={"kid": "secret-test-kid"}),
    }
    opaque = ["0paque-Bearer-Secret-0001", "0paque-Bearer-Secret-0002"]
    lines = []
    for i, name in enumerate(["valid", "jku", "hs256", "none", "huge"]):
        token = made[name]
        lines.append({"time": f"2026-11-19T03:{i:02d}:00Z", "authorization": f"Bearer {token}", "client_ip": "185.38.142.229",
                      "path": f"/owa/service.svc?access_token={token}&x=1", "user_agent": f"curl token={token}",
                      "headers": {"x-ms-token": token, "cookie": f"session={token}"}, "request_id": f"secret-req-{i}"})
    lines.append({"time": "2026-02-30T03:00:00Z", "authorization": f"Bearer {made['in_quarantine']}", "request_id": "secret-q"})
    lines.append({"time": "2026-11-19T04:00:00Z", "authorization": f"Bearer {opaque[0]}", "request_id": "secret-opaque"})
    lines.append({"time": "not a time", "authorization": f"Bearer {opaque[1]}", "request_id": "secret-opaque-q"})
    (drop / "gateway" / "hostile.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    leaky = record(900, userAgent=f"python-requests Authorization: Bearer {made['in_signin']}",
                   authenticationDetails=[{"detail": made["in_signin"]}])
    broken = record(901, createdDateTime="2026-13-01T00:00:00Z", note=f"Bearer {made['in_signin']}")
    (drop / "signins" / "leaky-signins.json").write_text(json.dumps([leaky, broken]), encoding="utf-8")

    tmp_env = root / "tmpdir"
    home = root / "home"
    tmp_env.mkdir()
    home.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_env), "HOME": str(home)}
    lake, out = root / "lake", root / "out"
    captured = []
    nightly = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "nightly", str(drop), "--lake", str(lake), "--out", str(out),
         "--keys", str(keys_dir), "--indicators", str(SAMPLE / "indicators"), "--quality", "warn", "--as-of", "2026-11-21"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert nightly.returncode in (1, 10, 20), nightly.stderr  # 1: the hostile files' bad records are not failures...
    captured += [nightly.stdout, nightly.stderr]
    for args in (
        ["hunt", "sql", "SELECT * FROM token_events", "--format", "jsonl"],
        ["hunt", "sql", "SELECT * FROM quarantine", "--format", "csv"],
        ["hunt", "sql", "SELECT * FROM tokens", "--out", str(out / "tokens.parquet")],
        ["detect", "--format", "ocsf"],
        ["retention", "--format", "json", "--as-of", "2026-11-21"],
    ):
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", *args, "--lake", str(lake)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert "Traceback" not in done.stderr, (args, done.stderr[-3000:])
        captured += [done.stdout, done.stderr]
    sample_tokens = JWT_RE.findall((SAMPLE / "gateway" / "gateway-access.jsonl").read_text(encoding="utf-8"))
    return {"lake": lake, "out": out, "captured": "\n".join(captured), "made": made, "opaque": opaque,
            "sample_tokens": sample_tokens, "tmpdir": tmp_env, "home": home, "nightly": nightly}


def _texts_under(folder: Path) -> dict[str, str]:
    """Every file as text; Parquet files (compressed) by their decoded values."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            out[str(path)] = "\n".join(str(v) for col in table.columns for v in col.to_pylist() if v is not None)
        else:
            out[str(path)] = path.read_bytes().decode("utf-8", "replace")
    return out


def _secrets(outputs: dict) -> dict[str, str]:
    """What must never appear: signature segments, header.payload of every token, opaque tokens whole."""
    secrets = {}
    for name, token in outputs["made"].items():
        header, payload, signature = token.split(".")
        if signature:
            secrets[f"{name} signature"] = signature
        secrets[f"{name} header.payload"] = f"{header}.{payload[:40]}"
    for i, token in enumerate(outputs["sample_tokens"]):
        secrets[f"sample token {i} signature"] = token.rsplit(".", 1)[1]
    for token in outputs["opaque"]:
        secrets[token] = token
    return secrets


@pytest.mark.slow
def test_the_run_did_what_it_should(nightly_outputs: dict) -> None:
    """The scan below means something only if the tokens went through the pipeline."""
    from pipeline.lake import Lake

    lake = Lake(nightly_outputs["lake"])
    request_ids = {r["request_id"] for r in lake.read_table("token_events").to_pylist()}
    assert {f"secret-req-{i}" for i in range(5)} | {"secret-opaque"} <= request_ids and len(request_ids) > 250
    assert lake.read_table("findings").num_rows > 0
    assert lake.read_table("quarantine").num_rows >= 3
    statuses = {r["signature_status"] for r in lake.read_table("tokens").to_pylist()}
    assert {"valid", "untrusted_header", "unsupported_alg"} <= statuses
    assert len(nightly_outputs["sample_tokens"]) >= 50


@pytest.mark.slow
def test_no_signature_segment_in_the_lake(nightly_outputs: dict) -> None:
    texts = _texts_under(nightly_outputs["lake"])
    assert any(p.endswith(".parquet") for p in texts) and any("_manifest" in p for p in texts)
    for what, secret in _secrets(nightly_outputs).items():
        for path, text in texts.items():
            assert secret not in text, f"{what} found in {path}"


@pytest.mark.slow
def test_no_signature_segment_in_reports_and_outputs(nightly_outputs: dict) -> None:
    texts = _texts_under(nightly_outputs["out"])
    assert any("nightly-" in p for p in texts) and any("findings-" in p for p in texts) and any("tokens.parquet" in p for p in texts)
    for what, secret in _secrets(nightly_outputs).items():
        for path, text in texts.items():
            assert secret not in text, f"{what} found in {path}"


@pytest.mark.slow
def test_no_signature_segment_in_captured_output(nightly_outputs: dict) -> None:
    captured = nightly_outputs["captured"]
    assert "token_fingerprint" in captured  # the hunts printed token rows
    for what, secret in _secrets(nightly_outputs).items():
        assert secret not in captured, f"{what} printed"
    assert not JWT_RE.search(captured)


@pytest.mark.slow
def test_private_keys_only_in_memory_or_a_removed_temp_dir(nightly_outputs: dict) -> None:
    """Nothing the run wrote, left in TMPDIR or HOME, or committed to the repository holds a private key."""
    assert list(nightly_outputs["tmpdir"].iterdir()) == [], "temp files left behind"
    assert list(nightly_outputs["home"].iterdir()) == [], "files written to HOME"
    for folder in (nightly_outputs["lake"], nightly_outputs["out"]):
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert not PEM_PRIVATE_RE.search(data) and not JWK_PRIVATE_RE.search(data), path


def _repository_files() -> list[Path]:
    skip = {".venv", ".git", "__pycache__", ".pytest_cache", ".hypothesis", "lake", "out", "bench_out", "node_modules"}
    files = []
    for dirpath, dirnames, filenames in os.walk(REPO):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.endswith(".egg-info")]
        files += [Path(dirpath) / f for f in filenames]
    return files


def test_no_private_key_in_the_repository() -> None:
    files = _repository_files()
    assert any(f.name == "common-jwks-history.json" for f in files)
    for path in files:
        if path.stat().st_size > 20 * 1024 * 1024:
            continue
        data = path.read_bytes()
        assert not PEM_PRIVATE_RE.search(data), f"{path}: PEM private key"
        assert not JWK_PRIVATE_RE.search(data), f"{path}: JWK private member"


def test_samplegen_writes_no_private_key_anywhere(tmp_path: Path) -> None:
    """The sample generator derives its signing keys in memory: only public JWKS reach disk."""
    tmp_env, home, out = tmp_path / "tmp", tmp_path / "home", tmp_path / "samples"
    tmp_env.mkdir()
    home.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_env), "HOME": str(home)}
    subprocess.run([sys.executable, "-m", "pipeline.samplegen", "--out", str(out)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    assert list(tmp_env.iterdir()) == [] and list(home.iterdir()) == []
    jwks = json.loads((out / "jwks" / "common-discovery-v2.0-keys.json").read_text(encoding="utf-8"))
    assert jwks["keys"] and all(not {"d", "p", "q"} & set(k) for k in jwks["keys"])
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not PEM_PRIVATE_RE.search(data) and not JWK_PRIVATE_RE.search(data), path
