"""DuckDB vs Spark (local mode): every detection gives the same findings on the same lake.

This is the executable check of the transpile path (peers.md 2.4): the detection files are
DuckDB SQL; Spark runs them through pipeline.engines.sql.transpile. Findings must be identical:
same finding ids, same columns, same evidence after normalizing JSON key order.

One SparkSession for the module (start-up is ~9 s). Needs pyspark (the `spark` extra) and Java 17
(.ci/run installs it from the distribution when missing).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pipeline import engines, schemas
from pipeline.detect import RESULT_COLUMNS, detect_lake, execute, load_detections
from pipeline.lake import Lake

# One worker runs the whole module under `pytest -n` (make test uses --dist loadgroup): one Spark start.
pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark")]

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_logs"
RUN_TIME = datetime(2026, 11, 21, 6, 0, tzinfo=timezone.utc)
TEST_CONF = {"spark.sql.shuffle.partitions": "1"}  # tiny data: one reduce task per shuffle


def _java_available() -> bool:
    home = os.environ.get("JAVA_HOME")
    return bool(shutil.which("java") or (home and (Path(home) / "bin" / "java").is_file()))


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark", reason="pyspark missing: pip install -e '.[spark]'")
    if not _java_available():
        pytest.skip("Java 17 not found (.ci/run installs openjdk-17-jre-headless; or set JAVA_HOME)")
    from pipeline.engines.spark import session

    s = session("local[2]", conf=TEST_CONF)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def sample_lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """The sample scenario ingested like `make demo` does (keys, indicators, logs; quality off for speed)."""
    from pipeline.nightly import run_nightly

    root = tmp_path_factory.mktemp("parity")
    source = SAMPLE
    if not (source / "expected.json").is_file():  # a clone without the generated sample: make it
        from pipeline.samplegen import generate

        source = root / "sample_logs"
        generate(source)
    run = run_nightly(
        [source], root / "lake", source / "jwks", root / "out",
        indicators=[source / "indicators"], exclude=["expected.json", "*.md"], quality_policy="off", now=RUN_TIME,
    )
    assert not run.errors, run.errors
    return Lake(root / "lake")


def _normalized(rows: list[dict]) -> dict[str, dict]:
    """finding_id -> row with evidence as key-sorted JSON (the only normalization allowed)."""
    out = {}
    for row in rows:
        clean = {c: row[c] for c in RESULT_COLUMNS}
        clean["evidence"] = json.dumps(json.loads(row["evidence"]), sort_keys=True)
        out[row["finding_id"]] = clean
    return out


@pytest.fixture(scope="module")
def both(spark, sample_lake: Lake) -> dict:
    detections = load_detections()
    duck = engines.connect("duckdb", sample_lake)
    try:
        rows_d, runs_d = execute(duck, detections, workers=1)
    finally:
        duck.close()
    con = engines.connect("spark", sample_lake, spark_session=spark)
    try:
        rows_s, runs_s = execute(con, detections)
    finally:
        con.close()
    return {"detections": detections, "duckdb": (rows_d, runs_d), "spark": (rows_s, runs_s)}


def test_no_detection_fails_on_either_engine(both: dict) -> None:
    for engine in ("duckdb", "spark"):
        errors = {i: r.error for i, r in both[engine][1].items() if r.error}
        assert not errors, f"{engine}: {errors}"


def test_sample_lake_gives_findings_so_parity_is_not_vacuous(both: dict) -> None:
    rows, runs = both["duckdb"]
    assert len(rows) >= 10
    assert sum(1 for r in runs.values() if r.rows) >= 5


def test_same_finding_ids_per_detection(both: dict) -> None:
    for det in both["detections"]:
        ids_d = sorted(r["finding_id"] for r in both["duckdb"][0] if r["detection_id"] == det.id)
        ids_s = sorted(r["finding_id"] for r in both["spark"][0] if r["detection_id"] == det.id)
        assert ids_d == ids_s, f"{det.id}: duckdb {ids_d} spark {ids_s}"


def test_same_findings_and_evidence(both: dict) -> None:
    duck, spark = _normalized(both["duckdb"][0]), _normalized(both["spark"][0])
    assert duck.keys() == spark.keys()
    diffs = [
        f"{fid} {duck[fid]['detection_id']}.{col}:\n  duckdb {duck[fid][col]!r}\n  spark  {spark[fid][col]!r}"
        for fid in sorted(duck)
        for col in RESULT_COLUMNS
        if duck[fid][col] != spark[fid][col]
    ]
    assert not diffs, "\n".join(diffs)


def test_fixture_cases_agree_for_detections_without_sample_findings(spark, both: dict) -> None:
    """Detections silent on the sample still get a non-empty comparison: their first positive case."""
    from pipeline.detect_fixtures import FIXTURES_DIR, load_cases, memory_connection
    from pipeline.engines.spark import SparkConnection

    silent = [d for d in both["detections"] if not both["duckdb"][1][d.id].rows]
    checked = 0
    for det in silent:
        case = next(c for c in load_cases(FIXTURES_DIR / f"{det.id}.toml") if c.kind == "positive")
        duck = memory_connection(case.rows)
        tables = {name: duck.sql(f"SELECT * FROM {name}").to_arrow_table() for name in schemas.all_tables()}
        con = SparkConnection(spark=spark, lake=None)
        con.bind_arrow(tables)
        params = {det.id: case.params} if case.params else None
        try:
            rows_d, _ = execute(duck, [det], params, case.window, partner_tenants=case.partner_tenants, workers=1)
            rows_s, runs_s = execute(con, [det], params, case.window, partner_tenants=case.partner_tenants, workers=1)
        finally:
            duck.close()
            con.close()
        assert runs_s[det.id].error is None, f"{det.id}: {runs_s[det.id].error}"
        assert rows_d, f"{det.id}: positive case {case.name!r} gave no finding on DuckDB"
        assert _normalized(rows_d) == _normalized(rows_s), f"{det.id} / {case.name}"
        checked += 1
    assert checked == len(silent)


def _rows(table) -> list[tuple]:  # noqa: ANN001 - pyarrow.Table
    """Rows as a sorted list (hunts may tie on their ORDER BY keys; the set of rows must agree)."""
    def norm(v):  # noqa: ANN001, ANN202
        return round(v, 9) if isinstance(v, float) else tuple(map(norm, v)) if isinstance(v, list) else v

    return sorted((tuple(norm(v) for v in r.values()) for r in table.to_pylist()), key=repr)


def test_saved_hunts_agree(spark, sample_lake: Lake) -> None:
    """Every saved hunt that passes the portability lint returns the same rows on both engines."""
    from pipeline.engines import sql as sqlmod

    duck = engines.connect("duckdb", sample_lake)
    con = engines.connect("spark", sample_lake, spark_session=spark)
    try:
        pick = {  # required parameters: the most frequent value in the sample, so results are non-empty
            "user": "SELECT user_principal_name FROM signins WHERE user_principal_name IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
            "app_id": "SELECT client_app_id FROM mail_events WHERE client_app_id IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
            "kid": "SELECT kid FROM tokens WHERE kid IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
        }
        compared, problems = 0, []
        for path in sqlmod.shipped_files(("hunt",)):
            if sqlmod.lint_file(path):  # reported by tests/test_sql_portability.py
                continue
            qf = sqlmod.read_query_file(path)
            params = {}
            for name, spec in (qf.meta.get("params") or {}).items():
                if name in pick:
                    params[name] = duck.execute(pick[name]).fetchall()[0][0]
                elif isinstance(spec, dict) and "default" in spec:
                    params[name] = spec["default"]
                else:
                    problems.append(f"{path.stem}: no value for required parameter {name!r} in this test")
            sql = qf.body.rstrip().rstrip(";")
            expected = duck.sql(sql, params=params or None).to_arrow_table()
            got = con.query(sql, params or None)
            if got.schema.names != expected.schema.names or _rows(got) != _rows(expected):
                problems.append(f"{path.stem}: duckdb {expected.num_rows} rows, spark {got.num_rows} rows differ")
            compared += 1
        assert not problems, "\n".join(problems)
        assert compared >= 10
    finally:
        con.close()
        duck.close()


def _stored_findings(lake: Lake) -> dict[str, dict]:
    rows = lake.read_table("findings").to_pylist()
    keep = [c for c in schemas.table("findings").column_names if c != "ingest_batch_id"]
    out = {}
    for r in rows:
        row = {c: r[c] for c in keep}
        row["evidence"] = json.dumps(json.loads(row["evidence"]), sort_keys=True)
        out[r["finding_id"]] = row
    return out


def test_detect_lake_on_spark_writes_the_same_findings(spark, sample_lake: Lake, tmp_path: Path) -> None:
    only = ["token_never_issued", "session_never_created", "storm0558_infrastructure"]
    stored = {}
    for engine in ("duckdb", "spark"):
        copy = tmp_path / engine
        shutil.copytree(sample_lake.root, copy)
        result = detect_lake(Lake(copy), only=only, now=RUN_TIME.replace(hour=7), engine=engine)
        assert not result.errors, result.errors
        assert result.findings, f"{engine}: no findings from {only}"
        stored[engine] = _stored_findings(Lake(copy))
    assert stored["duckdb"] == stored["spark"]


def test_cli_detect_engine_spark(spark, sample_lake: Lake, tmp_path: Path) -> None:
    """`tokenhunt detect --engine spark --spark-master URL` prints what --engine duckdb prints."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    outputs = {}
    for engine in ("duckdb", "spark"):
        copy = tmp_path / engine
        shutil.copytree(sample_lake.root, copy)
        args = ["detect", "--lake", str(copy), "--only", "token_lifetime_anomaly", "--format", "jsonl", "--engine", engine]
        if engine == "spark":
            args += ["--spark-master", "local[2]"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code in (0, 10), result.output
        lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
        assert lines, result.output
        outputs[engine] = sorted(
            (x["finding_id"], json.dumps(json.loads(x["evidence"]) if isinstance(x["evidence"], str) else x["evidence"], sort_keys=True))
            for x in lines
        )
    assert outputs["duckdb"] == outputs["spark"]


def test_spark_binding_is_utc_with_string_partitions(spark, sample_lake: Lake) -> None:
    con = engines.connect("spark", sample_lake, spark_session=spark)
    try:
        assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
        assert spark.conf.get("spark.sql.sources.partitionColumnTypeInference.enabled") == "false"
        fields = {f.name: f.dataType.simpleString() for f in spark.table("signins").schema.fields}
        assert fields["event_date"] == "string" and fields["event_time"] == "timestamp"
        assert list(fields) == schemas.table("signins").column_names
        table = engines.query(con, "SELECT min(event_time) AS t, count(*) AS n FROM signins")
        duck = engines.connect("duckdb", sample_lake)
        try:
            expected = engines.query(duck, "SELECT min(event_time) AS t, count(*) AS n FROM signins")
        finally:
            duck.close()
        assert table.to_pylist() == expected.to_pylist()
        assert table.to_pylist()[0]["t"].utcoffset().total_seconds() == 0
    finally:
        con.close()
