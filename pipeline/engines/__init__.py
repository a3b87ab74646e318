"""Query engines: bind the logical lake table names to an engine (DuckDB locally, Spark at scale).

Engine choice is data: ``ENGINES`` maps a name (``--engine``, ``engine`` in tokenhunt.toml) to
the module that binds the lake and the SQL dialect it runs. Every engine module exposes
``connect(lake, *, min_date=None, ...) -> connection`` whose connection has ``cursor()`` /
``execute(sql)`` (DuckDB text in, rows out) and ``close()``; options an engine does not take (for
example ``spark_master`` on DuckDB) are ignored, so callers pass one set of settings.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class Engine:
    name: str
    module: str  # import path of the binding module
    dialect: str  # sqlglot dialect the engine executes (queries are written in DuckDB's)
    description: str

    def connect(self, lake: Any, **options: Any) -> Any:
        """The engine's connection with the lake's views bound (unknown options dropped)."""
        fn = importlib.import_module(self.module).connect
        accepted = inspect.signature(fn).parameters
        return fn(lake, **{k: v for k, v in options.items() if k in accepted and v is not None})


ENGINES: dict[str, Engine] = {
    "duckdb": Engine("duckdb", "pipeline.engines.duckdb", "duckdb", "in-process DuckDB over the local lake (default)"),
    "spark": Engine("spark", "pipeline.engines.spark", "spark", "Spark (local[N], cluster URL or sc:// Connect) over the same lake"),
}


class UnknownEngine(ValueError):
    """The engine name is not in ENGINES."""


class EngineUnavailable(RuntimeError):
    """The engine cannot start here (pyspark or Java missing, bad master URL): the message says why."""


def get(name: str) -> Engine:
    if name not in ENGINES:
        raise UnknownEngine(f"engine {name!r} is not one of {', '.join(ENGINES)}")
    return ENGINES[name]


def connect(name: str, lake: Path | Any, **options: Any) -> Any:
    """``ENGINES[name].connect(lake, **options)``."""
    return get(name).connect(lake, **options)


def query(con: Any, sql: str) -> pa.Table:
    """Rendered DuckDB ``sql`` on any engine connection, as an Arrow table."""
    if getattr(con, "engine_name", "duckdb") != "duckdb":
        return con.query(sql)
    return con.sql(sql).to_arrow_table()
