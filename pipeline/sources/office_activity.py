"""Sentinel / Log Analytics ``OfficeActivity`` exports -> the shared UAL mapping in ``purview``.

Formats:

``office_activity_json``
    Query results as NDJSON (OTRF), a JSON array or ``{"value": [...]}``.
``office_activity_csv``
    Log Analytics portal CSV (headers may carry `` [UTC]``, e.g. ``TimeGenerated [UTC]``).

OfficeActivity flattens and renames the UAL record (formats.md 5.4): ``OfficeId`` is the record Id,
``OfficeWorkload`` the Workload, ``Client_IPAddress`` the ClientIPAddress, ``Logon_Type`` a LogonType
name, ``RecordType``/``UserType`` names (or string ints such as ``"50"``), nested values JSON strings,
and a flat ``UniqueTokenId``/``IssuedAtTime`` beside ``AppAccessContext``. This module only renames
those columns back to UAL names; :func:`pipeline.sources.purview.ual_record_rows` does the mapping.
``TimeGenerated`` stands in for ``CreationTime`` (it is the UAL CreationTime, in UTC).
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.normalize import BadValue
from pipeline.sources.base import Context, Emitted, FileSample, SourceFormat, iter_csv, iter_json_records
from pipeline.sources.purview import ual_record_rows

# OfficeActivity column -> UAL AuditRecord field. When both are present and equal, the OfficeActivity
# copy is dropped; when they differ, it is kept under its own name (and so reaches `extra`).
RENAMES: dict[str, str] = {
    "OfficeId": "Id",
    "SourceRecordId": "Id",
    "OfficeWorkload": "Workload",
    "OfficeObjectId": "ObjectId",
    "Client_IPAddress": "ClientIPAddress",
    "Logon_Type": "LogonType",
    "UserId_": "UserId",
    "OrganizationId_": "OrganizationId",
    "ClientIP_": "ClientIP",
    "OfficeTenantId_": "OfficeTenantId",
    "Site_": "Site",
    "Site_Url": "SiteUrl",
    "Source_Name": "SourceName",
    "TimeGenerated": "CreationTime",
}
_HEADER_SUFFIX = re.compile(r"^(?P<name>.*?)\s*\[(?P<zone>[^\]]*)\]$")


def _column(name: str) -> str:
    """Portal CSV header -> column name: ``TimeGenerated [UTC]`` -> ``TimeGenerated``.

    A time column exported in another zone (``[Local Time]``) cannot be converted back, so it is refused.
    """
    m = _HEADER_SUFFIX.match(name)
    if not m:
        return name
    if m.group("zone").strip().upper() != "UTC":
        raise BadValue(f"column {name!r} is not in UTC; export OfficeActivity with UTC times")
    return m.group("name")


def to_ual(record: dict[str, Any]) -> dict[str, Any]:
    """An OfficeActivity row with its columns renamed to UAL AuditRecord fields."""
    columns = {_column(str(k)): v for k, v in record.items()}
    out: dict[str, Any] = {k: v for k, v in columns.items() if k not in RENAMES}
    for source, target in RENAMES.items():
        if source not in columns:
            continue
        value = columns[source]
        if value in (None, ""):
            continue
        if out.get(target) in (None, ""):
            out[target] = value
        elif str(out[target]).strip() != str(value).strip():
            out[source] = value
    return out


def normalize_office_activity(record: dict[str, Any], ctx: Context) -> list[Emitted]:
    return ual_record_rows(to_ual(record), ctx)


def _looks_office_activity(keys: set[str], first: dict[str, Any] | None) -> bool:
    if "Operation" not in keys:
        return False
    if first is not None and first.get("Type") == "OfficeActivity":
        return True
    return bool(keys & {"OfficeWorkload", "OfficeId"})


def sniff_json(sample: FileSample) -> bool:
    if sample.container not in ("json_array", "json_wrapped", "ndjson") or not isinstance(sample.first, dict):
        return False
    return _looks_office_activity(set(sample.first), sample.first)


def sniff_csv(sample: FileSample) -> bool:
    if sample.container != "csv":
        return False
    keys = {_HEADER_SUFFIX.sub(r"\g<name>", h) for h in sample.header}
    return _looks_office_activity(keys, None)


FORMATS: list[SourceFormat] = [
    SourceFormat(
        name="office_activity_json",
        tables=("mail_events", "signins"),
        description="Sentinel OfficeActivity query export as JSON/NDJSON (OfficeId, OfficeWorkload, JSON-string nesting).",
        sniff=sniff_json,
        records=iter_json_records,
        normalize=normalize_office_activity,
    ),
    SourceFormat(
        name="office_activity_csv",
        tables=("mail_events", "signins"),
        description="Sentinel / Log Analytics portal CSV of OfficeActivity (TimeGenerated [UTC], Client_IPAddress, ...).",
        sniff=sniff_csv,
        records=iter_csv,
        normalize=normalize_office_activity,
    ),
]
