"""Detection coverage: which detections are blind because the tables they read are not covered.

A detection that finds nothing means something only when every table it requires is present,
fresh, and reaches back over its lookback without gaps. Detection metadata comes from
``pipeline.detect`` when it loads, else from a minimal reader of the query headers, so one broken
detection file never hides the coverage of the others.
"""

from __future__ import annotations

import tomllib
from datetime import date, timedelta
from pathlib import Path

from pipeline.queryfile import split_header
from pipeline.retention.model import DetectionCoverage, DetectionMeta, Reason, SourceResult, span_text, worst

REFERENCE_TABLES = ("signing_keys", "indicators")  # not time series: covered when not empty


def _detections_dir() -> Path:
    try:
        from pipeline.detect import QUERIES_DIR  # type: ignore[attr-defined]

        return Path(QUERIES_DIR) / "detections"
    except (ImportError, AttributeError):
        return Path(__file__).resolve().parents[2] / "queries" / "detections"


def read_detection_headers(directory: Path) -> tuple[list[DetectionMeta], list[str]]:
    """Minimal reader of the TOML header of queries/detections/*.sql: id, title, requires, lookback.

    Used when ``pipeline.detect.load_detections`` is unavailable or rejects a file (strict), so a
    broken detection file never hides the coverage of the others. Returns (metas, problems).
    """
    metas: list[DetectionMeta] = []
    problems: list[str] = []
    for path in sorted(Path(directory).glob("*.sql")):
        try:
            doc = tomllib.loads(split_header(path.read_text(encoding="utf-8")).header)
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{path}: header is not valid TOML: {exc}")
            continue
        requires = doc.get("requires", [])
        lookback = doc.get("lookback_days", 0)
        if not isinstance(requires, list) or not isinstance(lookback, int):
            problems.append(f"{path}: requires must be a list and lookback_days an integer")
            continue
        metas.append(DetectionMeta(str(doc.get("id", path.stem)), str(doc.get("title", "")), [str(r) for r in requires], lookback, str(path)))
    return metas, problems


def load_detection_metas(directory: Path | None = None) -> tuple[list[DetectionMeta], list[str]]:
    """Detection metadata through pipeline.detect when it loads, else the minimal header reader."""
    directory = Path(directory) if directory else _detections_dir()
    if not directory.is_dir():
        return [], [f"no detections directory at {directory}"]
    try:
        from pipeline.detect import load_detections  # type: ignore[attr-defined]
    except ImportError:
        return read_detection_headers(directory)
    try:
        loaded = load_detections(directory)
    except Exception as exc:  # noqa: BLE001 - strict loader: fall back so the other detections still count
        metas, problems = read_detection_headers(directory)
        detail = " ".join(str(exc).split())[:600]
        return metas, [f"pipeline.detect.load_detections failed ({detail}); detection headers read minimally"] + problems
    metas = []
    for d in loaded:
        meta = getattr(d, "meta", d)
        get = (lambda k, default=None: meta.get(k, default)) if isinstance(meta, dict) else (lambda k, default=None: getattr(meta, k, default))
        metas.append(
            DetectionMeta(
                str(get("id")),
                str(get("title", "") or ""),
                [str(r) for r in (get("requires", []) or [])],
                int(get("lookback_days", 0) or 0),
                str(get("path", "") or "") or None,
            )
        )
    return metas, []


def detection_coverage(
    metas: list[DetectionMeta], sources: list[SourceResult], reference_rows: dict[str, int], as_of: date
) -> list[DetectionCoverage]:
    """Detections whose silence means nothing: a required table empty, stale, short, or gappy."""
    by_name = {s.source: s for s in sources}
    out = []
    for meta in metas:
        reasons: list[Reason] = []
        for table in meta.requires:
            if table in REFERENCE_TABLES:
                if not reference_rows.get(table):
                    reasons.append(Reason("violation", f"needs {table}, which is empty"))
                continue
            src = by_name.get(table)
            if src is None:
                continue  # findings or an unknown name: not a log source
            if not src.daily:
                reasons.append(Reason("violation", f"needs {table}, which has no events"))
                continue
            stale_limit = src.rule.max_staleness_days
            if (src.staleness_days or 0) > stale_limit:
                reasons.append(Reason("violation", f"needs {table}, whose newest event is {src.staleness_days} days old ({src.latest})"))
                continue
            need = meta.lookback_days + 1
            if (src.reach_days or 0) < need:
                reasons.append(Reason("warn", f"looks back {meta.lookback_days} days but {table} reaches back {src.reach_days}"))
            start = as_of - timedelta(days=need)
            inside = [g for g in src.gaps if g.kind == "missing" and g.end >= start]
            if inside:
                reasons.append(Reason("warn", f"{table} has no events on {', '.join(span_text(g) for g in inside[:3])} inside its lookback"))
        level = worst(r.level for r in reasons)
        status = {"ok": "covered", "warn": "partial", "violation": "blind"}[level]
        if not reasons:
            reasons.append(Reason("ok", "every required table is fresh and reaches back far enough"))
        else:
            for r in reasons:
                r.text = f"{meta.id} is {status}: {r.text}"
        out.append(DetectionCoverage(meta, status, reasons))
    return out
