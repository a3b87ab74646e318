"""Settings: built-in defaults < ``tokenhunt.toml`` < environment (``TOKENHUNT_*``) < command line.

Why one place: cron jobs set the lake by environment, analysts by option, teams by a committed
config file; every command resolves them the same way.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FILE_ENV = "TOKENHUNT_CONFIG"
DEFAULT_CONFIG_FILE = "tokenhunt.toml"


class ConfigError(ValueError):
    """The config file is malformed: the message names the file and the field."""


LAKE_MARKERS = ("_manifest", ".tokenhunt.lock")  # what every folder tokenhunt has written a lake into holds


def lake_path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a lake, or None. Why: the lake's recovery deletes files it did not
    commit, so it must never run in a folder that holds something else (``--lake ~``, ``--lake .``).

    A new or empty folder, or one that holds a tokenhunt lake, is fine; hidden files are ignored.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        return f"lake {path} is a file, not a folder"
    if not path.is_dir() or any((path / m).exists() for m in LAKE_MARKERS):
        return None
    try:
        foreign = sorted(e.name for e in path.iterdir() if not e.name.startswith("."))
    except OSError as exc:
        return f"lake {path} cannot be read: {exc}"
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        return (
            f"lake {path} is a folder that is not a tokenhunt lake (no _manifest) and is not empty ({shown}); "
            "refusing to write into it: pick a new or empty folder for --lake"
        )
    return None


@dataclass
class Settings:
    lake: Path = Path("lake")
    quality_policy: str = "warn"  # warn: failing batches are marked degraded; fail: also exit non-zero; off: skip GE
    engine: str = "duckdb"
    spark_master: str = "local[2]"
    spark_lake_uri: str | None = None  # where a Spark cluster reads the lake (s3://, abfss://, dbfs:/); default: the lake path
    detections: dict[str, Any] = field(default_factory=dict)  # per-detection thresholds and allow lists
    token_fields: dict[str, str] = field(default_factory=dict)  # gateway field-name mapping
    partner_tenants: list[str] = field(default_factory=list)
    source_path: Path | None = None  # the config file read, if any

    QUALITY_POLICIES = ("warn", "fail", "off")


def _config_path(explicit: Path | None) -> Path | None:
    if explicit:
        return explicit
    env = os.environ.get(CONFIG_FILE_ENV)
    if env:
        return Path(env)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load(config: Path | None = None, lake: Path | None = None) -> Settings:
    """Resolve settings. ``lake`` from the command line wins over everything else."""
    settings = Settings()
    path = _config_path(config)
    doc: dict[str, Any] = {}
    if path:
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        settings.source_path = path
        known = {"lake", "quality_policy", "engine", "spark_master", "spark_lake_uri", "detections", "token_fields", "partner_tenants"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "lake" in doc:
            if not isinstance(doc["lake"], str):
                raise ConfigError(f"{path}: field 'lake' must be a path string")
            settings.lake = (path.parent / doc["lake"]) if not Path(doc["lake"]).is_absolute() else Path(doc["lake"])
        for name in ("quality_policy", "engine", "spark_master", "spark_lake_uri"):
            if name in doc:
                if not isinstance(doc[name], str):
                    raise ConfigError(f"{path}: field {name!r} must be a string")
                setattr(settings, name, doc[name])
        for name in ("detections", "token_fields"):
            if name in doc:
                if not isinstance(doc[name], dict):
                    raise ConfigError(f"{path}: [{name}] must be a table")
                setattr(settings, name, doc[name])
        _check_token_fields(path, settings.token_fields)
        if "partner_tenants" in doc:
            tenants = doc["partner_tenants"]
            if not isinstance(tenants, list) or not all(isinstance(t, str) and t.strip() for t in tenants):
                raise ConfigError(f"{path}: field 'partner_tenants' must be a list of tenant id strings")
            settings.partner_tenants = [t.strip().lower() for t in tenants]
    if os.environ.get("TOKENHUNT_LAKE"):
        settings.lake = Path(os.environ["TOKENHUNT_LAKE"])
    policy_from = f"{path}: field 'quality_policy'" if path and "quality_policy" in doc else "setting quality_policy"
    if os.environ.get("TOKENHUNT_QUALITY_POLICY"):
        settings.quality_policy = os.environ["TOKENHUNT_QUALITY_POLICY"]
        policy_from = "environment TOKENHUNT_QUALITY_POLICY"
    lake_from = f"{path}: field 'lake'" if path and "lake" in doc else "--lake"
    if os.environ.get("TOKENHUNT_LAKE"):
        lake_from = "environment TOKENHUNT_LAKE"
    if lake is not None:
        settings.lake = lake
        lake_from = "--lake"
    if settings.quality_policy not in Settings.QUALITY_POLICIES:
        raise ConfigError(
            f"{policy_from}: {settings.quality_policy!r} is not one of {', '.join(Settings.QUALITY_POLICIES)}"
        )
    settings.lake = settings.lake.expanduser()
    problem = lake_path_problem(settings.lake)
    if problem:
        raise ConfigError(f"{lake_from}: {problem}")
    return settings


def output_path_problem(path: Path, *, folder: bool = False) -> str | None:
    """Why ``path`` cannot be written as an output file (``folder``: a report folder), or None.

    Checked before any work is done, so a bad ``--out`` never costs a detection run and never
    ends in a traceback: the path must not be a folder (a file) or a file (a folder), and its
    nearest existing parent must be a writable folder.
    """
    path = Path(path).expanduser()
    if folder and path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    if not folder and path.is_dir():
        return f"{path} is a folder; give a file name"
    start = path if folder else path.parent
    for ancestor in (start, *start.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                return f"{ancestor} is a file, so {path} cannot be created"
            if not os.access(ancestor, os.W_OK | os.X_OK):
                return f"{ancestor} is not writable"
            break
    return None


def _check_token_fields(path: Path, mapping: dict[str, Any]) -> None:
    """[token_fields]: column = "field" or ["field", ...]; checked here so a typo is one clear
    error naming the file and the key, not every gateway record quarantined."""
    from pipeline.sources.gateway import DEFAULT_FIELDS  # light: no heavy imports there

    for column, names in mapping.items():
        if column not in DEFAULT_FIELDS:
            raise ConfigError(f"{path}: [token_fields] key {column!r} is not a column; known: {', '.join(DEFAULT_FIELDS)}")
        ok = (isinstance(names, str) and names.strip()) or (
            isinstance(names, list) and names and all(isinstance(n, str) and n.strip() for n in names)
        )
        if not ok:
            raise ConfigError(f"{path}: [token_fields] {column} must be a field name or a list of field names")
