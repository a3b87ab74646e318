"""Running hunts: the locked DuckDB session over the lake, and queries streamed from it.

Layer 2 of the hunts' defence (see ``pipeline.hunts``): ``open_session`` is an in-memory database
whose lake tables are views over the committed Parquet files; file access is limited to the lake
directory, extensions cannot load, configuration is locked, so ``read_csv('/etc/passwd')`` fails.
``query`` runs a statement only after the read-only guard passed it, binds parameters as typed
values, and returns an Arrow record-batch reader so results stream instead of loading whole.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any, Mapping

import duckdb
import pyarrow as pa

from pipeline.hunts.catalog import Hunt
from pipeline.hunts.errors import HuntError, HuntRefused, HuntSQLError, reading_errors, scrub
from pipeline.hunts.guard import check_read_only
from pipeline.hunts.params import resolve_params
from pipeline.lake import Lake

BATCH_ROWS = 64 * 1024


def open_session(lake: Lake | Path, *, require_exists: bool = True) -> duckdb.DuckDBPyConnection:
    """The locked-down DuckDB session with one view per lake table (see module docstring)."""
    from pipeline.engines.duckdb import connect

    lake = lake if isinstance(lake, Lake) else Lake(Path(lake))
    if require_exists and not lake.root.is_dir():
        raise HuntError(f"no lake at {lake.root} (use --lake DIR, `lake` in tokenhunt.toml, or $TOKENHUNT_LAKE)")
    return connect(lake, read_only=True)


def _lake_root(con: duckdb.DuckDBPyConnection) -> str:
    """The lake directory the session may read (the engine lists it first in allowed_directories)."""
    try:
        row = con.execute("SELECT current_setting('allowed_directories')").fetchone()
    except duckdb.Error:  # pragma: no cover
        return "the lake directory"
    dirs = row[0] if row else None
    return str(dirs[0]) if isinstance(dirs, list) and dirs else "the lake directory"


def _refused_access(con: duckdb.DuckDBPyConnection, exc: duckdb.Error) -> HuntRefused:
    return HuntRefused(f"{scrub(str(exc))}\n(hunts read only files inside the lake: {_lake_root(con)})")


def _with_position(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None, exc: duckdb.Error) -> str:
    """DuckDB's message with its ``LINE n: ... ^^^`` position.

    Relations (``con.sql``) drop the position from bind errors; the DB-API path keeps it. The
    statement is already known to be a single read and it failed to bind, so binding it again
    through ``execute`` fails the same way, now with the position.
    """
    message = str(exc)
    if "\nLINE " in message:
        return scrub(message)
    cur = con.cursor()
    try:
        cur.execute(sql, dict(params) if params else None)
    except duckdb.Error as again:
        if "\nLINE " in str(again):
            message = str(again)
    finally:
        cur.close()  # closes this cursor only
    return scrub(message)


def query(
    con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None, *, batch_rows: int = BATCH_ROWS
) -> pa.RecordBatchReader:
    """Check ``sql`` is one read statement, bind ``params``, and stream the result as Arrow batches.

    Each query runs on its own cursor (same database, views and locked settings): DuckDB 2.0 lets a
    connection hold one open streaming result, and a preview or ``--limit`` stops reading early.
    """
    check_read_only(sql)
    try:
        relation = con.cursor().sql(sql, params=dict(params) if params else None)
        if relation is None:  # pragma: no cover - read statements always give a relation
            raise HuntRefused("the statement returned no result")
        return relation.to_arrow_reader(batch_rows)
    except duckdb.PermissionException as exc:
        raise _refused_access(con, exc) from None
    except duckdb.Error as exc:
        raise HuntSQLError(_with_position(con, sql, params, exc)) from None


def run_hunt(
    con: duckdb.DuckDBPyConnection, hunt: Hunt, given: Mapping[str, Any] | None = None, *, batch_rows: int = BATCH_ROWS
) -> pa.RecordBatchReader:
    """Run a saved hunt with its parameters resolved (defaults, declared types)."""
    values = resolve_params(hunt, given or {})
    try:
        return query(con, hunt.text, values, batch_rows=batch_rows)
    except HuntSQLError as exc:
        raise HuntSQLError(f"{hunt.path}: {exc}") from None


def fetch_all(reader: pa.RecordBatchReader) -> pa.Table:
    """The whole result (tests, small results); wraps DuckDB errors raised while reading."""
    with reading_errors():
        return reader.read_all()


def sql_from(query_text: str | None, file: Path | None, stdin: IO[str] | None = None) -> str:
    """The ad hoc SQL: the argument, ``--file``, or stdin (argument ``-`` or none with piped input)."""
    if query_text is not None and file is not None:
        raise HuntError("give the SQL as an argument or with --file, not both")
    if file is not None:
        try:
            return Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise HuntError(f"{file}: cannot read: {exc}") from None
    if query_text is not None and query_text != "-":
        return query_text
    stdin = stdin or sys.stdin
    if query_text is None and stdin.isatty():
        raise HuntError('no SQL: give it as an argument (tokenhunt hunt sql "SELECT ..."), with --file, or on stdin')
    return stdin.read()
