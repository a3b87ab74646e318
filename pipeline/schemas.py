"""Lake table definitions, loaded from ``schemas/*.toml`` (the one source of truth).

Everything that needs a column list derives it from here: the Arrow schema used when writing,
the row-level checks that decide quarantine, the great-expectations suite, the engine bindings
and the column reference printed by ``tokenhunt schema``.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

# Logical column types -> Arrow types. "json" is JSON text (a string column) so every engine reads it.
ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "json": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "list<string>": pa.list_(pa.string()),
}

# SQL type names used for engine bindings and DDL (DuckDB spelling; sqlglot transpiles them).
SQL_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "json": "VARCHAR",
    "int64": "BIGINT",
    "float64": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "list<string>": "VARCHAR[]",
}

GUID_RE = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
DATE_RE = r"^\d{4}-\d{2}-\d{2}$"
SHA256_RE = r"^[0-9a-f]{64}$"
UPN_RE = r"^[^@\s]+@[^@\s]+$"
# IP addresses as stored (already normalized): IPv4 dotted quad or an IPv6 literal.
IP_RE = r"^(\d{1,3}(\.\d{1,3}){3}|[0-9a-fA-F:]*:[0-9a-fA-F:.]*)$"


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")  # dotted quad as ipaddress prints it


def _is_ip(value: str) -> bool:
    if _CANONICAL_IPV4_RE.fullmatch(value):  # the common case, without building an address object
        return True
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class NamedCheck:
    """A value check a schema column can name (``check = "guid"``)."""

    name: str
    regex: str  # used by great-expectations and SQL-side checks
    test: Callable[[str], bool]  # used row by row when deciding quarantine
    meaning: str


def _regex_test(pattern: str) -> Callable[[str], bool]:
    compiled = re.compile(pattern)
    return lambda value: compiled.match(value) is not None


CHECKS: dict[str, NamedCheck] = {
    "guid": NamedCheck("guid", GUID_RE, _regex_test(GUID_RE), "a GUID"),
    "date": NamedCheck("date", DATE_RE, _regex_test(DATE_RE), "a YYYY-MM-DD date"),
    "sha256": NamedCheck("sha256", SHA256_RE, _regex_test(SHA256_RE), "a lower-case SHA-256 hex digest"),
    "upn": NamedCheck("upn", UPN_RE, _regex_test(UPN_RE), "a user principal name"),
    "ip": NamedCheck("ip", IP_RE, _is_ip, "an IP address"),
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str
    nullable: bool = True
    check: str | None = None
    allowed: tuple[str, ...] | None = None
    derived: bool = False  # computed when the table is read, not stored

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES[self.type]

    @property
    def sql_type(self) -> str:
        return SQL_TYPES[self.type]

    def violation(self, value: Any) -> str | None:
        """Why ``value`` may not be stored in this column, or None when it may."""
        if value is None:
            return None if self.nullable else f"{self.name} is required but missing"
        if self.type in ("string", "json") and not isinstance(value, str):
            return f"{self.name} must be text, got {type(value).__name__}"
        if self.type == "int64" and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{self.name} must be an integer, got {value!r:.60}"
        if self.type == "bool" and not isinstance(value, bool):
            return f"{self.name} must be a boolean, got {value!r:.60}"
        if self.type == "timestamp":
            if not isinstance(value, datetime) or value.tzinfo is None:
                return f"{self.name} must be a UTC timestamp, got {value!r:.60}"
        if self.check and isinstance(value, str) and not CHECKS[self.check].test(value):
            return f"{self.name} {value!r:.80} is not {CHECKS[self.check].meaning}"
        if self.allowed and value not in self.allowed:
            return f"{self.name} {value!r:.80} is not one of {', '.join(self.allowed)}"
        return None


@dataclass(frozen=True)
class TableSchema:
    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    partition: str
    time_column: str
    path: Path = field(compare=False)

    @cached_property
    def stored_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if not c.derived)

    @cached_property
    def column_names(self) -> list[str]:
        return [c.name for c in self.stored_columns]

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.name} has no column {name!r}")

    def arrow_schema(self) -> pa.Schema:
        """Schema of the Parquet files (stored columns; the partition column lives in the path)."""
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.stored_columns if c.name != self.partition]
        )

    def violations(self, row: dict[str, Any]) -> list[str]:
        """Every reason ``row`` cannot be stored (all at once, so the quarantine reason is complete)."""
        names = self._stored_names
        problems = [] if names.issuperset(row) else [f"unknown column {name}" for name in row if name not in names]
        for name, col, plain_type, test in self._fast_checks:
            value = row.get(name)
            if value is None:
                if col.nullable:
                    continue
            elif plain_type is None or (type(value) is plain_type and (test is None or test(value))):
                continue  # what `violation` accepts, decided without the call (it runs for every value)
            problem = col.violation(value)
            if problem:
                problems.append(problem)
        return problems

    @cached_property
    def _fast_checks(self) -> tuple[tuple[str, Column, type | None, Callable[[Any], bool] | None], ...]:
        """Per stored column: (name, column, exact type that passes, extra test), for ``violations``.

        A value of exactly that type passing the test is one ``Column.violation`` accepts; any other
        value goes to ``violation`` itself (the one source of the messages). ``None`` as the type
        means every non-null value passes (types ``violation`` does not check, no check or set).
        """
        out = []
        for col in self.stored_columns:
            plain: type | None
            test: Callable[[Any], bool] | None = None
            if col.type in ("string", "json"):
                plain = str
                check = CHECKS[col.check].test if col.check else None
                allowed = frozenset(col.allowed) if col.allowed else None
                if check and allowed:
                    test = lambda v, c=check, a=allowed: c(v) and v in a  # noqa: E731
                elif check:
                    test = check
                elif allowed:
                    test = allowed.__contains__
            elif col.allowed or (col.check and col.type not in ("int64", "bool", "timestamp")):
                plain, test = object, (lambda v: False)  # never fast: always ask `violation`
            else:
                plain = {"int64": int, "bool": bool, "timestamp": datetime}.get(col.type)
                if col.type == "timestamp":
                    test = lambda v: v.tzinfo is not None  # noqa: E731
            out.append((col.name, col, plain, test))
        return tuple(out)

    @cached_property
    def _stored_names(self) -> frozenset[str]:
        return frozenset(self.column_names)


class SchemaError(ValueError):
    """A schema file is malformed; the message names the file and every problem in it."""


def _load_table(path: Path) -> TableSchema:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SchemaError(f"{path}: {exc}") from exc
    problems: list[str] = []
    columns: list[Column] = []
    for i, raw in enumerate(doc.get("columns", []), start=1):
        name = raw.get("name")
        if not name or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            problems.append(f"column {i}: name {name!r} is not snake_case")
            continue
        if raw.get("type") not in ARROW_TYPES:
            problems.append(f"column {name}: type {raw.get('type')!r} is not one of {sorted(ARROW_TYPES)}")
            continue
        if raw.get("check") and raw["check"] not in CHECKS:
            problems.append(f"column {name}: check {raw['check']!r} is not one of {sorted(CHECKS)}")
        if not raw.get("description"):
            problems.append(f"column {name}: description is missing")
        columns.append(
            Column(
                name=name,
                type=raw["type"],
                description=raw.get("description", ""),
                nullable=raw.get("nullable", True),
                check=raw.get("check"),
                allowed=tuple(raw["allowed"]) if raw.get("allowed") else None,
                derived=raw.get("derived", False),
            )
        )
    names = [c.name for c in columns]
    for required in ("name", "description", "key", "partition", "time_column"):
        if required not in doc:
            problems.append(f"top-level {required!r} is missing")
    for ref in list(doc.get("key", [])) + [doc.get("partition"), doc.get("time_column")]:
        if ref and ref not in names:
            problems.append(f"{ref!r} is referenced but not a column")
    if len(set(names)) != len(names):
        problems.append("duplicate column names")
    if problems:
        raise SchemaError(f"{path}: " + "; ".join(problems))
    return TableSchema(
        name=doc["name"],
        description=doc["description"],
        columns=tuple(columns),
        key=tuple(doc["key"]),
        partition=doc["partition"],
        time_column=doc["time_column"],
        path=path,
    )


@cache
def all_tables(schema_dir: Path = SCHEMA_DIR) -> dict[str, TableSchema]:
    """Every lake table, by name."""
    tables = {}
    for path in sorted(schema_dir.glob("*.toml")):
        table = _load_table(path)
        tables[table.name] = table
    return tables


def table(name: str) -> TableSchema:
    tables = all_tables()
    if name not in tables:
        raise KeyError(f"no lake table {name!r}; tables: {', '.join(sorted(tables))}")
    return tables[name]


def markdown_reference(names: list[str] | None = None) -> str:
    """The column reference for the docs and ``tokenhunt schema --format markdown``."""
    out: list[str] = []
    for t in all_tables().values():
        if names and t.name not in names:
            continue
        out.append(f"### `{t.name}`\n\n{t.description}\n\nKey: `{', '.join(t.key)}`; partitioned by `{t.partition}`.\n")
        out.append("| column | type | null | check | description |")
        out.append("|---|---|---|---|---|")
        for c in t.columns:
            check = c.check or (" / ".join(c.allowed) if c.allowed else "")
            kind = c.type + (" (derived)" if c.derived else "")
            desc = c.description.replace("|", "\\|")
            out.append(f"| `{c.name}` | {kind} | {'yes' if c.nullable else 'no'} | {check} | {desc} |")
        out.append("")
    return "\n".join(out)
