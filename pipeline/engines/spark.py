"""Spark binding: the lake's logical tables as Spark temp views, and DuckDB SQL run through sqlglot.

Why: when one machine is not enough, the same detection files must run on the Spark the user
already has (Databricks, EMR), over the same lake. This module mirrors ``engines/duckdb.py``:

* one temp view per lake table, built from the *committed* file list (``Lake.table_files``), so
  uncommitted or superseded files are never read, typed from ``schemas/`` (an empty table still
  has its columns), with the partition column a string (partition type inference off);
* the ``tokens`` view from ``pipeline.keys.tokens_view_sql``, transpiled to Spark;
* a small DB-API-like connection (``cursor().execute(sql)``, ``description``, ``fetchall``) that
  takes rendered DuckDB SQL, transpiles it (``pipeline.engines.sql.transpile``) and returns rows
  shaped like DuckDB's (UTC-aware datetimes), so ``pipeline.detect`` runs unchanged.

Session settings (peers.md 2.4): session time zone UTC, UI off, partition column type inference
off. ``master`` is ``local[N]``, a cluster URL (``spark://``, ``yarn``, ``k8s://``) or a Spark
Connect URL (``sc://``, e.g. Databricks).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa

from pipeline import schemas
from pipeline.engines import EngineUnavailable
from pipeline.lake import Lake

DEFAULT_MASTER = "local[2]"
SESSION_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    "spark.sql.parquet.enableVectorizedReader": "true",
}
LOCAL_CONF: dict[str, str] = {  # small local runs: few shuffle partitions, no stray driver bind problems
    "spark.sql.shuffle.partitions": "4",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
    "spark.sql.adaptive.enabled": "true",
}
LAKE_URI_ENV = "TOKENHUNT_SPARK_LAKE_URI"


class SparkUnavailable(EngineUnavailable):
    """pyspark or Java is missing: the message says what to install."""


def _spark_type(logical: str) -> Any:
    from pyspark.sql import types as T

    return {
        "string": T.StringType(),
        "json": T.StringType(),
        "int64": T.LongType(),
        "float64": T.DoubleType(),
        "bool": T.BooleanType(),
        "timestamp": T.TimestampType(),
        "list<string>": T.ArrayType(T.StringType()),
    }[logical]


def spark_schema(table: str, derived: bool = False) -> Any:
    """StructType of the stored (or, with ``derived``, all) columns of ``table``; partition column a string."""
    from pyspark.sql import types as T

    spec = schemas.table(table)
    cols = spec.columns if derived else spec.stored_columns
    return T.StructType([T.StructField(c.name, _spark_type(c.type), True) for c in cols])


def session(master: str | None = None, app_name: str = "tokenhunt", conf: dict[str, str] | None = None) -> Any:
    """A SparkSession with the settings above (an active one with the same settings is reused)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SparkUnavailable("pyspark is not installed: pip install 'tokenhunt[spark]' (needs Java 17)") from exc
    master = master or DEFAULT_MASTER
    builder = SparkSession.builder.appName(app_name)
    if master.startswith("sc://"):
        builder = builder.remote(master)
        settings = dict(SESSION_CONF)
        settings.pop("spark.ui.enabled")  # static: set by the cluster, not by a Connect client
    else:
        builder = builder.master(master)
        settings = {**SESSION_CONF, **(LOCAL_CONF if master.startswith("local") else {})}
    for key, value in {**settings, **(conf or {})}.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - Java missing, bad master URL, ...
        raise SparkUnavailable(f"cannot start Spark (master {master}): {str(exc).splitlines()[0][:300]}") from None
    # Runtime settings win even when getOrCreate returned a session someone else built.
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
    if master.startswith("local"):
        spark.sparkContext.setLogLevel("ERROR")
    return spark


def _file_uri(path: Path, lake: Lake, lake_uri: str | None) -> str:
    """Where Spark reads ``path``: rebased on ``lake_uri`` (s3://, abfss://, dbfs:/) when given."""
    if lake_uri:
        return lake_uri.rstrip("/") + "/" + path.relative_to(lake.root).as_posix()
    return "file://" + path.resolve().as_posix()  # not as_uri(): Spark would not decode %3D in event_date=


@dataclass
class SparkConnection:
    """The lake's views on a SparkSession, with a DuckDB-like cursor interface for the runner."""

    spark: Any
    lake: Lake | None
    engine_name = "spark"  # class attribute: lets callers tell engines apart without importing pyspark
    owns_session: bool = False
    views: list[str] = field(default_factory=list)
    _cache: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------------ binding
    def bind(self, min_date: str | None = None, lake_uri: str | None = None, cache_tokens: bool = True) -> list[str]:
        """Create one temp view per lake table, plus ``tokens``. Returns the view names."""
        from pipeline.engines.duckdb import DATE_FILTERED_TABLES
        from pipeline.engines.sql import tokens_view

        if self.lake is None:
            raise ValueError("no lake to bind (use bind_arrow for in-memory tables)")
        names: list[str] = []
        for table, spec in schemas.all_tables().items():
            files = self.lake.table_files(table)
            if min_date and table in DATE_FILTERED_TABLES:
                files = [f for f in files if f.parent.name.split("=", 1)[1] >= min_date]
            struct = spark_schema(table)
            if files:
                base = _file_uri(self.lake.root / table, self.lake, lake_uri)
                df = (
                    self.spark.read.schema(struct)
                    .option("basePath", base)
                    .parquet(*[_file_uri(f, self.lake, lake_uri) for f in files])
                    .select(*spec.column_names)
                )
            else:
                df = self.spark.createDataFrame([], struct)
            view = "tokens_stored" if table == "tokens" else table
            df.createOrReplaceTempView(view)
            names.append(view)
        self.spark.sql(f"CREATE OR REPLACE TEMP VIEW tokens AS {tokens_view('spark')}")
        names.append("tokens")
        if cache_tokens:
            # One row per distinct token, read by most detections: compute the key-registry joins once.
            self.spark.sql("CACHE TABLE tokens")
        self.views = names
        return names

    def bind_arrow(self, tables: dict[str, pa.Table]) -> list[str]:
        """Temp views from Arrow tables named by logical table (fixtures, tests): no lake involved.

        The tables carry every column, derived ones included, so ``tokens`` is bound as given.
        """
        for name, table in tables.items():
            df = self.spark.createDataFrame(table.to_pylist(), spark_schema(name, derived=True))
            df.createOrReplaceTempView(name)
            self.views.append(name)
        return list(tables)

    # ------------------------------------------------------------------ querying
    def spark_sql(self, duckdb_sql: str) -> str:
        """``duckdb_sql`` transpiled to Spark (cached: the runner repeats texts across runs)."""
        from pipeline.engines.sql import transpile

        with self._lock:
            cached = self._cache.get(duckdb_sql)
        if cached is None:
            cached = transpile(duckdb_sql, "spark", pretty=False)
            with self._lock:
                self._cache[duckdb_sql] = cached
        return cached

    def query(self, sql: str, params: Mapping[str, Any] | None = None, dialect: str = "duckdb") -> pa.Table:
        """Run ``sql`` (DuckDB text, transpiled; or Spark text with dialect="spark") into Arrow.

        ``params`` bind DuckDB ``$name`` parameters (saved hunts): sqlglot writes them as Spark's
        ``:name`` markers, and Spark binds the values as typed literals, never pasted.
        """
        text = self.spark_sql(sql) if dialect == "duckdb" else sql
        df = self.spark.sql(text, args=dict(params)) if params else self.spark.sql(text)
        return df.toArrow()

    def cursor(self) -> "SparkCursor":
        return SparkCursor(self)

    def execute(self, sql: str, parameters: Mapping[str, Any] | None = None) -> "SparkCursor":
        return self.cursor().execute(sql, parameters)

    def close(self) -> None:
        """Drop the views; stop the session only when this connection started it."""
        try:
            if "tokens" in self.views:
                self.spark.sql("UNCACHE TABLE IF EXISTS tokens")  # while tokens_stored still exists
            for view in reversed(self.views):  # dependants (tokens) before what they read
                self.spark.catalog.dropTempView(view)
        finally:
            self.views = []
            if self.owns_session:
                self.spark.stop()


class SparkCursor:
    """The slice of DuckDB's cursor API that pipeline.detect uses: execute, description, fetchall."""

    def __init__(self, connection: SparkConnection) -> None:
        self.connection = connection
        self._table: pa.Table | None = None

    def execute(self, sql: str, parameters: Mapping[str, Any] | None = None) -> "SparkCursor":
        if parameters is not None and not isinstance(parameters, Mapping):
            raise ValueError("the Spark engine binds named parameters only ($name -> {name: value})")
        self._table = self.connection.query(sql, parameters)
        return self

    @property
    def description(self) -> list[tuple] | None:
        if self._table is None:
            return None
        return [(f.name, str(f.type), None, None, None, None, None) for f in self._table.schema]

    def fetchall(self) -> list[tuple]:
        if self._table is None:
            return []
        rows = self._table.to_pylist()
        names = self._table.schema.names
        return [tuple(r[n] for n in names) for r in rows]

    def fetchone(self) -> tuple | None:
        rows = self.fetchall()
        return rows[0] if rows else None

    def to_arrow_table(self) -> pa.Table:
        return self._table if self._table is not None else pa.table({})

    def close(self) -> None:
        self._table = None


def connect(
    lake: Lake | Path,
    *,
    min_date: str | None = None,
    spark_master: str | None = None,
    spark_lake_uri: str | None = None,
    spark_session: Any = None,
) -> SparkConnection:
    """A SparkConnection with the lake's views (the Spark twin of engines.duckdb.connect).

    ``spark_lake_uri`` (or $TOKENHUNT_SPARK_LAKE_URI): where the cluster sees the same lake when
    the driver reads it through a mount, e.g. ``--lake /dbfs/mnt/tokenhunt`` with
    ``dbfs:/mnt/tokenhunt``, or an s3:// prefix synced from the local lake. The committed file
    list always comes from the lake's manifest.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SparkUnavailable("pyspark is not installed: pip install 'tokenhunt[spark]' (needs Java 17)") from exc

    lake = lake if isinstance(lake, Lake) else Lake(Path(lake))
    active = spark_session or SparkSession.getActiveSession()
    spark = spark_session or session(spark_master)
    con = SparkConnection(spark=spark, lake=lake, owns_session=active is None)
    con.bind(min_date=min_date, lake_uri=spark_lake_uri or os.environ.get(LAKE_URI_ENV) or None)
    return con
