"""DuckDB binding: every lake table as a view with its logical name.

Queries (detections, hunts, retention) say ``FROM signins``; this module makes that name a view
over the committed Parquet files of the table, typed from ``schemas/`` (so an empty table still has
its columns), with the partition column pinned to VARCHAR. The ``tokens`` view adds the columns
the key registry derives at read time (``pipeline.keys.tokens_view_sql``), so keys imported after
the tokens still give the right answers.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipeline import schemas
from pipeline.lake import Lake


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# Tables whose partitions hold events: `min_date` may skip their older partitions. `tokens` is not
# one of them: a token first seen before the window can still be used inside it (one row per token).
DATE_FILTERED_TABLES = ("signins", "mail_events", "token_events")


def stored_relation_sql(lake: Lake, table: str, min_date: str | None = None) -> str:
    """SELECT of the stored columns of ``table``, typed from its schema; empty when it has no files.

    ``min_date`` (YYYY-MM-DD) leaves out partitions of event tables older than that date, so a run
    restricted to a window reads only the files it needs.
    """
    spec = schemas.table(table)
    files = lake.table_files(table)
    if min_date and table in DATE_FILTERED_TABLES:
        files = [f for f in files if f.parent.name.split("=", 1)[1] >= min_date]
    cols = spec.stored_columns
    if not files:
        select = ", ".join(f"CAST(NULL AS {c.sql_type}) AS {c.name}" for c in cols)
        return f"SELECT {select} WHERE 1 = 0"
    file_list = "[" + ", ".join(_quote(str(f)) for f in files) + "]"
    select = ", ".join(f"CAST({c.name} AS {c.sql_type}) AS {c.name}" for c in cols)
    return (
        f"SELECT {select} FROM read_parquet({file_list}, hive_partitioning = true, "
        f"hive_types = {{'{spec.partition}': VARCHAR}}, union_by_name = true)"
    )


def bind_views(con: duckdb.DuckDBPyConnection, lake: Lake, min_date: str | None = None) -> list[str]:
    """Create one view per lake table on ``con``. Returns the view names.

    ``min_date``: event tables expose only partitions on or after that date (see DATE_FILTERED_TABLES).
    """
    names = []
    for name in schemas.all_tables():
        relation = "tokens_stored" if name == "tokens" else name
        con.execute(f"CREATE OR REPLACE VIEW {relation} AS {stored_relation_sql(lake, name, min_date)}")
        names.append(relation)
    try:
        from pipeline.keys import tokens_view_sql
    except ImportError:  # key registry not available: expose the stored columns only
        con.execute("CREATE OR REPLACE VIEW tokens AS SELECT * FROM tokens_stored")
    else:
        con.execute(f"CREATE OR REPLACE VIEW tokens AS {tokens_view_sql('tokens_stored', 'signing_keys')}")
    names.append("tokens")
    return names


def connect(
    lake: Lake | Path, *, read_only: bool = True, threads: int | None = None, min_date: str | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake's views.

    ``read_only`` locks the session down after the views exist: no file access outside the lake,
    no extensions, no ATTACH, configuration frozen. Views over Parquet cannot modify the lake, so a
    hunt can read everything and change nothing.

    Not covered by this lock (DuckDB 2.0 has no read-only directory setting): statements that
    write *inside* the lake directory (``COPY ... TO '<lake>/x'``, ``ATTACH '<lake>/x.db'``) and
    DDL on the in-memory catalog. Untrusted SQL must go through ``pipeline.hunts.query``, which
    admits only a single read statement.
    """
    lake = lake if isinstance(lake, Lake) else Lake(Path(lake))
    con = duckdb.connect(":memory:")
    con.execute("SET GLOBAL TimeZone = 'UTC'")  # GLOBAL: cursors (one per thread) inherit it
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    bind_views(con, lake, min_date)
    if read_only:
        root = str(lake.root)
        con.execute(f"SET allowed_directories = [{_quote(root + '/')}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET lock_configuration = true")
    return con
