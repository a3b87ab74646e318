"""Portable SQL: the lint catches every denied construct, shipped queries pass it, generated SQL is current.

The lint is what keeps one DuckDB text per detection runnable on Spark and Trino/Athena; these
tests make `make test` run it over every shipped detection and hunt.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlglot

from pipeline.engines import sql as sqlmod

# One small query per denied construct: rule -> SQL (over the logical tables, so only that rule fires).
DENIED: list[tuple[str, str]] = [
    ("file-access", "SELECT * FROM read_parquet('lake/signins/*/*.parquet')"),
    ("file-access", "SELECT * FROM 'lake/signins/part-1.parquet'"),
    ("file-access", "SELECT * FROM read_csv('signins.csv')"),
    ("list-has-any", "SELECT event_id FROM mail_events WHERE list_has_any(folder_paths, ['Inbox'])"),
    ("list-has-any", "SELECT event_id FROM mail_events WHERE folder_paths && ['Inbox']"),
    ("len-on-list", "SELECT len(folder_paths) AS n FROM mail_events"),
    ("len-on-list", "SELECT length(folder_paths) AS n FROM mail_events"),
    ("slice", "SELECT folder_paths[1:2] AS p FROM mail_events"),
    ("time-bucket", "SELECT time_bucket(INTERVAL '15 minutes', event_time) AS b FROM signins"),
    ("json-operator", "SELECT extra::JSON AS j FROM signins"),
    ("json-operator", "SELECT extra ->> '$.deviceDetail' AS j FROM signins"),
    ("json-operator", "SELECT extra -> '$.deviceDetail' AS j FROM signins"),
    ("regexp-full-match", "SELECT event_id FROM signins WHERE regexp_full_match(user_agent, 'Mozilla.*')"),
    ("epoch-ms", "SELECT epoch_ms(event_time) AS ms FROM signins"),
    ("strptime-letters", "SELECT strptime(event_date, '%Y-%m-%dT00') AS d FROM signins"),
    ("star-exclude", "SELECT * EXCLUDE (extra) FROM signins"),
    ("group-by-all", "SELECT tenant_id, count(*) AS n FROM signins GROUP BY ALL"),
    ("struct-literal", "SELECT {'u': user_id} AS s FROM signins"),
    ("lambda", "SELECT list_filter(folder_paths, lambda p: p LIKE 'I%') AS f FROM mail_events"),
    ("order-by", "SELECT event_id FROM signins ORDER BY event_id"),
    ("order-by", "SELECT event_id FROM signins LIMIT 5"),
    ("regex-not-re2", "SELECT event_id FROM signins WHERE regexp_matches(user_agent, '(?=Mozilla)')"),
    ("regex-not-re2", r"SELECT event_id FROM signins WHERE regexp_matches(user_agent, '(a)\1')"),
    ("regex-not-re2", "SELECT event_id FROM signins WHERE regexp_matches(user_agent, '[[:alpha:]]+')"),
    ("regex-not-re2", "SELECT event_id FROM signins WHERE user_agent ~ 'a++'"),
    ("unordered-agg", "SELECT string_agg(user_id, ',') AS u FROM signins"),
    ("unordered-agg", "SELECT list(user_id) AS u FROM signins"),
    ("timestamp-concat", "SELECT 'at ' || event_time AS t FROM signins"),
    ("untyped", "SELECT no_such_column FROM signins"),
    ("json-object-key", "SELECT json_object(user_id, 1) AS j FROM signins"),
    ("unknown-function", "SELECT md5_number_upper(user_id) AS e FROM signins"),
]

PORTABLE = """
SELECT tenant_id,
       count(*) AS n,
       string_agg(DISTINCT user_id, ', ' ORDER BY user_id) AS users,
       min(event_time) AS first_seen,
       CAST(json_object('first', min(event_time), 'n', count(*), 'ua', min(user_agent)) AS VARCHAR) AS evidence
FROM signins
WHERE regexp_matches(coalesce(user_agent, ''), 'Mozilla/[0-9]+')
  AND json_extract_string(extra, '$.deviceDetail.browser') IS NOT NULL
  AND event_time >= CAST('2026-11-01 00:00:00+00:00' AS TIMESTAMP WITH TIME ZONE) - INTERVAL 1 DAY
GROUP BY tenant_id
"""


@pytest.mark.parametrize(("rule", "sql"), DENIED, ids=[f"{r}-{i}" for i, (r, _) in enumerate(DENIED)])
def test_lint_catches_each_denied_construct(rule: str, sql: str) -> None:
    found = sqlmod.lint_sql(sql)
    assert rule in {v.rule for v in found}, f"{rule} not reported for {sql!r}: {[str(v) for v in found]}"
    assert {v.rule for v in found} == {rule}, f"only {rule} should fire: {[str(v) for v in found]}"


def test_every_rule_has_a_denied_example() -> None:
    exercised = {rule for rule, _ in DENIED} | {"parse", "transpile"}
    assert set(sqlmod.RULES) == exercised


def test_portable_query_passes_and_transpiles() -> None:
    assert sqlmod.lint_sql(PORTABLE) == []
    for dialect in sqlmod.DIALECTS:
        assert "SELECT" in sqlmod.transpile(PORTABLE, dialect)


def test_hunts_may_sort_but_detections_may_not() -> None:
    sql = "SELECT event_id FROM signins ORDER BY event_id"
    assert sqlmod.lint_sql(sql, kind="hunt") == []
    assert [v.rule for v in sqlmod.lint_sql(sql, kind="detection")] == ["order-by"]


def test_violations_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.sql"
    path.write_text(
        '-- id = "bad"\n-- [params]\n-- pattern = \'(?!x)\'\n'  # lines 1-3: header
        "SELECT event_id\n"  # line 4
        "FROM signins\n"  # line 5
        "WHERE regexp_matches(user_agent, {{ pattern }})\n"  # line 6
        "GROUP BY ALL\n",  # line 7
        encoding="utf-8",
    )
    found = sqlmod.lint_file(path)
    by_rule = {v.rule: v for v in found}
    assert by_rule["regex-not-re2"].line == 6  # the rendered parameter value is what gets checked
    assert by_rule["group-by-all"].line == 7
    assert all(v.path.endswith("bad.sql") for v in found)
    assert str(by_rule["group-by-all"]).endswith("list the grouping columns")
    assert ":7: [group-by-all]" in str(by_rule["group-by-all"])


def test_lint_reports_every_violation_at_once() -> None:
    sql = "SELECT len(folder_paths) AS n, epoch_ms(event_time) AS ms FROM mail_events ORDER BY 1"
    assert {v.rule for v in sqlmod.lint_sql(sql)} == {"len-on-list", "epoch-ms", "order-by"}


def test_unparseable_sql_is_one_parse_violation() -> None:
    found = sqlmod.lint_sql("SELECT FROM WHERE (")
    assert [v.rule for v in found] == ["parse"]


SHIPPED = sqlmod.shipped_files()


@pytest.mark.parametrize("path", SHIPPED, ids=[f"{p.parent.name}/{p.stem}" for p in SHIPPED])
def test_shipped_query_passes_lint(path: Path) -> None:
    violations = sqlmod.lint_file(path)
    assert not violations, "\n".join(map(str, violations))


def test_there_are_shipped_detections() -> None:
    assert len(sqlmod.shipped_files(("detection",))) >= 6


def test_generated_sql_is_current() -> None:
    stale = sqlmod.stale_generated()
    assert not stale, "run `make generated` and commit queries/generated:\n" + "\n".join(stale)


# --------------------------------------------------------------------------- transpile behaviour
def test_json_object_becomes_spark_to_json_keeping_nulls_and_key_order() -> None:
    out = sqlmod.transpile("SELECT CAST(json_object('b', user_id, 'a', event_time) AS VARCHAR) AS e FROM signins", "spark")
    assert "TO_JSON(" in out and "NAMED_STRUCT(" in out and "JSON_OBJECT" not in out
    assert "'ignoreNullFields', 'false'" in out
    assert out.index("'b'") < out.index("'a'")
    # TIMESTAMPTZ values are rendered as DuckDB text (CAST ... AS STRING plus '+00'), not Spark's ISO form
    assert "CONCAT(CAST(event_time AS STRING), '+00')" in out


def test_nested_json_object_stays_an_object_on_spark() -> None:
    out = sqlmod.transpile("SELECT CAST(json_object('outer', json_object('n', count(*))) AS VARCHAR) AS e FROM signins", "spark")
    assert out.count("TO_JSON(") == 1 and out.count("NAMED_STRUCT(") == 2


def test_distinct_string_agg_becomes_a_sorted_set_join() -> None:
    sql = "SELECT string_agg(DISTINCT user_id, ', ' ORDER BY user_id) AS u, count(DISTINCT event_id) AS n FROM signins"
    spark = sqlmod.transpile(sql, "spark")
    assert "ARRAY_JOIN(ARRAY_SORT(COLLECT_SET(user_id)), ', ')" in spark and "LISTAGG" not in spark
    trino = sqlmod.transpile(sql, "trino")
    assert "ARRAY_AGG(DISTINCT user_id)" in trino and "NOT user_id IS NULL" in trino


def test_timestamptz_cast_to_text_matches_duckdb_on_spark() -> None:
    out = sqlmod.transpile("SELECT CAST(event_time AS VARCHAR) AS t FROM signins", "spark")
    assert "CONCAT(CAST(event_time AS STRING), '+00')" in out


def test_transpile_raises_instead_of_guessing() -> None:
    with pytest.raises(sqlmod.TranspileError, match="resolve"):
        sqlmod.transpile("SELECT nope FROM signins", "spark")
    with pytest.raises(sqlmod.TranspileError, match="dialect"):
        sqlmod.transpile("SELECT 1 AS x", "oracle")
    with pytest.raises(sqlmod.TranspileError, match="ORDER BY x"):
        sqlmod.transpile("SELECT string_agg(DISTINCT user_id, ',' ORDER BY tenant_id) AS u FROM signins", "spark")


def test_duckdb_error_is_translated_per_dialect() -> None:
    sql = "SELECT CASE WHEN user_id IS NULL THEN error('no user') ELSE user_id END AS u FROM signins"
    assert sqlmod.lint_sql(sql) == []
    assert "RAISE_ERROR('no user')" in sqlmod.transpile(sql, "spark")
    assert "FAIL('no user')" in sqlmod.transpile(sql, "trino")


def test_tokens_view_transpiles_to_every_dialect() -> None:
    for dialect in sqlmod.DIALECTS:
        text = sqlmod.tokens_view(dialect)
        assert "tokens_stored" in text and "signing_keys" in text
        sqlglot.parse_one(text, read=dialect)  # what we print, the target's parser reads back


def test_transpile_file_uses_parameter_defaults() -> None:
    path = sqlmod.DETECTIONS_DIR / "consumer_key_enterprise_mailbox.sql"
    out = sqlmod.transpile_file(path, "spark")
    assert "{{" not in out and "9188040d-6c67-4c5b-b112-36a304b66dad" in out


# --------------------------------------------------------------------------- DDL
@pytest.mark.parametrize("dialect", sqlmod.DDL_DIALECTS)
def test_ddl_covers_every_table_with_string_partition(dialect: str) -> None:
    from pipeline import schemas

    text = sqlmod.ddl(dialect, "s3://bucket/th")
    for spec in schemas.all_tables().values():
        name = "tokens_stored" if spec.name == "tokens" else spec.name
        assert f"tokenhunt.{name} (" in text
        assert f"s3://bucket/th/{spec.name}" in text
    assert "CREATE OR REPLACE VIEW tokenhunt.tokens AS" in text
    assert "FROM tokenhunt.tokens_stored" in text
    if dialect == "trino":
        assert "partitioned_by = ARRAY['event_date']" in text and "  event_date VARCHAR\n)" in text
        assert "TIMESTAMP WITH TIME ZONE" not in text.split("CREATE OR REPLACE VIEW")[0]  # Hive tables: TIMESTAMP
    else:
        assert "PARTITIONED BY (`event_date` string)" in text
        assert "'storage.location.template' = 's3://bucket/th/signins/event_date=${event_date}/'" in text


def test_ddl_rejects_unknown_dialect() -> None:
    with pytest.raises(sqlmod.TranspileError):
        sqlmod.ddl("spark")


# --------------------------------------------------------------------------- CLI
def test_cli_lint_transpile_and_ddl(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    bad = tmp_path / "bad.sql"
    bad.write_text("SELECT * EXCLUDE (extra) FROM signins\n", encoding="utf-8")
    result = runner.invoke(app, ["sql", "lint", str(bad)])
    assert result.exit_code == 1 and "[star-exclude]" in result.output
    result = runner.invoke(app, ["sql", "transpile", "token_lifetime_anomaly", "--dialect", "trino"])
    assert result.exit_code == 0 and "SELECT" in result.output and "{{" not in result.output
    result = runner.invoke(app, ["sql", "transpile", "no_such_detection", "--dialect", "spark"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["sql", "ddl", "--dialect", "athena", "--location", "s3://b/l"])
    assert result.exit_code == 0 and "STORED AS PARQUET" in result.output


def test_violation_text_is_json_safe() -> None:
    found = sqlmod.lint_sql("SELECT {'u': user_id} AS s FROM signins")
    json.dumps([str(v) for v in found])


# --------------------------------------------------------------------------- engine registry (no Spark needed)
def test_engine_registry_is_data_and_drops_options_an_engine_does_not_take(tmp_path: Path) -> None:
    from pipeline import engines
    from pipeline.lake import Lake

    assert set(engines.ENGINES) == {"duckdb", "spark"}
    assert engines.ENGINES["spark"].dialect == "spark"
    con = engines.connect("duckdb", Lake(tmp_path / "lake"), spark_master="local[2]", spark_lake_uri=None)
    try:  # spark_master is Spark's option: ignored by DuckDB, and every logical table is bound
        table = engines.query(con, "SELECT count(*) AS n FROM tokens")
        assert table.to_pylist() == [{"n": 0}]
    finally:
        con.close()
    with pytest.raises(engines.UnknownEngine):
        engines.connect("oracle", Lake(tmp_path / "lake"))


def test_spark_file_uris_rebase_on_the_lake_uri(tmp_path: Path) -> None:
    from pipeline.engines.spark import _file_uri
    from pipeline.lake import Lake

    lake = Lake(tmp_path / "lake")
    part = lake.root / "signins" / "event_date=2026-11-15" / "part-x-00000.parquet"
    assert _file_uri(part, lake, None) == "file://" + part.as_posix()  # '=' kept: Spark does not decode %3D
    assert _file_uri(part, lake, "s3a://bucket/th/") == "s3a://bucket/th/signins/event_date=2026-11-15/part-x-00000.parquet"


def test_cli_detect_rejects_unknown_engine(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    (tmp_path / "lake").mkdir()
    result = CliRunner().invoke(app, ["detect", "--lake", str(tmp_path / "lake"), "--engine", "oracle"])
    assert result.exit_code == 2 and "duckdb, spark" in result.output
