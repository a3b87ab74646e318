"""Shared test fixtures: the realdata location and small lake builders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REALDATA = Path(os.environ.get("TOKENHUNT_REALDATA", SHARED / "realdata"))

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@pytest.fixture
def realdata() -> Path:
    """The real exports in ../shared/realdata (present on every developer machine and in CI)."""
    if not REALDATA.is_dir():
        pytest.fail(f"real exports not found at {REALDATA}; set TOKENHUNT_REALDATA")
    return REALDATA


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    return tmp_path / "lake"
