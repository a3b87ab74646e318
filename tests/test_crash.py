"""Crash safety: SIGKILL the ingest and the nightly run at 20+ points each, then check the lake.

The kill points are the lake's own checkpoints (``pipeline.lake.checkpoint``): with
``TOKENHUNT_CRASH_AT=n`` the n-th one kills the process with SIGKILL, a crash with no cleanup at
all, deterministic and fast. ``TOKENHUNT_CRASH_TRACE`` counts them on an uninterrupted run first.
After each kill: every table is readable, every committed batch is whole and nothing uncommitted is
visible; the same command run again gives exactly the rows of an uninterrupted run. Concurrent
runs on one lake are refused with a clear message.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest

from pipeline import schemas
from pipeline.engines import duckdb as engine
from pipeline.ingest import ingest_paths
from pipeline.lake import CRASH_AT_ENV, CRASH_TRACE_ENV, LOCK_FILE, Lake
from tests.graphgen import TENANT, record

REPO = Path(__file__).resolve().parents[1]
KILL_POINTS = 20
AS_OF = "2026-11-06"
LENIENT_POLICY = """
name = "crash-test"
description = "nothing required: the crash tests compare lakes, not verdicts"
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
# Columns that say when or in which batch a row was written, not what it holds.
VOLATILE: dict[str, set[str]] = {
    "quarantine": {"quarantined_at", "event_date"},
    "ingest_runs": {"event_date", "run_id", "started_at", "committed_at"},
    "signing_keys": {"event_date"},
    "indicators": {"event_date"},
    "findings": {"first_seen", "last_seen", "hit_count", "status"},  # a re-examined finding is "seen"
}


# ------------------------------------------------------------------ the input: several files, every table
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def drop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Sign-ins (with a bad record), a second overlapping export, mail audit, and gateway logs whose
    tokens are signed with a throwaway key held in memory (only its public half is written)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    root = tmp_path_factory.mktemp("crash-input")
    logs = root / "logs"
    logs.mkdir()
    recs = [record(i) for i in range(40)]
    recs[5]["createdDateTime"] = "2026-02-30T10:00:00Z"  # quarantined
    (logs / "signins-a.json").write_text(json.dumps(recs, indent=1), encoding="utf-8")
    (logs / "signins-b.ndjson").write_text("".join(json.dumps(record(i)) + "\n" for i in range(30, 60)), encoding="utf-8")
    audit = {"CreationTime": "2026-11-02T10:00:00", "Operation": "MailItemsAccessed", "OrganizationId": TENANT, "RecordType": 50,
             "Workload": "Exchange", "UserId": "user1@contoso.com", "ClientIP": "203.0.113.30"}
    (logs / "mail.json").write_text(
        json.dumps([{**audit, "Id": f"a0d17000-0000-4000-8000-{i:012d}"} for i in range(20)]), encoding="utf-8")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_numbers()
    keys_dir = root / "jwks"
    keys_dir.mkdir()
    (keys_dir / "keys.json").write_text(json.dumps({"keys": [{
        "kty": "RSA", "use": "sig", "kid": "crash-kid", "n": _b64(pub.n.to_bytes(256, "big")), "e": _b64(pub.e.to_bytes(3, "big")),
        "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"}]}), encoding="utf-8")
    lines = []
    for i in range(25):
        claims = {"iss": f"https://sts.windows.net/{TENANT}/", "tid": TENANT, "aud": "https://outlook.office365.com",
                  "upn": f"user{i % 5}@contoso.com", "iat": 1793520000 + i, "exp": 1793523600 + i}
        headers = {"kid": "crash-kid"} if i % 7 else {"kid": "crash-kid", "jku": "https://attacker.example/k"}
        token = jwt.encode(claims, key, algorithm="RS256", headers=headers)
        lines.append(json.dumps({"time": f"2026-11-02T03:{i:02d}:00Z", "authorization": f"Bearer {token}",
                                 "client_ip": "185.38.142.229", "request_id": f"req-{i}"}))
    (logs / "gateway.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    policy = root / "policy.toml"
    policy.write_text(LENIENT_POLICY, encoding="utf-8")
    return {"logs": logs, "keys": keys_dir, "policy": policy}


def ingest_cmd(drop: dict[str, Path], lake: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "ingest", "--quality", "off", "--lake", str(lake), str(drop["logs"])]


def nightly_cmd(drop: dict[str, Path], lake: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "nightly", str(drop["logs"]), "--lake", str(lake), "--out", str(out),
            "--keys", str(drop["keys"]), "--quality", "off", "--policy", str(drop["policy"]), "--as-of", AS_OF]


def run_ingest(drop: dict[str, Path], lake: Path) -> None:
    report = ingest_paths(Lake(lake), [drop["logs"]], quality_policy="off")
    assert report.exit_code == 0, [f.message for f in report.files]


def run_nightly(drop: dict[str, Path], lake: Path, out: Path) -> None:
    from pipeline.nightly import EXIT_FAILURE
    from pipeline.nightly import run_nightly as nightly

    run = nightly([drop["logs"]], lake, drop["keys"], out, quality_policy="off", policy=drop["policy"], as_of=AS_OF)
    assert run.exit_code != EXIT_FAILURE, run.errors


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (CRASH_AT_ENV, CRASH_TRACE_ENV)}
    env.update(extra)
    return env


def count_checkpoints(cmd: list[str], tmp: Path) -> list[str]:
    trace = tmp / "trace.txt"
    done = subprocess.run(cmd, cwd=REPO, env=_env(**{CRASH_TRACE_ENV: str(trace)}), capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 10, 20), done.stderr
    return trace.read_text(encoding="utf-8").splitlines()


def kill_at(cmd: list[str], point: int) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=REPO, env=_env(**{CRASH_AT_ENV: str(point)}), capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, (point, done.returncode, done.stderr[-2000:])
    return done


def pick_points(total: int, seed: int) -> list[int]:
    """KILL_POINTS distinct checkpoints, always the first and the last, the rest at random."""
    if total <= KILL_POINTS:
        return list(range(1, total + 1))
    middle = random.Random(seed).sample(range(2, total), KILL_POINTS - 2)
    return sorted({1, total, *middle})


# ------------------------------------------------------------------ what "consistent" and "the same" mean
def canonical(lake: Lake) -> dict[str, list[str]]:
    """Every table's rows without the columns that record when/which batch wrote them."""
    out = {}
    for name in schemas.all_tables():
        drop = VOLATILE.get(name, set()) | {"ingest_batch_id"}
        rows = lake.read_table(name).to_pylist()
        out[name] = sorted(json.dumps({k: v for k, v in r.items() if k not in drop}, default=str, sort_keys=True) for r in rows)
    return out


def assert_consistent(lake: Lake) -> None:
    """What a reader sees right after a crash, before any recovery ran."""
    commits = lake.committed()
    con = engine.connect(lake)
    for name in schemas.all_tables():  # every table readable, by DuckDB and by the lake reader
        assert con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == lake.read_table(name).num_rows
    superseded = {rel for rec in commits.values() for rel in rec.get("removes", [])}
    for batch_id, rec in commits.items():
        for rel in rec.get("files", []):
            assert rel in superseded or (lake.root / rel).is_file(), f"batch {batch_id} lost {rel}"
    by_batch: dict[tuple[str, str], int] = {}
    for name in schemas.all_tables():
        for row in lake.read_table(name, columns=["ingest_batch_id"]).to_pylist():
            assert row["ingest_batch_id"] in commits, f"{name}: a row of uncommitted batch {row['ingest_batch_id']}"
            key = (name, row["ingest_batch_id"])
            by_batch[key] = by_batch.get(key, 0) + 1
    for batch_id, rec in commits.items():
        if not rec.get("source_sha256"):
            continue  # keys, indicators and findings batches replace whole tables
        for table, counts in rec["tables"].items():  # an ingest batch is whole: every row it counted
            assert by_batch.get((table, batch_id), 0) == counts["written"], (batch_id, table)
        quarantined = sum(c["quarantined"] for c in rec["tables"].values())
        assert by_batch.get(("quarantine", batch_id), 0) == quarantined
        assert by_batch.get(("ingest_runs", batch_id), 0) == 1


# ------------------------------------------------------------------ the tests
@pytest.mark.slow
def test_sigkill_ingest_at_20_points_then_rerun_gives_the_same_rows(drop: dict[str, Path], tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    run_ingest(drop, reference)
    expected = canonical(Lake(reference))
    assert len(expected["signins"]) == 59 and expected["quarantine"] and expected["tokens"]

    labels = count_checkpoints(ingest_cmd(drop, tmp_path / "traced"), tmp_path)
    assert canonical(Lake(tmp_path / "traced")) == expected
    points = pick_points(len(labels), seed=558)
    assert len(points) >= KILL_POINTS
    lakes = {p: tmp_path / f"lake-{p}" for p in points}
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda p: kill_at(ingest_cmd(drop, lakes[p]), p), points))
    for point in points:
        lake = Lake(lakes[point])
        assert_consistent(lake)
        run_ingest(drop, lakes[point])
        assert canonical(lake) == expected, f"after a kill at checkpoint {point} ({labels[point - 1]})"
        assert not list(lake.root.glob("_staging/*")) and not list(lake.root.glob("_manifest/pending/*.json"))


def _marked_processes(mark: str) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("TOKENHUNT_TEST_MARK") == mark:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.mark.slow
def test_sigkill_parallel_ingest_then_rerun_gives_the_same_rows(drop: dict[str, Path], tmp_path: Path) -> None:
    """The block-parallel ingest (forced onto these small files): kill the parent while its worker
    processes run; the lake is consistent, the workers do not outlive it, a rerun is exact."""
    import uuid

    reference = tmp_path / "reference"
    run_ingest(drop, reference)
    expected = canonical(Lake(reference))
    parallel = {"TOKENHUNT_PARALLEL_MIN_BYTES": "0", "TOKENHUNT_INGEST_WORKERS": "2"}
    trace = tmp_path / "trace.txt"
    done = subprocess.run(ingest_cmd(drop, tmp_path / "traced"), cwd=REPO, env=_env(**parallel, **{CRASH_TRACE_ENV: str(trace)}),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert canonical(Lake(tmp_path / "traced")) == expected  # parallel and serial write the same rows
    labels = trace.read_text(encoding="utf-8").splitlines()
    outlived: list[int] = []
    for point in pick_points(len(labels), seed=7)[:: max(1, KILL_POINTS // 8)]:
        lake_dir = tmp_path / f"lake-{point}"
        mark = uuid.uuid4().hex
        kill_env = _env(**parallel, **{CRASH_AT_ENV: str(point), "TOKENHUNT_TEST_MARK": mark})
        # Output to files, not pipes: an orphaned worker holding a pipe would block the wait.
        with open(tmp_path / f"out-{point}.txt", "w") as log:
            proc = subprocess.Popen(ingest_cmd(drop, lake_dir), cwd=REPO, env=kill_env, stdout=log, stderr=log)
            assert proc.wait(timeout=120) == -signal.SIGKILL, point
        deadline = time.monotonic() + 10
        while (alive := _marked_processes(mark)) and time.monotonic() < deadline:
            time.sleep(0.2)  # an orphaned worker should see its parent gone and exit
        for orphan in alive:  # never leak processes, whatever the verdict
            outlived.append(orphan.pid)
            orphan.kill()
        lake = Lake(lake_dir)
        assert_consistent(lake)
        run_ingest(drop, lake_dir)
        assert canonical(lake) == expected, f"after a kill at checkpoint {point} ({labels[point - 1]})"
    assert not outlived, f"worker processes {outlived} outlived the killed ingest"


@pytest.mark.slow
def test_sigkill_nightly_at_20_points_then_rerun_gives_the_same_rows(drop: dict[str, Path], tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    run_nightly(drop, reference, tmp_path / "out-reference")
    expected = canonical(Lake(reference))
    assert expected["findings"] and expected["signing_keys"] and expected["tokens"]

    labels = count_checkpoints(nightly_cmd(drop, tmp_path / "traced", tmp_path / "out-traced"), tmp_path)
    assert canonical(Lake(tmp_path / "traced")) == expected
    points = pick_points(len(labels), seed=1)
    assert len(points) >= KILL_POINTS
    lakes = {p: tmp_path / f"lake-{p}" for p in points}
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda p: kill_at(nightly_cmd(drop, lakes[p], tmp_path / f"out-{p}"), p), points))
    for point in points:
        lake = Lake(lakes[point])
        assert_consistent(lake)
        run_nightly(drop, lakes[point], tmp_path / f"out-{point}")
        assert canonical(lake) == expected, f"after a kill at checkpoint {point} ({labels[point - 1]})"


@pytest.mark.slow
def test_a_crash_during_recovery_is_recovered_too(drop: dict[str, Path], tmp_path: Path) -> None:
    """Kill a run mid-publish, kill the next one while it rolls that back, then finish."""
    reference = tmp_path / "reference"
    run_ingest(drop, reference)
    labels = count_checkpoints(ingest_cmd(drop, tmp_path / "traced"), tmp_path)
    publish = next(i for i, label in enumerate(labels, start=1) if " published " in label and "signins" in label)
    lake_dir = tmp_path / "lake"
    kill_at(ingest_cmd(drop, lake_dir), publish + 1)  # files renamed into place, no commit record
    assert list((lake_dir / "_manifest" / "pending").glob("*.json")), "the crash left a journal to roll back"
    kill_at(ingest_cmd(drop, lake_dir), 1)  # the first checkpoint of the next run is inside recover()
    assert_consistent(Lake(lake_dir))
    run_ingest(drop, lake_dir)
    assert canonical(Lake(lake_dir)) == canonical(Lake(reference))


def test_checkpoints_do_nothing_without_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import lake as lake_mod

    monkeypatch.delenv(CRASH_AT_ENV, raising=False)
    monkeypatch.delenv(CRASH_TRACE_ENV, raising=False)
    before = lake_mod._checkpoints
    lake_mod.checkpoint("anything")
    assert lake_mod._checkpoints == before


# ------------------------------------------------------------------ one writer at a time
@pytest.fixture
def held_lock(tmp_path: Path):
    """Another process holding the lake's lock (as a running ingest or nightly would)."""
    lake = tmp_path / "lake"
    code = (
        "import sys, time; from pathlib import Path; from pipeline.lake import Lake\n"
        f"with Lake(Path({str(lake)!r})).lock():\n    print('locked', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield lake, holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_concurrent_ingest_is_refused_with_a_clear_message(drop: dict[str, Path], held_lock: tuple[Path, int]) -> None:
    lake, pid = held_lock
    done = subprocess.run(ingest_cmd(drop, lake), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 4
    message = " ".join(done.stderr.split())
    assert "another tokenhunt run is writing to" in message and f"pid {pid}" in message
    assert "Traceback" not in done.stderr
    assert Lake(lake).read_table("signins").num_rows == 0


def test_concurrent_nightly_is_refused_with_a_clear_message(drop: dict[str, Path], held_lock: tuple[Path, int], tmp_path: Path) -> None:
    lake, pid = held_lock
    done = subprocess.run(nightly_cmd(drop, lake, tmp_path / "out"), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    text = " ".join((done.stdout + done.stderr).split())
    assert "another tokenhunt run is writing to" in text and f"pid {pid}" in text
    assert "Traceback" not in done.stderr
    assert Lake(lake).read_table("signins").num_rows == 0


def test_a_killed_run_leaves_no_stale_lock(drop: dict[str, Path], tmp_path: Path) -> None:
    """The lock is an flock: the kernel drops it with the process, so a SIGKILL never blocks the next run."""
    lake_dir = tmp_path / "lake"
    proc = subprocess.Popen(
        [*ingest_cmd(drop, lake_dir)], cwd=REPO, env=_env(**{CRASH_AT_ENV: "3"}), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    assert proc.wait(timeout=120) == -signal.SIGKILL
    assert (lake_dir / LOCK_FILE).exists()
    started = time.monotonic()
    with Lake(lake_dir).lock():
        pass
    assert time.monotonic() - started < 5
