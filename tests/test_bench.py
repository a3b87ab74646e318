"""``tokenhunt bench`` smoke test: the whole benchmark at a tiny size writes every section with
positive figures. Timings are figures, never asserted here (only that they exist and are > 0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import bench, benchdata


def test_plan_splits_events_and_reuses_tokens() -> None:
    plan = benchdata.Plan(events=2_000_000, days=30)
    assert plan.signins + plan.mail + plan.token_events == 2_000_000
    assert plan.token_events == 1_000_000 and plan.tokens == 25_000  # ~40 requests per distinct token


def test_generated_data_is_deterministic(tmp_path: Path) -> None:
    plan = benchdata.Plan(events=1500, days=2)
    a = benchdata.generate(tmp_path / "a", plan, workers=1)
    b = benchdata.generate(tmp_path / "b", plan, workers=1)
    for day_a, day_b in zip(benchdata.day_dirs(a), benchdata.day_dirs(b)):
        for name in benchdata.DAY_FILES:
            assert (day_a / name).read_bytes() == (day_b / name).read_bytes()
    gateway = (benchdata.day_dirs(a)[0] / benchdata.GATEWAY_FILE).read_text().splitlines()
    times = [json.loads(line)["time"] for line in gateway]
    assert times == sorted(times)  # a proxy log is in time order


def test_fit_recovers_fixed_and_per_event_cost() -> None:
    fixed, per_event = bench.fit([(1000, 1.5), (2000, 2.5), (4000, 4.5)])
    assert fixed == pytest.approx(0.5) and per_event == pytest.approx(0.001)


@pytest.mark.slow
def test_bench_writes_every_section(tmp_path: Path) -> None:
    config = bench.BenchConfig(events=2000, out=tmp_path / "bench", repeat=1, scaling=(1, 2))
    doc = bench.run(config, log=lambda message: None)
    written = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert written["config"]["events"] == 2000
    for section in ("machine", "data", "ingest", "tokens", "lake", "detect", "nightly", "scaling", "verdicts"):
        assert written[section], section
    assert written["machine"]["cores"] >= 1 and written["machine"]["memory_gb"] > 0
    assert [r["format"] for r in doc["ingest"]] == ["graph_json", "purview_csv", "gateway_jsonl"]
    for row in doc["ingest"]:
        for key in ("ingest", "ingest_quality_warn", "duckdb", "polars"):
            assert row[key]["seconds"] > 0 and row[key]["mb_per_s"] > 0 and row[key]["peak_rss_mb"] > 0, (row["format"], key)
        assert row["records"] > 0 and row["ratio_vs_duckdb"] > 0 and row["ratio_vs_polars"] > 0
    tokens = doc["tokens"]
    assert tokens["tokenhunt"]["rows_per_s"] > 0 and tokens["pyjwt_per_row"]["rows_per_s"] > 0 and tokens["ratio"] > 0
    assert tokens["verify"]["tokens_per_s"] > 0 and tokens["verify"]["statuses"].get("valid", 0) > 0
    assert doc["detect"]["seconds"] > 0 and doc["detect"]["events"] > 0 and not doc["detect"]["errors"]
    assert len(doc["detect"]["per_detection"]) >= 10
    nightly = doc["nightly"]
    assert nightly["into_30_day_lake"]["seconds"] > 0 and nightly["into_empty_lake"]["seconds"] > 0 and nightly["ratio"] > 0
    assert [p["factor"] for p in doc["scaling"]] == [1, 2]
    for point in doc["scaling"]:
        assert point["ingest"]["us_per_event"] > 0 and point["detect"]["us_per_event"] > 0
        assert point["ingest"]["peak_rss_mb"] > 0 and point["detect"]["peak_rss_mb"] > 0
    assert doc["scaling"][1]["events"] > doc["scaling"][0]["events"]
    assert doc["tenant_estimate"] and all(e["nightly_min"] >= 0 for e in doc["tenant_estimate"])
    table = (tmp_path / "bench" / "bench.md").read_text()
    assert "DuckDB MB/s" in table and "cores" in table and "Nightly increment" in table
