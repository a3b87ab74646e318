"""Read-only SQL hunts over the lake: ad hoc SQL, saved hunts (``queries/hunts/*.sql``), a shell.

Why a module of its own: hunts run analyst-written SQL, so everything here is about running *only
reads*. Three layers, each enough on its own for what it covers:

1. Statement classification (``check_read_only``): DuckDB's own parser splits the text; exactly one
   statement of a read type (SELECT, WITH, VALUES, FROM-first, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN of
   one of those) may run. DDL/DML, COPY, ATTACH, INSTALL/LOAD, SET/PRAGMA/CALL, EXPORT, PIVOT
   statements (which create types) are refused before DuckDB executes anything.
2. The session (``pipeline.engines.duckdb.connect(read_only=True)``): an in-memory database whose
   lake tables are views over the committed Parquet files; file access is limited to the lake
   directory, extensions cannot load, configuration is locked. ``read_csv('/etc/passwd')`` fails.
   DuckDB has no read-only-directory setting, so layer 1 is what refuses writes *into* the lake
   directory (``COPY ... TO '<lake>/x'``, ``ATTACH '<lake>/x.db'``, ``EXPLAIN ANALYZE COPY``).
3. Parameters are DuckDB prepared parameters (``$name``) bound as typed values, never pasted.

A saved hunt is one SQL file whose leading ``-- `` comment lines are TOML (title, description,
``[params.<name>]`` with type, description and an optional default); the rest is one read statement
using ``$name`` parameters. The whole file text is executed (the header is SQL comments), so the
LINE numbers in DuckDB errors are the file's.

Results stream: DuckDB's Arrow record-batch reader feeds the csv/jsonl/parquet/markdown writers
batch by batch (parquet via pyarrow: the locked session itself cannot write files), keeping only
the first rows for the terminal preview and the count.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping, Sequence

import duckdb
import pyarrow as pa

from pipeline.lake import Lake

QUERIES_DIR = Path(__file__).resolve().parent.parent / "queries"
HUNTS_DIR = QUERIES_DIR / "hunts"

PARAM_TYPES = ("string", "int", "float", "timestamp", "date", "bool")
FORMATS = ("table", "csv", "jsonl", "parquet", "markdown")
FILE_FORMATS = ("csv", "jsonl", "parquet", "markdown")
EXTENSION_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".md": "markdown", ".markdown": "markdown"}
HEADER_KEYS = ("title", "description", "params", "tags", "references", "requires")
PARAM_KEYS = ("type", "description", "default")
BATCH_ROWS = 64 * 1024
PREVIEW_ROWS = 20

# Exit codes of the `tokenhunt hunt` commands.
EXIT_OK = 0
EXIT_SQL_ERROR = 1  # DuckDB rejected or failed the query
EXIT_USAGE = 2  # bad option, unknown hunt, bad parameter, malformed hunt file, refused statement

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_PARAM_ARG_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?=(.*)$", re.S)


# --------------------------------------------------------------------------- errors
class HuntError(Exception):
    """Base of every hunt error; ``str()`` is the message for the user (no traceback needed)."""

    exit_code = EXIT_USAGE


class HuntLoadError(HuntError):
    """Saved hunt files are malformed. ``problems`` lists every problem of every file."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in hunt files:\n" + "\n".join(f"  {p}" for p in problems))


class HuntParamError(HuntError):
    """A parameter is unknown, missing, or its value does not convert to the declared type."""


class HuntRefused(HuntError):
    """The SQL is not a single read statement (or reaches outside the lake)."""


class HuntSQLError(HuntError):
    """DuckDB rejected or failed the query; the message is DuckDB's, with its LINE/caret position."""

    exit_code = EXIT_SQL_ERROR


def _scrub(text: str) -> str:
    """Error text echoes the query: a raw bearer token pasted into SQL must not reach the terminal."""
    try:
        from pipeline.tokens import scrub_text
    except ImportError:  # pragma: no cover - tokens module is part of the package
        return text
    return scrub_text(text)


# --------------------------------------------------------------------------- saved hunts
@dataclass(frozen=True)
class HuntParam:
    """One declared parameter: type, description and default (``required`` when it has none)."""

    name: str
    type: str
    description: str
    default: Any = None
    required: bool = True


@dataclass(frozen=True)
class Hunt:
    """One saved hunt file."""

    name: str
    title: str
    description: str
    params: tuple[HuntParam, ...]
    text: str  # the whole file: header comments + SQL (what runs, so error LINE numbers match)
    body: str  # the SQL without the header
    path: Path
    tags: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()

    def param(self, name: str) -> HuntParam:
        for p in self.params:
            if p.name == name:
                return p
        raise HuntParamError(
            f"hunt {self.name}: unknown parameter {name!r}; parameters: {', '.join(p.name for p in self.params) or '(none)'}"
        )


def split_header(text: str) -> tuple[str, str]:
    """(TOML header, SQL body): the leading ``--`` comment lines (blank lines before them allowed)."""
    lines = text.splitlines()
    header: list[str] = []
    i = 0
    while i < len(lines) and (lines[i].startswith("--") or (not header and not lines[i].strip())):
        line = lines[i]
        if line.startswith("--"):
            header.append(line[3:] if line.startswith("-- ") else line[2:])
        i += 1
    return "\n".join(header), "\n".join(lines[i:]).strip()


_parser = threading.local()


def _statements(sql: str) -> list[duckdb.Statement]:
    """DuckDB's own split and classification of ``sql`` (parse only: nothing runs)."""
    con = getattr(_parser, "con", None)
    if con is None:  # one parsing connection per thread: connections are not shared across threads
        con = _parser.con = duckdb.connect(":memory:")
    try:
        return con.extract_statements(sql)
    except duckdb.Error as exc:
        raise HuntSQLError(_scrub(str(exc))) from None


def _check_header(meta: dict[str, Any]) -> list[str]:
    problems = [f"header: {key!r} is missing" for key in ("title", "description") if key not in meta]
    problems += [f"header: unknown key {k!r} (known: {', '.join(HEADER_KEYS)})" for k in sorted(set(meta) - set(HEADER_KEYS))]
    for key in ("title", "description"):
        if key in meta and (not isinstance(meta[key], str) or not meta[key].strip()):
            problems.append(f"header: {key} must be non-empty text")
    for key in ("tags", "references", "requires"):
        if key in meta and (not isinstance(meta[key], list) or not all(isinstance(v, str) for v in meta[key])):
            problems.append(f"header: {key} must be a list of strings")
    return problems


def _load_params(meta: dict[str, Any], problems: list[str]) -> tuple[HuntParam, ...]:
    raw = meta.get("params", {})
    if not isinstance(raw, dict):
        problems.append("header: [params] must be a table of [params.<name>] tables")
        return ()
    params: list[HuntParam] = []
    for name, spec in raw.items():
        if not _NAME_RE.match(name):
            problems.append(f"param {name!r}: name must be snake_case")
            continue
        if not isinstance(spec, dict):
            problems.append(f"param {name}: must be a [params.{name}] table with type, description, default")
            continue
        unknown = sorted(set(spec) - set(PARAM_KEYS))
        if unknown:
            problems.append(f"param {name}: unknown key(s) {', '.join(unknown)} (known: {', '.join(PARAM_KEYS)})")
        ptype = spec.get("type")
        if ptype not in PARAM_TYPES:
            problems.append(f"param {name}: type {ptype!r} is not one of {', '.join(PARAM_TYPES)}")
            continue
        if not isinstance(spec.get("description"), str) or not spec["description"].strip():
            problems.append(f"param {name}: description is missing")
        param = HuntParam(name, ptype, str(spec.get("description", "")), None, "default" not in spec)
        if "default" in spec:
            try:
                param = HuntParam(name, ptype, param.description, convert_value(param, spec["default"]), False)
            except HuntParamError as exc:
                problems.append(f"param {name}: default: {exc}")
        params.append(param)
    return tuple(params)


def load_hunt(path: Path) -> Hunt:
    """Parse and check one hunt file; every problem at once (``HuntLoadError``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HuntLoadError([f"{path}: cannot read: {exc}"]) from None
    header, body = split_header(text)
    problems: list[str] = []
    try:
        meta = tomllib.loads(header)
    except tomllib.TOMLDecodeError as exc:
        raise HuntLoadError([f"{path}: header is not valid TOML: {exc}"]) from None
    if not _NAME_RE.match(path.stem):
        problems.append(f"file name {path.stem!r} is not snake_case (it is the hunt's name)")
    problems += _check_header(meta)
    params = _load_params(meta, problems)
    if not body:
        problems.append("no SQL after the header")
    else:
        try:
            check_read_only(text)
            used = set().union(*(s.named_parameters for s in _statements(text)))
        except HuntError as exc:
            problems.append(f"SQL: {exc}")
        else:
            declared = {p.name for p in params}
            problems += [f"SQL uses ${n} but the header declares no [params.{n}]" for n in sorted(used - declared)]
            problems += [f"param {n} is declared but the SQL never uses ${n}" for n in sorted(declared - used)]
    if problems:
        raise HuntLoadError([f"{path}: {p}" for p in problems])
    return Hunt(
        name=path.stem,
        title=meta["title"].strip(),
        description=meta["description"].strip(),
        params=params,
        text=text,
        body=body,
        path=path,
        tags=tuple(meta.get("tags", ())),
        references=tuple(meta.get("references", ())),
        requires=tuple(meta.get("requires", ())),
    )


def load_hunts(directory: Path = HUNTS_DIR) -> dict[str, Hunt]:
    """Every saved hunt, by name; a malformed file fails the load with every problem listed."""
    directory = Path(directory)
    if not directory.is_dir():
        raise HuntLoadError([f"{directory}: no hunts directory"])
    hunts: dict[str, Hunt] = {}
    problems: list[str] = []
    for path in sorted(directory.glob("*.sql")):
        try:
            hunts[path.stem] = load_hunt(path)
        except HuntLoadError as exc:
            problems += exc.problems
    if problems:
        raise HuntLoadError(problems)
    return hunts


def get_hunt(name: str, directory: Path = HUNTS_DIR) -> Hunt:
    """One saved hunt by name (the file is loaded alone, so one broken sibling does not block it)."""
    directory = Path(directory)
    if not _NAME_RE.match(name) or not (directory / f"{name}.sql").is_file():
        known = sorted(p.stem for p in directory.glob("*.sql")) if directory.is_dir() else []
        raise HuntError(f"no saved hunt {name!r} in {directory}; hunts: {', '.join(known) or '(none)'}")
    return load_hunt(directory / f"{name}.sql")


# --------------------------------------------------------------------------- parameters
_TRUE = {"true", "t", "yes", "y", "1", "on"}
_FALSE = {"false", "f", "no", "n", "0", "off"}


def convert_value(param: HuntParam, value: Any) -> Any:
    """``value`` (command-line text or a TOML default) as the Python value bound for ``param.type``."""
    kind = param.type
    where = f"parameter {param.name} ({kind})"
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    if kind == "string":
        if not isinstance(value, str):
            raise HuntParamError(f"{where}: expected text, got {shown}")
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise HuntParamError(f"{where}: {shown} is not true/false (also yes/no, 1/0)")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        raise HuntParamError(f"{where}: {shown} is not a whole number")
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value)
            except ValueError:
                raise HuntParamError(f"{where}: {shown} is not a number") from None
        else:
            raise HuntParamError(f"{where}: {shown} is not a number")
        if not math.isfinite(out):
            raise HuntParamError(f"{where}: {shown} is not a finite number")
        return out
    if kind == "date":
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                pass
        raise HuntParamError(f"{where}: {shown} is not a date (YYYY-MM-DD)")
    if kind == "timestamp":
        out: datetime | None = None
        if isinstance(value, datetime):
            out = value
        elif isinstance(value, date):
            out = datetime.combine(value, time())
        elif isinstance(value, str):
            text = value.strip()
            try:
                out = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" and text else text)
            except ValueError:
                out = None
        if out is None:
            raise HuntParamError(f"{where}: {shown} is not an ISO 8601 time (2024-05-01, 2024-05-01T08:00:00Z)")
        # A time without zone is UTC: the lake stores UTC and the session runs in UTC.
        return out.replace(tzinfo=timezone.utc) if out.tzinfo is None else out.astimezone(timezone.utc)
    raise HuntParamError(f"{where}: unknown type")  # pragma: no cover - types are checked at load


def parse_param_args(items: Iterable[str]) -> dict[str, tuple[str | None, str]]:
    """``--param name=value`` / ``name:type=value`` arguments -> {name: (type or None, text)}."""
    out: dict[str, tuple[str | None, str]] = {}
    for item in items:
        m = _PARAM_ARG_RE.match(item)
        if not m:
            raise HuntParamError(f"--param {item!r}: expected name=value (or name:type=value)")
        name, ptype, value = m.group(1), m.group(2), m.group(3)
        if ptype is not None and ptype not in PARAM_TYPES:
            raise HuntParamError(f"--param {name}: type {ptype!r} is not one of {', '.join(PARAM_TYPES)}")
        if name in out:
            raise HuntParamError(f"--param {name} is given twice")
        out[name] = (ptype, value)
    return out


def resolve_params(hunt: Hunt, given: Mapping[str, Any]) -> dict[str, Any]:
    """Bound values of every declared parameter: given (converted to the declared type) or default.

    ``given`` values may be text, typed values, or ``(type, text)`` pairs from ``parse_param_args``
    (a type there must match the declaration).
    """
    values: dict[str, Any] = {}
    for name, raw in given.items():
        param = hunt.param(name)  # unknown name -> HuntParamError
        if isinstance(raw, tuple):
            ptype, raw = raw
            if ptype is not None and ptype != param.type:
                raise HuntParamError(f"hunt {hunt.name}: parameter {name} is declared {param.type}, not {ptype}")
        values[name] = convert_value(param, raw)
    for param in hunt.params:
        if param.name not in values:
            if param.required:
                raise HuntParamError(
                    f"hunt {hunt.name}: parameter {param.name} ({param.type}) is required: --param {param.name}=VALUE ({param.description})"
                )
            values[param.name] = param.default
    return values


def adhoc_params(given: Mapping[str, Any]) -> dict[str, Any]:
    """Values for ad hoc SQL: text unless a type is given (``name:int=5``), converted like saved ones."""
    out: dict[str, Any] = {}
    for name, raw in given.items():
        ptype, text = raw if isinstance(raw, tuple) else (None, raw)
        out[name] = convert_value(HuntParam(name, ptype or "string", ""), text) if isinstance(text, str) else text
    return out


# --------------------------------------------------------------------------- read-only enforcement
def _strip_leading(sql: str) -> str:
    """``sql`` without leading whitespace and comments (``--`` lines, ``/* */`` blocks)."""
    text = sql
    while True:
        text = text.lstrip()
        if text.startswith("--"):
            nl = text.find("\n")
            text = "" if nl < 0 else text[nl + 1 :]
        elif text.startswith("/*"):
            end = text.find("*/")
            text = "" if end < 0 else text[end + 2 :]
        else:
            return text


def _first_word(sql: str) -> str:
    text = _strip_leading(sql)
    m = re.match(r"[A-Za-z_]+|\(", text)
    return m.group(0).upper() if m else text[:1]


_OPTION = r"[A-Za-z_]+(?:\s+(?:'[A-Za-z_]+'|[A-Za-z_]+))?"
_EXPLAIN_OPTIONS_RE = re.compile(rf"\(\s*{_OPTION}(?:\s*,\s*{_OPTION})*\s*\)")


def _explained(sql: str) -> str | None:
    """The statement an EXPLAIN [ANALYZE] [(options)] wraps, or None when it cannot be found."""
    text = _strip_leading(sql)
    m = re.match(r"EXPLAIN\b", text, re.I)
    if not m:
        return None
    text = _strip_leading(text[m.end() :])
    m = re.match(r"ANALY[SZ]E\b", text, re.I)
    if m:
        text = _strip_leading(text[m.end() :])
    if text.startswith("("):
        # Options are words only (ANALYZE, FORMAT json, FORMAT 'json'): a quoted ")" cannot hide
        # the statement that really follows.
        m = _EXPLAIN_OPTIONS_RE.match(text)
        if not m:
            return None
        text = text[m.end() :]
    return text


def check_read_only(sql: str) -> str:
    """The kind (first keyword) of ``sql`` when it is exactly one read statement; HuntRefused otherwise.

    Uses DuckDB's own parser for the statement count and type, so what is checked is what would run.
    """
    statements = _statements(sql)
    if not statements:
        raise HuntRefused("no SQL statement to run")
    if len(statements) > 1:
        kinds = ", ".join(_first_word(s.query) for s in statements)
        raise HuntRefused(f"a hunt runs exactly one statement; found {len(statements)} ({kinds}). Remove the extra statements.")
    stmt = statements[0]
    kind = _first_word(stmt.query)
    stype = stmt.type.name
    if stype == "EXPLAIN":
        inner = _explained(stmt.query)
        if inner is None:
            raise HuntRefused("refused EXPLAIN: cannot tell which statement it explains")
        return f"EXPLAIN {check_read_only(inner)}"  # raises for EXPLAIN [ANALYZE] COPY/INSERT/...
    if stype != "SELECT":  # DuckDB's parser says what the statement is; only plain reads pass
        label = kind if kind.isalpha() else stype
        note = "" if label == stype else f" (DuckDB statement type {stype})"
        raise HuntRefused(
            f"refused {label} statement{note}: hunts are read-only. Only SELECT, WITH, VALUES, FROM, DESCRIBE, "
            "SHOW, SUMMARIZE and EXPLAIN of those run; DDL/DML, COPY, ATTACH, INSTALL/LOAD, SET/PRAGMA/CALL, "
            "EXPORT and PIVOT statements do not (write PIVOT inside a SELECT with an explicit IN list)."
        )
    return kind


# --------------------------------------------------------------------------- running
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
    return HuntRefused(f"{_scrub(str(exc))}\n(hunts read only files inside the lake: {_lake_root(con)})")


def _with_position(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None, exc: duckdb.Error) -> str:
    """DuckDB's message with its ``LINE n: ... ^^^`` position.

    Relations (``con.sql``) drop the position from bind errors; the DB-API path keeps it. The
    statement is already known to be a single read and it failed to bind, so binding it again
    through ``execute`` fails the same way, now with the position.
    """
    message = str(exc)
    if "\nLINE " in message:
        return _scrub(message)
    cur = con.cursor()
    try:
        cur.execute(sql, dict(params) if params else None)
    except duckdb.Error as again:
        if "\nLINE " in str(again):
            message = str(again)
    finally:
        cur.close()  # closes this cursor only
    return _scrub(message)


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
    try:
        return reader.read_all()
    except duckdb.PermissionException as exc:
        raise HuntRefused(_scrub(str(exc))) from None
    except (duckdb.Error, pa.ArrowException) as exc:
        raise HuntSQLError(_scrub(str(exc))) from None


# --------------------------------------------------------------------------- output
def format_for(out: Path | None, fmt: str | None) -> str:
    """The output format: explicit, else from the file extension, else the terminal table."""
    if fmt:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise HuntError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
        if fmt == "table" and out is not None:
            raise HuntError(f"--format table is for the terminal; write {out} as one of {', '.join(FILE_FORMATS)}")
        return fmt
    if out is not None:
        found = EXTENSION_FORMATS.get(out.suffix.lower())
        if not found:
            raise HuntError(f"cannot tell the format of {out} from its extension; give --format ({', '.join(FILE_FORMATS)})")
        return found
    return "table"


def _is_nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or pa.types.is_union(t)


def _needs_text(t: pa.DataType) -> bool:
    """Types pyarrow's CSV writer cannot write: written as JSON text instead."""
    return (
        _is_nested(t)
        or pa.types.is_interval(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_dictionary(t)
    )


def json_value(value: Any) -> Any:
    """A Python value (from Arrow) as JSON-able data: times ISO 8601, decimals exact, bytes base64."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 2**63 else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):  # Arrow map -> [(k, v)]
            return {str(k): json_value(v) for k, v in value}
        return [json_value(v) for v in value]
    return str(value)  # intervals (MonthDayNano), UUID, ...


def text_value(value: Any) -> str:
    """One cell as text for the terminal and markdown: JSON for nested values, ISO for times."""
    if value is None:
        return ""
    if isinstance(value, datetime) and value.utcoffset() is not None and not value.utcoffset():
        return value.replace(tzinfo=None).isoformat(sep=" ") + "Z"  # compact: every lake time is UTC
    v = json_value(value)
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _textual_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with the columns the CSV writer cannot handle turned into JSON text."""
    if not any(_needs_text(f.type) for f in batch.schema):
        return batch
    arrays = []
    fields = []
    for f, col in zip(batch.schema, batch.columns):
        if _needs_text(f.type):
            if pa.types.is_dictionary(f.type):
                col = col.cast(f.type.value_type)
                if not _needs_text(col.type):
                    arrays.append(col)
                    fields.append(pa.field(f.name, col.type))
                    continue
            values = [None if v is None else json.dumps(json_value(v), ensure_ascii=False) for v in col.to_pylist()]
            arrays.append(pa.array(values, pa.string()))
            fields.append(pa.field(f.name, pa.string()))
        else:
            arrays.append(col)
            fields.append(f)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _md_cell(value: Any) -> str:
    text = text_value(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "\\n").replace("\r", "\\r")


class _Writer:
    """Streams batches to one sink in one format."""

    def __init__(self, fmt: str, sink: IO[bytes], schema: pa.Schema) -> None:
        self.fmt = fmt
        self.sink = sink
        self.schema = schema
        self._csv = None
        self._parquet = None
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(sink, schema, compression="zstd")
        elif fmt == "markdown":
            names = [n.replace("|", "\\|") for n in schema.names]
            sink.write(("| " + " | ".join(names) + " |\n").encode("utf-8"))
            sink.write(("|" + "---|" * len(names) + "\n").encode("utf-8"))

    def write(self, batch: pa.RecordBatch) -> None:
        if self.fmt == "parquet":
            self._parquet.write_batch(batch)
        elif self.fmt == "csv":
            import pyarrow.csv as pcsv

            batch = _textual_batch(batch)
            if self._csv is None:
                self._csv = pcsv.CSVWriter(self.sink, batch.schema)
            self._csv.write_batch(batch)
        elif self.fmt == "jsonl":
            names = batch.schema.names
            lines = []
            for row in zip(*(c.to_pylist() for c in batch.columns)):
                lines.append(json.dumps({n: json_value(v) for n, v in zip(names, row)}, ensure_ascii=False))
            if lines:
                self.sink.write(("\n".join(lines) + "\n").encode("utf-8"))
        elif self.fmt == "markdown":
            out = io.StringIO()
            for row in zip(*(c.to_pylist() for c in batch.columns)):
                out.write("| " + " | ".join(_md_cell(v) for v in row) + " |\n")
            self.sink.write(out.getvalue().encode("utf-8"))
        else:  # pragma: no cover - checked by format_for
            raise HuntError(f"cannot write format {self.fmt}")

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        elif self.fmt == "csv" and self._csv is None:  # no rows: still write the header line
            import pyarrow.csv as pcsv

            empty = _textual_batch(pa.RecordBatch.from_pylist([], schema=self.schema))
            pcsv.write_csv(pa.Table.from_batches([empty], schema=empty.schema), self.sink)
        elif self._csv is not None:
            self._csv.close()
        self.sink.flush()


@dataclass
class ExportSummary:
    """What an export did: rows written (after --limit), whether the limit cut the result, the preview."""

    rows: int
    truncated: bool
    preview: pa.Table
    schema: pa.Schema
    out: Path | None = None
    format: str = "table"


def export(
    reader: pa.RecordBatchReader,
    fmt: str,
    sink: Path | IO[bytes] | None = None,
    *,
    limit: int | None = None,
    preview_rows: int = PREVIEW_ROWS,
) -> ExportSummary:
    """Stream ``reader`` into ``sink`` in ``fmt`` (table: no sink, count only), batch by batch.

    Memory stays bounded by one batch plus the preview, whatever the result size. A file sink is
    written to a temporary name and renamed when complete, so a failed query leaves no half file.
    """
    if limit is not None and limit < 0:
        raise HuntError("--limit must be >= 0")
    schema = reader.schema
    path = Path(sink) if isinstance(sink, (str, Path)) else None
    tmp: Path | None = None
    fh: IO[bytes] | None = None
    writer: _Writer | None = None
    if fmt != "table":
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.partial")
            fh = open(tmp, "wb")
        else:
            fh = sink if sink is not None else sys.stdout.buffer  # type: ignore[assignment]
        writer = _Writer(fmt, fh, schema)
    rows = 0
    truncated = False
    preview: list[pa.RecordBatch] = []
    kept = 0
    try:
        try:
            for batch in reader:
                if limit is not None and rows + batch.num_rows > limit:
                    batch = batch.slice(0, limit - rows)
                    truncated = True
                if batch.num_rows:
                    if kept < preview_rows:
                        piece = batch.slice(0, preview_rows - kept)
                        preview.append(piece)
                        kept += piece.num_rows
                    if writer is not None:
                        writer.write(batch)
                    rows += batch.num_rows
                if truncated or (limit is not None and rows >= limit):
                    truncated = truncated or _has_more(reader)
                    reader.close()  # stop the query: its cursor's streaming result is released
                    break
        except duckdb.PermissionException as exc:
            raise HuntRefused(_scrub(str(exc))) from None
        except (duckdb.Error, pa.ArrowException) as exc:
            raise HuntSQLError(_scrub(str(exc))) from None
        if writer is not None:
            writer.close()
    except BaseException:
        if path is not None and fh is not None:
            fh.close()
            tmp.unlink(missing_ok=True)  # type: ignore[union-attr]
        raise
    if path is not None and fh is not None:
        fh.close()
        tmp.replace(path)  # type: ignore[union-attr]
    return ExportSummary(rows, truncated, pa.Table.from_batches(preview, schema=schema), schema, path, fmt)


def _has_more(reader: pa.RecordBatchReader) -> bool:
    """Whether the stream holds another row (read one more batch; called only at the limit)."""
    try:
        for batch in reader:
            if batch.num_rows:
                return True
    except (duckdb.Error, pa.ArrowException):
        return False
    return False


_UNESCAPE = {"n": "\n", "r": "\r"}


def read_markdown(text: str) -> list[dict[str, str]]:
    """Parse a markdown table written by ``export`` back to rows of cell text (the round trip)."""
    lines = [ln for ln in text.split("\n") if ln.startswith("|")]
    if len(lines) < 2:
        return []

    def cells(line: str) -> list[str]:
        out, cur, i = [], [], 1
        body = line.rstrip()
        while i < len(body):
            ch = body[i]
            if ch == "\\" and i + 1 < len(body):
                cur.append(_UNESCAPE.get(body[i + 1], body[i + 1]))
                i += 2
                continue
            if ch == "|":
                cell = "".join(cur)
                out.append(cell[1:-1] if cell.startswith(" ") and cell.endswith(" ") and len(cell) >= 2 else cell.strip())
                cur = []
            else:
                cur.append(ch)
            i += 1
        return out

    names = cells(lines[0])
    return [dict(zip(names, cells(line))) for line in lines[2:]]


def preview_table(summary: ExportSummary, title: str | None = None) -> Any:
    """A rich Table of the preview rows (imported lazily: tests and library callers need no rich)."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for name in summary.schema.names:
        table.add_column(name, overflow="fold")
    for row in zip(*(c.to_pylist() for c in summary.preview.columns)):
        table.add_row(*(_escape_markup(text_value(v)) if v is not None else "[dim]NULL[/dim]" for v in row))
    return table


def _escape_markup(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def count_line(summary: ExportSummary) -> str:
    """``12 rows`` / ``first 20 of 12,345 rows shown`` / ``... (stopped at --limit)``, plus the file."""
    shown = summary.preview.num_rows
    noun = "row" if summary.rows == 1 else "rows"
    text = f"{summary.rows:,} {noun}"
    if summary.format == "table" and 0 < shown < summary.rows:
        text = f"first {shown:,} of {text} shown"
    if summary.truncated:
        text += " (stopped at --limit; more rows match)"
    if summary.out is not None:
        text += f" written to {summary.out} ({summary.format})"
    return text


# --------------------------------------------------------------------------- shell
SHELL_HELP = """\
Type SQL ending with ';' (the lake tables are views: SELECT * FROM signins LIMIT 5;).
Read-only: one SELECT/WITH/VALUES/FROM/DESCRIBE/SHOW/SUMMARIZE/EXPLAIN statement at a time.
  .tables              list the views
  .schema TABLE        columns of a view
  .hunts               list saved hunts
  .run NAME [k=v ...]  run a saved hunt with parameters
  .maxrows N           rows shown per result (now {maxrows})
  .help                this text
  .quit / .exit / Ctrl-D
"""


@dataclass
class Shell:
    """A read-only SQL REPL over the lake views: every statement goes through ``query``.

    I/O is injected (``read_line`` returns None at end of input), so tests drive it with a list of
    lines; ``tokenhunt hunt shell`` passes ``input`` (with readline history) and a rich console.
    """

    con: duckdb.DuckDBPyConnection
    print: Callable[[Any], None]
    error: Callable[[str], None]
    hunts_dir: Path = HUNTS_DIR
    maxrows: int = PREVIEW_ROWS
    buffer: list[str] = field(default_factory=list)

    def loop(self, read_line: Callable[[str], str | None]) -> None:
        while True:
            line = read_line("tokenhunt> " if not self.buffer else "      ...> ")
            if line is None:
                if self.buffer:
                    self.execute("\n".join(self.buffer))
                return
            if not self.feed(line):
                return

    def feed(self, line: str) -> bool:
        """Take one input line; run what is complete. False when the user asked to quit."""
        if not self.buffer and line.strip().startswith("."):
            return self.dot(line.strip())
        self.buffer.append(line)
        text = "\n".join(self.buffer)
        if _ends_statement(text):
            self.buffer = []
            if _strip_leading(text).strip(" ;\n\t"):
                self.execute(text)
        return True

    def execute(self, sql: str, hunt: Hunt | None = None, given: Mapping[str, Any] | None = None, *, show_all: bool = False) -> None:
        try:
            reader = run_hunt(self.con, hunt, given) if hunt else query(self.con, sql)
            summary = export(reader, "table", preview_rows=10_000 if show_all else self.maxrows)
        except HuntError as exc:
            self.error(str(exc))
            return
        if summary.preview.num_rows:
            self.print(preview_table(summary))
        self.print(count_line(summary))

    def dot(self, command: str) -> bool:
        parts = command.split()
        name, args = parts[0].lower(), parts[1:]
        try:
            if name in (".quit", ".exit", ".q"):
                return False
            if name == ".help":
                self.print(SHELL_HELP.format(maxrows=self.maxrows))
            elif name == ".tables":
                self.execute(
                    "SELECT view_name AS name FROM duckdb_views() WHERE NOT internal AND view_name <> 'tokens_stored' ORDER BY 1",
                    show_all=True,
                )
            elif name == ".schema":
                if len(args) != 1 or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args[0]):
                    raise HuntError(".schema takes one view name, e.g. .schema signins")
                self.execute(f"DESCRIBE {args[0]}", show_all=True)
            elif name == ".maxrows":
                if len(args) != 1 or not args[0].isdigit():
                    raise HuntError(".maxrows takes a number of rows")
                self.maxrows = int(args[0])
            elif name == ".hunts":
                for hunt in load_hunts(self.hunts_dir).values():
                    self.print(f"{hunt.name}: {hunt.title}")
            elif name == ".run":
                if not args:
                    raise HuntError(".run NAME [key=value ...]")
                self.execute("", get_hunt(args[0], self.hunts_dir), parse_param_args(args[1:]))
            else:
                raise HuntError(f"unknown command {name}; .help lists them")
        except HuntError as exc:
            self.error(str(exc))
        return True


def _ends_statement(text: str) -> bool:
    """Whether ``text`` ends with a ``;`` outside quotes and comments (the statement is complete)."""
    in_single = in_double = in_line = in_block = False
    last = ""
    i = 0
    while i < len(text):
        ch = text[i]
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if in_line:
            in_line = ch != "\n"
        elif in_block:
            if ch == "*" and nxt == "/":
                in_block = False
                i += 1
        elif in_single:
            in_single = ch != "'"
        elif in_double:
            in_double = ch != '"'
        elif ch == "-" and nxt == "-":
            in_line = True
            i += 1
        elif ch == "/" and nxt == "*":
            in_block = True
            i += 1
        elif ch == "'":
            in_single = True
        elif ch == '"':
            in_double = True
        if not (in_line or in_block or in_single or in_double) and not ch.isspace() and ch not in "-/*":
            last = ch
        i += 1
    return last == ";" and not (in_single or in_double or in_block)


def run_shell(lake: Lake | Path, *, hunts_dir: Path = HUNTS_DIR, console: Any = None, err_console: Any = None) -> None:
    """The interactive session behind ``tokenhunt hunt shell`` (readline history when available)."""
    from rich.console import Console

    console = console or Console()
    err_console = err_console or Console(stderr=True)
    con = open_session(lake)
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:  # pragma: no cover - not on every platform
            pass
        root = lake.root if isinstance(lake, Lake) else Path(lake).resolve()
        console.print(f"tokenhunt hunt shell over {root} (read-only). .help for commands, .quit to leave.", highlight=False)

    def read_line(prompt: str) -> str | None:
        if interactive:
            try:
                return input(prompt)
            except EOFError:
                console.print()
                return None
            except KeyboardInterrupt:
                console.print("^C")
                shell.buffer = []
                return ""
        line = sys.stdin.readline()
        return None if line == "" else line.rstrip("\n")

    from rich.markup import escape

    def show_error(message: str) -> None:
        err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)

    shell = Shell(con, console.print, show_error, hunts_dir)
    shell.loop(read_line)


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


__all__: Sequence[str] = (
    "Hunt",
    "HuntParam",
    "HuntError",
    "HuntLoadError",
    "HuntParamError",
    "HuntRefused",
    "HuntSQLError",
    "Shell",
    "check_read_only",
    "export",
    "format_for",
    "get_hunt",
    "load_hunt",
    "load_hunts",
    "open_session",
    "parse_param_args",
    "query",
    "read_markdown",
    "resolve_params",
    "run_hunt",
    "run_shell",
    "sql_from",
)
