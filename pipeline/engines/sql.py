"""Portable SQL: one DuckDB text per detection or hunt, transpiled with sqlglot, linted, and DDL.

Why: a large tenant already runs Spark or Trino/Athena over Parquet; the detections must run there
without a second copy of their logic. sqlglot carries most DuckDB constructs over faithfully, but a
known set breaks or silently changes meaning (docs: peers.md section 2). So:

* ``lint_sql`` / ``lint_file`` reject every construct outside the documented portable subset (an
  AST and token walk returning every violation with its file and line), and ``make test`` runs it;
* ``transpile`` parses the DuckDB text, types it against ``schemas/`` (sqlglot ``qualify`` +
  ``annotate_types``), rewrites the few things whose *output format* differs between engines
  (``json_object`` evidence: key order, NULL members, timestamp text) and generates the target
  dialect with ``unsupported_level=RAISE``;
* ``ddl`` prints external-table DDL for Trino/Athena over the hive layout of the lake.

Parameters (``{{ name }}``) are rendered as SQL literals before any of this, with the runner's own
renderer (``pipeline.detect.sql_literal``), so linting sees the regexes that actually run.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, OptimizeError, ParseError, SqlglotError, TokenError
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify

from pipeline import schemas
from pipeline.queryfile import split_header

REPO = Path(__file__).resolve().parents[2]
QUERIES_DIR = REPO / "queries"
DETECTIONS_DIR = QUERIES_DIR / "detections"
HUNTS_DIR = QUERIES_DIR / "hunts"
GENERATED_DIR = QUERIES_DIR / "generated"

SOURCE_DIALECT = "duckdb"
DIALECTS = ("spark", "trino", "athena")
GENERATED_DIALECTS = ("spark", "trino")  # committed under queries/generated/<dialect>/<id>.sql
DDL_DIALECTS = ("trino", "athena")

_PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# Built-in parameter values used when a file is linted or transpiled on its own (the runner passes
# the real ones). The window is unbounded, as for `tokenhunt detect` without --since/--until.
BUILTIN_DEFAULTS: dict[str, Any] = {
    "consumer_tenant": "9188040d-6c67-4c5b-b112-36a304b66dad",
    "partner_tenants": [],
    "window_start": datetime(1970, 1, 1, tzinfo=timezone.utc),
    "window_end": datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
}


class TranspileError(ValueError):
    """The DuckDB text cannot be carried to the target dialect faithfully (message says why)."""


# --------------------------------------------------------------------------- query files
@dataclass
class QueryFile:
    """A detection or hunt file: TOML header in ``-- `` lines, then one SELECT."""

    path: Path
    kind: str  # "detection" or "hunt"
    body: str
    body_line: int  # 1-based line of the file where the SQL body starts
    meta: dict[str, Any] = field(default_factory=dict)
    header_error: str | None = None

    @property
    def id(self) -> str:
        return str(self.meta.get("id") or self.meta.get("name") or self.path.stem)

    @property
    def params(self) -> dict[str, Any]:
        """``{{ name }}`` defaults (detections). Saved hunts declare ``[params.<name>]`` tables for
        ``$name`` prepared parameters instead; those are bound by the engine, not rendered here."""
        params = self.meta.get("params", {})
        return {k: v for k, v in params.items() if not isinstance(v, dict)} if isinstance(params, dict) else {}

    def rendered(self, overrides: Mapping[str, Any] | None = None) -> str:
        """The body with every placeholder rendered (file defaults, built-ins, then overrides)."""
        return render_placeholders(self.body, {**self.params, **(overrides or {})})


def read_query_file(path: Path, kind: str | None = None) -> QueryFile:
    """Split a query file into header and body (tolerant: lint reports header problems, not us)."""
    path = Path(path)
    header, body, body_line = split_header(path.read_text(encoding="utf-8"))
    if kind is None:
        kind = "hunt" if path.parent.name == "hunts" else "detection"
    meta: dict[str, Any] = {}
    problem = None
    try:
        meta = tomllib.loads(header) if header else {}
    except tomllib.TOMLDecodeError as exc:
        problem = f"header is not valid TOML: {exc}"
    return QueryFile(path=path, kind=kind, body=body, body_line=body_line, meta=meta, header_error=problem)


def render_placeholders(sql: str, params: Mapping[str, Any]) -> str:
    """``{{ name }}`` -> SQL literal, via the runner's renderer (one quoting rule everywhere).

    A name neither in ``params`` nor built in renders as ``NULL`` here: the runner rejects it
    anyway; lint and transpile only need parseable SQL.
    """
    from pipeline.detect import sql_literal

    values = {**BUILTIN_DEFAULTS, **params}
    return _PLACEHOLDER_RE.sub(lambda m: sql_literal(values.get(m.group(1))), sql)


def shipped_files(kinds: Iterable[str] = ("detection", "hunt")) -> list[Path]:
    """Every shipped detection and saved hunt file."""
    out: list[Path] = []
    if "detection" in kinds:
        out += sorted(DETECTIONS_DIR.glob("*.sql"))
    if "hunt" in kinds:
        out += sorted(HUNTS_DIR.glob("*.sql"))
    return out


# --------------------------------------------------------------------------- schema for typing
def sqlglot_schema() -> dict[str, dict[str, str]]:
    """Logical tables (all columns, derived included) plus ``tokens_stored`` for the tokens view."""
    out = {t.name: {c.name: c.sql_type for c in t.columns} for t in schemas.all_tables().values()}
    tokens = schemas.table("tokens")
    out["tokens_stored"] = {c.name: c.sql_type for c in tokens.stored_columns}
    return out


def _typed(tree: exp.Expression) -> exp.Expression:
    """A qualified, type-annotated copy of ``tree`` (raises OptimizeError on unknown columns)."""
    schema = sqlglot_schema()
    q = qualify(tree.copy(), schema=schema, dialect=SOURCE_DIALECT, identify=False, validate_qualify_columns=True)
    return annotate_types(q, schema=schema, dialect=SOURCE_DIALECT)


_TEXT_TYPES = (exp.DataType.Type.VARCHAR, exp.DataType.Type.TEXT, exp.DataType.Type.CHAR, exp.DataType.Type.NVARCHAR)
_TZ_TYPES = (exp.DataType.Type.TIMESTAMPTZ, exp.DataType.Type.TIMESTAMPLTZ)
_NAIVE_TS_TYPES = (
    exp.DataType.Type.TIMESTAMP,
    exp.DataType.Type.TIMESTAMP_S,
    exp.DataType.Type.TIMESTAMP_MS,
    exp.DataType.Type.TIMESTAMP_NS,
    exp.DataType.Type.DATETIME,
)


def _type_of(node: exp.Expression) -> exp.DataType | None:
    t = node.type
    return None if t is None or t.this == exp.DataType.Type.UNKNOWN else t


def _copy_types(original: exp.Expression, typed: exp.Expression) -> None:
    """Copy the types sqlglot inferred for json_object values and casts onto the original tree.

    Why not generate from the qualified tree: it expands stars and quotes every name, which makes
    the committed SQL hard to review. qualify never adds or removes these nodes, so they pair up
    in walk order; a mismatch (future sqlglot) raises instead of guessing.
    """
    for cls in (exp.JSONObject, exp.Cast, exp.DPipe, exp.GroupConcat):
        a, b = list(original.find_all(cls)), list(typed.find_all(cls))
        if len(a) != len(b):
            raise TranspileError(f"internal: typed tree has {len(b)} {cls.__name__} nodes, source {len(a)}")
        for x, y in zip(a, b):
            if cls is exp.JSONObject:
                if len(x.expressions) != len(y.expressions):
                    raise TranspileError("internal: json_object arity changed while typing")
                for kx, ky in zip(x.expressions, y.expressions):
                    if isinstance(kx, exp.JSONKeyValue) and isinstance(ky, exp.JSONKeyValue):
                        kx.expression.type = ky.expression.type
            elif cls is exp.Cast:
                x.this.type = y.this.type
            elif cls is exp.GroupConcat:
                if isinstance(x.this, exp.Order) and isinstance(x.this.this, exp.Distinct):
                    for vx, vy in zip(x.this.this.expressions, y.this.this.expressions):
                        vx.type = vy.type
            else:
                x.this.type, x.expression.type = y.this.type, y.expression.type


# --------------------------------------------------------------------------- per-dialect rewrites
# DuckDB renders a TIMESTAMPTZ (session time zone UTC) as text like `2026-11-15 10:00:00.12+00`:
# fraction only when non-zero, trailing zeros trimmed, `+00` suffix. Spark's CAST(ts AS STRING)
# gives the same text without the suffix (session time zone UTC).
def _spark_ts_text(value: exp.Expression, tz: bool) -> exp.Expression:
    text = exp.Cast(this=value, to=exp.DataType.build("TEXT"))
    return exp.Anonymous(this="CONCAT", expressions=[text, exp.Literal.string("+00")]) if tz else text


def _trino_ts_text(value: exp.Expression, tz: bool) -> exp.Expression:
    formatted = exp.Anonymous(this="format_datetime", expressions=[value, exp.Literal.string("yyyy-MM-dd HH:mm:ss.SSSSSS")])
    trimmed = exp.Anonymous(
        this="regexp_replace", expressions=[formatted, exp.Literal.string(r"(\.\d*?[1-9])0+$|\.0+$"), exp.Literal.string("$1")]
    )
    return exp.DPipe(this=trimmed, expression=exp.Literal.string("+00"), safe=False) if tz else trimmed


def _ts_kind(node: exp.Expression) -> bool | None:
    """True for a TIMESTAMPTZ value, False for a naive timestamp, None for anything else."""
    t = _type_of(node)
    if t is None:
        return None
    if t.this in _TZ_TYPES:
        return True
    if t.this in _NAIVE_TS_TYPES:
        return False
    return None


def _rewrite_json_objects(tree: exp.Expression, dialect: str) -> None:
    """``json_object(k, v, ...)`` -> the target's JSON text with DuckDB's exact output.

    Spark has no JSON_OBJECT: TO_JSON(NAMED_STRUCT(...)) keeps key order; ``ignoreNullFields``
    false keeps NULL members (DuckDB writes ``"k":null``); timestamps are pre-rendered as DuckDB
    text. A nested json_object stays a struct so it nests as an object, not as quoted text.
    """
    ts_text = _spark_ts_text if dialect == "spark" else _trino_ts_text
    objects = list(tree.find_all(exp.JSONObject))
    nested_ids = {id(n) for n in objects if isinstance(n.parent, exp.JSONKeyValue)}  # before any rewrite moves them
    for node in objects:
        args: list[exp.Expression] = []
        for kv in node.expressions:
            if not isinstance(kv, exp.JSONKeyValue) or not isinstance(kv.this, exp.Literal) or not kv.this.is_string:
                raise TranspileError(f"json_object keys must be string literals: {kv.sql(SOURCE_DIALECT)[:80]}")
            value = kv.expression
            if not isinstance(value, exp.JSONObject):
                if _type_of(value) is None and not isinstance(value, exp.Null):
                    raise TranspileError(
                        f"json_object value for key {kv.this.name!r} has no inferable type ({value.sql(SOURCE_DIALECT)[:80]}); "
                        "CAST it so every engine renders it alike"
                    )
                kind = _ts_kind(value)
                if kind is not None:
                    value = ts_text(value.copy(), kind)
                    kv.set("expression", value)
            args += [kv.this, kv.expression]
        nested = id(node) in nested_ids
        if dialect == "spark":
            struct = exp.Anonymous(this="NAMED_STRUCT", expressions=args)
            options = exp.Anonymous(
                this="MAP", expressions=[exp.Literal.string("ignoreNullFields"), exp.Literal.string("false")]
            )
            node.replace(struct if nested else exp.Anonymous(this="TO_JSON", expressions=[struct, options]))
        else:
            node.set("null_handling", None if nested else exp.var("NULL ON NULL"))


def _rewrite_timestamp_casts(tree: exp.Expression, dialect: str) -> None:
    """CAST(<timestamptz> AS VARCHAR) -> DuckDB's text in the target (see _spark_ts_text)."""
    ts_text = _spark_ts_text if dialect == "spark" else _trino_ts_text
    for cast in list(tree.find_all(exp.Cast)):
        if cast.to.this in _TEXT_TYPES:
            kind = _ts_kind(cast.this)
            if kind is not None:
                cast.replace(ts_text(cast.this.copy(), kind))


def _rewrite_distinct_string_aggs(tree: exp.Expression, dialect: str) -> None:
    """``string_agg(DISTINCT x, sep ORDER BY x)`` -> join of the sorted distinct set.

    Why: Spark 4.3 fails (ClassCastException) on LISTAGG(DISTINCT ..) WITHIN GROUP next to another
    DISTINCT aggregate, and Trino's LISTAGG has no DISTINCT. The set form keeps DuckDB's meaning:
    NULLs skipped, byte order, NULL (not '') when nothing is left.
    """
    for node in list(tree.find_all(exp.GroupConcat)):
        order = node.this
        if not (isinstance(order, exp.Order) and isinstance(order.this, exp.Distinct)):
            continue
        values = order.this.expressions
        keys = order.expressions
        if len(values) != 1 or len(keys) != 1 or keys[0].this != values[0]:
            raise TranspileError("string_agg(DISTINCT x ...) must be ordered by x itself (ORDER BY x)")
        value = values[0]
        t = _type_of(value)
        if t is None or t.this not in _TEXT_TYPES:
            raise TranspileError(f"string_agg(DISTINCT {value.sql(SOURCE_DIALECT)[:60]} ...) needs text: CAST it AS VARCHAR")
        sep = node.args.get("separator") or exp.Literal.string(",")
        if dialect == "spark":
            collected: exp.Expression = exp.Anonymous(this="COLLECT_SET", expressions=[value.copy()])
        else:
            collected = exp.Filter(
                this=exp.ArrayAgg(this=exp.Distinct(expressions=[value.copy()])),
                expression=exp.Where(this=exp.not_(exp.Is(this=value.copy(), expression=exp.Null()))),
            )
        ordered: exp.Expression = exp.Anonymous(this="ARRAY_SORT", expressions=[collected])
        if keys[0].args.get("desc"):
            ordered = exp.Anonymous(this="REVERSE", expressions=[ordered])
        joined = exp.Anonymous(this="ARRAY_JOIN", expressions=[ordered, sep.copy()])
        if dialect == "spark":  # an empty set joins to '': DuckDB gives NULL
            size = exp.Anonymous(this="SIZE", expressions=[exp.Anonymous(this="COLLECT_SET", expressions=[value.copy()])])
            joined = exp.Case(ifs=[exp.If(this=exp.GT(this=size, expression=exp.Literal.number(0)), true=joined)])
        joined.type = exp.DataType.build("VARCHAR")
        node.replace(joined)


# DuckDB functions sqlglot passes through verbatim, with their name in each target (same meaning).
TRANSLATED_FUNCTIONS: dict[str, dict[str, str]] = {
    "error": {"spark": "RAISE_ERROR", "trino": "fail", "athena": "fail"},  # raise with a message
}


def _rewrite_functions(tree: exp.Expression, dialect: str) -> None:
    for node in list(tree.find_all(exp.Anonymous)):
        names = TRANSLATED_FUNCTIONS.get(str(node.this).lower())
        if names:
            node.set("this", names[dialect])


def _prepare(tree: exp.Expression, dialect: str) -> exp.Expression:
    try:
        typed = _typed(tree)
    except (OptimizeError, SqlglotError) as exc:
        raise TranspileError(f"cannot resolve the query against schemas/: {str(exc).splitlines()[0][:300]}") from None
    _copy_types(tree, typed)
    _rewrite_functions(tree, dialect)
    _rewrite_distinct_string_aggs(tree, dialect)
    _rewrite_timestamp_casts(tree, dialect)
    _rewrite_json_objects(tree, dialect)
    return tree


def transpile(sql: str, dialect: str, *, pretty: bool = True, db: str | None = None) -> str:
    """Rendered DuckDB ``sql`` (one SELECT, logical table names) as ``dialect`` SQL.

    ``db``: qualify the logical tables with this schema/database (Trino/Athena catalogs).

    Raises TranspileError when the text does not parse, does not resolve against ``schemas/``, or
    uses a construct sqlglot cannot carry over (``unsupported_level=RAISE``).
    """
    if dialect not in DIALECTS:
        raise TranspileError(f"dialect {dialect!r} is not one of {', '.join(DIALECTS)}")
    try:
        statements = [s for s in sqlglot.parse(sql, read=SOURCE_DIALECT) if s is not None]
    except (ParseError, TokenError) as exc:
        raise TranspileError(f"does not parse as DuckDB SQL: {str(exc).splitlines()[0][:300]}") from None
    if len(statements) != 1:
        raise TranspileError(f"expected one statement, found {len(statements)}")
    tree = _prepare(statements[0], dialect)
    if db:
        ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
        for table in tree.find_all(exp.Table):
            if table.name and table.name not in ctes and not table.args.get("db"):
                table.set("db", exp.to_identifier(db))
    try:
        return tree.sql(dialect=dialect, pretty=pretty, unsupported_level=ErrorLevel.RAISE)
    except SqlglotError as exc:
        raise TranspileError(f"not portable to {dialect}: {str(exc).splitlines()[0][:300]}") from None


def transpile_file(path: Path, dialect: str, params: Mapping[str, Any] | None = None) -> str:
    """A detection or hunt file's SQL (defaults rendered) in ``dialect``."""
    return transpile(read_query_file(path).rendered(params), dialect)


def find_query(name: str) -> Path:
    """The detection or saved hunt called ``name`` (a file path also works)."""
    as_path = Path(name)
    if as_path.suffix == ".sql" and as_path.is_file():
        return as_path
    for directory in (DETECTIONS_DIR, HUNTS_DIR):
        candidate = directory / f"{name}.sql"
        if candidate.is_file():
            return candidate
    known = [p.stem for p in shipped_files()]
    raise FileNotFoundError(f"no detection or saved hunt named {name!r}; known: {', '.join(known)}")


def generated_text(path: Path, dialect: str) -> str:
    """The committed form of a detection's generated SQL (header + transpiled SQL)."""
    rel = path.resolve().relative_to(REPO) if path.resolve().is_relative_to(REPO) else path
    return (
        f"-- GENERATED by `tokenhunt sql transpile --all --write` (make generated) from {rel}; do not edit.\n"
        f"-- Dialect {dialect}, sqlglot {sqlglot.__version__}; parameters at their defaults, window unbounded.\n"
        "-- The runner transpiles the same text at run time with the configured parameters and window.\n"
        f"{transpile_file(path, dialect)}\n"
    )


def generated_path(path: Path, dialect: str) -> Path:
    return GENERATED_DIR / dialect / f"{Path(path).stem}.sql"


def write_generated(paths: Iterable[Path] | None = None, dialects: Iterable[str] = GENERATED_DIALECTS) -> list[Path]:
    """(Re)write queries/generated/<dialect>/<id>.sql; removes files of deleted detections."""
    sources = list(paths) if paths is not None else shipped_files(("detection",))
    written: list[Path] = []
    for dialect in dialects:
        out_dir = GENERATED_DIR / dialect
        out_dir.mkdir(parents=True, exist_ok=True)
        wanted = {generated_path(p, dialect) for p in sources}
        for path in sources:
            target = generated_path(path, dialect)
            text = generated_text(path, dialect)
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                target.write_text(text, encoding="utf-8")
                written.append(target)
        if paths is None:
            for stale in out_dir.glob("*.sql"):
                if stale not in wanted:
                    stale.unlink()
                    written.append(stale)
    return written


def stale_generated(dialects: Iterable[str] = GENERATED_DIALECTS) -> list[str]:
    """Generated files that differ from what the current detections, sqlglot and schemas give."""
    problems: list[str] = []
    sources = shipped_files(("detection",))
    for dialect in dialects:
        wanted = {generated_path(p, dialect) for p in sources}
        for path in sources:
            target = generated_path(path, dialect)
            try:
                text = generated_text(path, dialect)
            except TranspileError as exc:
                problems.append(f"{path}: cannot transpile to {dialect}: {exc}")
                continue
            if not target.is_file():
                problems.append(f"{target}: missing")
            elif target.read_text(encoding="utf-8") != text:
                problems.append(f"{target}: stale")
        problems += [f"{p}: no detection {p.stem}" for p in sorted((GENERATED_DIR / dialect).glob("*.sql")) if p not in wanted]
    return problems


# --------------------------------------------------------------------------- lint
@dataclass(frozen=True, order=True)
class Violation:
    """One construct outside the portable subset."""

    path: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.message}"


# rule -> what to write instead (the documented portable subset; README "Portable SQL").
RULES: dict[str, str] = {
    "parse": "write one DuckDB SELECT that sqlglot parses",
    "file-access": "no read_parquet/read_csv/'file' in SQL: reference logical tables, bound per engine",
    "list-has-any": "list_has_any/array_has_any/list_intersect/&& do not transpile: array_length(array_intersect(a, b)) > 0 or list_contains OR-chains",
    "len-on-list": "len()/length() on a list is string length elsewhere: array_length(list); length() only on text",
    "slice": "list slices do not transpile: pick elements by index (list[1])",
    "time-bucket": "time_bucket becomes DATE_BIN (unknown to Spark): date_trunc, or to_timestamp(floor(epoch(ts) / n) * n)",
    "json-operator": "::JSON and ->/->> change meaning: keep JSON as VARCHAR and use json_extract_string(col, '$.x')",
    "regexp-full-match": "regexp_full_match is DuckDB-only: regexp_matches(x, '^(?:p)$')",
    "epoch-ms": "epoch_ms(column) is read as ms -> timestamp elsewhere: epoch(ts) * 1000",
    "strptime-letters": "strptime with literal letters breaks Spark patterns: CAST(s AS TIMESTAMP) for ISO-8601, or normalize at ingest",
    "star-exclude": "* EXCLUDE/REPLACE are not Trino: list the columns",
    "group-by-all": "GROUP BY ALL is not Trino's: list the grouping columns",
    "struct-literal": "struct literals lose field names in Trino: use json_object(...) or separate columns",
    "lambda": "lambdas (list_filter/list_transform) transpile unreliably: use unnest + aggregates, or a join",
    "order-by": "detections return a set; the runner sorts findings: no query-level ORDER BY (LIMIT neither)",
    "regex-not-re2": "regexes must mean the same in RE2 (DuckDB, Trino) and Java (Spark)",
    "unordered-agg": "string_agg/listagg/list/array_agg order is engine-specific: add ORDER BY inside the aggregate (string_agg(DISTINCT x, ', ' ORDER BY x))",
    "json-object-key": "json_object keys must be string literals",
    "timestamp-concat": "|| with a timestamp casts implicitly and engines render it differently: CAST(ts AS VARCHAR) first",
    "untyped": "the query must resolve against schemas/ (known tables and columns) so it can be typed for every engine",
    "unknown-function": "a function sqlglot does not know is copied verbatim and fails elsewhere: use a portable one (or add it to TRANSLATED_FUNCTIONS)",
    "transpile": "every shipped query must transpile to every dialect with unsupported_level=RAISE",
}

_FILE_FUNCTIONS = {
    "read_parquet", "parquet_scan", "read_csv", "read_csv_auto", "read_json", "read_json_auto", "read_ndjson",
    "read_ndjson_auto", "read_json_objects", "read_text", "read_blob", "glob", "sniff_csv", "parquet_metadata",
    "parquet_schema", "read_xlsx", "delta_scan", "iceberg_scan", "sqlite_scan", "postgres_scan", "st_read",
}
_LIST_ANY_FUNCTIONS = {"list_has_any", "array_has_any", "list_intersect", "array_intersect_any", "list_has_all", "array_has_all"}
_SLICE_FUNCTIONS = {"list_slice", "array_slice"}
_LEN_FUNCTIONS = {"len"}
_LIST_AGGS = (exp.GroupConcat, exp.ArrayAgg)
_REGEX_NODES = (exp.RegexpLike, exp.RegexpILike, exp.RegexpExtract, exp.RegexpReplace, exp.RegexpSplit, exp.RegexpExtractAll)
# Constructs RE2 rejects or that Java's regex reads differently.
_REGEX_DENY = [
    (re.compile(r"\(\?<?[=!]"), "look-around (?= (?! (?<= (?<!"),
    (re.compile(r"\(\?>"), "atomic group (?>"),
    (re.compile(r"\\[1-9]|\\k<"), "back-reference"),
    (re.compile(r"(?<!\\)[*+?}]\+"), "possessive quantifier"),
    (re.compile(r"\(\?P?<[A-Za-z]"), "named group (RE2 and Java spell it differently)"),
    (re.compile(r"\[\[?:[a-z]+:\]"), "POSIX class [[:alpha:]] (Java reads it as a set)"),
    (re.compile(r"\\[ZGhHRXvV]"), "escape unknown to RE2 or different in Java"),
]


def _line_of(node: exp.Expression) -> int | None:
    """Smallest source line found on the node or its descendants (identifiers and literals carry it)."""
    lines = [n.meta["line"] for n in node.walk() if isinstance(n, exp.Expression) and "line" in n.meta]
    return min(lines) if lines else None


def _func_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    return node.sql_name().lower() if isinstance(node, exp.Func) else ""


def _regex_problem(pattern: str) -> str | None:
    for rx, what in _REGEX_DENY:
        if rx.search(pattern):
            return what
    try:
        duckdb.execute("SELECT regexp_matches('', ?)", [pattern]).fetchone()  # DuckDB's regexes are RE2
    except duckdb.Error as exc:
        return f"RE2 rejects it ({str(exc).splitlines()[0][:120]})"
    return None


class _Linter:
    def __init__(self, path: str, line_offset: int, kind: str) -> None:
        self.path = path
        self.offset = line_offset
        self.kind = kind
        self.found: list[Violation] = []

    def add(self, rule: str, where: int | exp.Expression | None, what: str) -> None:
        """Record a violation; ``where`` is a 1-based body line or the offending node (line found lazily)."""
        line = _line_of(where) if isinstance(where, exp.Expression) else where
        self.found.append(Violation(self.path, self.offset + (line or 1) - 1, rule, f"{what}: {RULES[rule]}"))

    def tokens(self, sql: str) -> None:
        toks = sqlglot.tokenize(sql, read=SOURCE_DIALECT)
        for i, tok in enumerate(toks):
            name = tok.token_type.name
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            if name in ("ARROW", "DARROW"):
                self.add("json-operator", tok.line, f"'{tok.text}' operator")
            elif name == "GROUP_BY" and nxt is not None and nxt.token_type.name == "ALL":
                self.add("group-by-all", tok.line, "GROUP BY ALL")

    def tree(self, tree: exp.Expression) -> None:
        for node in tree.walk():
            if not isinstance(node, exp.Expression):
                continue
            line = node  # the offending node; add() finds its line only when something is reported
            fname = "string_agg" if isinstance(node, exp.GroupConcat) else _func_name(node)
            if isinstance(node, exp.ReadParquet) or isinstance(node, (exp.ReadCSV,)) or fname in _FILE_FUNCTIONS:
                self.add("file-access", line, f"{fname or 'file function'}()")
            elif isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier) and (
                node.this.quoted and ("/" in node.name or "." in node.name or ":" in node.name)
            ):
                self.add("file-access", line, f"FROM {node.name!r}")
            elif isinstance(node, exp.Table) and not isinstance(node.this, exp.Identifier) and node.this is not None:
                inner = node.this
                if not (isinstance(inner, (exp.ReadParquet, exp.ReadCSV)) or _func_name(inner) in _FILE_FUNCTIONS):
                    self.add("file-access", line, "table function in FROM")
            elif isinstance(node, exp.ArrayOverlaps) or fname in _LIST_ANY_FUNCTIONS:
                self.add("list-has-any", line, "list_has_any()/&&" if isinstance(node, exp.ArrayOverlaps) else f"{fname}()")
            elif isinstance(node, exp.Cast) and node.to.this in (exp.DataType.Type.JSON, exp.DataType.Type.JSONB):
                self.add("json-operator", line, "cast to JSON")
            elif fname in _LEN_FUNCTIONS:
                self.add("len-on-list", line, "len()")
            elif isinstance(node, exp.Slice) or fname in _SLICE_FUNCTIONS:
                self.add("slice", line, "list slice")
            elif isinstance(node, exp.DateBin) or fname == "time_bucket":
                self.add("time-bucket", line, "time_bucket()")
            elif isinstance(node, exp.RegexpFullMatch) or fname == "regexp_full_match":
                self.add("regexp-full-match", line, "regexp_full_match()")
            elif isinstance(node, exp.UnixToTime) and not (isinstance(node.this, exp.Literal) and not node.this.is_string):
                if node.args.get("scale") is not None:
                    self.add("epoch-ms", line, "epoch_ms() of a column or expression")
            elif isinstance(node, exp.StrToTime):
                fmt = node.args.get("format")
                if not isinstance(fmt, exp.Literal):
                    self.add("strptime-letters", line, "strptime() with a computed format")
                elif re.search(r"(?<!%)[A-Za-z]", re.sub(r"%.", "", fmt.name)):
                    self.add("strptime-letters", line, f"strptime() format {fmt.name!r}")
            elif isinstance(node, exp.Star) and any(node.args.get(k) for k in ("except_", "except", "replace", "rename")):
                self.add("star-exclude", line, "* EXCLUDE/REPLACE")
            elif isinstance(node, exp.Struct):
                self.add("struct-literal", line, "struct literal")
            elif isinstance(node, exp.Lambda):
                self.add("lambda", line, "lambda")
            elif isinstance(node, _LIST_AGGS) or fname in ("string_agg", "listagg", "group_concat", "list", "array_agg"):
                inner = node.this if isinstance(node, _LIST_AGGS) else None
                if not isinstance(inner, exp.Order) and not isinstance(node.parent, exp.WithinGroup):
                    self.add("unordered-agg", line, f"{fname or 'string_agg'}() without ORDER BY")
            elif isinstance(node, exp.Anonymous) and fname not in _FILE_FUNCTIONS | _LIST_ANY_FUNCTIONS | _SLICE_FUNCTIONS | _LEN_FUNCTIONS | {
                "time_bucket", "regexp_full_match", "string_agg", "listagg", "group_concat", "list", "array_agg"
            } | set(TRANSLATED_FUNCTIONS):
                self.add("unknown-function", line, f"{fname}()")
            elif isinstance(node, exp.JSONObject):
                for kv in node.expressions:
                    if not (isinstance(kv, exp.JSONKeyValue) and isinstance(kv.this, exp.Literal) and kv.this.is_string):
                        self.add("json-object-key", kv, "computed json_object key")
            if isinstance(node, _REGEX_NODES):
                pattern = node.expression
                if isinstance(pattern, exp.Literal) and pattern.is_string:
                    problem = _regex_problem(pattern.name)
                    if problem:
                        self.add("regex-not-re2", pattern, f"pattern {pattern.name!r:.60}: {problem}")
            if isinstance(node, (exp.Select, exp.SetOperation)) and self.kind == "detection":
                for key in ("order", "limit"):
                    if node.args.get(key) is not None:
                        self.add("order-by", _line_of(node.args[key]) or _line_of(node), key.upper())

    def typed(self, tree: exp.Expression) -> None:
        try:
            typed = _typed(tree)
        except (OptimizeError, SqlglotError) as exc:
            where = re.search(r"Line: (\d+)", str(exc))
            self.add("untyped", int(where.group(1)) if where else _line_of(tree), str(exc).splitlines()[0][:200])
            return
        for node in typed.find_all(exp.Length):
            t = _type_of(node.this)
            if t is not None and t.is_type(exp.DataType.Type.ARRAY):
                self.add("len-on-list", _line_of(node), "length() of a list")
        for node in typed.find_all(exp.DPipe):
            for side in (node.this, node.expression):
                t = _type_of(side)
                if t is not None and t.this in _TZ_TYPES + _NAIVE_TS_TYPES + (exp.DataType.Type.DATE,):
                    self.add("timestamp-concat", _line_of(node), f"|| with a {t.sql()} operand")


def lint_sql(sql: str, *, path: str = "<sql>", line_offset: int = 1, kind: str = "detection", dialects: Iterable[str] = DIALECTS) -> list[Violation]:
    """Every construct in rendered DuckDB ``sql`` outside the portable subset.

    ``kind`` "detection" also forbids a query-level ORDER BY/LIMIT (hunts may sort). Each shipped
    query must also transpile to every dialect (rule ``transpile``).
    """
    linter = _Linter(path, line_offset, kind)
    try:
        linter.tokens(sql)
        statements = [s for s in sqlglot.parse(sql, read=SOURCE_DIALECT) if s is not None]
    except (ParseError, TokenError) as exc:
        errors = getattr(exc, "errors", None) or [{}]
        linter.add("parse", errors[0].get("line"), str(exc).splitlines()[0][:200])
        return linter.found
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        linter.add("parse", None, f"expected one SELECT, found {len(statements)} statement(s)")
        return linter.found
    tree = statements[0]
    linter.tree(tree)
    linter.typed(tree)
    if not linter.found:
        for dialect in dialects:
            try:
                transpile(sql, dialect)
            except TranspileError as exc:
                linter.add("transpile", None, f"{dialect}: {exc}")
    return sorted(set(linter.found))


def lint_file(path: Path, kind: str | None = None) -> list[Violation]:
    """Lint one detection or hunt file (placeholders rendered with its defaults)."""
    qf = read_query_file(Path(path), kind)
    shown = _display(qf.path)
    if qf.header_error:
        return [Violation(shown, 1, "parse", qf.header_error)]
    if not qf.body:
        return [Violation(shown, qf.body_line, "parse", "no SQL after the header")]
    return lint_sql(qf.rendered(), path=shown, line_offset=qf.body_line, kind=qf.kind)


def lint_files(paths: Iterable[Path] | None = None) -> list[Violation]:
    """Lint the given files, or every shipped detection and hunt."""
    out: list[Violation] = []
    for path in (list(paths) if paths is not None else shipped_files()):
        out += lint_file(path)
    return out


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- DDL
_TRINO_TYPES = {
    "string": "VARCHAR", "json": "VARCHAR", "int64": "BIGINT", "float64": "DOUBLE", "bool": "BOOLEAN",
    "timestamp": "TIMESTAMP(6)", "list<string>": "ARRAY(VARCHAR)",
}
_ATHENA_TYPES = {
    "string": "string", "json": "string", "int64": "bigint", "float64": "double", "bool": "boolean",
    "timestamp": "timestamp", "list<string>": "array<string>",
}


def _location(base: str, table: str) -> str:
    return base.rstrip("/") + "/" + table


def ddl(dialect: str, location: str = "s3://YOUR-BUCKET/tokenhunt/lake", *, schema_name: str = "tokenhunt") -> str:
    """External tables over the hive layout of the lake, plus the ``tokens`` view.

    Partition column typed as string on every engine (the lake writes ``event_date=YYYY-MM-DD``).
    The stored tokens directory becomes table ``tokens_stored``; ``tokens`` is a view adding the
    key-registry columns (pipeline.keys.tokens_view_sql transpiled), as on DuckDB and Spark.
    """
    if dialect not in DDL_DIALECTS:
        raise TranspileError(f"DDL dialect {dialect!r} is not one of {', '.join(DDL_DIALECTS)}")
    out: list[str] = [
        f"-- tokenhunt lake tables for {dialect} (generated from schemas/ by `tokenhunt sql ddl --dialect {dialect}`).",
        f"-- Lake location: {location}. Session time zone must be UTC.",
        "-- Readers see every file in the table directories: query when no tokenhunt writer runs (see README).",
        "",
    ]
    for spec in schemas.all_tables().values():
        name = "tokens_stored" if spec.name == "tokens" else spec.name
        loc = _location(location, spec.name)
        data_cols = [c for c in spec.stored_columns if c.name != spec.partition]
        if dialect == "trino":
            cols = [f"  {c.name} {_TRINO_TYPES[c.type]}" for c in data_cols] + [f"  {spec.partition} VARCHAR"]
            out.append(f"CREATE TABLE IF NOT EXISTS {schema_name}.{name} (\n" + ",\n".join(cols) + "\n)")
            out.append(
                f"WITH (external_location = '{loc}', format = 'PARQUET', partitioned_by = ARRAY['{spec.partition}']);"
            )
            out.append(f"CALL system.sync_partition_metadata('{schema_name}', '{name}', 'FULL');")
        else:
            cols = [f"  `{c.name}` {_ATHENA_TYPES[c.type]}" for c in data_cols]
            out.append(f"CREATE EXTERNAL TABLE IF NOT EXISTS {schema_name}.{name} (\n" + ",\n".join(cols) + "\n)")
            out.append(f"PARTITIONED BY (`{spec.partition}` string)")
            out.append("STORED AS PARQUET")
            out.append(f"LOCATION '{loc}/'")
            out.append(
                "TBLPROPERTIES (\n"
                "  'projection.enabled' = 'true',\n"
                f"  'projection.{spec.partition}.type' = 'date',\n"
                f"  'projection.{spec.partition}.format' = 'yyyy-MM-dd',\n"
                f"  'projection.{spec.partition}.range' = '2000-01-01,NOW',\n"
                f"  'projection.{spec.partition}.interval' = '1',\n"
                f"  'projection.{spec.partition}.interval.unit' = 'DAYS',\n"
                f"  'storage.location.template' = '{loc}/{spec.partition}=${{{spec.partition}}}/'\n"
                ");"
            )
        out.append("")
    out.append(f"CREATE OR REPLACE VIEW {schema_name}.tokens AS")
    out.append(tokens_view(dialect, db=schema_name).rstrip(";") + ";")
    return "\n".join(out) + "\n"


def tokens_view(dialect: str, *, db: str | None = None) -> str:
    """The ``tokens`` view SELECT (pipeline.keys.tokens_view_sql over tokens_stored) in ``dialect``."""
    from pipeline.keys import tokens_view_sql

    return transpile(tokens_view_sql("tokens_stored", "signing_keys"), dialect, db=db)
