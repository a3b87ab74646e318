"""Paths and configuration: user-given lake and output paths are resolved safely; a malformed config
or JWKS file is one clear error naming the file and the field (never a traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import config
from pipeline.lake import Lake, LakePathError
from tests.graphgen import record

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {}), "COLUMNS": "300"})


def one_error(done: subprocess.CompletedProcess) -> str:
    """The error line of a refused command: exit 2, no traceback, one `error:` line."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def signins(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "signins.json"
    path.parent.mkdir()
    path.write_text(json.dumps([record(i) for i in range(3)]), encoding="utf-8")
    return path


# ------------------------------------------------------------------ the lake path
def test_lake_path_that_is_a_file_is_refused(tmp_path: Path, signins: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("keep me", encoding="utf-8")
    line = one_error(cli("ingest", str(signins), "--lake", str(target)))
    assert "--lake" in line and "notes.txt is a file, not a folder" in line
    assert target.read_text(encoding="utf-8") == "keep me"


def test_foreign_non_empty_folder_is_never_made_a_lake(tmp_path: Path, signins: Path) -> None:
    """`--lake ~` or `--lake .` by mistake: refused before anything is written or deleted there."""
    home = tmp_path / "home"
    (home / "signins" / "event_date=2026-11-01").mkdir(parents=True)
    foreign = home / "signins" / "event_date=2026-11-01" / "part-00000-3f1e2b8a-c000.snappy.parquet"
    foreign.write_bytes(b"PAR1 someone else's data")
    (home / "thesis.docx").write_bytes(b"...")
    before = sorted(p.relative_to(home) for p in home.rglob("*"))
    line = one_error(cli("ingest", str(signins), "--lake", "~", env={"HOME": str(home)}))
    assert "is not a tokenhunt lake" in line and "refusing to write into it" in line
    with pytest.raises(LakePathError, match="not a tokenhunt lake"):
        with Lake(home).lock():
            pass
    assert sorted(p.relative_to(home) for p in home.rglob("*")) == before


def test_new_empty_and_existing_lakes_are_fine(tmp_path: Path, signins: Path) -> None:
    assert config.lake_path_problem(tmp_path / "new") is None
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"")
    assert config.lake_path_problem(tmp_path / "empty") is None
    done = cli("ingest", str(signins), "--lake", str(tmp_path / "empty"), "--quality", "off")
    assert done.returncode == 0, done.stderr
    assert config.lake_path_problem(tmp_path / "empty") is None  # now a lake: _manifest
    (tmp_path / "empty" / "notes.txt").write_text("a user's file in a lake folder", encoding="utf-8")
    assert config.lake_path_problem(tmp_path / "empty") is None


def test_lake_paths_resolve_home_and_config_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("TOKENHUNT_LAKE", raising=False)
    monkeypatch.delenv("TOKENHUNT_CONFIG", raising=False)
    assert config.load(None, Path("~/lakes/a")).lake == tmp_path / "lakes" / "a"
    conf = tmp_path / "conf" / "tokenhunt.toml"
    conf.parent.mkdir()
    conf.write_text('lake = "../shared-lake"\n', encoding="utf-8")
    monkeypatch.chdir(REPO)
    assert config.load(conf).lake.resolve() == (tmp_path / "shared-lake").resolve()
    assert Lake(Path("~/x")).root == (tmp_path / "x").resolve()


def test_recovery_deletes_only_its_own_files_inside_the_lake(tmp_path: Path, signins: Path) -> None:
    """A tampered journal naming files outside the lake, and foreign Parquet inside it, are left alone."""
    from pipeline.ingest import ingest_paths

    lake = Lake(tmp_path / "lake")
    ingest_paths(lake, [signins], quality_policy="off")
    outside = tmp_path / "precious.txt"
    outside.write_text("not the lake's", encoding="utf-8")
    part_dir = lake.root / "signins" / "event_date=2026-11-01"
    spark_file = part_dir / "part-00000-8d3c1f2e-c000.snappy.parquet"
    spark_file.write_bytes(b"PAR1")
    orphan = part_dir / "part-20261101T080000000000-0123456789ab-00000.parquet"  # ours, never committed
    orphan.write_bytes(b"PAR1")
    journal = lake.root / "_manifest" / "pending" / "20261101T080000000000-0123456789ab.json"
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text(json.dumps({"files": ["../precious.txt", str(outside), "signins/../../precious.txt"]}), encoding="utf-8")
    with lake.lock():
        pass
    assert outside.read_text(encoding="utf-8") == "not the lake's"
    assert spark_file.exists() and not orphan.exists() and not journal.exists()
    assert lake.read_table("signins").num_rows == 3


# ------------------------------------------------------------------ output paths
def test_unusable_out_is_refused_before_any_work(tmp_path: Path, signins: Path) -> None:
    lake = tmp_path / "lake"
    assert cli("ingest", str(signins), "--lake", str(lake), "--quality", "off").returncode == 0
    folder = tmp_path / "reports"
    folder.mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x", encoding="utf-8")
    cases = [
        (["detect", "--lake", str(lake), "--format", "jsonl", "--out", str(folder)], "is a folder; give a file name"),
        (["retention", "--lake", str(lake), "--format", "json", "--out", str(a_file / "r.json")], "file.txt is a file, so"),
        (["nightly", str(signins), "--lake", str(lake), "--out", str(a_file)], "file.txt is a file, not a folder"),
        (["hunt", "sql", "SELECT 1", "--lake", str(lake), "--format", "csv", "--out", str(folder)], "is a folder; give a file name"),
    ]
    for args, expected in cases:
        line = one_error(cli(*args))
        assert "--out" in line and expected in line, (args, line)
    assert not (lake / "_manifest" / "nightly").exists()  # the nightly did not start
    assert Lake(lake).read_table("findings").num_rows == 0  # detect did not run


def test_out_folders_are_created(tmp_path: Path) -> None:
    assert config.output_path_problem(tmp_path / "new" / "deeper" / "report.json") is None
    assert config.output_path_problem(tmp_path / "reports", folder=True) is None


# ------------------------------------------------------------------ malformed config files
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("quality_policy = 3\n", "field 'quality_policy' must be a string"),
        ('quality_policy = "loud"\n', "field 'quality_policy': 'loud' is not one of warn, fail, off"),
        ("lake = \n", "not valid TOML: Invalid value (at line 1, column 8)"),
        ("lake = 7\n", "field 'lake' must be a path string"),
        ('colour = "red"\n', "unknown setting(s) colour"),
        ('[token_fields]\nbogus = "x"\n', "[token_fields] key 'bogus' is not a column"),
        ("[token_fields]\ntoken = 5\n", "[token_fields] token must be a field name or a list of field names"),
        ('[token_fields]\ntime = ["ts", 3]\n', "[token_fields] time must be a field name"),
        ('partner_tenants = "fabrikam"\n', "field 'partner_tenants' must be a list of tenant id strings"),
        ('token_fields = "x"\n', "[token_fields] must be a table"),
    ],
)
def test_malformed_config_is_one_error_naming_file_and_field(tmp_path: Path, signins: Path, text: str, expected: str) -> None:
    conf = tmp_path / "tokenhunt.toml"
    conf.write_text(text, encoding="utf-8")
    with pytest.raises(config.ConfigError) as info:
        config.load(conf)
    assert str(conf) in str(info.value) and expected in str(info.value)
    line = one_error(cli("ingest", str(signins), "--config", str(conf), "--lake", str(tmp_path / "lake")))
    assert "tokenhunt.toml" in line and expected in line


def test_bad_environment_setting_names_the_variable(tmp_path: Path, signins: Path) -> None:
    line = one_error(cli("ingest", str(signins), "--lake", str(tmp_path / "lake"), env={"TOKENHUNT_QUALITY_POLICY": "loud"}))
    assert "environment TOKENHUNT_QUALITY_POLICY" in line
    line = one_error(cli("ingest", str(signins), env={"TOKENHUNT_LAKE": str(signins)}))
    assert "environment TOKENHUNT_LAKE" in line and "is a file" in line


def test_token_field_typo_is_a_config_error_not_quarantine(tmp_path: Path) -> None:
    """Before: every gateway record was quarantined with 'unknown column'; now the config is refused."""
    conf = tmp_path / "tokenhunt.toml"
    conf.write_text('[token_fields]\ntokn = "x-auth"\n', encoding="utf-8")
    with pytest.raises(config.ConfigError, match=r"\[token_fields\] key 'tokn'"):
        config.load(conf)


# ------------------------------------------------------------------ malformed JWKS files
@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("cut.json", '{"keys": [', "cut.json: not JSON: line 1 column 11"),
        ("shape.json", '{"keys": "nope"}', "shape.json: not a JWKS document"),
        ("nodate.json", '{"snapshots": [{"jwks": {"keys": []}}]}', "nodate.json snapshot 1: snapshot has no date"),
        ("badday.json", '{"snapshots": [{"date": "2026-02-30", "jwks": {"keys": []}}]}', "badday.json snapshot 1: date:"),
        # regression (found by tests/test_fuzz.py): a time past year 9999 in UTC raised OverflowError
        ("overflow.json", '{"snapshots": [{"date": "9999-12-31T23:59:59-01:00", "jwks": {"keys": []}}]}',
         "overflow.json snapshot 1: date: time '9999-12-31T23:59:59-01:00' is out of range in UTC"),
        ("latin1.json", b'{"keys": [{"kid": "caf\xe9"}]}', "latin1.json: cannot read"),
    ],
)
def test_malformed_jwks_file_is_one_error_naming_the_file(tmp_path: Path, name: str, text: str | bytes, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    done = cli("keys", "import", str(path), "--lake", str(tmp_path / "lake"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in " ".join(done.stderr.split()).split("error: ") if line.strip()]
    assert len(errors) == 1 and expected in errors[0], done.stderr


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ({"kty": "RSA", "kid": "k1", "e": "AQAB"}, "key 1 kid k1: RSA key has no 'n' member"),
        ({"kty": "RSA", "kid": "k1", "n": "%%%", "e": "AQAB"}, "key 1 kid k1: member 'n' is not base64url text"),
        ({"kty": "EC", "kid": "k2", "x": "AQAB"}, "key 1 kid k2: EC key has no 'y' member"),
        ({"kty": "RSA", "n": "AQAB", "e": "AQAB"}, "key 1: key has no kid"),
        ({"kty": "oct", "kid": "k3", "k": "c2VjcmV0"}, "key 1 kid k3: symmetric key (kty oct) refused"),
    ],
)
def test_malformed_key_names_file_key_and_member(tmp_path: Path, key: dict, expected: str) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [key]}), encoding="utf-8")
    done = cli("keys", "import", str(path), "--lake", str(tmp_path / "lake"))
    assert "Traceback" not in done.stderr
    text = " ".join(done.stderr.split())
    assert f"jwks.json {expected}" in text, text
    assert "c2VjcmV0" not in done.stdout + done.stderr  # a refused secret is never echoed


def test_malformed_jwks_in_a_nightly_run_is_reported_by_name(tmp_path: Path, signins: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "broken.json").write_text('{"keys": [', encoding="utf-8")
    from pipeline.nightly import EXIT_FAILURE, run_nightly

    run = run_nightly([signins], tmp_path / "lake", keys, tmp_path / "out", quality_policy="off", as_of="2026-11-06")
    assert run.exit_code == EXIT_FAILURE
    assert any("broken.json: not JSON: line 1" in e for e in run.errors), run.errors
    assert run.ingest is not None and run.ingest.files[0].status == "ingested"
