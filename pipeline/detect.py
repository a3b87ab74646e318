"""Detections as code: load ``queries/detections/*.sql``, run them, persist findings.

A detection is one SQL file: a TOML header in ``-- `` comment lines (typed metadata and parameter
defaults), then exactly one SELECT over the logical tables. Why SQL files with a header: metadata,
logic and (beside them, in ``tests/detections/<id>.toml``) rows-in/findings-out tests stay one
reviewable unit, and the same text runs on DuckDB locally and transpiled on Spark.

Loading is strict in the pySigma way: every problem in every file is collected and reported at
once (``DetectionLoadError``), so a broken file never silently drops a detection. Parameters
(``{{ name }}``) are rendered as SQL literals, never pasted: strings are quoted and escaped, lists
become ``(a, b)`` tuples, and a name that is neither declared nor built in is an error.

Findings get a stable id (``finding_id`` = SHA-256 of ``detection_id|entity_key``, 32 hex), so the
nightly run is idempotent: a finding seen again is ``seen`` with ``hit_count`` + 1, never a
duplicate, and a finding a user marked ``resolved-by-user`` stays resolved.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from pipeline import schemas
from pipeline.queryfile import split_header
from pipeline.lake import Lake, utcnow

QUERIES_DIR = Path(__file__).resolve().parent.parent / "queries"
CONSUMER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"  # Microsoft account (MSA) consumer tenant

SEVERITIES = ("informational", "low", "medium", "high", "critical")
STATUSES = ("stable", "test", "experimental")
OUTCOMES = ("alert", "inconclusive")
LOGICAL_TABLES = ("signins", "mail_events", "token_events", "tokens", "signing_keys", "indicators", "findings")
BUILTIN_PARAMS = ("consumer_tenant", "partner_tenants", "window_start", "window_end")
RESULT_COLUMNS = (
    "detection_id",
    "severity",
    "event_time",
    "tenant_id",
    "principal",
    "entity_key",
    "token_fingerprint",
    "evidence",
    "outcome",
)
REQUIRED_KEYS = ("id", "title", "severity", "status", "description", "requires")
OPTIONAL_KEYS = ("mitre", "references", "false_positives", "lookback_days", "params", "author", "date", "modified", "tags")

# The whole run window when none is given (far enough to hold any real log, still valid in Spark).
WINDOW_MIN = datetime(1970, 1, 1, tzinfo=timezone.utc)
WINDOW_MAX = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)

# Exit codes of `tokenhunt detect`: 10 when the run produced new findings, + 1 when a detection
# failed (so 0, 1, 10, 11); 2 bad options, config or detection files; 4 another run holds the lake.
EXIT_OK = 0
EXIT_DETECTION_FAILED = 1
EXIT_USAGE = 2
EXIT_LAKE_BUSY = 4
EXIT_NEW_FINDINGS = 10

_PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_MITRE_RE = re.compile(r"^T\d{4}(\.\d{3})?$")


class DetectionLoadError(ValueError):
    """Detection files are malformed. ``problems`` lists every problem of every file (path: reason)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in detection files:\n" + "\n".join(f"  {p}" for p in problems))


class DetectionParamError(ValueError):
    """A parameter cannot be rendered or configured (unknown name, wrong type, unsafe value)."""


class DetectionRunError(RuntimeError):
    """One or more detections failed to run or broke the result contract.

    ``findings`` holds the rows of the detections that did run, ``runs`` the per-detection record.
    """

    def __init__(self, errors: dict[str, str], findings: list[dict], runs: dict[str, "DetectionRun"]) -> None:
        self.errors = errors
        self.findings = findings
        self.runs = runs
        super().__init__("detection(s) failed:\n" + "\n".join(f"  {k}: {v}" for k, v in errors.items()))


@dataclass(frozen=True)
class Detection:
    """One detection file: typed metadata, parameter defaults and the SQL template."""

    id: str
    title: str
    severity: str
    status: str
    description: str
    requires: tuple[str, ...]
    sql: str
    path: Path
    mitre: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    false_positives: tuple[str, ...] = ()
    lookback_days: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)
    author: str | None = None

    @property
    def placeholders(self) -> list[str]:
        """Parameter names the SQL uses, in order of first use."""
        return list(dict.fromkeys(_PLACEHOLDER_RE.findall(self.sql)))


# --------------------------------------------------------------------------- loading
def _check_param_value(name: str, value: Any) -> str | None:
    if isinstance(value, (bool, int, float, str, datetime, date)):
        return None
    if isinstance(value, list):
        bad = [v for v in value if not isinstance(v, (bool, int, float, str))]
        return f"param {name}: list items must be strings, numbers or booleans" if bad else None
    return f"param {name}: {type(value).__name__} values are not supported (string, number, boolean, datetime or list)"


def _check_metadata(meta: dict[str, Any], stem: str) -> list[str]:
    problems = [f"metadata: {key!r} is missing" for key in REQUIRED_KEYS if key not in meta]
    unknown = sorted(set(meta) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    problems += [f"metadata: unknown key {key!r} (known: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})" for key in unknown]
    ident = meta.get("id")
    if "id" in meta and (not isinstance(ident, str) or not _ID_RE.match(ident)):
        problems.append(f"metadata: id {ident!r} is not snake_case")
    elif isinstance(ident, str) and ident != stem:
        problems.append(f"metadata: id {ident!r} differs from the file name {stem!r}")
    for key in ("title", "description"):
        if key in meta and (not isinstance(meta[key], str) or not meta[key].strip()):
            problems.append(f"metadata: {key} must be non-empty text")
    if "severity" in meta and meta["severity"] not in SEVERITIES:
        problems.append(f"metadata: severity {meta['severity']!r} is not one of {', '.join(SEVERITIES)}")
    if "status" in meta and meta["status"] not in STATUSES:
        problems.append(f"metadata: status {meta['status']!r} is not one of {', '.join(STATUSES)}")
    for key in ("requires", "mitre", "references", "false_positives", "tags"):
        if key in meta and (not isinstance(meta[key], list) or not all(isinstance(v, str) for v in meta[key])):
            problems.append(f"metadata: {key} must be a list of strings")
    if isinstance(meta.get("requires"), list):
        if not meta["requires"]:
            problems.append("metadata: requires must name at least one table")
        for name in meta["requires"]:
            if name not in LOGICAL_TABLES:
                problems.append(f"metadata: requires names {name!r}, not a logical table ({', '.join(LOGICAL_TABLES)})")
    if isinstance(meta.get("mitre"), list):
        problems += [f"metadata: mitre {t!r} is not an ATT&CK technique id (T1234 or T1234.001)" for t in meta["mitre"] if not _MITRE_RE.match(str(t))]
    lookback = meta.get("lookback_days", 0)
    if isinstance(lookback, bool) or not isinstance(lookback, int) or lookback < 0:
        problems.append(f"metadata: lookback_days must be a whole number of days >= 0, got {lookback!r}")
    params = meta.get("params", {})
    if not isinstance(params, dict):
        problems.append("metadata: [params] must be a table")
    else:
        for name, value in params.items():
            if name in BUILTIN_PARAMS:
                problems.append(f"param {name}: shadows a built-in parameter")
            problem = _check_param_value(name, value)
            if problem:
                problems.append(problem)
    return problems


def _dummy_builtins() -> dict[str, Any]:
    return {"consumer_tenant": CONSUMER_TENANT, "partner_tenants": [], "window_start": WINDOW_MIN, "window_end": WINDOW_MAX}


def _check_sql(body: str, params: dict[str, Any], requires: list[str]) -> list[str]:
    """Problems of the SQL body: placeholders, statement count, tables referenced."""
    import sqlglot
    from sqlglot import exp

    problems: list[str] = []
    if not body:
        return ["sql: the file has no SELECT after its header"]
    names = list(dict.fromkeys(_PLACEHOLDER_RE.findall(body)))
    for name in names:
        if name not in params and name not in BUILTIN_PARAMS:
            problems.append(f"sql: {{{{ {name} }}}} is neither a declared param nor built in ({', '.join(BUILTIN_PARAMS)})")
    for name in params:
        if name not in names:
            problems.append(f"param {name}: declared but not used in the SQL")
    leftover = _PLACEHOLDER_RE.sub("", body)
    if "{{" in leftover or "}}" in leftover:
        problems.append("sql: malformed placeholder (write {{ name }} with a snake_case name)")
    # A placeholder inside a string literal would be rendered inside quotes: refuse it.
    marked = _PLACEHOLDER_RE.sub(lambda m: f"__tokenhunt_param_{m.group(1)}__", body)
    try:
        for token in sqlglot.tokenize(marked, read="duckdb"):
            if token.token_type.name == "STRING" and "__tokenhunt_param_" in token.text:
                problems.append("sql: a {{ placeholder }} sits inside a quoted string; use it as a value on its own")
                break
    except Exception as exc:  # noqa: BLE001 - any tokenizer failure is a problem of this file
        problems.append(f"sql: cannot tokenize: {str(exc).splitlines()[0][:200]}")
        return problems
    values = {**_dummy_builtins(), **params}
    rendered = _PLACEHOLDER_RE.sub(lambda m: sql_literal(values.get(m.group(1), "x")), body)
    try:
        statements = [s for s in sqlglot.parse(rendered, read="duckdb") if s is not None]
    except Exception as exc:  # noqa: BLE001
        problems.append(f"sql: does not parse: {str(exc).splitlines()[0][:200]}")
        return problems
    if len(statements) != 1:
        problems.append(f"sql: expected exactly one SELECT, found {len(statements)} statements")
        return problems
    query = statements[0]
    if not isinstance(query, exp.Query):
        problems.append(f"sql: the statement is {query.key.upper()}, not a SELECT")
        return problems
    ctes = {cte.alias_or_name for cte in query.find_all(exp.CTE)}
    tables = {t.name for t in query.find_all(exp.Table) if t.name} - ctes
    for name in sorted(tables - set(LOGICAL_TABLES)):
        problems.append(f"sql: reads {name!r}, not a logical table ({', '.join(LOGICAL_TABLES)})")
    for name in sorted((tables & set(LOGICAL_TABLES)) - set(requires)):
        problems.append(f"sql: reads {name!r} but requires does not list it")
    if any(isinstance(node, exp.Table) and not node.name for node in query.find_all(exp.Table)):
        problems.append("sql: reads a table function or file; only logical tables are allowed")
    return problems


def _load_file(path: Path) -> tuple[Detection | None, list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"cannot read: {exc}"]
    header, body, _ = split_header(text)
    if not header.strip():
        return None, ["no metadata header (leading `-- key = value` TOML comment lines)"]
    try:
        meta = tomllib.loads(header)
    except tomllib.TOMLDecodeError as exc:
        return None, [f"metadata header is not valid TOML: {exc}"]
    problems = _check_metadata(meta, path.stem)
    params = meta.get("params", {}) if isinstance(meta.get("params", {}), dict) else {}
    requires = meta.get("requires") if isinstance(meta.get("requires"), list) else []
    problems += _check_sql(body, params, requires)
    if problems:
        return None, problems
    return (
        Detection(
            id=meta["id"],
            title=meta["title"].strip(),
            severity=meta["severity"],
            status=meta["status"],
            description=" ".join(meta["description"].split()),
            requires=tuple(meta["requires"]),
            sql=body,
            path=path,
            mitre=tuple(meta.get("mitre", ())),
            references=tuple(meta.get("references", ())),
            false_positives=tuple(meta.get("false_positives", ())),
            lookback_days=meta.get("lookback_days", 0),
            params=dict(params),
            author=meta.get("author"),
        ),
        [],
    )


def load_detection(path: Path) -> Detection:
    """One detection file; DetectionLoadError lists every problem in it."""
    detection, problems = _load_file(Path(path))
    if problems or detection is None:
        raise DetectionLoadError([f"{path}: {p}" for p in problems])
    return detection


def load_detections(directory: Path = QUERIES_DIR / "detections") -> list[Detection]:
    """Every ``*.sql`` detection in ``directory``, sorted by id.

    Strict: all problems of all files are collected first, then raised together, so one run of
    ``tokenhunt detect`` (or the test suite) shows everything that needs fixing.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DetectionLoadError([f"{directory}: detection directory does not exist"])
    detections: list[Detection] = []
    problems: list[str] = []
    seen: dict[str, Path] = {}
    for path in sorted(directory.glob("*.sql")):
        detection, file_problems = _load_file(path)
        problems += [f"{path}: {p}" for p in file_problems]
        if detection is not None:
            if detection.id in seen:
                problems.append(f"{path}: id {detection.id!r} is also used by {seen[detection.id]}")
            seen[detection.id] = path
            detections.append(detection)
    if problems:
        raise DetectionLoadError(problems)
    return sorted(detections, key=lambda d: d.id)


# --------------------------------------------------------------------------- parameters
def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def sql_literal(value: Any) -> str:
    """``value`` as a SQL literal. Strings are quoted with '' escaping; nothing is pasted raw.

    Lists become ``(a, b)`` for ``IN``; an empty list becomes an empty subquery, so ``x IN`` it is
    false and ``x NOT IN`` it is true (``(NULL)`` would make ``NOT IN`` drop every row).
    Naive datetimes are taken as UTC.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DetectionParamError(f"number {value!r} cannot be a SQL literal")
        return repr(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise DetectionParamError("text with a NUL character cannot be a SQL literal")
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, datetime):
        return f"CAST('{_utc(value).isoformat(sep=' ')}' AS TIMESTAMP WITH TIME ZONE)"
    if isinstance(value, date):
        return f"CAST('{value.isoformat()}' AS DATE)"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
        for item in items:
            if isinstance(item, (list, tuple, set, frozenset, dict)):
                raise DetectionParamError("lists of lists cannot be SQL literals")
        if not items:
            return "(SELECT NULL WHERE 1 = 0)"
        return "(" + ", ".join(sql_literal(item) for item in items) + ")"
    raise DetectionParamError(f"{type(value).__name__} values cannot be SQL literals")


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    if isinstance(default, list):
        return isinstance(value, (list, tuple))
    if isinstance(default, datetime):
        return isinstance(value, datetime)
    return isinstance(value, type(default))


def resolve_params(detection: Detection, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults of ``detection`` with ``overrides`` applied; unknown names and wrong types are errors."""
    values = dict(detection.params)
    problems = []
    for name, value in (overrides or {}).items():
        if name not in detection.params:
            known = ", ".join(detection.params) or "none"
            problems.append(f"{detection.id}: unknown parameter {name!r} (declared: {known})")
        elif not _same_kind(detection.params[name], value):
            problems.append(
                f"{detection.id}: parameter {name!r} must be {type(detection.params[name]).__name__}, got {type(value).__name__}"
            )
        else:
            values[name] = list(value) if isinstance(value, tuple) else value
    if problems:
        raise DetectionParamError("; ".join(problems))
    return values


def render_sql(
    detection: Detection,
    overrides: Mapping[str, Any] | None = None,
    *,
    window: tuple[datetime, datetime] | None = None,
    partner_tenants: Sequence[str] = (),
) -> str:
    """The detection's SQL with every ``{{ name }}`` replaced by a SQL literal."""
    start, end = window or (WINDOW_MIN, WINDOW_MAX)
    values: dict[str, Any] = {
        **resolve_params(detection, overrides),
        "consumer_tenant": CONSUMER_TENANT,
        "partner_tenants": [str(t).lower() for t in partner_tenants],
        "window_start": _utc(start),
        "window_end": _utc(end),
    }

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise DetectionParamError(f"{detection.id}: {{{{ {name} }}}} is not a declared or built-in parameter")
        return sql_literal(values[name])

    return _PLACEHOLDER_RE.sub(substitute, detection.sql)


def params_from_settings(detection_settings: Mapping[str, Any], detections: Sequence[Detection]) -> dict[str, dict]:
    """Validate ``Settings.detections`` ({id: {param: value}}) against the loaded detections."""
    by_id = {d.id: d for d in detections}
    problems: list[str] = []
    out: dict[str, dict] = {}
    for det_id, overrides in (detection_settings or {}).items():
        if det_id not in by_id:
            problems.append(f"[detections.{det_id}]: no such detection (known: {', '.join(sorted(by_id))})")
            continue
        if not isinstance(overrides, Mapping):
            problems.append(f"[detections.{det_id}] must be a table of parameter = value")
            continue
        try:
            resolve_params(by_id[det_id], overrides)
        except DetectionParamError as exc:
            problems.append(str(exc))
            continue
        out[det_id] = dict(overrides)
    if problems:
        raise DetectionParamError("; ".join(problems))
    return out


# --------------------------------------------------------------------------- running
def finding_id(detection_id: str, entity_key: str) -> str:
    """Stable finding id: the same detection and entity give the same id in every run."""
    return hashlib.sha256(f"{detection_id}|{entity_key}".encode("utf-8")).hexdigest()[:32]


@dataclass
class DetectionRun:
    """What one detection did in one run."""

    detection_id: str
    rows: int = 0
    alerts: int = 0
    inconclusive: int = 0
    seconds: float = 0.0
    scrubbed: int = 0  # evidence values that held a token and were scrubbed by the runner
    new: int = 0
    seen: int = 0
    error: str | None = None


def _scrub(text: str) -> str:
    from pipeline.tokens import scrub_text

    return scrub_text(text)


def _check_rows(detection: Detection, rows: list[dict], run: DetectionRun) -> list[str]:
    """Contract problems of a detection's result rows; fixes nothing but token scrubbing."""
    problems: list[str] = []
    keys: set[str] = set()
    for n, row in enumerate(rows, start=1):
        where = f"row {n}"
        if row["detection_id"] != detection.id:
            problems.append(f"{where}: detection_id {row['detection_id']!r} is not {detection.id!r}")
        if row["severity"] not in SEVERITIES:
            problems.append(f"{where}: severity {row['severity']!r} is not one of {', '.join(SEVERITIES)}")
        if row["outcome"] not in OUTCOMES:
            problems.append(f"{where}: outcome {row['outcome']!r} is not alert or inconclusive")
        if not isinstance(row["event_time"], datetime):
            problems.append(f"{where}: event_time must be a timestamp, got {row['event_time']!r:.40}")
        else:
            row["event_time"] = _utc(row["event_time"])
        key = row["entity_key"]
        if not isinstance(key, str) or not key:
            problems.append(f"{where}: entity_key is empty")
        elif key in keys:
            problems.append(f"{where}: entity_key {key!r:.80} appears twice (aggregate to one row per entity)")
        else:
            keys.add(key)
        for col in ("tenant_id", "principal", "token_fingerprint"):
            if row[col] is not None and not isinstance(row[col], str):
                problems.append(f"{where}: {col} must be text")
        evidence = row["evidence"]
        try:
            parsed = json.loads(evidence) if isinstance(evidence, str) else None
        except json.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            problems.append(f"{where}: evidence must be a JSON object text (json_object(...))")
        else:
            clean = _scrub(evidence)
            if clean != evidence:
                run.scrubbed += 1
                row["evidence"] = clean
        if len(problems) >= 10:
            problems.append("(more problems not shown)")
            break
    return problems


def _run_one(cursor: Any, detection: Detection, sql: str) -> tuple[list[dict], DetectionRun]:
    run = DetectionRun(detection.id)
    started = time.perf_counter()
    try:
        result = cursor.execute(sql)
        columns = tuple(d[0] for d in result.description or ())
        if columns != RESULT_COLUMNS:
            run.error = f"returns columns ({', '.join(columns)}); the contract is ({', '.join(RESULT_COLUMNS)})"
            return [], run
        rows = [dict(zip(RESULT_COLUMNS, values)) for values in result.fetchall()]
    except Exception as exc:  # noqa: BLE001 - one broken detection must not stop the others
        run.error = f"{type(exc).__name__}: {_scrub(str(exc)).splitlines()[0][:300]}"
        return [], run
    finally:
        run.seconds = round(time.perf_counter() - started, 4)
    problems = _check_rows(detection, rows, run)
    if problems:
        run.error = "; ".join(problems)
        return [], run
    for row in rows:
        row["finding_id"] = finding_id(detection.id, row["entity_key"])
    run.rows = len(rows)
    run.alerts = sum(r["outcome"] == "alert" for r in rows)
    run.inconclusive = run.rows - run.alerts
    return rows, run


def _sort_key(row: dict) -> tuple:
    return (-SEVERITIES.index(row["severity"]), row["event_time"], row["detection_id"], row["entity_key"])


def select(detections: Sequence[Detection], only: Iterable[str] | None) -> list[Detection]:
    """The detections named in ``only`` (all when None); an unknown id is an error."""
    if not only:
        return list(detections)
    wanted = list(dict.fromkeys(only))
    known = {d.id for d in detections}
    unknown = [i for i in wanted if i not in known]
    if unknown:
        raise DetectionParamError(f"unknown detection id(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [d for d in detections if d.id in wanted]


def execute(
    con: Any,
    detections: Sequence[Detection],
    params: Mapping[str, Mapping[str, Any]] | None = None,
    window: tuple[datetime, datetime] | None = None,
    only: Iterable[str] | None = None,
    *,
    partner_tenants: Sequence[str] = (),
    workers: int | None = None,
) -> tuple[list[dict], dict[str, DetectionRun]]:
    """Run detections on ``con`` (a DuckDB connection with the logical tables).

    Returns (rows of the detections that succeeded, per-detection runs with errors). Rendering
    errors (bad parameters) raise DetectionParamError before anything runs. Detections run in
    parallel, one DuckDB cursor per detection: many small queries overlap instead of queueing.
    """
    chosen = select(detections, only)
    params = params or {}
    rendered = [
        (d, render_sql(d, params.get(d.id), window=window, partner_tenants=partner_tenants)) for d in chosen
    ]
    if not rendered:
        return [], {}
    workers = workers or min(4, len(rendered), os.cpu_count() or 1)
    cursors = [con.cursor() for _ in rendered]  # created here: cursor() itself is not thread-safe
    try:
        if workers <= 1:
            results = [_run_one(c, d, sql) for c, (d, sql) in zip(cursors, rendered)]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="detect") as pool:
                results = list(pool.map(lambda item: _run_one(item[0], *item[1]), zip(cursors, rendered)))
    finally:
        for c in cursors:
            c.close()
    rows = [row for found, _ in results for row in found]
    runs = {run.detection_id: run for _, run in results}
    return sorted(rows, key=_sort_key), runs


def run_detections(
    con: Any,
    detections: Sequence[Detection],
    params: Mapping[str, Mapping[str, Any]] | None = None,
    window: tuple[datetime, datetime] | None = None,
    only: Iterable[str] | None = None,
    *,
    partner_tenants: Sequence[str] = (),
    workers: int | None = None,
) -> list[dict]:
    """Finding rows (RESULT_COLUMNS + finding_id) of ``detections`` over ``con``.

    Raises DetectionRunError (carrying the rows of the others) when any detection failed.
    """
    rows, runs = execute(con, detections, params, window, only, partner_tenants=partner_tenants, workers=workers)
    errors = {i: r.error for i, r in runs.items() if r.error}
    if errors:
        raise DetectionRunError(errors, rows, runs)
    return rows


# --------------------------------------------------------------------------- window
_RELATIVE_RE = re.compile(r"^(\d+)\s*([dhm])$")


def parse_time_bound(text: str | datetime | date | None, *, end: bool = False, now: datetime | None = None) -> datetime | None:
    """A --since/--until value as a UTC datetime.

    Accepts an ISO date (``2026-11-15``: start of that day; for ``end`` the start of the next day,
    so ``--until 2026-11-15`` includes that day), an ISO datetime (naive = UTC) or a relative
    ``7d`` / ``12h`` / ``30m`` before now.
    """
    if text is None or isinstance(text, datetime):
        return None if text is None else _utc(text)
    if isinstance(text, date):
        day = datetime(text.year, text.month, text.day, tzinfo=timezone.utc)
        return day + timedelta(days=1) if end else day
    raw = text.strip()
    rel = _RELATIVE_RE.match(raw.lower())
    if rel:
        amount, unit = int(rel.group(1)), rel.group(2)
        delta = {"d": timedelta(days=amount), "h": timedelta(hours=amount), "m": timedelta(minutes=amount)}[unit]
        return (now or utcnow()) - delta
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        return parse_time_bound(date.fromisoformat(raw), end=end)
    try:
        return _utc(datetime.fromisoformat(raw.replace("Z", "+00:00")))
    except ValueError:
        raise DetectionParamError(f"{raw!r} is not a date (2026-11-15), a datetime (2026-11-15T10:00:00Z) or relative (7d, 12h)") from None


def resolve_window(since: Any = None, until: Any = None, now: datetime | None = None) -> tuple[datetime, datetime]:
    start = parse_time_bound(since, now=now) or WINDOW_MIN
    stop = parse_time_bound(until, end=True, now=now) or WINDOW_MAX
    if stop <= start:
        raise DetectionParamError(f"the window is empty: until {stop.isoformat()} is not after since {start.isoformat()}")
    return start, stop


def min_partition_date(since: datetime | None, detections: Sequence[Detection]) -> str | None:
    """Oldest event partition the run must read: since minus the largest lookback."""
    if since is None or since <= WINDOW_MIN:
        return None
    lookback = max((d.lookback_days for d in detections), default=0)
    return (since - timedelta(days=lookback)).strftime("%Y-%m-%d")


# --------------------------------------------------------------------------- persistence
FINDING_COLUMNS = tuple(schemas.table("findings").column_names)


def merge_findings(
    existing: Iterable[dict], current: Sequence[dict], run_time: datetime, batch_id: str
) -> tuple[list[dict], list[dict]]:
    """(every row to store, this run's rows with their status) from the stored and the new findings.

    New finding: status new, hit_count 1. Seen again: status seen (resolved-by-user stays so),
    hit_count + 1, last_seen = this run, event_time the earliest ever. An inconclusive finding that
    turns into an alert is new again: it now needs a responder. Findings not produced by this run
    are kept unchanged.
    """
    stored = {row["finding_id"]: dict(row) for row in existing}
    this_run: list[dict] = []
    for row in current:
        old = stored.get(row["finding_id"])
        merged = {c: row.get(c) for c in FINDING_COLUMNS}
        merged["ingest_batch_id"] = batch_id
        merged["last_seen"] = run_time
        if old is None:
            merged.update(first_seen=run_time, hit_count=1, status="new")
        else:
            escalated = old.get("outcome") == "inconclusive" and row["outcome"] == "alert"
            if old.get("status") == "resolved-by-user":
                status = "resolved-by-user"
            else:
                status = "new" if escalated else "seen"
            merged.update(
                first_seen=old.get("first_seen") or run_time,
                hit_count=(old.get("hit_count") or 0) + 1,
                status=status,
                event_time=min(_utc(old["event_time"]), row["event_time"]) if old.get("event_time") else row["event_time"],
            )
        merged["event_date"] = merged["event_time"].strftime("%Y-%m-%d")
        stored[row["finding_id"]] = merged
        this_run.append(merged)
    return list(stored.values()), this_run


@dataclass
class DetectResult:
    """One `detect` run: its findings with status, the new ones, and what each detection did."""

    findings: list[dict]
    new: list[dict]
    per_detection: dict[str, DetectionRun]
    window: tuple[datetime, datetime]
    run_time: datetime
    batch_id: str | None = None  # the findings batch committed (None when nothing changed)
    detections: list[Detection] = field(default_factory=list)

    @property
    def inconclusive(self) -> list[dict]:
        return [r for r in self.findings if r["outcome"] == "inconclusive"]

    @property
    def errors(self) -> dict[str, str]:
        return {i: r.error for i, r in self.per_detection.items() if r.error}

    @property
    def exit_code(self) -> int:
        return (EXIT_NEW_FINDINGS if self.new else EXIT_OK) + (EXIT_DETECTION_FAILED if self.errors else 0)


def _persist(lake: Lake, rows: list[dict], runs: dict[str, DetectionRun], run_time: datetime, window: tuple) -> tuple[list[dict], str | None]:
    """Merge this run's rows into the findings table (caller holds the lake lock)."""
    if not rows:
        return [], None
    existing = lake.read_table("findings").to_pylist()
    batch = lake.begin()
    stored, this_run = merge_findings(existing, rows, run_time, batch.batch_id)
    spec = schemas.table("findings")
    problems = [f"finding {r['finding_id']}: {p}" for r in stored for p in spec.violations(r)]
    if problems:
        raise ValueError("findings rows break schemas/findings.toml: " + "; ".join(problems[:10]))
    batch.replace("findings", stored)
    for row in this_run:
        run = runs[row["detection_id"]]
        if row["status"] == "new":
            run.new += 1
        else:
            run.seen += 1
    batch.commit(
        {
            "kind": "detect",
            "table": "findings",
            "run_time": run_time.isoformat(),
            "window": [window[0].isoformat(), window[1].isoformat()],
            "rows": len(stored),
            "produced": len(this_run),
            "new": sum(r["status"] == "new" for r in this_run),
            "detections": {i: {"rows": r.rows, "error": r.error} for i, r in runs.items()},
        }
    )
    return this_run, batch.batch_id


def detect_lake(
    lake: Lake | Path,
    since: Any = None,
    until: Any = None,
    only: Iterable[str] | None = None,
    settings: Any = None,
    *,
    detections: Sequence[Detection] | None = None,
    workers: int | None = None,
    lock: bool = True,
    now: datetime | None = None,
    engine: str | None = None,
) -> DetectResult:
    """Run the detections over the lake and persist their findings.

    ``since``/``until`` restrict the run window (see parse_time_bound) and let the engine skip
    event partitions older than since minus the largest lookback. ``settings`` (pipeline.config
    Settings) gives parameter overrides (``[detections.<id>]``) and partner tenants. ``lock=False``
    when the caller (the nightly job) already holds the lake lock.
    """
    from contextlib import nullcontext

    from pipeline import engines  # engine registry: --engine / `engine` in tokenhunt.toml (duckdb, spark)

    lake = lake if isinstance(lake, Lake) else Lake(Path(lake))
    all_detections = list(detections) if detections is not None else load_detections()
    detection_settings = getattr(settings, "detections", None) or {}
    partner_tenants = list(getattr(settings, "partner_tenants", None) or [])
    params = params_from_settings(detection_settings, all_detections)
    chosen = select(all_detections, only)
    run_time = now or utcnow()
    window = resolve_window(since, until, now=run_time)
    min_date = min_partition_date(window[0], chosen)
    with lake.lock() if lock else nullcontext():
        con = engines.connect(
            engine or getattr(settings, "engine", None) or "duckdb", lake, min_date=min_date,
            spark_master=getattr(settings, "spark_master", None), spark_lake_uri=getattr(settings, "spark_lake_uri", None),
        )
        try:
            rows, runs = execute(con, chosen, params, window, partner_tenants=partner_tenants, workers=workers)
        finally:
            con.close()
        this_run, batch_id = _persist(lake, rows, runs, run_time, window)
    new = [r for r in this_run if r["status"] == "new"]
    return DetectResult(
        findings=this_run, new=new, per_detection=runs, window=window, run_time=run_time, batch_id=batch_id, detections=chosen
    )


def format_findings(rows: Sequence[dict], fmt: str = "table", detections: Sequence[Detection] | None = None) -> str:
    """Findings as table, jsonl, csv, markdown or ocsf text (see pipeline.findings_output)."""
    from pipeline.findings_output import format_findings as _format

    return _format(rows, fmt, detections)
