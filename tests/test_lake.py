"""The lake: atomic batches, dedup on the natural key, recovery after a crash, one writer."""

from __future__ import annotations

import json
import multiprocessing
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pipeline.engines import duckdb as engine
from pipeline.lake import Lake, LakeBusy

UTC = timezone.utc


def signin(i: int, day: int = 1) -> dict:
    return {
        "event_id": f"00000000-0000-0000-0000-{i:012d}",
        "event_time": datetime(2026, 11, day, 8, 0, i % 60, tzinfo=UTC),
        "event_date": f"2026-11-{day:02d}",
        "source_format": "test",
        "sign_in_type": "interactive",
        "ingest_batch_id": "b",
    }


def count(lake: Lake, table: str = "signins") -> int:
    return engine.connect(lake).execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_batch_is_invisible_until_commit(lake_dir: Path):
    lake = Lake(lake_dir)
    batch = lake.begin()
    written, dups = batch.add("signins", [signin(1), signin(2, day=2)])
    assert len(written) == 2 and dups == 0
    assert count(lake) == 0
    batch.commit({"source_file": "x"})
    assert count(lake) == 2
    assert lake.partitions("signins") == ["2026-11-01", "2026-11-02"]
    assert (lake_dir / "signins" / "event_date=2026-11-01").is_dir()


def test_dedup_against_lake_and_within_batch(lake_dir: Path):
    lake = Lake(lake_dir)
    b1 = lake.begin()
    b1.add("signins", [signin(1), signin(2)])
    b1.commit({})
    b2 = lake.begin()
    written, dups = b2.add("signins", [signin(2), signin(3), signin(3)])
    assert [r["event_id"][-1] for r in written] == ["3"] and dups == 2
    b2.commit({})
    assert count(lake) == 3


def test_partition_column_is_string_for_every_engine(lake_dir: Path):
    lake = Lake(lake_dir)
    b = lake.begin()
    b.add("signins", [signin(1)])
    b.commit({})
    con = engine.connect(lake)
    assert con.execute("SELECT typeof(event_date) FROM signins").fetchone()[0] == "VARCHAR"
    # and a plain hive read of the directory (what Spark/Trino do) sees the same rows
    import duckdb

    rows = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{lake_dir}/signins/*/*.parquet', hive_partitioning=true)").fetchone()[0]
    assert rows == 1


def test_empty_lake_has_typed_views(lake_dir: Path):
    con = engine.connect(Lake(lake_dir))
    cols = dict(con.execute("DESCRIBE signins").fetchall()[i][:2] for i in range(3))
    assert cols["event_time"].startswith("TIMESTAMP")
    assert con.execute("SELECT count(*) FROM mail_events").fetchone()[0] == 0


def test_recover_rolls_back_a_batch_that_died_mid_publish(lake_dir: Path):
    lake = Lake(lake_dir)
    good = lake.begin()
    good.add("signins", [signin(1)])
    good.commit({})
    # Simulate a crash after the journal and the renames but before the commit record.
    crashed = lake.begin()
    crashed.add("signins", [signin(2), signin(3, day=3)])
    root = lake.root
    journal = root / "_manifest" / "pending" / f"{crashed.batch_id}.json"
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text(json.dumps({"files": [str(f.relative_to(root)) for _, f in crashed.staged]}))
    for staged, final in crashed.staged:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)
    # Readers never see the uncommitted files...
    assert count(lake) == 1
    # ...and the next writer removes them.
    with lake.lock():
        pass
    assert not any(root.glob(f"signins/*/part-{crashed.batch_id}-*"))
    assert not journal.exists()
    assert count(lake) == 1


def _hold_lock(path: str, ready, release) -> None:
    with Lake(Path(path)).lock():
        ready.set()
        release.wait(10)


def test_second_writer_gets_a_clear_error(lake_dir: Path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(lake_dir), ready, release))
    p.start()
    try:
        assert ready.wait(10)
        with pytest.raises(LakeBusy, match="another tokenhunt run is writing"):
            with Lake(lake_dir).lock():
                pass
    finally:
        release.set()
        p.join(10)
    with Lake(lake_dir).lock():  # free again
        pass


def test_replace_supersedes_old_files_atomically(lake_dir: Path):
    lake = Lake(lake_dir)
    row = {"indicator_type": "kid", "value": "k1", "event_date": "2026-11-01", "source": "s", "ingest_batch_id": "b"}
    b = lake.begin()
    b.replace("indicators", [row])
    b.commit({})
    b = lake.begin()
    b.replace("indicators", [row, {**row, "value": "k2"}])
    b.commit({})
    assert count(lake, "indicators") == 2
    assert len(lake.table_files("indicators")) == 1


def _hold_run_lock(path: str, ready, release) -> None:
    with Lake(Path(path)).run_lock("nightly"):
        ready.set()
        release.wait(10)


def test_second_nightly_run_is_refused_while_one_runs(lake_dir: Path, tmp_path: Path):
    from pipeline.nightly import run_nightly

    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_run_lock, args=(str(lake_dir), ready, release))
    p.start()
    try:
        assert ready.wait(10)
        run = run_nightly([], lake_dir, out=tmp_path / "out")
        assert any("running nightly on" in e for e in run.errors)
        with Lake(lake_dir).lock():  # the writer lock is free: only nightly runs exclude each other
            pass
    finally:
        release.set()
        p.join(10)
