"""Rows in, findings out: the fixture harness behind ``tests/detections/<id>.toml`` (sqlmesh style).

A fixture file holds ``[[cases]]``, each with input rows per logical table and the findings the
detection must return. ``memory_connection`` builds an in-memory DuckDB with one table per logical
name, typed from ``schemas/*.toml`` with ALL columns (derived ``tokens`` columns included, so a
case states ``key_scope = "consumer"`` directly) and missing values NULL; ``check_case`` runs the
detection through ``pipeline.detect.run_detections`` and lists every unmet expectation.
Why a module and not test code: the nightly and CLI can validate detections the same way.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import duckdb
import pyarrow as pa

from pipeline import schemas
from pipeline.detect import OUTCOMES, SEVERITIES, Detection, DetectionRunError, run_detections

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "tests" / "detections"
CASE_KEYS = {
    "name",
    "kind",
    "description",
    "expect_findings",
    "expect_entity_keys",
    "expect_outcome",
    "expect_severity",
    "params",
    "partner_tenants",
    "window_start",
    "window_end",
    "rows",
}


class FixtureError(ValueError):
    """A fixture file or row is malformed; the message names the file, case and row."""


@dataclass
class Case:
    name: str
    kind: str  # positive | negative
    expect_findings: int
    rows: list[dict]
    expect_entity_keys: list[str] | None = None
    expect_outcome: str | None = None
    expect_severity: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    partner_tenants: list[str] = field(default_factory=list)
    window: tuple[datetime, datetime] | None = None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _case_problems(n: int, raw: Any) -> list[str]:
    where = f"case {n}"
    if not isinstance(raw, dict):
        return [f"{where}: must be a table"]
    where = f"case {n} ({raw.get('name', '?')})"
    problems = [f"{where}: unknown key {k!r}" for k in sorted(set(raw) - CASE_KEYS)]
    if not isinstance(raw.get("name"), str) or not raw.get("name"):
        problems.append(f"{where}: name is missing")
    if raw.get("kind") not in ("positive", "negative"):
        problems.append(f"{where}: kind must be positive or negative")
    count = raw.get("expect_findings")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        problems.append(f"{where}: expect_findings must be a whole number >= 0")
    elif raw.get("kind") == "positive" and count < 1:
        problems.append(f"{where}: a positive case expects at least one finding")
    elif raw.get("kind") == "negative" and count > 0 and raw.get("expect_outcome") != "inconclusive":
        problems.append(f"{where}: a negative case expects no finding (or only inconclusive ones)")
    if "expect_outcome" in raw and raw["expect_outcome"] not in OUTCOMES:
        problems.append(f"{where}: expect_outcome must be one of {', '.join(OUTCOMES)}")
    if "expect_severity" in raw and raw["expect_severity"] not in SEVERITIES:
        problems.append(f"{where}: expect_severity must be one of {', '.join(SEVERITIES)}")
    keys = raw.get("expect_entity_keys")
    if keys is not None and (not isinstance(keys, list) or not all(isinstance(k, str) for k in keys)):
        problems.append(f"{where}: expect_entity_keys must be a list of strings")
    if ("window_start" in raw) != ("window_end" in raw):
        problems.append(f"{where}: give both window_start and window_end")
    for key in ("window_start", "window_end"):
        if key in raw and not isinstance(raw[key], datetime):
            problems.append(f"{where}: {key} must be a TOML datetime")
    rows = raw.get("rows", [])
    if not isinstance(rows, list):
        problems.append(f"{where}: rows must be an array of tables")
        rows = []
    tables = schemas.all_tables()
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or row.get("table") not in tables:
            problems.append(f"{where} row {i}: 'table' must be one of {', '.join(sorted(tables))}")
            continue
        spec = tables[row["table"]]
        for col, value in row.items():
            if col == "table":
                continue
            try:
                column = spec.column(col)
            except KeyError:
                problems.append(f"{where} row {i}: {row['table']} has no column {col!r}")
                continue
            value = _coerce(column, value)
            problem = column.violation(value) if value is not None else None
            if problem:
                problems.append(f"{where} row {i} ({row['table']}): {problem}")
    return problems


def _coerce(column: schemas.Column, value: Any) -> Any:
    """TOML values to lake values: naive datetimes are UTC, dates in text columns become text."""
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, date) and column.type in ("string", "json"):
        return value.isoformat()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and column.type == "float64":
        return float(value)
    return value


def load_cases(path: Path) -> list[Case]:
    """The cases of one fixture file; FixtureError lists every problem in it."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FixtureError(f"{path}: fixture file is missing (each detection needs tests/detections/<id>.toml)") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FixtureError(f"{path}: {exc}") from exc
    raw_cases = doc.get("cases")
    problems = [f"unknown top-level key {k!r}" for k in sorted(set(doc) - {"cases"})]
    if not isinstance(raw_cases, list) or not raw_cases:
        problems.append("no [[cases]]")
        raw_cases = []
    for n, raw in enumerate(raw_cases, start=1):
        problems += _case_problems(n, raw)
    names = [c.get("name") for c in raw_cases if isinstance(c, dict)]
    problems += [f"case name {n!r} is used twice" for n in sorted({n for n in names if names.count(n) > 1})]
    if problems:
        raise FixtureError(f"{path}: " + "; ".join(problems))
    cases = []
    for raw in raw_cases:
        cases.append(
            Case(
                name=raw["name"],
                kind=raw["kind"],
                expect_findings=raw["expect_findings"],
                rows=list(raw.get("rows", [])),
                expect_entity_keys=raw.get("expect_entity_keys"),
                expect_outcome=raw.get("expect_outcome"),
                expect_severity=raw.get("expect_severity"),
                params=dict(raw.get("params", {})),
                partner_tenants=list(raw.get("partner_tenants", [])),
                window=(_utc(raw["window_start"]), _utc(raw["window_end"])) if "window_start" in raw else None,
            )
        )
    return cases


def memory_connection(rows: Sequence[dict]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB holding ``rows`` (each with a ``table`` key) in lake-shaped tables."""
    con = duckdb.connect(":memory:")
    con.execute("SET GLOBAL TimeZone = 'UTC'")
    by_table: dict[str, list[dict]] = {name: [] for name in schemas.all_tables()}
    for row in rows:
        table = row.get("table")
        if table not in by_table:
            raise FixtureError(f"row {row!r:.120}: 'table' must be one of {', '.join(sorted(by_table))}")
        by_table[table].append(row)
    for name, spec in schemas.all_tables().items():
        columns = ", ".join(f"{c.name} {c.sql_type}" for c in spec.columns)
        con.execute(f"CREATE TABLE {name} ({columns})")
        if not by_table[name]:
            continue
        data = []
        for row in by_table[name]:
            values = {c.name: _coerce(c, row.get(c.name)) for c in spec.columns}
            time_value = values.get(spec.time_column)
            if values.get(spec.partition) is None and spec.partition == "event_date":
                values["event_date"] = (time_value.strftime("%Y-%m-%d") if isinstance(time_value, datetime) else "1970-01-01")
            data.append(values)
        arrow = pa.Table.from_pylist(data, schema=pa.schema([pa.field(c.name, c.arrow_type) for c in spec.columns]))
        con.register("fixture_rows", arrow)
        con.execute(f"INSERT INTO {name} SELECT * FROM fixture_rows")
        con.unregister("fixture_rows")
    return con


def check_case(detection: Detection, case: Case) -> list[str]:
    """Every way the detection's output differs from what the case expects (empty: it passes)."""
    con = memory_connection(case.rows)
    try:
        found = run_detections(
            con,
            [detection],
            {detection.id: case.params} if case.params else None,
            case.window,
            partner_tenants=case.partner_tenants,
            workers=1,
        )
    except DetectionRunError as exc:
        return [f"detection failed: {exc.errors.get(detection.id, exc)}"]
    finally:
        con.close()
    failures = []
    summary = [(r["entity_key"], r["outcome"], r["severity"]) for r in found]
    if len(found) != case.expect_findings:
        failures.append(f"expected {case.expect_findings} finding(s), got {len(found)}: {summary}")
    if case.expect_entity_keys is not None and sorted(r["entity_key"] for r in found) != sorted(case.expect_entity_keys):
        failures.append(f"expected entity keys {sorted(case.expect_entity_keys)}, got {sorted(r['entity_key'] for r in found)}")
    if case.expect_outcome and any(r["outcome"] != case.expect_outcome for r in found):
        failures.append(f"expected outcome {case.expect_outcome}, got {[r['outcome'] for r in found]}")
    if case.expect_severity and any(r["severity"] != case.expect_severity for r in found):
        failures.append(f"expected severity {case.expect_severity}, got {[r['severity'] for r in found]}")
    if case.kind == "negative" and any(r["outcome"] == "alert" for r in found):
        failures.append(f"a negative case raised an alert: {summary}")
    return failures
