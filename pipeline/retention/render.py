"""Rendering of the retention-gap report: terminal tables, Markdown and a self-contained HTML page.

The HTML carries its coverage timeline as inline SVG, made with altair (Vega-Lite) and rendered by
vl-convert-python, which bundles the Vega runtime: no CDN script, no network, readable offline and
in mail clients that strip scripts. Nothing here computes: every number comes from the report.
"""

from __future__ import annotations

import html
import io
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.retention.model import DetectionCoverage, MailAudit, RetentionReport, SourceResult

LEVEL_MARK = {"ok": "ok", "warn": "WARN", "violation": "VIOLATION"}
LEVEL_COLOR = {"ok": "#1a7f37", "warn": "#9a6700", "violation": "#cf222e"}
CHART_COLORS = {
    "required window": "#d0d7de",
    "covered": "#2da44e",
    "missing": "#cf222e",
    "low volume": "#d4a72c",
    "incident": "#8250df",
    "key certificate": "#0969da",
    "key published": "#54aeff",
    "key use (indicator)": "#bf3989",
    "key exposure": "#fb8f44",
}
WINDOW_KIND_LABEL = {
    "incident": "incident",
    "key_certificate": "key certificate",
    "key_published": "key published",
    "key_indicator": "key use (indicator)",
    "key_exposure": "key exposure",
}


def _fmt_share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _d(value: date | None) -> str:
    return value.isoformat() if value else "-"


def _table_sources(report: "RetentionReport") -> list["SourceResult"]:
    return [s for s in report.sources if s.kind == "table"]


def _gap_summary(s: "SourceResult") -> str:
    if s.gap_mode == "sparse":
        return "sparse (not judged)"
    if s.gap_mode == "off":
        return "-"
    missing = [g for g in s.gaps if g.kind == "missing"]
    low = [g for g in s.gaps if g.kind == "low_volume"]
    if not missing and not low:
        return "none"
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({sum(g.days for g in missing)} d, longest {max(g.days for g in missing)})")
    if low:
        parts.append(f"{len(low)} low ({sum(g.days for g in low)} d)")
    return ", ".join(parts)


def _source_row(s: "SourceResult") -> list[str]:
    ret = f"{s.rule.tier or 'custom'} {s.rule.source_retention_days} d" if s.rule.source_retention_days else "-"
    required = f"{s.rule.required_days} d" if s.rule.judged else ("-" if s.rule.listed else "not in policy")
    return [
        s.source,
        _d(s.earliest),
        _d(s.latest),
        str(s.reach_days) if s.reach_days is not None else "-",
        str(s.days_covered),
        f"{s.events_per_day:,.1f}",
        _gap_summary(s),
        required,
        ret,
        LEVEL_MARK[s.verdict],
    ]


SOURCE_HEADERS = ["source", "earliest", "latest", "reach d", "days", "events/day", "gaps", "required", "source keeps", "verdict"]


def _shown_windows(report: "RetentionReport") -> list[Any]:
    """Every window, except that a retired key shows only its exposure (a registry built from JWKS
    history retires dozens of keys; the JSON keeps all their windows)."""
    has_exposure = {w.kid for w in report.windows if w.kind == "key_exposure"}
    return [w for w in report.windows if not (w.key_status == "retired" and w.kid in has_exposure and w.kind != "key_exposure")]


def _window_rows(report: "RetentionReport") -> list[list[str]]:
    tables = {s.source for s in _table_sources(report)} | {"mail_events.MailItemsAccessed"}
    rows = []
    for w in _shown_windows(report):
        shares = "; ".join(f"{c.source} {_fmt_share(c.share)}" for c in w.coverage if c.source in tables)
        rows.append(
            [
                w.label,
                f"{w.start}..{w.end}",
                shares or w.note or "-",
                _d(w.confirm_from),
                _d(w.rule_out_from),
                w.note,
            ]
        )
    return rows


WINDOW_HEADERS = ["window", "dates", "coverage", "confirm from", "rule out from", "note"]
DETECTION_HEADERS = ["detection", "requires", "lookback d", "status", "why"]
TENANT_HEADERS = ["tenant", "seen in", "mail events", "MailItemsAccessed"]


def _detection_row(d: "DetectionCoverage") -> list[str]:
    why = "; ".join(r.text.split(": ", 1)[-1] for r in d.reasons if r.level != "ok") or "-"
    return [d.meta.id, ", ".join(d.meta.requires), str(d.meta.lookback_days), d.status, why]


def _tenant_rows(m: "MailAudit") -> list[list[str]]:
    return [[t["tenant"], ", ".join(t["seen_in"]), f"{t['mail_events']:,}", f"{t['mail_items_accessed']:,}"] for t in m.tenants]


def _throttled_rows(m: "MailAudit") -> list[list[Any]]:
    return [[t["tenant"], t["mailbox"], t["days"], t["first"], t["last"], t["records"]] for t in m.throttled]


# --------------------------------------------------------------------------- terminal
def rich_renderables(report: "RetentionReport") -> list[Any]:
    """Rich tables for the terminal (the CLI prints them)."""
    from rich.table import Table
    from rich.text import Text

    out: list[Any] = []
    status = Text(
        f"retention {LEVEL_MARK[report.status]} — as of {report.as_of}, policy {report.policy.name}, lake {report.lake} "
        f"({report.counts()['violation']} violations, {report.counts()['warn']} warnings)",
        style=f"bold {LEVEL_COLOR[report.status]}",
    )
    out.append(status)
    t = Table(title="log sources", title_justify="left")
    for h in SOURCE_HEADERS:
        t.add_column(h, overflow="fold", justify="right" if h in ("reach d", "days", "events/day") else "left")
    for s in report.sources:
        row = _source_row(s)
        t.add_row(*row[:-1], Text(row[-1], style=LEVEL_COLOR[s.verdict]))
    out.append(t)
    findings = report.findings
    if findings:
        f = Table(title="findings", title_justify="left")
        for h in ("level", "area", "subject", "what"):
            f.add_column(h, overflow="fold")
        for item in findings:
            f.add_row(Text(LEVEL_MARK[item.level], style=LEVEL_COLOR[item.level]), item.area, item.subject, item.text)
        out.append(f)
    if report.windows:
        w = Table(title="forensic windows (share of days with events; confirm/rule out: continuous from)", title_justify="left")
        for h in WINDOW_HEADERS:
            w.add_column(h, overflow="fold")
        for row in _window_rows(report):
            w.add_row(*row)
        out.append(w)
    if report.detections:
        d = Table(title="detection coverage", title_justify="left")
        for h in DETECTION_HEADERS:
            d.add_column(h, overflow="fold")
        for det in report.detections:
            d.add_row(*_detection_row(det))
        out.append(d)
    for note in report.notes:
        out.append(Text(f"note: {note}", style="dim"))
    return out


def to_text(report: "RetentionReport", width: int = 120) -> str:
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=width, no_color=True, highlight=False, force_terminal=False)
    for item in rich_renderables(report):
        console.print(item)
    return buf.getvalue()


# --------------------------------------------------------------------------- markdown
def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return [_md_row(headers), "|" + "---|" * len(headers)] + [_md_row(r) for r in rows]


def to_markdown(report: "RetentionReport") -> str:
    c = report.counts()
    lines = [
        f"# Retention-gap report: {LEVEL_MARK[report.status]}",
        "",
        f"As of **{report.as_of}**, lake `{report.lake}`, policy **{report.policy.name}** — {report.policy.description}",
        "",
        f"{c['violation']} violations, {c['warn']} warnings (exit code {report.exit_code}).",
        "",
    ]
    if report.findings:
        lines += ["## Findings", ""]
        lines += [f"- **{LEVEL_MARK[f.level]}** ({f.area}, {f.subject}): {f.text}" for f in report.findings]
        lines.append("")
    lines += ["## Log sources", ""]
    lines += _md_table(SOURCE_HEADERS, [_source_row(s) for s in report.sources])
    lines.append("")
    if report.windows:
        lines += ["## Forensic windows", "", "Share of the window's days with events per source; *confirm from*: earliest day "
                  "from which a token used in the window would be in token_events without a gap; *rule out from*: the same "
                  "for token_events and signins together.", ""]
        lines += _md_table(WINDOW_HEADERS, _window_rows(report))
        lines.append("")
    m = report.mail_audit
    lines += ["## Mail-audit completeness (MailItemsAccessed)", ""]
    if m.tenants:
        lines += _md_table(TENANT_HEADERS, _tenant_rows(m))
        lines.append("")
    if m.throttled:
        lines += _md_table(["tenant", "throttled mailbox", "days", "first", "last", "records"], _throttled_rows(m))
        lines.append("")
    if not (m.tenants or m.throttled):
        lines += ["No mail audit or sign-in tenants in the lake.", ""]
    if report.detections:
        lines += ["## Detection coverage", ""]
        lines += _md_table(DETECTION_HEADERS, [_detection_row(d) for d in report.detections])
        lines.append("")
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    lines += [f"Policy layers: {', '.join(report.policy.files)}", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- chart
def timeline_rows(report: "RetentionReport") -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Chart data: one row per source (required window, covered spans, gaps), then one row per
    incident / compromised-key window; the incident is also a band across the source rows."""
    bars: list[dict[str, Any]] = []
    order = [s.source for s in report.sources]
    one = timedelta(days=1)
    for s in report.sources:
        window = s.required_window
        if window and s.rule.judged:
            bars.append({"row": s.source, "start": window[0].isoformat(), "end": (window[1] + one).isoformat(), "kind": "required window"})
        for a, b in s.spans:
            bars.append({"row": s.source, "start": a.isoformat(), "end": (b + one).isoformat(), "kind": "covered"})
        for g in s.gaps:
            kind = "missing" if g.kind == "missing" else "low volume"
            bars.append({"row": s.source, "start": g.start.isoformat(), "end": (g.end + one).isoformat(), "kind": kind})
    bands = []
    for w in report.windows:
        if w.kind != "incident" and w.key_status != "compromised":
            continue  # retired keys are in the tables; the chart stays readable
        if w.note == "the registry has no window for this key":
            continue
        label = "incident" if w.kind == "incident" else f"key {w.kid[:10]}{'…' if len(w.kid or '') > 10 else ''} {WINDOW_KIND_LABEL[w.kind][4:]}"
        while label in order:
            label += " "
        order.append(label)
        row = {"row": label, "start": w.start.isoformat(), "end": (w.end + one).isoformat(), "kind": WINDOW_KIND_LABEL[w.kind]}
        bars.append(row)
        if w.kind == "incident":
            bands.append(row)
    return bars, bands, order


def timeline_chart(report: "RetentionReport") -> Any:
    """The coverage timeline as an altair chart (one row per source, then one per window)."""
    import altair as alt

    bars, bands, order = timeline_rows(report)
    starts = [date.fromisoformat(r["start"]) for r in bars] or [report.as_of - timedelta(days=30)]
    domain = [min(starts).isoformat(), (report.as_of + timedelta(days=2)).isoformat()]
    kinds = [k for k in CHART_COLORS if any(r["kind"] == k for r in bars)] or ["covered"]
    color = alt.Color(
        "kind:N",
        title=None,
        scale=alt.Scale(domain=kinds, range=[CHART_COLORS[k] for k in kinds]),
        legend=alt.Legend(orient="bottom", columns=5, symbolOpacity=1),
    )
    x = alt.X("start:T", title=None, scale=alt.Scale(domain=domain), axis=alt.Axis(format="%Y-%m", labelAngle=0))
    y = alt.Y("row:N", title=None, sort=order, scale=alt.Scale(domain=order), axis=alt.Axis(labelLimit=260))
    layers = []
    if bands:
        layers.append(alt.Chart(alt.Data(values=bands)).mark_rect(opacity=0.12).encode(x=x, x2="end:T", color=color))
    base = alt.Chart(alt.Data(values=bars))
    layers.append(
        base.transform_filter(alt.datum.kind == "required window").mark_bar(height=18, opacity=0.6).encode(x=x, x2="end:T", y=y, color=color)
    )
    layers.append(
        base.transform_filter((alt.datum.kind != "required window") & (alt.datum.kind != "missing") & (alt.datum.kind != "low volume"))
        .mark_bar(height=10)
        .encode(x=x, x2="end:T", y=y, color=color)
    )
    layers.append(
        base.transform_filter((alt.datum.kind == "missing") | (alt.datum.kind == "low volume"))
        .mark_bar(height=14)
        .encode(x=x, x2="end:T", y=y, color=color)
    )
    asof = alt.Chart(alt.Data(values=[{"d": report.as_of.isoformat()}])).mark_rule(strokeDash=[4, 3], color="#57606a").encode(x="d:T")
    layers.append(asof)
    height = max(80, 22 * len(order))
    return alt.layer(*layers).properties(width=860, height=height, title=f"Coverage timeline (as of {report.as_of})").configure_view(stroke=None)


def chart_svg(report: "RetentionReport") -> str | None:
    """Inline SVG of the timeline, or None when vl-convert-python is not installed."""
    try:
        import vl_convert as vlc
    except ImportError:
        return None
    return vlc.vegalite_to_svg(timeline_chart(report).to_dict())


# --------------------------------------------------------------------------- html
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem;color:#1f2328;max-width:1200px}
h1{font-size:1.5rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0} th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa} .ok{color:#1a7f37} .warn{color:#9a6700} .violation{color:#cf222e;font-weight:600}
.badge{display:inline-block;padding:.1rem .6rem;border-radius:1rem;color:#fff;font-weight:600}
.b-ok{background:#1a7f37} .b-warn{background:#9a6700} .b-violation{background:#cf222e}
.chart{overflow-x:auto;margin:1rem 0} .muted{color:#57606a;font-size:.85rem} li{margin:.2rem 0}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _html_table(headers: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def to_html(report: "RetentionReport") -> str:
    """One self-contained page: inline CSS and SVG, no scripts, no external references."""
    c = report.counts()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>tokenhunt retention report {report.as_of}</title>",
        f"<style>{CSS}</style></head><body>",
        f'<h1>Retention-gap report <span class="badge b-{report.status}">{LEVEL_MARK[report.status]}</span></h1>',
        f'<p>As of <b>{_esc(report.as_of)}</b> — lake <code>{_esc(report.lake)}</code> — policy <b>{_esc(report.policy.name)}</b>: '
        f"{_esc(report.policy.description)}</p>",
        f"<p>{c['violation']} violations, {c['warn']} warnings (exit code {report.exit_code}).</p>",
    ]
    if report.findings:
        parts.append("<h2>Findings</h2><ul>")
        parts += [f'<li class="{f.level}"><b>{LEVEL_MARK[f.level]}</b> ({_esc(f.area)}, {_esc(f.subject)}): {_esc(f.text)}</li>' for f in report.findings]
        parts.append("</ul>")
    parts.append("<h2>Coverage timeline</h2>")
    svg = chart_svg(report)
    if svg:
        parts.append(
            '<p class="muted">One row per source: grey = the window the policy requires, green = days with events, '
            "red = days without events, yellow = days far below the source's normal volume; shaded bands = incident "
            "and compromised-key windows; dashed line = report date.</p>"
        )
        parts.append(f'<div class="chart">{svg}</div>')
    else:
        parts.append('<p class="muted">Chart unavailable: install vl-convert-python.</p>')
    parts.append("<h2>Log sources</h2>")
    parts.append(_html_table(SOURCE_HEADERS, [_source_row(s) for s in report.sources], [s.verdict for s in report.sources]))
    if report.windows:
        parts.append("<h2>Forensic windows</h2>")
        parts.append(
            '<p class="muted">Share of the window\'s days with events per source. <i>Confirm from</i>: earliest day from '
            "which a token used in the window would be in token_events without a gap; <i>rule out from</i>: the same for "
            "token_events and signins together (a token with no issuance record is forged).</p>"
        )
        parts.append(_html_table(WINDOW_HEADERS, _window_rows(report)))
    m = report.mail_audit
    parts.append("<h2>Mail-audit completeness (MailItemsAccessed)</h2>")
    if m.tenants:
        parts.append(
            _html_table(TENANT_HEADERS, _tenant_rows(m), ["violation" if not t["mail_items_accessed"] else "ok" for t in m.tenants])
        )
    if m.throttled:
        parts.append(f"<p>{m.throttled_total} throttled mailbox(es):</p>")
        parts.append(_html_table(["tenant", "mailbox", "days", "first", "last", "records"], _throttled_rows(m)))
    if not (m.tenants or m.throttled):
        parts.append("<p>No mail audit or sign-in tenants in the lake.</p>")
    if report.detections:
        parts.append("<h2>Detection coverage</h2>")
        level = {"covered": "ok", "partial": "warn", "blind": "violation"}
        parts.append(
            _html_table(DETECTION_HEADERS, [_detection_row(d) for d in report.detections], [level[d.status] for d in report.detections])
        )
    if report.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_esc(n)}</li>" for n in report.notes) + "</ul>")
    parts.append(f'<p class="muted">Policy layers: {_esc(", ".join(report.policy.files))}</p>')
    parts.append("</body></html>")
    return "\n".join(parts)
