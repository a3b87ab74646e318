"""Batch-level data quality with great-expectations, suites generated from ``schemas/``.

Row-level checks (types, GUID/IP patterns, allowed values) already decided quarantine in the
ingest (``TableSchema.violations``); great-expectations is the batch gate and the report: the same
schema rules plus table-level expectations (rows present, key unique), run on each accepted batch
and over the whole lake by ``tokenhunt quality``. GE cannot read polars or DuckDB directly and takes
about a second to import, so it is imported here only, and fed pandas frames.
"""

from __future__ import annotations

import logging
import os
from functools import cache
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schemas

if TYPE_CHECKING:
    from pipeline.lake import Batch, Lake

# Share of rows that must pass a column expectation before a batch is called degraded. The row
# checks already quarantined failing records, so anything below 100% means a rule drifted.
DEFAULT_MOSTLY = 1.0


def suite_spec(table: str) -> list[dict[str, Any]]:
    """The expectations for ``table`` as plain data: derived from its schema file, nothing else."""
    spec = schemas.table(table)
    out: list[dict[str, Any]] = [{"type": "ExpectTableRowCountToBeBetween", "kwargs": {"min_value": 1}}]
    for col in spec.stored_columns:
        if col.name == spec.partition:
            continue
        if not col.nullable:
            out.append({"type": "ExpectColumnValuesToNotBeNull", "kwargs": {"column": col.name}})
        if col.check:
            out.append(
                {
                    "type": "ExpectColumnValuesToMatchRegex",
                    "kwargs": {"column": col.name, "regex": schemas.CHECKS[col.check].regex, "mostly": DEFAULT_MOSTLY},
                }
            )
        if col.allowed:
            out.append(
                {"type": "ExpectColumnValuesToBeInSet", "kwargs": {"column": col.name, "value_set": list(col.allowed)}}
            )
    if len(spec.key) == 1 and spec.key[0] != spec.partition:
        out.append({"type": "ExpectColumnValuesToBeUnique", "kwargs": {"column": spec.key[0]}})
    return out


@cache
def _context() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx

    return gx.get_context(mode="ephemeral")


def validate_frame(table: str, frame: pa.Table) -> dict[str, Any]:
    """Run the generated suite on an Arrow table; returns a SUMMARY dict (no row lists)."""
    import great_expectations as gx

    ctx = _context()
    name = f"{table}_{id(frame)}"
    source = ctx.data_sources.add_or_update_pandas(name)
    asset = source.add_dataframe_asset(name)
    definition = asset.add_batch_definition_whole_dataframe("whole")
    suite = gx.ExpectationSuite(name=name)
    for exp in suite_spec(table):
        if exp["kwargs"].get("column") and exp["kwargs"]["column"] not in frame.column_names:
            continue
        suite.add_expectation(getattr(gx.expectations, exp["type"])(**exp["kwargs"]))
    # GE's pandas engine cannot hash list cells: validate list columns as their text form.
    frame = frame.select([c for c in frame.column_names if not pa.types.is_list(frame.schema.field(c).type)])
    batch = definition.get_batch(batch_parameters={"dataframe": frame.to_pandas()})
    result = batch.validate(suite, result_format="SUMMARY")
    failed = []
    for r in result.results:
        if not r.success:
            cfg = r.expectation_config
            res = r.result or {}
            failed.append(
                {
                    "expectation": cfg.type,
                    "column": cfg.kwargs.get("column"),
                    "unexpected_count": res.get("unexpected_count"),
                    "unexpected_percent": res.get("unexpected_percent"),
                }
            )
    try:
        ctx.data_sources.delete(name)
    except Exception:  # noqa: BLE001 - cleanup of an ephemeral context must never fail the batch
        pass
    stats = result.statistics
    return {
        "success": bool(result.success),
        "evaluated": stats.get("evaluated_expectations"),
        "successful": stats.get("successful_expectations"),
        "failed": failed,
        "rows": frame.num_rows,
    }


def status_for(results: dict[str, dict[str, Any]], policy: str) -> str:
    if all(r["success"] for r in results.values()):
        return "passed"
    return "failed" if policy == "fail" else "degraded"


def check_staged_batch(batch: "Batch", policy: str) -> tuple[dict[str, Any], str]:
    """Validate the rows a batch staged, per table, before it commits."""
    by_table: dict[str, list] = {}
    for staged, _final in batch.staged:
        table = staged.relative_to(batch.staging).parts[0]
        if table in ("quarantine", "ingest_runs"):
            continue
        by_table.setdefault(table, []).append(pq.read_table(staged))
    results = {t: validate_frame(t, pa.concat_tables(parts)) for t, parts in by_table.items()}
    if not results:
        return {}, "skipped"
    return results, status_for(results, policy)


def check_lake(lake: "Lake", tables: list[str] | None = None, policy: str = "warn") -> tuple[dict[str, Any], str]:
    """Validate every (or the named) lake table as a whole: `tokenhunt quality`."""
    results = {}
    for table in tables or list(schemas.all_tables()):
        data = lake.read_table(table)
        if data.num_rows:
            results[table] = validate_frame(table, data)
    if not results:
        return {}, "skipped"
    return results, status_for(results, policy)
