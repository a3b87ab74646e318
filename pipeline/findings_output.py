"""Findings as text: table, jsonl, csv, markdown, and OCSF Detection Finding (class 2004) JSON lines.

Every format carries every column of ``schemas/findings.toml`` (finding_id and status included),
so what a responder reads on the terminal, in a ticket or in a SIEM is the same record. Evidence
is already a JSON object text without raw tokens (pipeline.detect checks and scrubs it).

OCSF mapping (version 1.1.0, the one Amazon Security Lake validates against):
``finding_info.uid`` = finding_id, ``finding_info.analytic.uid`` and ``types`` = detection id,
``severity_id`` 1-5 from informational..critical, ``status_id`` 1 New / 99 Other ("seen") /
4 Resolved, ``activity_id`` 1 Create (new) or 2 Update, ``time`` = last run that produced the
finding (epoch ms), ``finding_info.first_seen_time`` = earliest event behind it. The evidence
object goes to ``evidences[0].data``; columns OCSF has no place for (entity_key,
token_fingerprint, outcome, hit_count, ...) go to ``unmapped``.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from typing import Any, Sequence

from pipeline import schemas

FORMATS = ("table", "jsonl", "csv", "markdown", "ocsf")
COLUMNS = tuple(schemas.table("findings").column_names)
OCSF_VERSION = "1.1.0"
SEVERITY_IDS = {"informational": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
STATUS_IDS = {"new": (1, "New"), "seen": (99, "Seen"), "resolved-by-user": (4, "Resolved")}
TABLE_WIDTH = {"evidence": 60, "entity_key": 40, "token_fingerprint": 16}


def _row(row: dict) -> dict:
    """``row`` with every finding column (missing ones null, event_date derived)."""
    out = {c: row.get(c) for c in COLUMNS}
    if out["event_date"] is None and isinstance(out["event_time"], datetime):
        out["event_date"] = out["event_time"].astimezone(timezone.utc).strftime("%Y-%m-%d")
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    return str(value)


def _ms(value: Any) -> int | None:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else None


def _evidence(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError:
        return text


def to_jsonl(rows: Sequence[dict]) -> str:
    """One JSON object per finding; evidence as a nested object, times as ISO 8601 UTC."""
    lines = []
    for row in rows:
        doc = {c: (_evidence(v) if c == "evidence" else (_text(v) if isinstance(v, datetime) else v)) for c, v in _row(row).items()}
        lines.append(json.dumps(doc, sort_keys=False, default=str))
    return "\n".join(lines) + ("\n" if lines else "")


def to_csv(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_text(v) for v in _row(row).values()])
    return buf.getvalue()


def _cell(column: str, value: Any, limit: int | None) -> str:
    text = " ".join(_text(value).split())
    if limit and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def to_table(rows: Sequence[dict]) -> str:
    """Fixed-width text (long evidence and keys shortened; use jsonl or csv for the full values)."""
    if not rows:
        return "no findings\n"
    cells = [[_cell(c, v, TABLE_WIDTH.get(c)) for c, v in _row(r).items()] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(COLUMNS)]
    out = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(out) + "\n"


def to_markdown(rows: Sequence[dict]) -> str:
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        values = [_cell(c, v, None).replace("|", "\\|") for c, v in _row(row).items()]
        out.append("| " + " | ".join(values) + " |")
    return "\n".join(out) + "\n"


def ocsf_finding(row: dict, detection: Any = None) -> dict:
    """One finding as an OCSF 1.1 Detection Finding (class_uid 2004, category_uid 2)."""
    r = _row(row)
    title = getattr(detection, "title", None) or r["detection_id"]
    status_id, status = STATUS_IDS.get(r["status"] or "new", (0, "Unknown"))
    activity_id = 1 if (r["status"] or "new") == "new" else 2
    evidence: dict[str, Any] = {"data": _evidence(r["evidence"])}
    if r["principal"]:
        evidence["actor"] = {"user": {"name": r["principal"]}}
    finding_info: dict[str, Any] = {
        "uid": r["finding_id"],
        "title": title,
        "types": [r["detection_id"]],
        "analytic": {"uid": r["detection_id"], "name": title, "type": "Rule", "type_id": 1},
        "first_seen_time": _ms(r["event_time"]),
        "last_seen_time": _ms(r["last_seen"]) or _ms(r["event_time"]),
        "created_time": _ms(r["first_seen"]),
        "modified_time": _ms(r["last_seen"]),
    }
    if detection is not None:
        finding_info["desc"] = detection.description
        if detection.mitre:
            finding_info["attacks"] = [{"technique": {"uid": t}, "version": "15.1"} for t in detection.mitre]
        if detection.references:
            finding_info["src_url"] = detection.references[0]
    doc: dict[str, Any] = {
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": "Create" if activity_id == 1 else "Update",
        "type_uid": 2004 * 100 + activity_id,
        "severity_id": SEVERITY_IDS[r["severity"]],
        "severity": r["severity"].capitalize(),
        "status_id": status_id,
        "status": status,
        "time": _ms(r["last_seen"]) or _ms(r["event_time"]),
        "message": f"{title}: {r['principal'] or r['entity_key']}",
        "is_alert": r["outcome"] == "alert",
        "count": r["hit_count"],
        "finding_info": finding_info,
        "evidences": [evidence],
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "tokenhunt", "vendor_name": "tokenhunt", "version": _version()},
            "log_name": "findings",
        },
        "unmapped": {
            k: _text(v) if isinstance(v, datetime) else v
            for k, v in r.items()
            if k in ("entity_key", "token_fingerprint", "outcome", "tenant_id", "principal", "hit_count", "status", "event_date", "ingest_batch_id")
        },
    }
    if r["tenant_id"]:
        doc["cloud"] = {"provider": "Microsoft", "account": {"uid": r["tenant_id"], "type": "Azure AD Account", "type_id": 6}}
    return doc


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("tokenhunt")
    except Exception:  # noqa: BLE001 - not installed (running from a checkout)
        return "0"


def to_ocsf(rows: Sequence[dict], detections: Sequence[Any] | None = None) -> str:
    by_id = {d.id: d for d in detections or ()}
    lines = [json.dumps(ocsf_finding(r, by_id.get(r["detection_id"]))) for r in rows]
    return "\n".join(lines) + ("\n" if lines else "")


def format_findings(rows: Sequence[dict], fmt: str = "table", detections: Sequence[Any] | None = None) -> str:
    """Findings as text in ``fmt`` (one of FORMATS)."""
    if fmt == "table":
        return to_table(rows)
    if fmt == "jsonl":
        return to_jsonl(rows)
    if fmt == "csv":
        return to_csv(rows)
    if fmt == "markdown":
        return to_markdown(rows)
    if fmt == "ocsf":
        return to_ocsf(rows, detections)
    raise ValueError(f"unknown findings format {fmt!r}; one of {', '.join(FORMATS)}")
