"""Retention policy: which log sources must reach how far back, with which gaps and operations.

A policy is TOML (``pipeline/policies/*.toml`` are the built-in profiles; ``default.toml`` documents
every field and is based on OMB M-21-31). A user file given with ``--policy`` is merged over a
profile, so it only states what differs. Every problem names the file and the field, because a
typo in a retention policy (``requried_days``) silently weakens the check it was written for.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline import schemas

# Tables that are time series of log events: the "log sources" of the report.
LOG_TABLES: tuple[str, ...] = ("signins", "mail_events", "token_events", "tokens")
# Column that splits a table into sub-sources (one per sign-in type, one per mail operation).
SUBSOURCE_COLUMN: dict[str, str] = {"signins": "sign_in_type", "mail_events": "operation"}
GAP_CHECKS = ("always", "auto", "never")
DEFAULT_PROFILE = "default"

# field -> (type check, what to say when it fails)
_INT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a non-negative integer")
_RATIO = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1, "a number between 0 and 1")
_NUM = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, "a non-negative number")
_STR = (lambda v: isinstance(v, str) and v != "", "a non-empty string")
_STRLIST = (lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v), "a list of strings")
_GAP = (lambda v: v in GAP_CHECKS, "one of " + ", ".join(GAP_CHECKS))

RULE_FIELDS: dict[str, tuple] = {
    "required_days": _INT,
    "max_gap_days": _INT,
    "gap_check": _GAP,
    "low_volume_ratio": _RATIO,
    "min_normal_per_day": _NUM,
    "max_staleness_days": _INT,
    "export_margin_days": _INT,
    "tier": _STR,
    "source_retention_days": _INT,
}
# Fields only one table may carry: the sub-source values that must be present at all.
TABLE_ONLY_FIELDS: dict[str, tuple[str, tuple]] = {
    "required_sign_in_types": ("signins", _STRLIST),
    "required_operations": ("mail_events", _STRLIST),
}
TOP_LEVEL = {"name", "description", "extends", "defaults", "tiers", "sources"}


class PolicyError(ValueError):
    """A policy file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class SourceRule:
    """The effective policy for one source (table or sub-source), inheritance resolved."""

    source: str
    listed: bool  # named in the policy (or a table): judged; otherwise a discovered sub-source, info only
    required_days: int
    max_gap_days: int
    gap_check: str
    low_volume_ratio: float
    min_normal_per_day: float
    max_staleness_days: int
    export_margin_days: int
    tier: str | None
    source_retention_days: int | None  # from the tier, or set directly
    required_values: tuple[str, ...] = ()  # sign-in types / operations that must be present (tables only)

    @property
    def judged(self) -> bool:
        return self.listed and self.required_days > 0


@dataclass
class Policy:
    name: str
    description: str
    files: list[str]  # every layer read, base first
    defaults: dict[str, Any]
    tiers: dict[str, int]
    sources: dict[str, dict[str, Any]]

    def rule(self, source: str) -> SourceRule:
        """Effective rule: the source's own fields over its table's over [defaults]."""
        table, _, sub = source.partition(".")
        merged = dict(self.defaults)
        merged.update({k: v for k, v in self.sources.get(table, {}).items() if k in RULE_FIELDS})
        if sub:
            merged.update({k: v for k, v in self.sources.get(source, {}).items() if k in RULE_FIELDS})
        tier = merged.get("tier")
        retention = merged.get("source_retention_days")
        if retention is None and tier:
            retention = self.tiers.get(tier)
        required_values: tuple[str, ...] = ()
        if not sub:
            for name, (owner, _check) in TABLE_ONLY_FIELDS.items():
                if owner == table:
                    required_values = tuple(self.sources.get(table, {}).get(name, ()))
        return SourceRule(
            source=source,
            listed=(not sub) or source in self.sources,
            required_days=int(merged.get("required_days", 0)),
            max_gap_days=int(merged.get("max_gap_days", 0)),
            gap_check=str(merged.get("gap_check", "always")),
            low_volume_ratio=float(merged.get("low_volume_ratio", 0.1)),
            min_normal_per_day=float(merged.get("min_normal_per_day", 10)),
            max_staleness_days=int(merged.get("max_staleness_days", 2)),
            export_margin_days=int(merged.get("export_margin_days", 2)),
            tier=tier,
            source_retention_days=retention,
            required_values=required_values,
        )

    def listed_subsources(self, table: str) -> list[str]:
        return [name for name in self.sources if name.startswith(table + ".")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "files": self.files,
            "defaults": self.defaults,
            "tiers": self.tiers,
            "sources": self.sources,
        }


# --------------------------------------------------------------------------- loading
def profiles() -> list[str]:
    """Names of the built-in profiles (``pipeline/policies/<name>.toml``)."""
    base = resources.files("pipeline") / "policies"
    return sorted(p.name[: -len(".toml")] for p in base.iterdir() if p.name.endswith(".toml"))


def _profile_text(name: str) -> tuple[str, str]:
    if name not in profiles():
        raise PolicyError(f"unknown retention profile {name!r}; profiles: {', '.join(profiles())}")
    res = resources.files("pipeline") / "policies" / f"{name}.toml"
    return f"profile {name} ({res})", res.read_text(encoding="utf-8")


def _parse(label: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{label}: not valid TOML: {exc}") from None


def _check_rule_fields(label: str, where: str, doc: dict[str, Any], table: str | None) -> None:
    for key, value in doc.items():
        if key in RULE_FIELDS:
            test, meaning = RULE_FIELDS[key]
        elif key in TABLE_ONLY_FIELDS and table is not None:
            owner, (test, meaning) = TABLE_ONLY_FIELDS[key]
            if where != f"sources.{owner}":
                raise PolicyError(f"{label}: {where}.{key}: only [sources.{owner}] may set {key}")
        else:
            known = sorted(RULE_FIELDS) + (sorted(TABLE_ONLY_FIELDS) if table else [])
            raise PolicyError(f"{label}: {where}.{key}: unknown field; known: {', '.join(known)}")
        if not test(value):
            raise PolicyError(f"{label}: {where}.{key}: must be {meaning}, got {value!r}")


def _check_source_name(label: str, name: str) -> str:
    table, dot, sub = name.partition(".")
    if table not in LOG_TABLES:
        raise PolicyError(f"{label}: sources.{name}: {table!r} is not a log table; log tables: {', '.join(LOG_TABLES)}")
    if dot:
        if table not in SUBSOURCE_COLUMN or not sub:
            splittable = ", ".join(f"{t}.<{c}>" for t, c in SUBSOURCE_COLUMN.items())
            raise PolicyError(f"{label}: sources.{name}: only {splittable} sub-sources exist")
        allowed = schemas.table(table).column(SUBSOURCE_COLUMN[table]).allowed
        if allowed and sub not in allowed:
            raise PolicyError(f"{label}: sources.{name}: {sub!r} is not a {SUBSOURCE_COLUMN[table]} ({', '.join(allowed)})")
    return table


def validate_layer(label: str, doc: dict[str, Any], known_tiers: set[str]) -> None:
    """Check one file on its own, so an error names the file that holds the mistake."""
    unknown = sorted(set(doc) - TOP_LEVEL)
    if unknown:
        raise PolicyError(f"{label}: {', '.join(unknown)}: unknown top-level field(s); known: {', '.join(sorted(TOP_LEVEL))}")
    for key in ("name", "description", "extends"):
        if key in doc and not isinstance(doc[key], str):
            raise PolicyError(f"{label}: {key}: must be a string, got {doc[key]!r}")
    for key in ("defaults", "tiers", "sources"):
        if key in doc and not isinstance(doc[key], dict):
            raise PolicyError(f"{label}: {key}: must be a table ([{key}])")
    tiers = known_tiers | set(doc.get("tiers", {}))
    for tier, days in doc.get("tiers", {}).items():
        if not _INT[0](days):
            raise PolicyError(f"{label}: tiers.{tier}: must be a non-negative integer (days), got {days!r}")
    _check_rule_fields(label, "defaults", doc.get("defaults", {}), None)
    for name, body in doc.get("sources", {}).items():
        if not isinstance(body, dict):
            raise PolicyError(f"{label}: sources.{name}: must be a table ([sources.{name}])")
        table = _check_source_name(label, name)
        _check_rule_fields(label, f"sources.{name}", body, table)
        required = body.get("required_sign_in_types", [])
        allowed = schemas.table("signins").column("sign_in_type").allowed or ()
        for value in required:
            if value not in allowed:
                raise PolicyError(f"{label}: sources.{name}.required_sign_in_types: {value!r} is not one of {', '.join(allowed)}")
    for where, body in [("defaults", doc.get("defaults", {}))] + [(f"sources.{n}", b) for n, b in doc.get("sources", {}).items()]:
        if "tier" in body and body["tier"] not in tiers:
            raise PolicyError(f"{label}: {where}.tier: unknown tier {body['tier']!r}; tiers: {', '.join(sorted(tiers))}")


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key (recursively); everything else, lists included, is replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _layers(label: str, doc: dict[str, Any], seen: tuple[str, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    """The chain of documents a document extends, base first."""
    parent = doc.get("extends")
    if not parent:
        return [(label, doc)]
    if not isinstance(parent, str):
        raise PolicyError(f"{label}: extends: must be a profile name, got {parent!r}")
    if parent in seen:
        raise PolicyError(f"{label}: extends: profile cycle {' -> '.join(seen + (parent,))}")
    parent_label, text = _profile_text(parent)
    return _layers(parent_label, _parse(parent_label, text), seen + (parent,)) + [(label, doc)]


def load_policy(path: Path | None = None, profile: str | None = None) -> Policy:
    """The effective policy: ``path`` (optional) merged over ``profile`` (or its ``extends``, or default)."""
    user: tuple[str, dict[str, Any]] | None = None
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read policy: {exc.strerror or exc}") from None
        doc = _parse(str(path), text)
        user = (str(path), doc)
        extends = doc.get("extends")
        if profile and extends and extends != profile:
            raise PolicyError(f"{path}: extends: the file extends {extends!r} but --profile asks for {profile!r}; keep one")
        profile = profile or extends or DEFAULT_PROFILE
    profile = profile or DEFAULT_PROFILE
    label, text = _profile_text(profile)
    layers = _layers(label, _parse(label, text), (profile,))
    if user is not None:
        layers.append((user[0], {k: v for k, v in user[1].items() if k != "extends"}))
    merged: dict[str, Any] = {}
    for layer_label, layer in layers:
        validate_layer(layer_label, layer, set(merged.get("tiers", {})))
        merged = _merge(merged, layer)
    return Policy(
        name=merged.get("name", profile) if user is None else str(user[1].get("name", f"{profile} + {Path(user[0]).name}")),
        description=merged.get("description", ""),
        files=[lbl for lbl, _ in layers],
        defaults=merged.get("defaults", {}),
        tiers=merged.get("tiers", {}),
        sources=merged.get("sources", {}),
    )
