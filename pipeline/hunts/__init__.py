"""Read-only SQL hunts over the lake: ad hoc SQL, saved hunts (``queries/hunts/*.sql``), a shell.

Why a package of its own: hunts run analyst-written SQL, so everything here is about running *only
reads*. Three layers, each enough on its own for what it covers:

1. Statement classification (``guard.check_read_only``): DuckDB's own parser splits the text;
   exactly one read statement may run. DDL/DML, COPY, ATTACH, INSTALL/LOAD, SET/PRAGMA/CALL,
   EXPORT and PIVOT are refused before DuckDB executes anything.
2. The session (``session.open_session``): an in-memory database whose lake tables are views over
   the committed Parquet files; file access is limited to the lake directory, extensions cannot
   load, configuration is locked. DuckDB has no read-only-directory setting, so layer 1 is what
   refuses writes *into* the lake directory.
3. Parameters (``params``) are DuckDB prepared parameters (``$name``) bound as typed values, never
   pasted.

Where things live:

- ``errors``  error classes, exit codes, scrubbing of DuckDB messages
- ``guard``   the read-only statement check
- ``params``  parameter types, ``--param`` parsing, typed binding
- ``catalog`` saved hunt files: TOML header, strict loading, lookup by name
- ``session`` the locked session, ``query`` / ``run_hunt`` streaming Arrow batches, ad hoc SQL input
- ``output``  streaming csv/jsonl/parquet/markdown writers, terminal preview and count line
- ``shell``   the interactive REPL behind ``tokenhunt hunt shell``

Everything public is re-exported here, so ``from pipeline import hunts; hunts.query(...)`` works.
"""

from __future__ import annotations

from pipeline.hunts.catalog import (
    HEADER_KEYS,
    HUNTS_DIR,
    PARAM_KEYS,
    QUERIES_DIR,
    Hunt,
    get_hunt,
    load_hunt,
    load_hunts,
    split_header,
)
from pipeline.hunts.errors import (
    EXIT_OK,
    EXIT_SQL_ERROR,
    EXIT_USAGE,
    HuntError,
    HuntLoadError,
    HuntParamError,
    HuntRefused,
    HuntSQLError,
)
from pipeline.hunts.guard import check_read_only
from pipeline.hunts.output import (
    EXTENSION_FORMATS,
    FILE_FORMATS,
    FORMATS,
    PREVIEW_ROWS,
    ExportSummary,
    count_line,
    export,
    format_for,
    json_value,
    preview_table,
    read_markdown,
    text_value,
)
from pipeline.hunts.params import PARAM_TYPES, HuntParam, adhoc_params, convert_value, parse_param_args, resolve_params
from pipeline.hunts.session import BATCH_ROWS, fetch_all, open_session, query, run_hunt, sql_from
from pipeline.hunts.shell import SHELL_HELP, Shell, _ends_statement, run_shell  # noqa: F401 - tests use _ends_statement

__all__ = [
    "BATCH_ROWS",
    "EXIT_OK",
    "EXIT_SQL_ERROR",
    "EXIT_USAGE",
    "EXTENSION_FORMATS",
    "ExportSummary",
    "FILE_FORMATS",
    "FORMATS",
    "HEADER_KEYS",
    "HUNTS_DIR",
    "Hunt",
    "HuntError",
    "HuntLoadError",
    "HuntParam",
    "HuntParamError",
    "HuntRefused",
    "HuntSQLError",
    "PARAM_KEYS",
    "PARAM_TYPES",
    "PREVIEW_ROWS",
    "QUERIES_DIR",
    "SHELL_HELP",
    "Shell",
    "adhoc_params",
    "check_read_only",
    "convert_value",
    "count_line",
    "export",
    "fetch_all",
    "format_for",
    "get_hunt",
    "json_value",
    "load_hunt",
    "load_hunts",
    "open_session",
    "parse_param_args",
    "preview_table",
    "query",
    "read_markdown",
    "resolve_params",
    "run_hunt",
    "run_shell",
    "sql_from",
    "split_header",
    "text_value",
]
