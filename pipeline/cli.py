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
        fail(str(exc), 2)


def fail(message: str, code: int) -> None:
    from rich.markup import escape

    # "[token_fields]" is text, not markup; one unwrapped line, so a long path stays whole (and greppable)
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def check_out(out: Optional[Path], folder: bool = False) -> None:
    """Refuse an unusable --out before any work (exit 2), instead of a traceback after it."""
    problem = config_mod.output_path_problem(out, folder=folder) if out is not None else None
    if problem:
        fail(f"--out: {problem}", 2)


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


# --------------------------------------------------------------------------- keys
@keys_app.command("import")
def keys_import(
    paths: list[Path] = typer.Argument(..., help="JWKS documents, OpenID configurations, JWKS histories, or folders of them."),
    lake: Optional[Path] = LakeOpt,
    config: Optional[Path] = ConfigOpt,
    scope: Optional[str] = typer.Option(None, "--scope", help="Override the scope of every imported key: consumer, enterprise or unknown."),
    source: Optional[str] = typer.Option(None, "--source", help="Registry source name for all files (default: each file's name); documents of one source form its history."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Import signing keys into the registry (never fetches anything).

    A plain JWKS document without a date is taken as observed at the file's modification time. Importing a source replaces that source's keys; other sources are kept.

    Keys imported after tokens were ingested still apply: every key- and claim-based token column is computed when `tokens` is read (signature_status says not_checked until the logs are ingested again).

    Exit codes: 0 ok, 1 some file or record could not be read, 2 bad option, 4 another run holds the lake.
    """
    from pipeline import keys as keys_mod
    from pipeline.ingest import EXIT_LAKE_BUSY
    from pipeline.lake import Lake, LakeBusy

    s = settings(lake, config)
    try:
        summary = keys_mod.import_keys(Lake(s.lake), paths, scope, source=source)
    except LakeBusy as exc:
        fail(str(exc), EXIT_LAKE_BUSY)
    except keys_mod.KeyImportError as exc:
        fail(str(exc), 2)
    if as_json:
        console.print_json(json.dumps({k: v for k, v in vars(summary).items()}, default=str))
    else:
        t = Table(title=f"keys import ({'committed ' + summary.batch_id if summary.batch_id else 'registry unchanged'})")
        counts = ("snapshots", "keys", "enterprise", "consumer", "unknown", "active", "retired", "compromised")
        t.add_column("source", overflow="fold")
        for col in counts:
            t.add_column(col[:5] if col not in ("keys",) else col, justify="right", no_wrap=True)
        for name, c in sorted(summary.sources.items()):
            t.add_row(name, *(str(c.get(k, 0)) for k in counts))
        t.caption = "snaps(hots) enter(prise) consu(mer) unkno(wn) retir(ed) compr(omised)"
        console.print(t)
        for w in summary.warnings:
            err.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
        for p in summary.problems:
            err.print(f"[red]error:[/red] {p}", highlight=False)
    raise typer.Exit(1 if summary.problems else 0)


@keys_app.command("list")
def keys_list(
    lake: Optional[Path] = LakeOpt,
    config: Optional[Path] = ConfigOpt,
    kid: Optional[str] = typer.Option(None, "--kid", help="Only this key id."),
    status: Optional[str] = typer.Option(None, "--status", help="Only keys with this status: active, retired, compromised."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """Show the signing-key registry: scope, status, certificate window and where each key was seen."""
    from pipeline import keys as keys_mod
    from pipeline.lake import Lake

    s = settings(lake, config)
    rows = [r for r in keys_mod.list_keys(Lake(s.lake)) if (not kid or r["kid"] == kid) and (not status or r["status"] == status)]
    if as_json:
        console.print_json(json.dumps([{k: v for k, v in r.items() if k != "public_jwk"} for r in rows], default=str))
        return
    t = Table(title=f"signing keys ({len(rows)}; --json for thumbprints and times)")
    t.add_column("kid", no_wrap=True)
    for col in ("scope", "status", "source", "first", "last", "removed", "n", "cert until"):
        t.add_column(col, overflow="fold", no_wrap=col in ("first", "last", "removed", "cert until", "n"))

    def day(value: object) -> str:
        return value.strftime("%Y-%m-%d") if value else "-"  # type: ignore[union-attr]

    for r in rows:
        t.add_row(
            r["kid"], r["scope"], r["status"], r["source"], day(r["first_seen"]), day(r["last_seen"]), day(r["removed_seen"]),
            str(r["snapshot_count"] or 0), day(r["cert_not_after"]),
        )
    console.print(t)


@keys_app.command("mark")
def keys_mark(
    kid: str = typer.Argument(..., help="Key id to mark."),
    compromised: bool = typer.Option(False, "--compromised", help="Mark the key compromised (the only mark there is; required)."),
    reason: str = typer.Option(..., "--reason", help="Why the key is compromised (stored with the indicator)."),
    source: Optional[str] = typer.Option(None, "--source", help="Citation for the indicator (default: analyst: tokenhunt keys mark)."),
    campaign: Optional[str] = typer.Option(None, "--campaign", help="Campaign or actor name."),
    lake: Optional[Path] = LakeOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Add an indicator that KID is compromised; its registry rows (now and on later imports) turn compromised."""
    from pipeline import keys as keys_mod
    from pipeline.ingest import EXIT_LAKE_BUSY
    from pipeline.lake import Lake, LakeBusy

    if not compromised:
        fail("say what to mark: --compromised", 2)
    s = settings(lake, config)
    try:
        result = keys_mod.mark_compromised(Lake(s.lake), kid, reason, source, campaign)
    except LakeBusy as exc:
        fail(str(exc), EXIT_LAKE_BUSY)
    except keys_mod.KeyImportError as exc:
        fail(str(exc), 2)
    where = f"{result['registry_rows']} registry row(s)" if result["registry_rows"] else "no registry row yet (applies when the key is imported)"
    state = "recorded" if result["changed"] else "already recorded"
    console.print(f"{kid}: compromised indicator {state}; {where}", highlight=False)


# --------------------------------------------------------------------------- schema, formats, quality
@app.command()
def schema(
    table: Optional[list[str]] = typer.Argument(None, help="Tables to show (default: all)."),
    format: str = typer.Option("table", "--format", help="table or markdown."),
) -> None:
    """Print the lake's column reference (generated from schemas/)."""
    from pipeline import schemas

    if format == "markdown":
        typer.echo(schemas.markdown_reference(table or None))  # plain: rich would wrap table rows
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


# --------------------------------------------------------------------------- detect
@app.command()
def detect(
    lake: Optional[Path] = LakeOpt,
    config: Optional[Path] = ConfigOpt,
    since: Optional[str] = typer.Option(None, "--since", help="Window start: 2026-11-15, 2026-11-15T10:00:00Z or 7d / 12h (ago)."),
    until: Optional[str] = typer.Option(None, "--until", help="Window end (a bare date includes that whole day)."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Run only these detection ids (repeatable or comma-separated)."),
    format: str = typer.Option("table", "--format", help="table, jsonl, csv, markdown or ocsf (OCSF Detection Finding JSON lines)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the findings to FILE instead of stdout."),
    engine: Optional[str] = typer.Option(None, "--engine", help="Query engine: duckdb or spark (default from tokenhunt.toml, else duckdb)."),
    spark_master: Optional[str] = typer.Option(None, "--spark-master", help="Spark master for --engine spark: local[N], spark://host:7077, yarn, sc://host:15002 (default local[2])."),
    spark_lake_uri: Optional[str] = typer.Option(None, "--spark-lake-uri", help="Where the Spark cluster reads the same lake (s3://..., abfss://..., dbfs:/...); default: the --lake path."),
) -> None:
    """Run the detections in queries/detections over the lake and record their findings.

    Findings keep a stable id across runs: a finding seen again is `seen` (hit_count + 1), not new.
    Exit codes: 0 no new findings, 10 new findings, +1 when a detection failed (1 or 11),
    2 usage error (bad option, config or detection file), 4 another run holds the lake.
    """
    from pipeline.detect import EXIT_LAKE_BUSY, EXIT_USAGE, DetectionLoadError, DetectionParamError, detect_lake, format_findings
    from pipeline.findings_output import FORMATS
    from pipeline.lake import Lake, LakeBusy

    if format not in FORMATS:
        fail(f"--format {format!r} is not one of {', '.join(FORMATS)}", EXIT_USAGE)
    s = settings(lake, config)
    check_out(out)
    from pipeline import engines

    engine = engine or s.engine
    if engine not in engines.ENGINES:
        fail(f"--engine {engine!r} is not one of {', '.join(engines.ENGINES)}", EXIT_USAGE)
    s.engine = engine
    s.spark_master = spark_master or s.spark_master
    s.spark_lake_uri = spark_lake_uri or s.spark_lake_uri
    if not s.lake.is_dir():
        fail(f"no lake at {s.lake} (set --lake, `lake` in tokenhunt.toml or $TOKENHUNT_LAKE)", EXIT_USAGE)
    try:
        ids = [i.strip() for item in only or [] for i in item.split(",") if i.strip()]
        result = detect_lake(Lake(s.lake), since=since, until=until, only=ids or None, settings=s)
    except (DetectionLoadError, DetectionParamError) as exc:
        fail(str(exc), EXIT_USAGE)
    except engines.EngineUnavailable as exc:
        fail(str(exc), EXIT_USAGE)
    except LakeBusy as exc:
        fail(str(exc), EXIT_LAKE_BUSY)
    to_stdout = out is None and format in ("table", "markdown")
    summary_console = console if to_stdout else err
    t = Table(title=f"detect: {len(result.new)} new, {len(result.findings) - len(result.new)} seen", title_justify="left")
    for col in ("detection", "findings", "alerts", "inconclusive", "new", "seen", "seconds", "error"):
        t.add_column(col, overflow="fold")
    for det_id, run in sorted(result.per_detection.items()):
        t.add_row(det_id, str(run.rows), str(run.alerts), str(run.inconclusive), str(run.new), str(run.seen), f"{run.seconds:.2f}", run.error or "")
    summary_console.print(t)
    text = format_findings(result.findings, format, result.detections)
    if out is None:
        sys.stdout.write(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        err.print(f"{len(result.findings)} finding(s) written to {out} ({format})", highlight=False)
    for det_id, message in result.errors.items():
        err.print(f"[red]detection {det_id} failed:[/red] {message}", highlight=False)
    raise typer.Exit(result.exit_code)


# --------------------------------------------------------------------------- retention
@app.command()
def retention(
    lake: Optional[Path] = LakeOpt,
    config: Optional[Path] = ConfigOpt,
    policy: Optional[Path] = typer.Option(None, "--policy", help="Policy TOML merged over the profile (see pipeline/policies/default.toml)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Built-in policy: default (M-21-31), m-21-31, audit-premium, audit-standard, minimal."),
    incident: Optional[str] = typer.Option(None, "--incident", help="Incident window START..END (dates or ISO datetimes, inclusive)."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Report date YYYY-MM-DD (default: today, UTC)."),
    format: str = typer.Option("table", "--format", help="table, json, markdown or html."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the report to FILE instead of stdout."),
) -> None:
    """Retention-gap report: could the lake answer an incident? Reach, gaps, source retention,
    incident and compromised-key windows, MailItemsAccessed completeness, blind detections.

    Exit codes: 0 every source meets the policy, 20 warnings only, 21 at least one violation,
    2 usage error (bad policy, profile, --incident or --as-of; no lake).
    """
    from pipeline.retention import PolicyError, RetentionInputError, retention_report
    from pipeline.retention.render import rich_renderables

    formats_ = ("table", "json", "markdown", "html")
    if format not in formats_:
        fail(f"--format {format!r} is not one of {', '.join(formats_)}", 2)
    s = settings(lake, config)
    check_out(out)
    if not s.lake.is_dir():
        fail(f"no lake at {s.lake} (set --lake, `lake` in tokenhunt.toml or $TOKENHUNT_LAKE)", 2)
    try:
        report = retention_report(s.lake, policy=policy, profile=profile, incident=incident, as_of=as_of, partner_tenants=s.partner_tenants)
    except (PolicyError, RetentionInputError) as exc:
        fail(str(exc), 2)
    if format == "table" and out is None:
        for item in rich_renderables(report):
            console.print(item)
    else:
        text = {
            "table": report.to_text,
            "json": lambda: json.dumps(report.to_dict(), indent=1, default=str),
            "markdown": report.to_markdown,
            "html": report.to_html,
        }[format]()
        if out is None:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
            err.print(f"retention report ({report.status}) written to {out}", highlight=False)
    raise typer.Exit(report.exit_code)


# --------------------------------------------------------------------------- nightly
@app.command()
def nightly(
    inputs: list[Path] = typer.Argument(..., help="Files or folders with new exports (already ingested files are skipped)."),
    lake: Optional[Path] = LakeOpt,
    config: Optional[Path] = ConfigOpt,
    keys: Optional[Path] = typer.Option(None, "--keys", help="JWKS folder or file to import first (never ingested as logs)."),
    indicators: Optional[list[Path]] = typer.Option(None, "--indicators", help="Extra indicator CSV file or folder (queries/indicators columns; repeatable)."),
    exclude: Optional[list[str]] = typer.Option(None, "--exclude", help="Glob of input files not to ingest, e.g. expected.json (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder root (default ./out); reports go to OUT/YYYY-MM-DD/."),
    quality: Optional[str] = typer.Option(None, "--quality", help="Quality gate policy: warn, fail (exit 1), off."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Retention policy TOML (see `tokenhunt retention`)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Built-in retention profile."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Retention report date YYYY-MM-DD (default: today, UTC)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run report as JSON."),
) -> None:
    """The cron job: import keys, ingest what is new, detect over the new window, check retention, write dated reports.

    Exit codes, first that applies: 1 failure (unreadable input, quality gate, keys, a detection, lake busy, crash; the report is still written), 10 new findings, 20 retention below policy, 0 nothing new. See pipeline/nightly.py.
    """
    from pipeline.nightly import run_nightly

    s = settings(lake, config)
    check_out(out, folder=True)
    run = run_nightly(
        inputs, s.lake, keys, out, indicators=indicators or (), exclude=exclude or (), settings=s,
        quality_policy=quality, policy=policy, profile=profile, as_of=as_of,
    )
    if as_json:
        sys.stdout.write(Path(run.files["report_json"]).read_text(encoding="utf-8") if "report_json" in run.files else "{}\n")
        raise typer.Exit(run.exit_code)
    if run.ingest is not None:
        print_ingest_report(run.ingest)
    t = Table(title=f"detections: {'ran' if run.detect_ran else 'not run'} ({run.detect_reason})", title_justify="left")
    for col in ("detection", "alerts", "inconclusive", "new", "seen", "error"):
        t.add_column(col, overflow="fold")
    for d in run.detection_summary():
        if d["ran"]:
            t.add_row(d["id"], str(d["alerts"]), str(d["inconclusive"]), str(d["new"]), str(d["seen"]), d["error"] or "")
    if run.detect_ran:
        console.print(t)
    else:
        console.print(f"detections not run: {run.detect_reason}", highlight=False)
    if run.new_findings:
        ft = Table(title=f"new findings: {len(run.new_findings)} (full rows: {run.files.get('findings_jsonl', '-')})", title_justify="left")
        for col in ("severity", "detection", "outcome", "earliest event", "principal", "entity"):
            ft.add_column(col, overflow="fold")
        for r in run.new_findings:
            entity = r["entity_key"] if len(r["entity_key"]) <= 60 else r["entity_key"][:59] + "…"
            ft.add_row(r["severity"], r["detection_id"], r["outcome"], r["event_time"].strftime("%Y-%m-%d %H:%M:%SZ"), r["principal"] or "", entity)
        console.print(ft)
    else:
        console.print("new findings: 0", highlight=False)
    if run.retention is not None:
        console.print(f"retention: {run.retention.status}", highlight=False)
        for v in run.retention.findings:
            console.print(f"  [{v.level}] {v.area} {v.subject}: {v.text}", highlight=False, markup=False)
    elif run.retention_note:
        console.print(f"retention: {run.retention_note}", highlight=False)
    for e in run.errors:
        err.print(f"[red]error:[/red] {e}", highlight=False)
    for kind, path in run.files.items():
        console.print(f"{kind}: {path}", highlight=False)
    console.print(f"exit {run.exit_code}: {run.exit_reason}", highlight=False)
    raise typer.Exit(run.exit_code)


# --------------------------------------------------------------------------- hunt
HuntFormatOpt = typer.Option(None, "--format", help="table (terminal), csv, jsonl, parquet or markdown. Default: from --out's extension, else table.")
HuntOutOpt = typer.Option(None, "--out", help="Write every row to this file (streamed); the terminal shows the first rows and the count.")
HuntLimitOpt = typer.Option(None, "--limit", min=0, help="Stop after N rows.")
HuntShowOpt = typer.Option(20, "--show", min=0, help="Rows shown in the terminal.")
HuntParamOpt = typer.Option(None, "--param", "-p", help="Parameter name=value (repeatable); ad hoc SQL also takes name:type=value, bound as $name.")
HuntsDirOpt = typer.Option(None, "--hunts-dir", help="Folder of saved hunts (default queries/hunts).")


def _hunt_output(reader, fmt: Optional[str], out: Optional[Path], limit: Optional[int], show: int, title: Optional[str]) -> None:  # noqa: ANN001
    """Stream a hunt result: a file (--out), stdout (csv/jsonl/markdown) or the terminal table."""
    from pipeline import hunts

    check_out(out)
    fmt = hunts.format_for(out, fmt)
    if fmt == "parquet" and out is None:
        raise hunts.HuntError("parquet output needs --out FILE")
    to_stdout = out is None and fmt != "table"
    summary = hunts.export(reader, fmt, out, limit=limit, preview_rows=0 if to_stdout else show)
    if to_stdout:
        err.print(hunts.count_line(summary), highlight=False, soft_wrap=True)
        return
    if show and summary.preview.num_rows:
        console.print(hunts.preview_table(summary, title))
    console.print(hunts.count_line(summary), highlight=False, soft_wrap=True)


def _hunt_fail(exc: Exception) -> None:
    """DuckDB's message as is: no markup (SQL has brackets), no re-wrapping (keeps the caret aligned)."""
    from rich.markup import escape

    from pipeline import hunts

    err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(getattr(exc, "exit_code", hunts.EXIT_USAGE))


@hunt_app.command("sql")
def hunt_sql(
    query: Optional[str] = typer.Argument(None, help='SQL, e.g. "SELECT * FROM signins LIMIT 5"; "-" or none with piped input reads stdin.'),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Read the SQL from this file."),
    lake: Optional[Path] = LakeOpt,
    config: Optional[Path] = ConfigOpt,
    format: Optional[str] = HuntFormatOpt,
    out: Optional[Path] = HuntOutOpt,
    limit: Optional[int] = HuntLimitOpt,
    show: int = HuntShowOpt,
    param: Optional[list[str]] = HuntParamOpt,
) -> None:
    """Run one read-only SQL statement over the lake views (signins, mail_events, token_events, tokens, ...).

    Exit codes: 0 ok, 1 DuckDB rejected or failed the query, 2 usage error or refused statement.
    """
    from pipeline import hunts

    s = settings(lake, config)
    try:
        sql = hunts.sql_from(query, file)
        values = hunts.adhoc_params(hunts.parse_param_args(param or []))
        con = hunts.open_session(s.lake)
        _hunt_output(hunts.query(con, sql, values), format, out, limit, show, None)
    except hunts.HuntError as exc:
        _hunt_fail(exc)


@hunt_app.command("list")
def hunt_list(
    hunts_dir: Optional[Path] = HuntsDirOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the hunts as JSON."),
) -> None:
    """List the saved hunts (queries/hunts/*.sql) with their parameters."""
    from pipeline import hunts

    try:
        found = hunts.load_hunts(hunts_dir or hunts.HUNTS_DIR)
    except hunts.HuntError as exc:
        _hunt_fail(exc)
    if as_json:
        doc = [
            {"name": h.name, "title": h.title, "params": [{"name": p.name, "type": p.type, "required": p.required} for p in h.params]}
            for h in found.values()
        ]
        console.print_json(json.dumps(doc))
        return
    t = Table(title=f"saved hunts ({len(found)})")
    for col in ("name", "title", "parameters"):
        t.add_column(col, overflow="fold")
    for h in found.values():
        t.add_row(h.name, h.title, ", ".join(f"{p.name}:{p.type}" + ("" if p.required else "?") for p in h.params) or "-")
    console.print(t)


@hunt_app.command("show")
def hunt_show(name: str = typer.Argument(..., help="Saved hunt name."), hunts_dir: Optional[Path] = HuntsDirOpt) -> None:
    """Show a saved hunt: description, parameters (type, default) and its SQL."""
    from rich.syntax import Syntax

    from pipeline import hunts

    try:
        h = hunts.get_hunt(name, hunts_dir or hunts.HUNTS_DIR)
    except hunts.HuntError as exc:
        _hunt_fail(exc)
    console.print(f"[bold]{h.name}[/bold]: {h.title}", highlight=False)
    console.print(" ".join(h.description.split()), highlight=False)
    console.print(f"file: {h.path}", highlight=False)
    if h.params:
        t = Table(title="parameters")
        for col in ("name", "type", "default", "description"):
            t.add_column(col, overflow="fold")
        for p in h.params:
            t.add_row(p.name, p.type, "(required)" if p.required else hunts.text_value(p.default) or "''", p.description)
        console.print(t)
    console.print(Syntax(h.body, "sql", word_wrap=True))


@hunt_app.command("run")
def hunt_run(
    name: str = typer.Argument(..., help="Saved hunt name (see `tokenhunt hunt list`)."),
    param: Optional[list[str]] = HuntParamOpt,
    lake: Optional[Path] = LakeOpt,
    config: Optional[Path] = ConfigOpt,
    format: Optional[str] = HuntFormatOpt,
    out: Optional[Path] = HuntOutOpt,
    limit: Optional[int] = HuntLimitOpt,
    show: int = HuntShowOpt,
    hunts_dir: Optional[Path] = HuntsDirOpt,
) -> None:
    """Run a saved hunt; parameters are converted to their declared types and bound, never pasted.

    Exit codes: 0 ok, 1 DuckDB rejected or failed the query, 2 unknown hunt, bad parameter or usage error.
    """
    from pipeline import hunts

    s = settings(lake, config)
    try:
        h = hunts.get_hunt(name, hunts_dir or hunts.HUNTS_DIR)
        given = hunts.parse_param_args(param or [])
        con = hunts.open_session(s.lake)
        _hunt_output(hunts.run_hunt(con, h, given), format, out, limit, show, h.title)
    except hunts.HuntError as exc:
        _hunt_fail(exc)


@hunt_app.command("shell")
def hunt_shell(lake: Optional[Path] = LakeOpt, config: Optional[Path] = ConfigOpt, hunts_dir: Optional[Path] = HuntsDirOpt) -> None:
    """Interactive read-only SQL session with the lake views defined (SELECT * FROM signins works at once)."""
    from pipeline import hunts

    s = settings(lake, config)
    try:
        hunts.run_shell(s.lake, hunts_dir=hunts_dir or hunts.HUNTS_DIR, console=console, err_console=err)
    except hunts.HuntError as exc:
        _hunt_fail(exc)


# --------------------------------------------------------------------------- sql (portable SQL: lint, transpile, ddl)
@sql_app.command("lint")
def sql_lint(files: Optional[list[Path]] = typer.Argument(None, help="Query files (default: every detection and saved hunt).")) -> None:
    """Reject constructs outside the portable DuckDB subset (see README "Portable SQL"). Exit 1 on any violation."""
    from pipeline.engines import sql as sqlmod

    paths = files or sqlmod.shipped_files()
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        fail(f"no such file: {', '.join(map(str, missing))}", 2)
    violations = sqlmod.lint_files(paths)
    for v in violations:
        typer.echo(str(v))
    err.print(f"{len(paths)} file(s), {len(violations)} violation(s)", highlight=False)
    raise typer.Exit(1 if violations else 0)


@sql_app.command("transpile")
def sql_transpile(
    name: Optional[str] = typer.Argument(None, help="Detection or saved hunt id (or a .sql file)."),
    dialect: Optional[str] = typer.Option(None, "--dialect", help="spark, trino or athena (with --all: default spark and trino)."),
    all_: bool = typer.Option(False, "--all", help="Every detection."),
    write: bool = typer.Option(False, "--write", help="With --all: (re)write queries/generated/<dialect>/<id>.sql."),
    check: bool = typer.Option(False, "--check", help="With --all: exit 1 when queries/generated is stale."),
) -> None:
    """Print the generated SQL of a detection or hunt (parameters at defaults, window unbounded)."""
    from pipeline.engines import sql as sqlmod

    if dialect is not None and dialect not in sqlmod.DIALECTS:
        fail(f"--dialect {dialect!r} is not one of {', '.join(sqlmod.DIALECTS)}", 2)
    if all_ == bool(name):
        fail("give a NAME or --all", 2)
    try:
        if name:
            path = sqlmod.find_query(name)
            typer.echo(sqlmod.transpile_file(path, dialect or "spark"))
            return
        dialects = (dialect,) if dialect else sqlmod.GENERATED_DIALECTS
        if check:
            stale = sqlmod.stale_generated(dialects)
            for line in stale:
                typer.echo(line)
            if stale:
                err.print("queries/generated is stale: run `make generated`", highlight=False)
            raise typer.Exit(1 if stale else 0)
        if write:
            changed = sqlmod.write_generated(dialects=dialects)
            for p in changed:
                typer.echo(f"wrote {p.relative_to(sqlmod.REPO)}" if p.exists() else f"removed {p.relative_to(sqlmod.REPO)}")
            err.print(f"{len(changed)} generated file(s) changed", highlight=False)
            return
        for d in dialects:
            for path in sqlmod.shipped_files(("detection",)):
                typer.echo(f"-- {path.stem} ({d})\n{sqlmod.transpile_file(path, d)};\n")
    except FileNotFoundError as exc:
        fail(str(exc), 2)
    except sqlmod.TranspileError as exc:
        fail(str(exc), 1)


@sql_app.command("ddl")
def sql_ddl(
    dialect: str = typer.Option(..., "--dialect", help="trino or athena."),
    location: str = typer.Option("s3://YOUR-BUCKET/tokenhunt/lake", "--location", help="Lake root URI the tables point at."),
    schema_name: str = typer.Option("tokenhunt", "--schema", help="Schema (Trino) or database (Athena/Glue) for the tables."),
) -> None:
    """External-table DDL over the lake's hive layout (partition column string) plus the `tokens` view."""
    from pipeline.engines import sql as sqlmod

    try:
        typer.echo(sqlmod.ddl(dialect, location, schema_name=schema_name), nl=False)
    except sqlmod.TranspileError as exc:
        fail(str(exc), 2)


# --------------------------------------------------------------------------- bench
@app.command()
def bench(
    events: int = typer.Option(200_000, "--events", help="Events at 1x (30 % sign-ins, 20 % mail, 50 % token requests)."),
    out: Path = typer.Option(Path("bench_out"), "--out", help="Folder for bench.json, bench.md and the cached data."),
    repeat: int = typer.Option(3, "--repeat", help="Runs per figure; the median is reported."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Ingest worker processes (default: the CPU count)."),
    section: Optional[list[str]] = typer.Option(None, "--section", help="Only these: ingest, tokens, detect, nightly, scaling."),
) -> None:
    """Performance figures on this machine: ingest vs DuckDB/polars, token decoding vs pyjwt, signature
    checks, detections, the nightly increment and a 1x/2x/4x scaling curve. Writes OUT/bench.json."""
    from pipeline import bench as bench_mod

    config = bench_mod.BenchConfig(events=events, out=out, repeat=repeat, workers=workers)
    if section:
        unknown = sorted(set(section) - set(config.sections))
        if unknown:
            fail(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(config.sections)}", 2)
        config.sections = tuple(section)
    if events < 1000 or repeat < 1:
        fail("--events must be at least 1000 and --repeat at least 1", 2)
    doc = bench_mod.run(config, log=lambda message: err.print(f"[dim]{message}[/dim]", highlight=False))
    typer.echo(bench_mod.render(doc))
    err.print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")


def main() -> None:  # pragma: no cover - console script entry point is `app`
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
