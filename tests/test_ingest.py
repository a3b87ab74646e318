"""Ingest end to end on small files: idempotency, overlap, quarantine, errors, crash safety, memory."""

from __future__ import annotations

import gzip
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.graphgen import record, request_id, write_array, write_ndjson
from pipeline.engines import duckdb as engine
from pipeline.ingest import EXIT_FILE_ERRORS, ingest_paths
from pipeline.lake import Lake

REPO = Path(__file__).resolve().parents[1]


def rows(lake: Lake, sql: str):
    return engine.connect(lake).execute(sql).fetchall()


def run(lake: Lake, *paths: Path, **kw):
    kw.setdefault("quality_policy", "off")
    return ingest_paths(lake, list(paths), **kw)


def test_ingest_graph_array_then_again_is_idempotent(tmp_path: Path):
    lake = Lake(tmp_path / "lake")
    f = write_array(tmp_path / "signins.json", [record(i) for i in range(30)])
    report = run(lake, f)
    assert report.exit_code == 0
    c = report.files[0].counts["signins"]
    assert (c.read, c.written, c.duplicates, c.quarantined) == (30, 30, 0, 0)
    assert rows(lake, "SELECT count(*), count(DISTINCT event_id) FROM signins") == [(30, 30)]
    again = run(lake, f)
    assert again.files[0].status == "unchanged"
    assert rows(lake, "SELECT count(*) FROM signins") == [(30,)]


def test_overlapping_exports_keep_one_row_per_event(tmp_path: Path):
    lake = Lake(tmp_path / "lake")
    a = write_ndjson(tmp_path / "a.ndjson", 20, start=0)
    b = write_ndjson(tmp_path / "b.ndjson", 20, start=10)  # 10 overlap
    report = run(lake, a, b)
    cb = report.files[1].counts["signins"]
    assert (cb.read, cb.written, cb.duplicates) == (20, 10, 10)
    assert rows(lake, "SELECT count(*) FROM signins") == [(30,)]


def test_bad_records_are_quarantined_with_reason_and_the_rest_ingests(tmp_path: Path):
    lake = Lake(tmp_path / "lake")
    recs = [record(i) for i in range(5)]
    recs[1]["id"] = "not-a-guid"
    recs[2]["createdDateTime"] = "2026-02-30T10:00:00Z"
    recs[3]["ipAddress"] = "999.1.1.1"
    f = write_array(tmp_path / "mixed.json", recs)
    report = run(lake, f)
    c = report.files[0].counts["signins"]
    assert (c.read, c.written, c.quarantined) == (5, 2, 3)
    assert c.read == c.written + c.duplicates + c.quarantined
    q = rows(lake, "SELECT record_number, reason, source_file FROM quarantine ORDER BY record_number")
    assert [r[0] for r in q] == [2, 3, 4]
    assert "GUID" in q[0][1] and "valid date" in q[1][1] and "IP" in q[2][1]
    assert all(r[2] == str(f) for r in q)
    # re-ingesting quarantines nothing twice
    f.touch()
    run(lake, f)
    assert rows(lake, "SELECT count(*) FROM quarantine") == [(3,)]


def test_unreadable_file_is_named_and_others_still_ingest(tmp_path: Path):
    lake = Lake(tmp_path / "lake")
    good = write_ndjson(tmp_path / "good.ndjson", 3)
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 10)
    fake_gz = tmp_path / "x.json.gz"
    fake_gz.write_text("not gzip")
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    report = run(lake, binary, fake_gz, empty, good)
    by_name = {f.path.name: f for f in report.files}
    assert by_name["blob.bin"].status == "error" and "blob.bin" in by_name["blob.bin"].message
    assert by_name["x.json.gz"].status == "error" and "not gzip" in by_name["x.json.gz"].message
    assert by_name["empty.json"].status == "empty"
    assert by_name["good.ndjson"].status == "ingested"
    assert report.exit_code == EXIT_FILE_ERRORS
    assert rows(lake, "SELECT count(*) FROM signins") == [(3,)]


def test_gzip_and_bom_and_folders(tmp_path: Path):
    lake = Lake(tmp_path / "lake")
    d = tmp_path / "in"
    d.mkdir()
    data = json.dumps({"value": [record(i) for i in range(4)]}).encode()
    (d / "page.json.gz").write_bytes(gzip.compress(data))
    (d / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([record(i) for i in range(4, 6)], indent=4).encode())
    report = run(lake, d)
    assert [f.status for f in report.files] == ["ingested", "ingested"]
    assert rows(lake, "SELECT count(*) FROM signins") == [(6,)]


def test_run_record_and_manifest(tmp_path: Path):
    lake = Lake(tmp_path / "lake")
    f = write_ndjson(tmp_path / "a.ndjson", 5)
    run(lake, f)
    (rec,) = rows(lake, "SELECT source_file, records_read, rows_written, quarantined, source_format FROM ingest_runs")
    assert rec == (str(f), 5, 5, 0, "graph_json")
    commits = lake.committed()
    assert len(commits) == 1 and next(iter(commits.values()))["records_read"] == 5


def test_quality_gate_runs_and_is_recorded(tmp_path: Path):
    lake = Lake(tmp_path / "lake")
    f = write_ndjson(tmp_path / "a.ndjson", 5)
    report = run(lake, f, quality_policy="warn")
    assert report.files[0].quality_status == "passed"
    (q,) = rows(lake, "SELECT quality_status, quality FROM ingest_runs")
    assert q[0] == "passed" and json.loads(q[1])["signins"]["success"] is True


# ------------------------------------------------------------------ crash safety
def _ingest_cmd(lake: Path, *files: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "ingest", "--quality", "off", "--lake", str(lake), *map(str, files)]


@pytest.mark.slow
def test_kill_mid_ingest_then_rerun_gives_exact_rows(tmp_path: Path):
    files = [write_ndjson(tmp_path / f"part{k}.ndjson", 30_000, start=k * 25_000) for k in range(3)]
    reference = Lake(tmp_path / "reference")
    run(reference, *files)
    expected = rows(reference, "SELECT count(*), count(DISTINCT event_id) FROM signins")
    rng = random.Random(7)
    for attempt in range(4):
        lake_dir = tmp_path / f"lake{attempt}"
        proc = subprocess.Popen(_ingest_cmd(lake_dir, *files), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lake = Lake(lake_dir)
        # readable, with only whole batches: each committed file is all-or-nothing
        got = rows(lake, "SELECT count(*), count(DISTINCT event_id) FROM signins")
        assert got[0][0] == got[0][1]
        assert got[0][0] in {0, 30_000, 55_000, 80_000}
        subprocess.run(_ingest_cmd(lake_dir, *files), cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        assert rows(lake, "SELECT count(*), count(DISTINCT event_id) FROM signins") == expected


# ------------------------------------------------------------------ bounded memory
@pytest.mark.slow
def test_memory_stays_bounded_on_a_200mb_file(tmp_path: Path):
    big = tmp_path / "big.json"
    with open(big, "w", encoding="utf-8") as fh:  # one JSON array, the worst case for naive readers
        fh.write("[\n")
        i = 0
        while fh.tell() < 200 * 1024 * 1024:
            fh.write(("," if i else "") + json.dumps(record(i)) + "\n")
            i += 1
        fh.write("]\n")
    size_mb = big.stat().st_size / 2**20
    code = (
        "import resource,sys;from pathlib import Path;from pipeline.ingest import ingest_paths;from pipeline.lake import Lake;"
        f"r=ingest_paths(Lake(Path({str(tmp_path / 'lake')!r})),[Path({str(big)!r})],quality_policy='off');"
        "print(r.files[0].counts['signins'].written, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    written, peak_kb = int(out[0]), int(out[1])
    assert written == i
    peak_mb = peak_kb / 1024
    print(f"200 MB file ({size_mb:.0f} MB, {i} records): peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 1024, f"peak RSS {peak_mb:.0f} MB for a {size_mb:.0f} MB file: ingest is not streaming"
