"""Microsoft Graph sign-ins and diagnostic-settings records, plus the ONE sign-in mapping.

Every sign-in export (Graph, Event Hub / storage diagnostic records, Log Analytics, the Entra
portal CSV) names the same facts differently (formats.md section 6). ``CROSSWALK`` is that table
as data and ``signin_row`` is the only code that turns a record into a ``signins`` row;
``log_analytics`` and ``entra_portal`` only prepare a lookup view and pick the sign-in type.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePath
from typing import Any, Callable, Iterable, Iterator

from pipeline.normalize import (
    BadValue,
    extra_json,
    guid,
    lower,
    maybe_json,
    normalize_ip,
    parse_time,
    to_bool,
    to_int,
    to_text,
    unique_token_id_from_request_id,
)
from pipeline.sources.base import (
    split_block,
    BatchRows,
    Context,
    Emitted,
    FileSample,
    RawRecord,
    SourceFormat,
    UnreadableFile,
    _iter_json_stream,  # a stream of back-to-back JSON values (pages written by `curl >> file`)
    iter_json_array,
    iter_json_array_from_text,
    iter_ndjson,
    read_head,
    storable_text,
)

TABLE = "signins"
DIALECTS = ("graph", "log_analytics", "entra_portal")

# canonical column -> source paths per dialect (Graph / diagnostic `properties`, Log Analytics,
# Entra portal CSV), in preference order. A dotted path descends into a nested object (Log
# Analytics dynamic columns arrive as JSON text and are parsed on the way).
CROSSWALK: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "event_id": (("id",), ("Id",), ("Request ID",)),
    # ISO values win over locale ones whatever their order (see _event_time).
    "event_time": (("createdDateTime",), ("CreatedDateTime", "TimeGenerated"), ("Date (UTC)", "Date", "CreatedDateTime")),
    "tenant_id": (("resourceTenantId",), ("ResourceTenantId", "AADTenantId"), ("Resource tenant ID",)),
    "home_tenant_id": (("homeTenantId",), ("HomeTenantId",), ("Home tenant ID",)),
    "user_principal_name": (("userPrincipalName",), ("UserPrincipalName",), ("Username",)),
    "user_id": (("userId",), ("UserId",), ("User ID",)),
    "user_type": (("userType",), ("UserType",), ("User type",)),
    "app_id": (("appId",), ("AppId",), ("Application ID",)),
    "app_display_name": (("appDisplayName",), ("AppDisplayName",), ("Application",)),
    # Log Analytics `ResourceId` is the Azure path /tenants/<tid>/providers/Microsoft.aadiam: never use it.
    "resource_id": (("resourceId",), ("ResourceIdentity",), ("Resource ID",)),
    "resource_display_name": (("resourceDisplayName",), ("ResourceDisplayName",), ("Resource",)),
    "ip_address": (("ipAddress",), ("IPAddress",), ("IP address",)),
    "user_agent": (("userAgent",), ("UserAgent",), ("User agent",)),
    "client_app_used": (("clientAppUsed",), ("ClientAppUsed",), ("Client app",)),
    "is_interactive": (("isInteractive",), ("IsInteractive",), ()),
    "result_code": (("status.errorCode",), ("ResultType", "Status.errorCode"), ("Sign-in error code",)),
    "result_reason": (("status.failureReason",), ("ResultDescription", "Status.failureReason"), ("Failure reason",)),
    "unique_token_id": (("uniqueTokenIdentifier",), ("UniqueTokenIdentifier",), ("Unique token identifier",)),
    "session_id": (("sessionId",), ("SessionId",), ("Session ID",)),
    "correlation_id": (("correlationId",), ("CorrelationId",), ("Correlation ID",)),
    "token_issuer_type": (("tokenIssuerType",), ("TokenIssuerType",), ("Token issuer type",)),
    "token_issuer_name": (("tokenIssuerName",), ("TokenIssuerName",), ("Token issuer name",)),
    "incoming_token_type": (
        ("incomingTokenType",), ("IncomingTokenType",), ("Incoming token type", "Incoming token type.1"),
    ),
    "authentication_protocol": (("authenticationProtocol",), ("AuthenticationProtocol",), ("Authentication Protocol",)),
    "cross_tenant_access_type": (("crossTenantAccessType",), ("CrossTenantAccessType",), ("Cross tenant access type",)),
    "client_credential_type": (("clientCredentialType",), ("ClientCredentialType",), ("Client credential type",)),
    "service_principal_id": (("servicePrincipalId",), ("ServicePrincipalId",), ("Service principal ID",)),
    # the portal's "City, State, CC" is split into Location.city / Location.countryOrRegion first
    "country": (("location.countryOrRegion",), ("LocationDetails.countryOrRegion", "Location"), ("Location.countryOrRegion",)),
    "city": (("location.city",), ("LocationDetails.city",), ("Location.city",)),
}


def _ip(value: Any) -> str | None:
    return normalize_ip(to_text(value))


def _result_code(value: Any) -> int | None:
    # Log Analytics documents ResultType as "Success"/"Failure" for SP/MI tables: no code there.
    if isinstance(value, str) and value.strip().isalpha():
        return None
    return to_int(value)


# How each crosswalk value becomes a column value (default: plain text, empty -> null).
CONVERT: dict[str, Callable[[Any], Any]] = {
    "event_id": guid,
    "tenant_id": guid,
    "home_tenant_id": guid,
    "user_principal_name": lower,
    "ip_address": _ip,
    "is_interactive": to_bool,
    "result_code": _result_code,
}

# ---------------------------------------------------------------------- sign-in type
INTERACTIVE, NON_INTERACTIVE = "interactive", "non_interactive"
SERVICE_PRINCIPAL, MANAGED_IDENTITY = "service_principal", "managed_identity"

EVENT_TYPES = {  # Graph signInEventTypes values
    "interactiveuser": INTERACTIVE,
    "noninteractiveuser": NON_INTERACTIVE,
    "serviceprincipal": SERVICE_PRINCIPAL,
    "managedidentity": MANAGED_IDENTITY,
}
CATEGORIES = {  # diagnostic-settings `category` (also the Log Analytics `Category` column)
    "signinlogs": INTERACTIVE,
    "noninteractiveusersigninlogs": NON_INTERACTIVE,
    "serviceprincipalsigninlogs": SERVICE_PRINCIPAL,
    "microsoftserviceprincipalsigninlogs": SERVICE_PRINCIPAL,
    "managedidentitysigninlogs": MANAGED_IDENTITY,
}
LA_TABLES = {  # Log Analytics / Sentinel table names (the `Type` column)
    "signinlogs": INTERACTIVE,
    "aadnoninteractiveusersigninlogs": NON_INTERACTIVE,
    "aadserviceprincipalsigninlogs": SERVICE_PRINCIPAL,
    "aadmanagedidentitysigninlogs": MANAGED_IDENTITY,
}
# Entra admin-center download file names; NonInteractive first because it contains Interactive.
PORTAL_FILE_PREFIXES = (
    ("noninteractivesignins", NON_INTERACTIVE),
    ("interactivesignins", INTERACTIVE),
    ("applicationsignins", SERVICE_PRINCIPAL),
    ("msisignins", MANAGED_IDENTITY),
)


def type_from_event_types(value: Any) -> str | None:
    """``signInEventTypes`` (a list, or its JSON text in Log Analytics): the first known entry."""
    value = maybe_json(value)
    items = value if isinstance(value, list) else [value] if isinstance(value, str) else []
    for item in items:
        kind = EVENT_TYPES.get(str(item).strip().lower())
        if kind:
            return kind
    return None


def type_from_category(value: Any) -> str | None:
    return CATEGORIES.get(str(value).strip().lower()) if value else None


def type_from_table(value: Any) -> str | None:
    return LA_TABLES.get(str(value).strip().lower()) if value else None


def type_from_is_interactive(value: Any) -> str | None:
    flag = to_bool(value)
    return None if flag is None else INTERACTIVE if flag else NON_INTERACTIVE


def type_from_portal_file(path: Path | str | None) -> str | None:
    name = (path if isinstance(path, PurePath) else Path(path)).name.lower() if path else ""
    for prefix, kind in PORTAL_FILE_PREFIXES:
        if prefix in name:
            return kind
    return None


def type_from_option(ctx: Context) -> str | None:
    """``ctx.options["sign_in_type"]``: the caller's last-resort override for files that do not say."""
    kind = ctx.options.get("sign_in_type")
    return kind if kind in (INTERACTIVE, NON_INTERACTIVE, SERVICE_PRINCIPAL, MANAGED_IDENTITY) else None


def first_known(*kinds: str | None) -> str | None:
    return next((k for k in kinds if k), None)


# ---------------------------------------------------------------------- the one row builder
_ISO_START = re.compile(r"^\s*\d{4}-\d{2}-\d{2}[T ]")


def lookup(view: dict[str, Any], path: str) -> Any:
    """Value at a dotted path; JSON-text objects on the way are parsed (Log Analytics dynamic columns)."""
    if path in view:  # exact keys first: "Incoming token type.1" is a column, not a path
        return view[path]
    value: Any = view
    for part in path.split("."):
        value = maybe_json(value)
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, (list, dict)) and not value


# per dialect: (column, source paths), computed once
_PATHS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    dialect: [(column, sources[i]) for column, sources in CROSSWALK.items()] for i, dialect in enumerate(DIALECTS)
}


def _event_time(found: list[tuple[str, Any]], fallback: Any) -> tuple[str, Any]:
    """Pick the ISO value inside the record over any locale-formatted wrapper value."""
    options = found + ([("(fallback)", fallback)] if not _empty(fallback) else [])
    for name, value in options:
        if not isinstance(value, str) or _ISO_START.match(value):
            return name, value
    return options[0] if options else ("(none)", None)


def signin_row(
    view: dict[str, Any],
    dialect: str,
    ctx: Context,
    *,
    source_format: str,
    sign_in_type: str | None,
    fallbacks: dict[str, Any] | None = None,
    extra_record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Map one sign-in (a key->value view in ``dialect`` spelling) to a ``signins`` row.

    ``fallbacks`` are used when the record has no value (diagnostic envelope fields);
    ``extra_record`` is what ``extra`` is computed from (default: ``view``). Raises BadValue.
    """
    fallbacks = fallbacks or {}
    row: dict[str, Any] = {}
    mapped: set[str] = set()
    day_first = bool(ctx.options.get("day_first"))
    for column, paths in _PATHS[dialect]:
        if len(paths) == 1 and column != "event_time":
            # One source path (every Graph column): the loop below without its lists, same result.
            path = paths[0]
            held = view[path] if path in view else (lookup(view, path) if "." in path else None)
            convert = CONVERT.get(column, to_text)
            value = None
            if convert is to_text and type(held) is str and held.strip():
                value, raw = held.strip(), held  # to_text of non-blank text, inline (most columns)
            elif not _empty(held):
                try:
                    value = convert(held)
                except BadValue as exc:
                    raise BadValue(f"{column} from {path!r}: {exc}") from exc
                raw = held
            if value is None:
                raw = fallbacks.get(column)
                try:
                    value = convert(raw)
                except BadValue as exc:
                    raise BadValue(f"{column} from '(fallback)': {exc}") from exc
            row[column] = value
            if path in view:
                held = view[path]
                if held is raw or _empty(held) or to_text(held) == to_text(raw):
                    mapped.add(path)
            continue
        found = [(p, v) for p in paths if not _empty(v := lookup(view, p))]
        if column == "event_time":
            options = [_event_time(found, fallbacks.get(column))]
        else:
            options = found + [("(fallback)", fallbacks.get(column))]
        value, raw = None, None
        for name, raw in options:  # the first candidate that yields a value
            try:
                value = parse_time(raw, day_first=day_first) if column == "event_time" else CONVERT.get(column, to_text)(raw)
            except BadValue as exc:
                raise BadValue(f"{column} from {name!r}: {exc}") from exc
            if value is not None:
                break
        row[column] = value
        # a source key counts as mapped when its value went into the row (or was empty); a
        # differing alternate (e.g. TimeGenerated next to CreatedDateTime) stays in `extra`.
        chosen = None
        for path in paths:
            if path in view:
                held = view[path]
                if held is raw or _empty(held):
                    mapped.add(path)
                elif to_text(held) == (chosen := chosen if chosen is not None else to_text(raw)):
                    mapped.add(path)

    if row["event_id"] is None:
        raise BadValue("no request id (" + " / ".join(dict(_PATHS[dialect])["event_id"]) + ")")
    if row["event_time"] is None:
        raise BadValue("no event time (" + " / ".join(dict(_PATHS[dialect])["event_time"]) + ")")
    if sign_in_type is None:
        raise BadValue(
            "cannot tell the sign-in type (no signInEventTypes / category / table / isInteractive / file name); "
            "pass the sign_in_type option"
        )
    row["sign_in_type"] = sign_in_type
    if row["is_interactive"] is None:
        row["is_interactive"] = sign_in_type == INTERACTIVE
    row["unique_token_id_derived"] = row["unique_token_id"] is None
    if row["unique_token_id"] is None:
        row["unique_token_id"] = unique_token_id_from_request_id(row["event_id"])
    row["event_date"] = row["event_time"].strftime("%Y-%m-%d")
    row["source_format"] = source_format
    row["ingest_batch_id"] = ctx.batch_id
    row["extra"] = extra_json(extra_record if extra_record is not None else view, mapped)
    return row


# ---------------------------------------------------------------------- reading paged JSON
_WRAPPER_RE = re.compile(r'"(value|records|Records)"\s*:\s*\[')
_WS = " \t\r\n\ufeff\x00"
_RECORD_KEYS = ("id", "createdDateTime", "properties", "time")


def _page_items(data: Any, key: str) -> list[Any] | None:
    """The records of a ``{key: [...]}`` page, or None when ``data`` is a record itself."""
    if isinstance(data, dict) and isinstance(data.get(key), list) and not any(k in data for k in _RECORD_KEYS):
        return data[key]
    return None


def paged_layout(path: Path) -> str | None:
    """How ``iter_paged_records`` reads ``path``: "array", "ndjson" (one object a line), "stream"
    (pretty or back-to-back objects), or None when the file is blank."""
    text = read_head(path).lstrip(_WS)
    if not text:
        return None
    if text[0] == "[":
        return "array"
    try:
        one_line = isinstance(json.loads(text.split("\n", 1)[0]), dict)
    except (json.JSONDecodeError, RecursionError):
        one_line = False
    # NDJSON keeps one bad line to itself; anything else is a stream of (pretty) objects.
    return "ndjson" if one_line else "stream"


def iter_paged_records(path: Path, key: str) -> Iterator[RawRecord]:
    """Records of a JSON array, NDJSON, ``{key: [...]}`` pages: one page, an array of pages,
    one page per line or pages written back to back (``curl >> file``). Pages are expanded."""
    layout = paged_layout(path)
    if layout is None:
        return
    if layout == "array":
        source = iter_json_array(path)
    else:
        source = iter_ndjson(path) if layout == "ndjson" else _iter_json_stream(path, skip_to_array=False)
    yield from expand_pages(source, key)


def expand_pages(source: Iterable[RawRecord], key: str) -> Iterator[RawRecord]:
    """The records of ``source`` with ``{key: [...]}`` pages expanded, numbered from 1."""
    number = 0
    for raw in source:
        items = _page_items(raw.data, key)
        if items is None:
            number += 1
            yield RawRecord(number, raw.line, raw.text, raw.data, raw.error)
            continue
        for item in items:
            number += 1
            try:
                text_item = json.dumps(item, ensure_ascii=False)
            except (RecursionError, ValueError):
                yield RawRecord(number, raw.line, "", None, "page entry is JSON nested too deeply")
                continue
            if isinstance(item, dict):
                yield RawRecord(number, raw.line, text_item, item, None)
            else:
                yield RawRecord(number, raw.line, text_item, None, f"page entry is a {type(item).__name__}, not an object")


def first_record(sample: FileSample) -> tuple[str | None, dict[str, Any] | None]:
    """(wrapper key, first record) as ``iter_paged_records`` will see them, for sniffing.

    ``sniff_container`` only looks at the first line or the first ``"value"`` anywhere in the
    head, which misreads ``{"records": [...]}`` files whose records hold ``"value"`` keys and
    arrays of pages too big for the head; this re-reads the head where needed.
    """
    first = sample.first
    if sample.container == "json_wrapped" or (sample.container in ("json_array", "ndjson") and first is None):
        try:
            text = read_head(sample.path).lstrip(_WS)
        except UnreadableFile:  # not ours to explain: the ingest reports unreadable files
            return None, None
        match = _WRAPPER_RE.search(text)
        if match:
            inner = next(iter_json_array_from_text(text[match.end() - 1:]), None)
            return match.group(1), inner if isinstance(inner, dict) else None
        if sample.container == "json_wrapped":
            try:
                obj, _ = json.JSONDecoder().raw_decode(text)
            except (json.JSONDecodeError, RecursionError):
                return None, None
            return None, obj if isinstance(obj, dict) else None
        return None, None
    if isinstance(first, dict):
        for key in ("value", "records", "Records"):
            items = _page_items(first, key)
            if items is not None:
                return key, items[0] if items and isinstance(items[0], dict) else None
    return None, first if isinstance(first, dict) else None


# ---------------------------------------------------------------------- graph_json
GRAPH_JSON = "graph_json"
DIAGNOSTIC_JSON = "diagnostic_json"


def sniff_graph(sample: FileSample) -> bool:
    if sample.container not in ("json_array", "json_wrapped", "ndjson"):
        return False
    key, rec = first_record(sample)
    return (
        key in (None, "value")
        and isinstance(rec, dict)
        and "createdDateTime" in rec
        and ("userPrincipalName" in rec or "appId" in rec)
        and "properties" not in rec
    )


def records_graph(path: Path) -> Iterator[RawRecord]:
    return iter_paged_records(path, "value")


def normalize_graph(record: dict[str, Any], ctx: Context) -> list[Emitted]:
    kind = first_known(
        type_from_event_types(record.get("signInEventTypes")),
        type_from_portal_file(ctx.path),  # the portal's JSON download is Graph-shaped
        type_from_is_interactive(record.get("isInteractive")),
        type_from_option(ctx),
    )
    return [Emitted(TABLE, signin_row(record, "graph", ctx, source_format=GRAPH_JSON, sign_in_type=kind))]


# ---------------------------------------------------------------------- many Graph records at once
# The parallel ingest hands whole blocks to ``normalize_many_graph``. Graph exports repeat a few
# thousand distinct values per column (apps, users, tenants, agents), so every conversion
# ``signin_row`` would make is memoized per distinct value, and the row comes out in one pass.
# A record is left to ``normalize_graph`` when anything could make ``signin_row`` take another
# turn: a dotted literal key, a value that converts to nothing or raises, no id or time, no type.
_GRAPH_PLAN = [(column, paths[0], CONVERT.get(column, to_text), tuple(paths[0].split(".")) if "." in paths[0] else None)
               for column, paths in _PATHS["graph"] if column != "event_time"]
_GRAPH_TOP = frozenset([*(path for _, path, _, nested in _GRAPH_PLAN if not nested), *CROSSWALK["event_time"][0]])
SIGNIN_COLUMNS = (
    "event_id", "event_time", "event_date", "source_format", "sign_in_type",
    *(c for c, _, _, _ in _GRAPH_PLAN if c != "event_id"), "unique_token_id_derived", "extra", "ingest_batch_id",
)
_NO_VALUE = object()  # signin_row would not map the value: normalize_graph decides
_MISS = object()
_SCALARS = (str, int, float, bool)
_MEMO_MAX = 200_000


class _GraphBlock:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.day_first = bool(ctx.options.get("day_first"))
        self.portal_kind = type_from_portal_file(ctx.path)
        self.option_kind = type_from_option(ctx)
        # (column, type, value) -> stored value, None (empty) or _NO_VALUE; kept for the whole file when
        # the ingest passes a memo (apps, users, agents recur all day), bounded
        memo = ctx.options.get("_memo")
        self.memo: dict[tuple[str, type, Any], Any] = memo.setdefault("graph", {}) if isinstance(memo, dict) else {}
        if len(self.memo) > _MEMO_MAX:
            self.memo.clear()
        self.dotted: dict[tuple[str, ...], bool] = {}

    def convert(self, column: str, convert: Callable[[Any], Any], value: Any, key: Any) -> Any:
        """``convert(value)`` ready to store; None for an empty value; _NO_VALUE when signin_row
        would not map the key (the value converts to nothing) or would raise."""
        if _empty(value):
            out: Any = None
        else:
            try:
                out = convert(value)
            except BadValue:
                out = _NO_VALUE
            if out is None:
                out = _NO_VALUE
            elif type(out) is str and ("eyJ" in out or not out.isascii()):
                out = storable_text(out)
        if key is not None:
            self.memo[key] = out
        return out

    def row(self, record: dict[str, Any]) -> tuple[Any, ...] | None:
        keys = tuple(record)
        dotted = self.dotted.get(keys)
        if dotted is None:
            dotted = self.dotted[keys] = any(not isinstance(k, str) or "." in k for k in keys)
        if dotted:
            return None
        try:
            interactive_kind = type_from_is_interactive(record.get("isInteractive"))
        except BadValue:
            return None
        kind = first_known(type_from_event_types(record.get("signInEventTypes")), self.portal_kind, interactive_kind,
                           self.option_kind)
        if kind is None:
            return None
        created = record.get("createdDateTime")
        if _empty(created):
            return None
        try:
            when = parse_time(created, day_first=self.day_first)
        except BadValue:
            return None
        if when is None:
            return None
        values: dict[str, Any] = {}
        memo = self.memo
        for column, path, convert, nested in _GRAPH_PLAN:
            if nested is None:
                held = record.get(path)
            else:  # status.errorCode: an object's member directly, else lookup (JSON text, deeper paths)
                parent = record.get(nested[0])
                held = parent.get(nested[1]) if type(parent) is dict and len(nested) == 2 else lookup(record, path)
            if held is None:
                values[column] = None
                continue
            kind_of = type(held)
            if kind_of in _SCALARS:
                key = (column, kind_of, held)
                value = memo.get(key, _MISS)
                if value is _MISS:
                    value = self.convert(column, convert, held, key)
            else:
                value = self.convert(column, convert, held, None)
            if value is _NO_VALUE:
                return None
            values[column] = value
        event_id = values.pop("event_id")
        if event_id is None:
            return None
        if values["is_interactive"] is None:
            values["is_interactive"] = kind == INTERACTIVE
        derived = values["unique_token_id"] is None
        if derived:
            values["unique_token_id"] = unique_token_id_from_request_id(event_id)
        extra = extra_json(record, _GRAPH_TOP)
        if extra is not None and ("eyJ" in extra or not extra.isascii()):
            extra = storable_text(extra)
        day = f"{when.year:04d}-{when.month:02d}-{when.day:02d}" if when.year >= 1000 else when.strftime("%Y-%m-%d")
        return (event_id, when, day, GRAPH_JSON, kind, *values.values(), derived, extra, self.ctx.batch_id)


def normalize_many_graph(records: list[RawRecord], ctx: Context) -> BatchRows:
    """``normalize_graph`` plus the ingest's storable and schema steps for a block of records;
    records it cannot vouch for are left to ``normalize_graph`` (``BatchRows.rest``)."""
    return split_block(records, _GraphBlock(ctx).row, TABLE, list(dict.fromkeys(SIGNIN_COLUMNS)))


# ---------------------------------------------------------------------- diagnostic_json
# Envelope fields used when `properties` lacks the value (formats.md section 1b).
DIAGNOSTIC_FALLBACKS = {
    "event_time": "time",
    "ip_address": "callerIpAddress",
    "tenant_id": "tenantId",
    "correlation_id": "correlationId",
    "result_code": "resultType",
}


def sniff_diagnostic(sample: FileSample) -> bool:
    if sample.container not in ("json_array", "json_wrapped", "ndjson"):
        return False
    key, rec = first_record(sample)
    if key not in (None, "records", "Records") or not isinstance(rec, dict):
        return False
    props = maybe_json(rec.get("properties"))
    return isinstance(props, dict) and (
        type_from_category(rec.get("category")) is not None
        or (str(rec.get("operationName", "")).strip().lower() == "sign-in activity" and "createdDateTime" in props)
    )


def records_diagnostic(path: Path) -> Iterator[RawRecord]:
    return iter_paged_records(path, "records")


def normalize_diagnostic(record: dict[str, Any], ctx: Context) -> list[Emitted]:
    props = maybe_json(record.get("properties"))
    if not isinstance(props, dict):
        raise BadValue("diagnostic record has no `properties` object")
    category = record.get("category")
    if category and type_from_category(category) is None:
        raise BadValue(f"diagnostic category {str(category)[:60]!r} is not a sign-in category")
    kind = first_known(
        type_from_category(category),
        type_from_event_types(props.get("signInEventTypes")),
        type_from_is_interactive(props.get("isInteractive")),
        type_from_option(ctx),
    )
    fallbacks = {column: record.get(key) for column, key in DIAGNOSTIC_FALLBACKS.items()}
    # unmapped envelope fields (operationName, durationMs, the Azure resourceId path, ...) stay
    # reachable as extra.envelope.*
    extra_record = dict(props)
    extra_record["envelope"] = {k: v for k, v in record.items() if k != "properties"}
    row = signin_row(
        props, "graph", ctx, source_format=DIAGNOSTIC_JSON, sign_in_type=kind,
        fallbacks=fallbacks, extra_record=extra_record,
    )
    return [Emitted(TABLE, row)]


FORMATS: list[SourceFormat] = [
    SourceFormat(
        name=DIAGNOSTIC_JSON,
        tables=(TABLE,),
        description="Entra sign-in diagnostic-settings records (Event Hub / storage): {\"records\": [...]} or one per line.",
        sniff=sniff_diagnostic,
        records=records_diagnostic,
        normalize=normalize_diagnostic,
    ),
    SourceFormat(
        name=GRAPH_JSON,
        tables=(TABLE,),
        description="Microsoft Graph /beta or /v1.0 auditLogs/signIns: JSON array, {\"value\": [...]} pages, NDJSON.",
        sniff=sniff_graph,
        records=records_graph,
        normalize=normalize_graph,
        normalize_many=normalize_many_graph,
    ),
]
