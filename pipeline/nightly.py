"""The cron job: keys -> ingest -> detect -> retention -> dated reports, with an exit code cron can act on.

``run_nightly`` does one unattended run over a drop folder (``tokenhunt nightly INPUT...``):

1. **Keys and indicators first.** ``--keys DIR`` is imported into the key registry
   (``pipeline.keys.import_keys``), the shipped indicator lists are loaded (``load_indicators``) and
   ``--indicators`` CSVs (site or scenario lists in the ``queries/indicators`` columns) after them, so
   they win for the same value. Why before the ingest: a token's signature can only be checked
   while the raw token is in memory, i.e. during the ingest, against the keys known then.
2. **Ingest what is new** (``pipeline.ingest.ingest_paths``): each file is one atomic batch and a
   file already ingested (same SHA-256) is skipped. The keys and indicator paths, the lake and the
   output folder are never ingested, even when they sit inside an input folder, and ``--exclude``
   globs drop other non-log files (``expected.json`` of the sample logs, ``*.tmp``, ...).
3. **Detect over the affected window only.** The batches no nightly run has examined yet (this
   run's, and any ingested by hand or left behind by a crashed run; tracked in
   ``<lake>/_manifest/nightly/``) give ``since`` = their earliest event. ``detect_lake(since=...)``
   then reads only the event partitions from ``since`` minus the largest detection lookback, so the
   cost grows with the new data, not with the lake. A changed key registry or indicator list (new
   keys, a kid marked compromised) can change the verdict on old data: then the whole lake is
   examined once. Nothing new and nothing changed: no detection runs, the report still comes out.
4. **Retention** (``pipeline.retention.retention_report``, imported lazily; skipped with a note
   when the module is not there).
5. **Reports** in ``<out>/<YYYY-MM-DD>/`` (UTC date of the run start; ``--out`` defaults to
   ``./out``), every file name carrying the run id so two runs on one day never overwrite each
   other: ``nightly-<run_id>.md`` and ``.json`` (the run report), ``findings-<run_id>.jsonl`` and
   ``findings-<run_id>.ocsf.jsonl`` (the findings that are *new* in this run, plain and as OCSF
   Detection Finding class 2004), ``retention-<run_id>.md`` (when the check ran). Every text is
   passed through ``pipeline.tokens.scrub_text`` before it is written: no raw token leaves.

Exit codes (``NightlyRun.exit_code``), in this precedence:

* ``1``  failure: an input file could not be read, a batch failed the quality gate (policy
  ``fail``), the keys could not be imported, a detection failed, the lake was busy, or a crash.
  Wins over everything: a failed run is not a complete answer. Its report and its new findings
  are still written; read them.
* ``10`` new findings (alerts or inconclusive verdicts that no earlier run produced).
* ``20`` retention below policy (the retention report has violations); only when there are no
  new findings: findings need a responder tonight, the retention verdict is in the report.
* ``0``  nothing new.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import json
import os
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from pipeline.lake import MANIFEST_DIR, Lake, LakeBusy, new_batch_id, utcnow

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_NEW_FINDINGS = 10
EXIT_RETENTION = 20

STATE_DIR = "nightly"  # <lake>/_manifest/nightly/<run_id>.json: what each run examined
REGISTRY_TABLES = ("signing_keys", "indicators")
EVENT_TABLES = ("signins", "mail_events", "token_events")  # tables whose partitions `since` prunes


# --------------------------------------------------------------------------- the run record
@dataclass
class NightlyRun:
    """Everything one nightly run did; rendered into the Markdown and JSON reports."""

    run_id: str
    started: datetime
    lake: Path
    out_dir: Path
    inputs: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    finished: datetime | None = None
    keys: dict[str, Any] | None = None
    indicators: dict[str, Any] | None = None
    registry_changed: bool = False
    ingest: Any = None  # pipeline.ingest.IngestReport
    ingest_batches: dict[str, dict] = field(default_factory=dict)  # batch id -> commit record
    pending_batches: list[str] = field(default_factory=list)
    since: datetime | None = None
    detect_ran: bool = False
    detect_reason: str = ""
    detect: Any = None  # pipeline.detect.DetectResult
    detections: list[Any] = field(default_factory=list)
    min_partition_date: str | None = None
    partitions_read: dict[str, dict[str, int]] = field(default_factory=dict)
    retention: Any = None  # pipeline.retention.RetentionReport
    retention_note: str | None = None
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    # ---------------------------------------------------------------- verdicts
    @property
    def new_findings(self) -> list[dict]:
        return list(self.detect.new) if self.detect is not None else []

    @property
    def findings(self) -> list[dict]:
        return list(self.detect.findings) if self.detect is not None else []

    @property
    def retention_status(self) -> str | None:
        return getattr(self.retention, "status", None) if self.retention is not None else None

    @property
    def exit_code(self) -> int:
        if self.errors:
            return EXIT_FAILURE
        if self.new_findings:
            return EXIT_NEW_FINDINGS
        if self.retention_status == "violation":
            return EXIT_RETENTION
        return EXIT_OK

    @property
    def exit_reason(self) -> str:
        code = self.exit_code
        if code == EXIT_FAILURE:
            return f"failure: {len(self.errors)} error(s); {len(self.new_findings)} new finding(s) are in the report"
        if code == EXIT_NEW_FINDINGS:
            return f"{len(self.new_findings)} new finding(s)"
        if code == EXIT_RETENTION:
            return "retention below policy (violations in the retention report)"
        return "nothing new"

    # ---------------------------------------------------------------- rendering
    def ingest_files(self) -> list[dict[str, Any]]:
        out = []
        for f in getattr(self.ingest, "files", []) or []:
            rec = self.ingest_batches.get(f.batch_id or "", {})
            out.append(
                {
                    "path": str(f.path),
                    "format": f.format,
                    "status": f.status,
                    "message": f.message,
                    "batch_id": f.batch_id if f.status == "ingested" else None,
                    "records": f.records,
                    "skipped": f.skipped,
                    "quarantined": f.quarantined,
                    "quality": f.quality_status,
                    "min_event_time": rec.get("min_event_time"),
                    "max_event_time": rec.get("max_event_time"),
                    "tables": {t: vars(c) for t, c in sorted(f.counts.items())},
                }
            )
        return out

    def quarantine_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for f in getattr(self.ingest, "files", []) or []:
            for table, c in f.counts.items():
                if c.quarantined:
                    counts[table] = counts.get(table, 0) + c.quarantined
        return counts

    def detection_summary(self) -> list[dict[str, Any]]:
        runs = getattr(self.detect, "per_detection", {}) or {}
        out = []
        for d in self.detections:
            run = runs.get(d.id)
            out.append(
                {
                    "id": d.id,
                    "title": d.title,
                    "severity": d.severity,
                    "lookback_days": d.lookback_days,
                    "ran": run is not None,
                    "rows": getattr(run, "rows", 0),
                    "alerts": getattr(run, "alerts", 0),
                    "inconclusive": getattr(run, "inconclusive", 0),
                    "new": getattr(run, "new", 0),
                    "seen": getattr(run, "seen", 0),
                    "seconds": getattr(run, "seconds", None),
                    "error": getattr(run, "error", None),
                }
            )
        return out

    def retention_dict(self) -> dict[str, Any]:
        if self.retention is None:
            return {"ran": False, "note": self.retention_note}
        doc = self.retention.to_dict()
        return {"ran": True, "status": doc.get("status"), "exit_code": doc.get("exit_code"), "counts": doc.get("counts"),
                "verdicts": doc.get("findings", []), "report": doc}

    def to_dict(self) -> dict[str, Any]:
        from pipeline.findings_output import to_jsonl

        findings = [json.loads(line) for line in to_jsonl(self.findings).splitlines() if line.strip()]
        return {
            "report": "tokenhunt nightly",
            "run_id": self.run_id,
            "started": _iso(self.started),
            "finished": _iso(self.finished),
            "duration_seconds": round((self.finished - self.started).total_seconds(), 3) if self.finished else None,
            "lake": str(self.lake),
            "out_dir": str(self.out_dir),
            "exit_code": self.exit_code,
            "exit_reason": self.exit_reason,
            "inputs": self.inputs,
            "excluded": self.excluded,
            "keys": self.keys,
            "indicators": self.indicators,
            "registry_changed": self.registry_changed,
            "ingest": {
                "files": self.ingest_files(),
                "totals": {t: vars(c) for t, c in sorted(self.ingest.totals().items())} if self.ingest is not None else {},
                "quarantined": self.quarantine_counts(),
            },
            "detect": {
                "ran": self.detect_ran,
                "reason": self.detect_reason,
                "pending_batches": self.pending_batches,
                "since": _iso(self.since),
                "window": [_iso(t) for t in self.detect.window] if self.detect is not None else None,
                "min_partition_date": self.min_partition_date,
                "partitions_read": self.partitions_read,
                "findings_batch": getattr(self.detect, "batch_id", None),
                "new": len(self.new_findings),
                "seen": sum(1 for r in self.findings if r.get("status") != "new"),
                "detections": self.detection_summary(),
            },
            "findings": findings,
            "retention": self.retention_dict(),
            "errors": self.errors,
            "notes": self.notes,
            "files": self.files,
        }

    def to_markdown(self) -> str:
        lines = [
            f"# tokenhunt nightly run {self.run_id}",
            "",
            f"- started {_iso(self.started)}, finished {_iso(self.finished)}",
            f"- lake `{self.lake}`",
            f"- **exit code {self.exit_code}**: {self.exit_reason}",
            "",
        ]
        if self.errors:
            lines += ["## Errors", ""] + [f"- {e}" for e in self.errors] + [""]
        if self.notes:
            lines += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        lines += ["## Keys and indicators", ""]
        if self.keys is not None:
            lines.append(f"- keys: {_kv(self.keys)}")
        else:
            lines.append("- keys: no --keys given")
        lines.append(f"- indicators: {_kv(self.indicators or {})}")
        lines.append(f"- registry or indicators changed since the last examined run: {'yes' if self.registry_changed else 'no'}")
        lines += ["", "## Ingest", ""]
        files = self.ingest_files()
        if files:
            lines += ["| file | format | status | table | read | written | duplicates | quarantined |", "|---|---|---|---|---|---|---|---|"]
            for f in files:
                tables = f["tables"] or {"-": {"read": "-", "written": "-", "duplicates": "-", "quarantined": "-"}}
                status = f["status"] + (f" ({f['quality']})" if f["quality"] not in ("passed", "skipped") else "")
                for t, c in tables.items():
                    lines.append(
                        f"| {_md(Path(f['path']).name)} | {f['format'] or '-'} | {status} | {t} | {c['read']} | {c['written']} | "
                        f"{c['duplicates']} | {c['quarantined']} |"
                    )
            messages = [f for f in files if f["message"]]
            if messages:
                lines.append("")
                lines += [f"- `{_md(f['path'])}`: {_md(f['message'])}" for f in messages]
        else:
            lines.append("no input files")
        quarantine = self.quarantine_counts()
        lines += ["", "Quarantined records: " + (", ".join(f"{t} {n}" for t, n in sorted(quarantine.items())) or "none"), ""]
        lines += ["## Detections", ""]
        if self.detect_ran:
            lines.append(
                f"Window since {_iso(self.since) or 'the beginning'}; event partitions read from "
                f"{self.min_partition_date or 'the first'}: "
                + ", ".join(f"{t} {v['read']}/{v['total']}" for t, v in self.partitions_read.items())
            )
        else:
            lines.append(f"Not run: {self.detect_reason}")
        summary = self.detection_summary()
        if summary:
            lines += ["", "| detection | severity | ran | alerts | inconclusive | new | seen | seconds | error |", "|---|---|---|---|---|---|---|---|---|"]
            for d in summary:
                lines.append(
                    f"| {d['id']} | {d['severity']} | {'yes' if d['ran'] else 'no'} | {d['alerts']} | {d['inconclusive']} | "
                    f"{d['new']} | {d['seen']} | {d['seconds'] if d['seconds'] is not None else '-'} | {_md(d['error'] or '')} |"
                )
        lines += ["", f"## Findings ({len(self.new_findings)} new, {len(self.findings) - len(self.new_findings)} seen again)", ""]
        if self.findings:
            lines += ["| status | severity | detection | outcome | earliest event | tenant | principal | entity | finding id |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for r in self.findings:
                lines.append(
                    f"| {r.get('status')} | {r.get('severity')} | {r.get('detection_id')} | {r.get('outcome')} | "
                    f"{_iso(r.get('event_time'))} | {_md(r.get('tenant_id') or '')} | {_md(r.get('principal') or '')} | "
                    f"{_md(_short(r.get('entity_key') or '', 80))} | {r.get('finding_id')} |"
                )
            lines += ["", f"Evidence of every finding: the JSON report; new findings also in `{Path(self.files.get('findings_jsonl', 'findings.jsonl')).name}`"
                      f" and, as OCSF Detection Finding (class 2004), `{Path(self.files.get('findings_ocsf', 'findings.ocsf.jsonl')).name}`.", ""]
        else:
            lines += ["none", ""]
        lines += ["## Retention", ""]
        if self.retention is None:
            lines.append(f"Not checked: {self.retention_note}")
        else:
            counts = self.retention.counts()
            lines.append(f"Status **{self.retention.status}** ({counts.get('violation', 0)} violation(s), {counts.get('warn', 0)} warning(s)).")
            verdicts = [f for f in self.retention.findings]
            if verdicts:
                lines += ["", "| level | area | subject | verdict |", "|---|---|---|---|"]
                for v in verdicts:
                    lines.append(f"| {v.level} | {v.area} | {_md(v.subject)} | {_md(v.text)} |")
            if "retention" in self.files:
                lines += ["", f"Full report: `{Path(self.files['retention']).name}`"]
        return "\n".join(lines) + "\n"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat() if isinstance(value, datetime) else None


def _md(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kv(doc: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in doc.items() if not isinstance(v, (dict, list))) or "-"


def _error(step: str, exc: BaseException) -> str:
    """One line naming the step and the exception, scrubbed of tokens (a crash keeps its location)."""
    from pipeline.tokens import scrub_text

    where = ""
    tb = traceback.extract_tb(exc.__traceback__)
    if tb and not isinstance(exc, (LakeBusy, ValueError, OSError)):
        where = f" ({Path(tb[-1].filename).name}:{tb[-1].lineno})"
    return scrub_text(f"{step}: {type(exc).__name__}: {exc}{where}")


# --------------------------------------------------------------------------- inputs
def _under(path: Path, roots: Iterable[Path]) -> bool:
    path = path.resolve()
    return any(path == r or r in path.parents for r in roots)


def expand_inputs(
    inputs: Sequence[Path], skip_roots: Sequence[Path], exclude: Sequence[str] = ()
) -> tuple[list[Path], list[str]]:
    """Files to ingest under ``inputs``: (files, what was left out and why).

    ``skip_roots`` (keys, indicator lists, the lake, the output folder) are never ingested; a file
    whose name or input-relative path matches an ``exclude`` glob is left out too.
    """
    from pipeline.ingest import expand_paths

    roots = [Path(r).resolve() for r in skip_roots]
    files: list[Path] = []
    left_out: list[str] = []
    for base in inputs:
        base = Path(base)
        for path in expand_paths([base]):
            rel = str(path.relative_to(base)) if base.is_dir() else path.name
            if path.exists() and _under(path, roots):
                left_out.append(f"{path} (keys, indicators, lake or output folder)")
            elif any(fnmatch.fnmatch(path.name, g) or fnmatch.fnmatch(rel, g) for g in exclude):
                left_out.append(f"{path} (--exclude)")
            else:
                files.append(path)
    return files, left_out


# --------------------------------------------------------------------------- nightly state
def _state_dir(lake: Lake) -> Path:
    return lake.root / MANIFEST_DIR / STATE_DIR


def read_state(lake: Lake) -> list[dict[str, Any]]:
    """Records of earlier nightly runs that examined data, oldest first."""
    out = []
    directory = _state_dir(lake)
    if directory.is_dir():
        for path in sorted(directory.glob("*.json")):
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError):
                continue  # written atomically; tolerate a hand-edited file
    return out


def _write_state(lake: Lake, record: dict[str, Any]) -> None:
    directory = _state_dir(lake)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{record['run_id']}.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def ingest_batches(lake: Lake) -> dict[str, dict]:
    """Commit records of ingest batches (the ones that carry a source file hash), by batch id."""
    return {bid: rec for bid, rec in lake.committed().items() if rec.get("source_sha256")}


def registry_digest(lake: Lake) -> str:
    """Content hash of the key registry and the indicators (lineage columns ignored)."""
    h = hashlib.sha256()
    for table in REGISTRY_TABLES:
        rows = lake.read_table(table).to_pylist()
        canon = sorted(
            json.dumps({k: v for k, v in r.items() if k not in ("ingest_batch_id", "event_date")}, sort_keys=True, default=str)
            for r in rows
        )
        h.update(table.encode())
        for line in canon:
            h.update(line.encode())
            h.update(b"\n")
    return h.hexdigest()


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


# --------------------------------------------------------------------------- steps
def _keys_step(run: NightlyRun, lake: Lake, keys_dir: Path | None, indicator_paths: Sequence[Path]) -> None:
    from pipeline import keys

    if keys_dir is not None:
        try:
            summary = keys.import_keys(lake, [keys_dir])
            run.keys = {
                "path": str(keys_dir),
                "files": len(summary.files),
                "sources": summary.sources,
                "registry_rows": summary.rows,
                "changed": summary.changed,
                "batch_id": summary.batch_id,
                "problems": summary.problems,
                "warnings": summary.warnings,
            }
            if summary.problems:
                run.errors += [f"keys: {p}" for p in summary.problems]
        except Exception as exc:  # noqa: BLE001 - a bad keys folder fails the run, not the detections
            run.errors.append(_error(f"keys import from {keys_dir}", exc))
    try:
        run.indicators = {"loaded": keys.load_indicators(lake, indicator_paths)}
    except Exception as exc:  # noqa: BLE001 - a bad indicator file fails the run, not the detections
        run.errors.append(_error("indicators", exc))
    if run.indicators:
        # flatten for the one-line summaries: rows now in the table, and whether anything changed
        flat = {"rows": None, "changed": False}
        for part in run.indicators.values():
            if isinstance(part, dict):
                flat["rows"] = part.get("indicators", flat["rows"])
                flat["changed"] = flat["changed"] or bool(part.get("changed"))
        run.indicators.update(flat)


def _ingest_step(run: NightlyRun, lake: Lake, files: list[Path], settings: Any, quality_policy: str) -> None:
    from pipeline.ingest import EXIT_OK as INGEST_OK
    from pipeline.ingest import ingest_paths

    # The ingest checks token signatures itself against the registry imported just before.
    options: dict[str, Any] = {"run_id": run.run_id}
    if getattr(settings, "token_fields", None):
        options["token_fields"] = settings.token_fields
    run.ingest = ingest_paths(lake, files, options=options, quality_policy=quality_policy)
    problems = []
    for f in run.ingest.files:
        if f.status == "error":
            problems.append(f"ingest: {f.message}")
        elif f.quality_status == "failed" and quality_policy == "fail":
            problems.append(f"ingest: {f.path}: batch {f.batch_id} failed the quality gate (quality_policy fail)")
    if run.ingest.exit_code != INGEST_OK and not problems:
        problems.append(f"ingest: exit code {run.ingest.exit_code}")
    run.errors += problems


def _detect_step(run: NightlyRun, lake: Lake, settings: Any, history: list[dict[str, Any]], digest: str | None) -> list[str]:
    """Run the detections over the batches no run has examined. Returns the batch ids examined."""
    from pipeline import detect

    batches = ingest_batches(lake)
    run.ingest_batches = batches
    examined = {b for rec in history for b in rec.get("examined_batches", [])}
    pending = sorted(b for b in batches if b not in examined)
    run.pending_batches = pending
    last_digest = history[-1].get("registry_digest") if history else None
    run.registry_changed = digest is not None and digest != last_digest
    times = [t for t in (_parse_time(batches[b].get("min_event_time")) for b in pending) if t is not None]
    run.detections = detect.load_detections()
    if run.registry_changed and batches:
        run.since = None
        run.detect_reason = (
            "first examined run of this lake" if last_digest is None else "the key registry or the indicators changed"
        ) + ": every event is examined once"
    elif times:
        run.since = min(times)
        run.detect_reason = f"{len(pending)} batch(es) not examined yet; window from their earliest event"
    else:
        run.detect_reason = "nothing new was ingested and the key registry and indicators are unchanged"
        return pending  # nothing to examine; batches without events count as examined
    run.min_partition_date = detect.min_partition_date(run.since, run.detections)
    for table in EVENT_TABLES:
        parts = lake.partitions(table)
        read = [p for p in parts if run.min_partition_date is None or p >= run.min_partition_date]
        run.partitions_read[table] = {"read": len(read), "total": len(parts)}
    run.detect = detect.detect_lake(lake, since=run.since, settings=settings, detections=run.detections)
    run.detect_ran = True
    for det_id, message in run.detect.errors.items():
        run.errors.append(f"detection {det_id}: {message}")
    return pending if not run.detect.errors else []


def _retention_step(run: NightlyRun, lake: Lake, settings: Any, policy: Path | None, profile: str | None, as_of: Any) -> None:
    try:
        retention = importlib.import_module("pipeline.retention")
    except ImportError as exc:
        run.retention_note = f"pipeline.retention is not available ({exc.name or exc}); retention not checked"
        run.notes.append(run.retention_note)
        return
    try:
        run.retention = retention.retention_report(
            lake, policy=policy, profile=profile, as_of=as_of, partner_tenants=getattr(settings, "partner_tenants", ()) or ()
        )
    except Exception as exc:  # noqa: BLE001 - a bad policy or a crash fails the run, the report still comes out
        run.retention_note = _error("retention", exc)
        run.errors.append(run.retention_note)


def write_reports(run: NightlyRun) -> dict[str, str]:
    """Write the run report and the new findings into ``run.out_dir``; returns {kind: path}."""
    from pipeline.findings_output import format_findings
    from pipeline.tokens import scrub_text

    run.out_dir.mkdir(parents=True, exist_ok=True)
    base = run.out_dir
    paths = {
        "report_md": base / f"nightly-{run.run_id}.md",
        "report_json": base / f"nightly-{run.run_id}.json",
        "findings_jsonl": base / f"findings-{run.run_id}.jsonl",
        "findings_ocsf": base / f"findings-{run.run_id}.ocsf.jsonl",
    }
    if run.retention is not None and hasattr(run.retention, "to_markdown"):
        paths["retention"] = base / f"retention-{run.run_id}.md"
    run.files = {k: str(p) for k, p in paths.items()}
    texts = {
        "findings_jsonl": format_findings(run.new_findings, "jsonl"),
        "findings_ocsf": format_findings(run.new_findings, "ocsf", run.detections),
    }
    if "retention" in paths:
        try:
            texts["retention"] = run.retention.to_markdown()
        except Exception as exc:  # noqa: BLE001
            run.notes.append(_error("retention markdown", exc))
            texts["retention"] = f"retention report could not be rendered: {exc}\n"
    run.finished = run.finished or utcnow()
    texts["report_md"] = run.to_markdown()
    texts["report_json"] = json.dumps(run.to_dict(), indent=1, default=str) + "\n"
    for kind, path in paths.items():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(scrub_text(texts[kind]), encoding="utf-8")
        os.replace(tmp, path)
    return run.files


# --------------------------------------------------------------------------- the job
def run_nightly(
    inputs: Sequence[Path | str],
    lake: Lake | Path | str,
    keys_dir: Path | str | None = None,
    out: Path | str | None = None,
    *,
    indicators: Sequence[Path | str] = (),
    exclude: Sequence[str] = (),
    settings: Any = None,
    quality_policy: str | None = None,
    policy: Path | str | None = None,
    profile: str | None = None,
    as_of: Any = None,
    now: datetime | None = None,
) -> NightlyRun:
    """One nightly run (see the module docstring). Never raises for bad input: errors go to the report."""
    lake = lake if isinstance(lake, Lake) else Lake(Path(lake))
    started = now or utcnow()
    run_id = new_batch_id()
    out_root = Path(out) if out is not None else Path("out")
    run = NightlyRun(run_id=run_id, started=started, lake=lake.root, out_dir=out_root / started.strftime("%Y-%m-%d"))
    keys_path = Path(keys_dir) if keys_dir is not None else None
    indicator_paths = [Path(p) for p in indicators]
    run.inputs = [str(p) for p in inputs]
    policy_name = quality_policy or getattr(settings, "quality_policy", None) or "warn"
    examined: list[str] = []
    digest: str | None = None
    run_lock = ExitStack()
    try:
        # One nightly at a time on a lake: each step takes the writer lock itself, this keeps a
        # second run from interleaving its steps (and re-examining the same batches).
        run_lock.enter_context(lake.run_lock("nightly"))
        if keys_path is not None and not keys_path.exists():
            run.errors.append(f"keys: {keys_path}: no such folder or file")
            keys_path = None
        _keys_step(run, lake, keys_path, indicator_paths)
        skip = [lake.root, out_root] + ([keys_path] if keys_path else []) + indicator_paths
        files, run.excluded = expand_inputs([Path(p) for p in inputs], skip, exclude)
        if not files:
            run.notes.append("no input files")
        _ingest_step(run, lake, files, settings, policy_name)
        digest = registry_digest(lake)
        history = read_state(lake)
        examined = _detect_step(run, lake, settings, history, digest)
    except LakeBusy as exc:
        run.errors.append(_error("lake busy", exc))
    except Exception as exc:  # noqa: BLE001 - a crash still writes the report and exits 1
        run.errors.append(_error("nightly", exc))
    if (run.detect_ran and not run.detect.errors) or (examined and not run.detect_ran):
        try:
            _write_state(
                lake,
                {"run_id": run_id, "finished": utcnow().isoformat(), "examined_batches": examined, "registry_digest": digest,
                 "since": _iso(run.since)},
            )
        except OSError as exc:
            run.errors.append(_error("nightly state", exc))
    _retention_step(run, lake, settings, Path(policy) if policy else None, profile, as_of)
    run_lock.close()
    run.finished = utcnow()
    try:
        write_reports(run)
    except OSError as exc:
        run.errors.append(_error(f"writing reports to {run.out_dir}", exc))
    return run
