"""Entra admin-center sign-in CSV download (InteractiveSignIns_*.csv and friends).

Headers are human labels (formats.md section 3); ``base.iter_csv`` already strips their stray
spaces and renames the duplicated ``Incoming token type`` to ``Incoming token type.1``. The
mapping itself is the shared crosswalk in ``graph``; this module splits ``Location`` and picks
the sign-in type from the file name (the CSV has no type column).
"""

from __future__ import annotations

from typing import Any

from pipeline.sources import graph
from pipeline.sources.base import Context, Emitted, FileSample, SourceFormat, iter_csv

ENTRA_PORTAL_CSV = "entra_portal_csv"

_TIME_HEADERS = ("Date (UTC)", "Date", "CreatedDateTime")
_MARKERS = ("Unique token identifier", "Username", "Application ID", "Service principal ID", "Correlation ID")


def sniff(sample: FileSample) -> bool:
    cols = set(sample.header)
    return (
        sample.container == "csv"
        and "Request ID" in cols
        and bool(cols & set(_TIME_HEADERS))
        and bool(cols & set(_MARKERS))
    )


def split_location(value: Any) -> Any:
    """``"City, State, CC"`` -> {city, state, countryOrRegion} (pieces may be empty)."""
    if not isinstance(value, str) or not value.strip():
        return value
    parts = [p.strip() for p in value.split(",")]
    if len(parts) == 1:
        return {"city": "", "state": "", "countryOrRegion": parts[0]}
    if len(parts) == 2:
        return {"city": parts[0], "state": "", "countryOrRegion": parts[1]}
    return {"city": ", ".join(parts[:-2]), "state": parts[-2], "countryOrRegion": parts[-1]}


def _type_from_columns(view: dict[str, Any]) -> str | None:
    """Application and MSI downloads have identity columns that user downloads leave empty."""
    msi = str(view.get("Managed Identity type") or "").strip().lower()
    if msi and msi != "none":
        return graph.MANAGED_IDENTITY
    has_user = any(str(view.get(c) or "").strip() for c in ("Username", "User ID"))
    if not has_user and str(view.get("Service principal ID") or "").strip():
        return graph.SERVICE_PRINCIPAL
    return None


def normalize(record: dict[str, Any], ctx: Context) -> list[Emitted]:
    view = dict(record)
    view["Location"] = split_location(view.get("Location"))
    kind = graph.first_known(
        graph.type_from_portal_file(ctx.path),
        _type_from_columns(view),
        graph.type_from_option(ctx),
    )
    row = graph.signin_row(view, "entra_portal", ctx, source_format=ENTRA_PORTAL_CSV, sign_in_type=kind)
    return [Emitted(graph.TABLE, row)]


FORMATS: list[SourceFormat] = [
    SourceFormat(
        name=ENTRA_PORTAL_CSV,
        tables=(graph.TABLE,),
        description="Entra admin-center sign-in CSV download (InteractiveSignIns_, NonInteractiveSignIns_, ApplicationSignIns_, MSISignIns_).",
        sniff=sniff,
        records=iter_csv,
        normalize=normalize,
    ),
]
