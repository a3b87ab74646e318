"""Log Analytics / Sentinel sign-in tables exported as JSON or as the portal's "Export to CSV".

Covers SigninLogs, AADNonInteractiveUserSignInLogs, AADServicePrincipalSignInLogs and
AADManagedIdentitySignInLogs (formats.md section 2). Columns are mapped by name through the
shared crosswalk (``graph.CROSSWALK``), so a table's missing columns simply come out null. This
module only builds the lookup view (``[UTC]`` header suffixes dropped, dynamic JSON-text columns
parsed) and decides the sign-in type.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

from pipeline.normalize import BadValue, maybe_json
from pipeline.sources import graph
from pipeline.sources.base import Context, Emitted, FileSample, SourceFormat, iter_csv, iter_json_records

LA_JSON = "log_analytics_json"
LA_CSV = "log_analytics_csv"

_UTC_SUFFIX = re.compile(r"\s*\[UTC\]$")
_ZONED = re.compile(r"^(TimeGenerated|CreatedDateTime)\s*\[(?P<zone>[^\]]*)\]$")
_TIME_COLUMNS = ("TimeGenerated", "CreatedDateTime")
# Columns only sign-in tables have (the SP/MI tables lack IsInteractive, UserPrincipalName, ...).
_SIGNIN_MARKERS = (
    "UniqueTokenIdentifier", "ResourceIdentity", "IsInteractive", "SignInEventTypes",
    "ServicePrincipalId", "ClientAppUsed",
)
# Columns of other families that share TimeGenerated/Id (OfficeActivity, UAL/Purview wrappers).
_FOREIGN = ("OfficeWorkload", "AuditData", "RecordType", "Operation", "CreationTime", "RecordId")


def column_name(header: str) -> str:
    """``TimeGenerated [UTC]`` -> ``TimeGenerated`` (the portal CSV's suffix; values are UTC)."""
    return _UTC_SUFFIX.sub("", header.strip())


def la_view(record: dict[str, Any]) -> dict[str, Any]:
    """Record keyed by plain column names, dynamic columns (JSON text) parsed."""
    return {column_name(key): maybe_json(value) for key, value in record.items()}


def _looks_like_signins(names: Iterable[str], first: dict[str, Any] | None) -> bool:
    cols = {column_name(n) for n in names}
    if "Id" not in cols or not cols & set(_TIME_COLUMNS) or not cols & set(_SIGNIN_MARKERS):
        return False
    if cols & set(_FOREIGN):
        return False
    table = (first or {}).get("Type")
    return not table or graph.type_from_table(table) is not None


def sniff_json(sample: FileSample) -> bool:
    if sample.container not in ("json_array", "ndjson") or not isinstance(sample.first, dict):
        return False
    return _looks_like_signins(sample.first.keys(), sample.first)


def sniff_csv(sample: FileSample) -> bool:
    return sample.container == "csv" and _looks_like_signins(sample.header, None)


def type_from_file_name(path: Path | str | None) -> str | None:
    """A file named after its table (``AADNonInteractiveUserSignInLogs_2026.csv``)."""
    name = Path(path).name.lower() if path else ""
    for table in sorted(graph.LA_TABLES, key=len, reverse=True):  # signinlogs is in every table name
        if table in name:
            return graph.LA_TABLES[table]
    return None


def _normalize(record: dict[str, Any], ctx: Context, source_format: str) -> list[Emitted]:
    for key in record:
        m = _ZONED.match(key.strip())
        if m and m.group("zone").strip().upper() != "UTC":
            raise BadValue(f"time column {key.strip()!r} is not UTC; export with UTC times")
    view = la_view(record)
    table = view.get("Type")
    if table and graph.type_from_table(table) is None:
        raise BadValue(f"Log Analytics table {str(table)[:60]!r} is not a sign-in table")
    kind = graph.first_known(
        graph.type_from_table(table),
        type_from_file_name(ctx.path),
        graph.type_from_event_types(view.get("SignInEventTypes")),
        graph.type_from_category(view.get("Category")),
        graph.type_from_is_interactive(view.get("IsInteractive")),
        graph.type_from_option(ctx),
    )
    row = graph.signin_row(view, "log_analytics", ctx, source_format=source_format, sign_in_type=kind)
    return [Emitted(graph.TABLE, row)]


def normalize_json(record: dict[str, Any], ctx: Context) -> list[Emitted]:
    return _normalize(record, ctx, LA_JSON)


def normalize_csv(record: dict[str, Any], ctx: Context) -> list[Emitted]:
    return _normalize(record, ctx, LA_CSV)


FORMATS: list[SourceFormat] = [
    SourceFormat(
        name=LA_JSON,
        tables=(graph.TABLE,),
        description="Log Analytics / Sentinel sign-in tables (SigninLogs, AAD*SignInLogs) as JSON array or NDJSON.",
        sniff=sniff_json,
        records=iter_json_records,
        normalize=normalize_json,
    ),
    SourceFormat(
        name=LA_CSV,
        tables=(graph.TABLE,),
        description="Log Analytics portal 'Export to CSV' of the sign-in tables ([UTC] headers, locale times).",
        sniff=sniff_csv,
        records=iter_csv,
        normalize=normalize_csv,
    ),
]
