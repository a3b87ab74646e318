"""Hunt parameters: declared types, command-line ``--param`` parsing, and typed binding.

Parameters reach DuckDB as prepared-statement values (``$name``), never pasted into the SQL, so a
value with quotes or semicolons is inert. This module turns text (``--param since=2024-05-01``) or
a TOML default into the Python value of the declared type, and says exactly what is wrong when it
does not convert.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from pipeline.hunts.errors import HuntParamError

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.hunts.catalog import Hunt

PARAM_TYPES = ("string", "int", "float", "timestamp", "date", "bool")
_PARAM_ARG_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?=(.*)$", re.S)


@dataclass(frozen=True)
class HuntParam:
    """One declared parameter: type, description and default (``required`` when it has none)."""

    name: str
    type: str
    description: str
    default: Any = None
    required: bool = True


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

