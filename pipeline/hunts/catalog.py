"""Saved hunts: the ``queries/hunts/*.sql`` files, their TOML header, and loading them strictly.

A saved hunt is one SQL file whose leading ``-- `` comment lines are TOML (title, description,
``[params.<name>]`` with type, description and an optional default); the rest is one read statement
using ``$name`` parameters. The whole file text is executed (the header is SQL comments), so the
LINE numbers in DuckDB errors are the file's. Loading reports every problem of every file at once.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.hunts.errors import HuntError, HuntLoadError, HuntParamError
from pipeline.hunts.guard import check_read_only, parse_statements
from pipeline.hunts.params import PARAM_TYPES, HuntParam, convert_value
from pipeline.queryfile import split_header

QUERIES_DIR = Path(__file__).resolve().parents[2] / "queries"
HUNTS_DIR = QUERIES_DIR / "hunts"

HEADER_KEYS = ("title", "description", "params", "tags", "references", "requires")
PARAM_KEYS = ("type", "description", "default")

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


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
    header, body, _ = split_header(text)
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
            used = set().union(*(s.named_parameters for s in parse_statements(text)))
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
