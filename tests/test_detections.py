"""The detection fixture harness: every queries/detections/*.sql against its tests/detections/<id>.toml.

Parametrized over the files on disk, so a new detection is covered the moment it lands, and a
detection without metadata, without a fixture, or without both a positive and a negative case
fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.detect import QUERIES_DIR, RESULT_COLUMNS, load_detection, load_detections
from pipeline.detect_fixtures import FIXTURES_DIR, FixtureError, check_case, load_cases

DETECTIONS_DIR = QUERIES_DIR / "detections"
SQL_FILES = sorted(DETECTIONS_DIR.glob("*.sql"))
RUNNER_DETECTIONS = (  # detections 1-6; 7-12 come with the nightly work and are covered the same way
    "consumer_key_enterprise_mailbox",
    "known_compromised_key",
    "consumer_tenant_mail_audit",
    "token_never_issued",
    "session_never_created",
    "key_validity",
)


def _case_params() -> list:
    params = []
    for sql in SQL_FILES:
        try:
            cases = load_cases(FIXTURES_DIR / f"{sql.stem}.toml")
        except FixtureError:
            params.append(pytest.param(sql, None, id=f"{sql.stem}::fixture-error"))
            continue
        params += [pytest.param(sql, case.name, id=f"{sql.stem}::{case.name}") for case in cases]
    return params


def test_detection_directory_holds_the_core_detections() -> None:
    ids = {d.id for d in load_detections(DETECTIONS_DIR)}
    assert set(RUNNER_DETECTIONS) <= ids


@pytest.mark.parametrize("sql", SQL_FILES, ids=[p.stem for p in SQL_FILES])
def test_detection_has_metadata(sql: Path) -> None:
    detection = load_detection(sql)  # raises with every problem of the file
    assert detection.title and detection.description and detection.requires
    assert detection.severity in ("informational", "low", "medium", "high", "critical")
    assert detection.references, f"{sql.name}: cite at least one reference"


@pytest.mark.parametrize("sql", SQL_FILES, ids=[p.stem for p in SQL_FILES])
def test_detection_has_positive_and_negative_cases(sql: Path) -> None:
    cases = load_cases(FIXTURES_DIR / f"{sql.stem}.toml")
    kinds = {c.kind for c in cases}
    assert "positive" in kinds, f"{sql.stem}: no positive case"
    assert "negative" in kinds, f"{sql.stem}: no negative case"


def test_every_fixture_has_a_detection() -> None:
    stems = sorted(p.stem for p in FIXTURES_DIR.glob("*.toml"))
    orphans = [name for name in stems if not (DETECTIONS_DIR / f"{name}.sql").is_file()]
    assert not orphans, f"fixtures without a detection: {orphans}"


@pytest.mark.parametrize(("sql", "case_name"), _case_params())
def test_detection_case(sql: Path, case_name: str | None) -> None:
    cases = load_cases(FIXTURES_DIR / f"{sql.stem}.toml")  # re-raises the fixture error, if any
    case = next(c for c in cases if c.name == case_name)
    failures = check_case(load_detection(sql), case)
    assert not failures, f"{sql.stem} / {case.name}:\n  " + "\n  ".join(failures)


def test_result_columns_are_the_contract() -> None:
    assert RESULT_COLUMNS == (
        "detection_id", "severity", "event_time", "tenant_id", "principal",
        "entity_key", "token_fingerprint", "evidence", "outcome",
    )
