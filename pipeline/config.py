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


@dataclass
class Settings:
    lake: Path = Path("lake")
    quality_policy: str = "warn"  # warn: failing batches are marked degraded; fail: also exit non-zero; off: skip GE
    engine: str = "duckdb"
    spark_master: str = "local[2]"
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
    if path:
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        settings.source_path = path
        known = {"lake", "quality_policy", "engine", "spark_master", "detections", "token_fields", "partner_tenants"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "lake" in doc:
            if not isinstance(doc["lake"], str):
                raise ConfigError(f"{path}: field 'lake' must be a path string")
            settings.lake = (path.parent / doc["lake"]) if not Path(doc["lake"]).is_absolute() else Path(doc["lake"])
        for name in ("quality_policy", "engine", "spark_master"):
            if name in doc:
                if not isinstance(doc[name], str):
                    raise ConfigError(f"{path}: field {name!r} must be a string")
                setattr(settings, name, doc[name])
        for name in ("detections", "token_fields"):
            if name in doc:
                if not isinstance(doc[name], dict):
                    raise ConfigError(f"{path}: [{name}] must be a table")
                setattr(settings, name, doc[name])
        if "partner_tenants" in doc:
            if not isinstance(doc["partner_tenants"], list):
                raise ConfigError(f"{path}: field 'partner_tenants' must be a list of tenant ids")
            settings.partner_tenants = [str(t).lower() for t in doc["partner_tenants"]]
    if os.environ.get("TOKENHUNT_LAKE"):
        settings.lake = Path(os.environ["TOKENHUNT_LAKE"])
    if os.environ.get("TOKENHUNT_QUALITY_POLICY"):
        settings.quality_policy = os.environ["TOKENHUNT_QUALITY_POLICY"]
    if lake is not None:
        settings.lake = lake
    if settings.quality_policy not in Settings.QUALITY_POLICIES:
        raise ConfigError(
            f"{path or 'environment'}: quality_policy {settings.quality_policy!r} is not one of {', '.join(Settings.QUALITY_POLICIES)}"
        )
    settings.lake = settings.lake.expanduser()
    return settings
