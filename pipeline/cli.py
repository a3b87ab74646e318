"""The `tokenhunt` command line: parses options, calls the core modules, prints.

No logic lives here: every command is a thin wrapper over a function that tests call directly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from pipeline import config as config_mod

app = typer.Typer(
    name="tokenhunt",
    help="Find forged access tokens (Storm-0558 style) in Entra ID sign-in, Purview mail-audit and gateway token logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Signing-key registry: import JWKS documents, list keys, mark compromised keys.", no_args_is_help=True)
hunt_app = typer.Typer(help="Read-only SQL hunts over the lake: ad hoc, saved, or an interactive shell.", no_args_is_help=True)
sql_app = typer.Typer(help="Portable SQL: lint detections and hunts, transpile them to Spark/Trino/Athena, print table DDL.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(hunt_app, name="hunt")
app.add_typer(sql_app, name="sql")

console = Console()
err = Console(stderr=True)

LakeOpt = typer.Option(None, "--lake", help="Lake directory (default ./lake, or `lake` in tokenhunt.toml, or $TOKENHUNT_LAKE).")
ConfigOpt = typer.Option(None, "--config", help="Config file (default ./tokenhunt.toml or $TOKENHUNT_CONFIG).")


def settings(lake: Optional[Path], config: Optional[Path]) -> config_mod.Settings:
    try:
        return config_mod.load(config, lake)
    except config_mod.ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def fail(message: str, code: int) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


# --------------------------------------------------------------------------- ingest
@app.command()
def ingest(
    paths: list[Path] = typer.Argument(..., help="Files or folders to ingest (plain or gzip)."),
    lake: Optional[Path] = LakeOpt,
    config: Optional[Path] = ConfigOpt,
    format: Optional[str] = typer.Option(None, "--format", help="Force a source format instead of sniffing (see `tokenhunt formats`)."),
    quality: Optional[str] = typer.Option(None, "--quality", help="Quality gate policy: warn (mark degraded), fail (exit 3), off."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Ingest sign-in, mail-audit and token logs into the lake (idempotent, atomic per file).

    Exit codes: 0 ok (quarantined records included), 1 a file could not be read, 3 a batch failed the
    quality gate (policy fail), 4 another run holds the lake.
    """
    from pipeline.ingest import EXIT_LAKE_BUSY, ingest_paths
    from pipeline.lake import Lake, LakeBusy

    s = settings(lake, config)
    policy = quality or s.quality_policy
    options = {"token_fields": s.token_fields} if s.token_fields else {}
    progress = _file_progress()
    try:
        with progress as bar:
            report = ingest_paths(
                Lake(s.lake), paths, format_name=format, options=options, quality_policy=policy, on_file=bar.update
            )
    except LakeBusy as exc:
        fail(str(exc), EXIT_LAKE_BUSY)
    except KeyError as exc:
        fail(str(exc.args[0]), 2)
    if as_json:
        console.print_json(json.dumps(ingest_summary_dict(report)))
    else:
        print_ingest_report(report)
    raise typer.Exit(report.exit_code)


class _FileProgress:
    """A rich progress bar over files when stderr is a terminal; silent otherwise (cron, pipes)."""

    def __init__(self) -> None:
        self.progress = None
        self.task = None

    def __enter__(self) -> "_FileProgress":
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
            )
            self.progress.__enter__()
        return self

    def update(self, path: Path, index: int, total: int) -> None:
        if self.progress is None:
            return
        if self.task is None:
            self.task = self.progress.add_task("ingest", total=total)
        self.progress.update(self.task, completed=index, description=f"ingest {path.name}")

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)  # type: ignore[arg-type]


def _file_progress() -> _FileProgress:
    return _FileProgress()


def ingest_summary_dict(report) -> dict:  # noqa: ANN001 - IngestReport, imported lazily
    return {
        "exit_code": report.exit_code,
        "files": [
            {
                "path": str(f.path),
                "format": f.format,
                "status": f.status,
                "message": f.message,
                "batch_id": f.batch_id,
                "records": f.records,
                "skipped": f.skipped,
                "quality": f.quality_status,
                "tables": {t: vars(c) for t, c in f.counts.items()},
            }
            for f in report.files
        ],
    }


def print_ingest_report(report) -> None:  # noqa: ANN001
    table = Table(title="ingest summary", show_lines=False)
    for col in ("file", "format", "table", "read", "written", "duplicates", "quarantined", "status"):
        table.add_column(col, justify="right" if col in ("read", "written", "duplicates", "quarantined") else "left")
    for f in report.files:
        name = f.path.name
        if not f.counts:
            table.add_row(name, f.format or "-", "-", "-", "-", "-", "-", f.status)
        for t, c in sorted(f.counts.items()):
            status = f.status if f.quality_status in ("passed", "skipped") else f"{f.status} ({f.quality_status})"
            table.add_row(name, f.format or "-", t, str(c.read), str(c.written), str(c.duplicates), str(c.quarantined), status)
        if f.skipped:
            table.add_row(name, f.format or "-", "(out of scope)", str(f.skipped), "0", "0", "0", "skipped")
    console.print(table)
    for f in report.files:
        if f.status == "error":
            err.print(f"[red]error:[/red] {f.message}", highlight=False)
        elif f.status in ("unchanged", "empty"):
            console.print(f"{f.path}: {f.message}", highlight=False)


# --------------------------------------------------------------------------- schema, formats, quality
@app.command()
def schema(
    table: Optional[list[str]] = typer.Argument(None, help="Tables to show (default: all)."),
    format: str = typer.Option("table", "--format", help="table or markdown."),
) -> None:
    """Print the lake's column reference (generated from schemas/)."""
    from pipeline import schemas

    if format == "markdown":
        console.print(schemas.markdown_reference(table or None), markup=False, highlight=False)
        return
    for spec in schemas.all_tables().values():
        if table and spec.name not in table:
            continue
        t = Table(title=f"{spec.name} — key {', '.join(spec.key)}, partition {spec.partition}", title_justify="left")
        for col in ("column", "type", "null", "check", "description"):
            t.add_column(col, overflow="fold")
        for c in spec.columns:
            check = c.check or (", ".join(c.allowed) if c.allowed else "")
            t.add_row(c.name, c.type + (" (derived)" if c.derived else ""), "yes" if c.nullable else "no", check, c.description)
        console.print(t)


@app.command()
def formats() -> None:
    """List the source formats ingest can sniff and read."""
    from pipeline import sources

    t = Table(title="source formats (sniffing order)")
    for col in ("name", "tables", "description"):
        t.add_column(col, overflow="fold")
    for fmt in sources.all_formats():
        t.add_row(fmt.name, ", ".join(fmt.tables), fmt.description)
    console.print(t)


@app.command("quality")
def quality_cmd(
    table: Optional[list[str]] = typer.Argument(None, help="Tables to check (default: all non-empty)."),
    lake: Optional[Path] = LakeOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Run the great-expectations suite generated from schemas/ over the lake. Exit 3 when a table fails."""
    from pipeline import quality
    from pipeline.lake import Lake

    s = settings(lake, config)
    results, status = quality.check_lake(Lake(s.lake), table or None)
    t = Table(title=f"quality: {status}")
    for col in ("table", "rows", "expectations", "passed", "failed"):
        t.add_column(col)
    for name, r in results.items():
        failed = "; ".join(f"{f['expectation']}({f['column']}): {f['unexpected_count']}" for f in r["failed"]) or "-"
        t.add_row(name, str(r["rows"]), str(r["evaluated"]), str(r["successful"]), failed)
    console.print(t)
    raise typer.Exit(0 if status in ("passed", "skipped") else 3)


def main() -> None:  # pragma: no cover - console script entry point is `app`
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
