"""Application and gateway logs that carry bearer tokens -> ``token_events`` (and ``tokens``).

Formats: ``gateway_jsonl`` (JSON lines; a JSON array or ``{"records": [...]}`` also works) and
``gateway_csv``. Each record is one request with a time and a token. The raw token never leaves
memory: rows carry its fingerprint, ``extra`` and ``path`` are scrubbed, and the distinct raw tokens
of the file wait in ``ctx.options["_raw_tokens"]`` (a ``tokens.RawTokenStore``) until ``finish``
decodes each once and, when a checker is configured, verifies its signature.

Default field names (first present, non-empty one wins; matching is case-insensitive; a dotted
name reaches into a nested object or a JSON-string field, after trying it as a literal key):

=============  ============================================================================
column         fields tried
=============  ============================================================================
token          authorization, headers.authorization, request.headers.authorization,
               token, access_token, id_token   (``Bearer <jwt>``, ``DPoP <jwt>`` or bare)
time           time, timestamp, @timestamp
client_ip      client_ip, src_ip, remote_addr, clientIp, remoteAddr
host           host, headers.host
path           path, url, uri, request_uri
method         method, http_method
user_agent     user_agent, userAgent, headers.user-agent
status         status, status_code, statusCode
request_id     request_id, requestId, x-request-id, headers.x-request-id, id
=============  ============================================================================

Other field names: set ``Context.options["token_fields"]``, e.g.
``{"token": "my_hdr", "time": "ts", "client_ip": ["xff", "peer"]}``. A value is one field name or
a list tried in order; a mapped column replaces the defaults for that column only (the others keep
their defaults). ``tokenhunt.toml`` / the CLI feed this option (the ingest copies it into the
Context). Sniffing uses the defaults only, so a file with custom names needs ``--format``.

Other options: ``day_first`` (read ``D/M/Y`` dates), ``signature_checker`` (a
``tokens.SignatureChecker``, e.g. ``pipeline.keys.verify_signatures`` bound to the key registry;
absent means every token keeps ``signature_status = "not_checked"``).

Times: ISO 8601, epoch seconds/ms/us/ns (number or digits), the nginx/Apache
``10/Oct/2023:13:55:36 +0000`` form, and the locale forms ``pipeline.normalize.parse_time`` reads.

``event_id`` is the log's request id; without one, or when it is only digits (a per-file line
counter in many loggers, not unique across files), it is the SHA-256 of the scrubbed record.

A record with no token or no parsable time is rejected (``BadValue``) and quarantined by the ingest,
whose quarantine text must go through ``tokens.scrub_text(text, known=ctx.options["_raw_tokens"])``:
the raw token of a rejected record is registered first, so even an opaque (non-JWT) token in a CSV
row is found by its fingerprint. An unparsable IP or status does not reject the record: the value
stays in ``extra``. Malformed tokens are kept: ``tokens.parse_error`` says why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

from pipeline import tokens
from pipeline.normalize import BadValue, normalize_ip, parse_time, to_int, to_text
from pipeline.sources.base import (
    split_block,
    BatchRows,
    Context,
    Emitted,
    FileSample,
    RawRecord,
    SourceFormat,
    iter_csv,
    iter_json_records,
    storable_text,
)

log = logging.getLogger(__name__)

RAW_TOKENS_OPTION = "_raw_tokens"
FIELDS_OPTION = "token_fields"
SIGNATURE_CACHE_OPTION = "_signature_results"

DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "token": ("authorization", "headers.authorization", "request.headers.authorization",
              "token", "access_token", "id_token"),
    "time": ("time", "timestamp", "@timestamp"),
    "client_ip": ("client_ip", "src_ip", "remote_addr", "clientIp", "remoteAddr"),
    "host": ("host", "headers.host"),
    "path": ("path", "url", "uri", "request_uri"),
    "method": ("method", "http_method"),
    "user_agent": ("user_agent", "userAgent", "headers.user-agent"),
    "status": ("status", "status_code", "statusCode"),
    "request_id": ("request_id", "requestId", "x-request-id", "headers.x-request-id", "id"),
}

_ABSENT = {"-", "null", "none", "undefined", "nil"}
_BEARER_RE = re.compile(r"(?i)^(?:bearer|dpop)(?:\s+|%20)(?P<tok>\S.*)$")
_OTHER_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*\s+\S")
_CLF_RE = re.compile(r"^\[?(?P<t>\d{1,2}/[A-Za-z]{3}/\d{4}:\d{2}:\d{2}:\d{2})(?:\.(?P<f>\d+))?\s*(?P<z>[+-]\d{4})?\]?$")
_EPOCH_RE = re.compile(r"^\d{9,19}(?:\.\d+)?$")
_INT64 = 2**63


# ---------------------------------------------------------------------- field lookup
def field_names(ctx: Context | None) -> dict[str, tuple[str, ...]]:
    """Defaults overlaid with ``ctx.options["token_fields"]`` (a mapped column replaces its defaults)."""
    fields = dict(DEFAULT_FIELDS)
    mapping = (ctx.options.get(FIELDS_OPTION) if ctx else None) or {}
    if not isinstance(mapping, dict):
        raise BadValue(f"option {FIELDS_OPTION} must be a mapping of column -> field name(s)")
    for column, names in mapping.items():
        if column not in DEFAULT_FIELDS:
            raise BadValue(f"option {FIELDS_OPTION}: unknown column {column!r}; known: {', '.join(DEFAULT_FIELDS)}")
        fields[column] = (names,) if isinstance(names, str) else tuple(str(n) for n in names)
    return fields


def _is_absent(value: Any) -> bool:
    if value is None or value == "" or value == [] or value == {}:
        return True
    return isinstance(value, str) and (not value.strip() or value.strip().lower() in _ABSENT)


def _key_in(obj: dict[str, Any], name: str, lowered: dict[str, str] | None = None) -> str | None:
    """``name`` as spelled in ``obj`` (exact, else case-insensitive), or None."""
    if name in obj:
        return name
    if lowered is not None:
        return lowered.get(name.lower())
    low = name.lower()
    for key in obj:
        if isinstance(key, str) and key.lower() == low:
            return key
    return None


def _lowered(obj: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): k for k in obj if isinstance(k, str)}


def _as_dict(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.lstrip()[:1] == "{":
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def lookup(record: dict[str, Any], name: str, lowered: dict[str, str] | None = None) -> tuple[Any, tuple[str, ...] | None]:
    """Value and key path of ``name`` in ``record``: literal key first, then a dotted path.

    ``lowered`` (``_lowered(record)``) saves rebuilding the case-insensitive index per name.
    """
    key = _key_in(record, name, lowered)
    if key is not None:
        return record[key], (key,)
    if "." not in name:
        return None, None
    cur: Any = record
    path: list[str] = []
    for i, part in enumerate(name.split(".")):
        obj = _as_dict(cur)
        if obj is None:
            return None, None
        key = _key_in(obj, part, lowered if i == 0 else None)
        if key is None:
            return None, None
        path.append(key)
        cur = obj[key]
    return cur, tuple(path)


def first_present(
    record: dict[str, Any], names: tuple[str, ...], lowered: dict[str, str] | None = None
) -> tuple[Any, tuple[str, ...] | None]:
    for name in names:
        value, path = lookup(record, name, lowered)
        if path is not None and not _is_absent(value):
            return value, path
    return None, None


def _without(record: dict[str, Any], paths: list[tuple[str, ...]]) -> dict[str, Any]:
    """A shallow-copied record minus the consumed key paths (JSON-string parents are parsed)."""
    out = dict(record)
    for path in paths:
        parent: dict[str, Any] = out
        for key in path[:-1]:
            child = _as_dict(parent.get(key))
            if child is None:
                break
            child = dict(child)
            parent[key] = child
            parent = child
        else:
            parent.pop(path[-1], None)
    return out


# ---------------------------------------------------------------------- values
def token_value(value: Any) -> str | None:
    """The token in a field value: after ``Bearer``/``DPoP``, or the bare value; other schemes: None."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or text.lower() in _ABSENT or text.lower() in ("bearer", "dpop"):
        return None
    m = _BEARER_RE.match(text)
    if m:
        return m.group("tok").strip() or None
    if _OTHER_SCHEME_RE.match(text):  # Basic, Negotiate, ...: not a bearer token
        return None
    return text


def looks_like_token(value: Any) -> bool:
    """Sniffing: a ``Bearer ...`` value, or a JWT-shaped bare value."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    return bool(_BEARER_RE.match(text)) or (text.startswith("eyJ") and "." in text)


def _epoch(number: float) -> datetime:
    magnitude = abs(number)
    seconds = number / 1e9 if magnitude > 1e17 else number / 1e6 if magnitude > 1e14 else number / 1e3 if magnitude > 1e11 else number
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError) as exc:
        raise BadValue(f"time {number!r} is out of range") from exc


def event_time(value: Any, *, day_first: bool = False) -> datetime:
    """A request time as aware UTC in 1970-9999; raises BadValue with a short reason."""
    when = _event_time(value, day_first=day_first)
    if not 1970 <= when.year <= 9999:
        raise BadValue(f"time {when.isoformat()} is outside 1970-9999")
    return when


def _event_time(value: Any, *, day_first: bool = False) -> datetime:
    if isinstance(value, bool):
        raise BadValue("time is a boolean, not a timestamp")
    if isinstance(value, (int, float)):
        return _epoch(value)
    if not isinstance(value, str):
        raise BadValue(f"time is a {type(value).__name__}, not a timestamp")
    text = value.strip()
    if len(text) > 64:
        raise BadValue(f"time value is {len(text)} characters long, not a timestamp")
    if _EPOCH_RE.match(text):
        return _epoch(float(text))
    m = _CLF_RE.match(text)
    if m:
        try:
            base = datetime.strptime(m.group("t"), "%d/%b/%Y:%H:%M:%S")
        except ValueError as exc:
            raise BadValue(f"time {text!r} is not a valid date/time") from exc
        zone = m.group("z") or "+0000"
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])) * (-1 if zone[0] == "-" else 1)
        micro = int((m.group("f") or "0")[:6].ljust(6, "0"))
        return base.replace(microsecond=micro, tzinfo=timezone(offset)).astimezone(timezone.utc)
    parsed = parse_time(text, day_first=day_first)
    if parsed is None:
        raise BadValue("time is empty")
    return parsed


def _text(value: Any) -> str | None:
    text = to_text(value)
    return tokens.clean_text(text) if text is not None else None


# ---------------------------------------------------------------------- normalize
def raw_store(ctx: Context) -> tokens.RawTokenStore:
    """The file's in-memory raw-token store (created on first use)."""
    store = ctx.options.get(RAW_TOKENS_OPTION)
    if not isinstance(store, tokens.RawTokenStore):
        fresh = tokens.RawTokenStore()
        if isinstance(store, dict):  # someone seeded a plain dict: adopt it
            for fp, raw in store.items():
                fresh[fp] = raw
        store = ctx.options[RAW_TOKENS_OPTION] = fresh
    return store


def normalize(record: dict[str, Any], ctx: Context) -> list[Emitted]:
    """One logged request -> one token_events row (the token only as its fingerprint)."""
    if not isinstance(record, dict):
        raise BadValue(f"record is a {type(record).__name__}, not an object")
    fields = field_names(ctx)
    low = _lowered(record)
    token = None
    token_path: tuple[str, ...] | None = None
    for name in fields["token"]:
        value, path = lookup(record, name, low)
        if path is not None:
            token = token_value(value)
            if token is not None:
                token_path = path
                break
    if token is None or token_path is None:
        raise BadValue(f"no token found in fields: {', '.join(fields['token'])}")
    # Registered before any rejection, so the quarantine scrub can find an opaque token too.
    fp = raw_store(ctx).add(token)

    time_value, time_path = first_present(record, fields["time"], low)
    if time_path is None:
        raise BadValue(f"no time found in fields: {', '.join(fields['time'])}")
    when = event_time(time_value, day_first=bool(ctx.options.get("day_first")))

    consumed: list[tuple[str, ...]] = [token_path, time_path]

    def take(column: str) -> Any:
        value, path = first_present(record, fields[column], low)
        if path is not None:
            consumed.append(path)
        return value

    ip_value, ip_path = first_present(record, fields["client_ip"], low)
    client_ip = None
    if ip_path is not None:
        try:
            client_ip = normalize_ip(str(ip_value).split(",")[0] if isinstance(ip_value, str) else ip_value)
            consumed.append(ip_path)
        except BadValue:
            pass  # the unparsable value stays in extra
    status_value, status_path = first_present(record, fields["status"], low)
    status = None
    if status_path is not None:
        try:
            status = to_int(status_value)
            if status is not None and not -_INT64 <= status < _INT64:
                status = None
            else:
                consumed.append(status_path)
        except BadValue:
            pass
    host = _text(take("host"))
    path_text = _text(take("path"))
    method = _text(take("method"))
    user_agent = _text(take("user_agent"))
    request_id = _text(take("request_id"))
    request_id = tokens.scrub_text(request_id) if request_id else None

    rest = tokens.scrub_obj(_without(record, consumed))
    rest = {k: v for k, v in rest.items() if not _is_absent(v)}
    extra = tokens.clean_text(json.dumps(rest, separators=(",", ":"), ensure_ascii=False, default=str, sort_keys=True)) if rest else None
    if request_id and not request_id.isdigit():
        event_id = request_id
    else:
        scrubbed = json.dumps(tokens.scrub_obj(record), separators=(",", ":"), ensure_ascii=True, default=str, sort_keys=True)
        event_id = hashlib.sha256(scrubbed.encode("ascii")).hexdigest()

    row = {
        "event_id": event_id,
        "event_time": when,
        "event_date": when.strftime("%Y-%m-%d"),
        "source_format": ctx.source_format,
        "token_fingerprint": fp,
        "token_source_field": tokens.clean_text(".".join(token_path)),
        "client_ip": client_ip,
        "host": host.lower() if host else None,
        "path": tokens.scrub_text(path_text) if path_text else None,
        "method": method.upper() if method else None,
        "user_agent": tokens.scrub_text(user_agent) if user_agent else None,
        "status": status,
        "request_id": request_id,
        "extra": extra,
        "ingest_batch_id": ctx.batch_id,
    }
    return [Emitted("token_events", row)]


# ---------------------------------------------------------------------- finish: one tokens row per token
# ---------------------------------------------------------------------- many records at once
# The parallel ingest hands whole blocks to ``normalize_many``. A reverse-proxy log repeats one
# shape millions of times with ~40 requests per token, so per record this does only what varies
# (the time, the rest object) and computes everything else once per distinct value (the token and
# its fingerprint, hosts, paths, agents), with the very functions ``normalize`` calls. Records of
# any other shape (custom field names, alternative or case-variant field names, dotted lookups, no
# request id) go through ``normalize``. tests/test_ingest_parallel.py compares both on mutated logs.
_PRIMARY = {column: names[0] for column, names in DEFAULT_FIELDS.items()}
_ALTERNATIVES = {column: tuple(n.lower() for n in names[1:]) for column, names in DEFAULT_FIELDS.items()}
_KNOWN_NAMES = frozenset(n.lower() for names in DEFAULT_FIELDS.values() for n in names)
_OPTIONAL = ("client_ip", "status", "host", "path", "method", "user_agent", "request_id")
_MISSING = object()
MEMO_OPTION = "_memo"  # a dict the ingest keeps for one file (see pipeline.ingest_parallel)
_AUTH_MEMO_MAX = 20_000
_COLUMNS = ("event_id", "event_time", "event_date", "source_format", "token_fingerprint", "token_source_field",
            "client_ip", "host", "path", "method", "user_agent", "status", "request_id", "extra", "ingest_batch_id")


def _shape(keys: tuple[str, ...]) -> dict[str, bool] | None:
    """For a record's key tuple: None when lookups could differ from plain ``record[name]`` (case
    variants, dotted or nested lookups), else per optional column whether an alternative name is
    present (then the column cannot be read from its first name alone when that one is absent)."""
    if not all(isinstance(k, str) for k in keys):
        return None
    lowered = [k.lower() for k in keys]
    if len(set(lowered)) != len(keys):
        return None
    exact = set(keys)
    for key, low in zip(keys, lowered):
        if "." in key or low in ("headers", "request") or (low in _KNOWN_NAMES and key != low):
            return None
    if _PRIMARY["token"] not in exact or _PRIMARY["time"] not in exact:
        return None
    return {column: any(alt in exact for alt in _ALTERNATIVES[column]) for column in _OPTIONAL}


_ISO_Z_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?Z")
_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _iso_z(text: str) -> datetime | None:
    """``event_time`` of a ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` text with every field in range and a year
    in 1970-9999, computed directly (what a proxy writes on every line); None for anything else."""
    m = _ISO_Z_RE.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not (1970 <= year <= 9999 and 1 <= month <= 12 and 1 <= day and hour <= 23 and minute <= 59 and second <= 59):
        return None
    if day > (29 if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else _DAYS[month]):
        return None
    return datetime(year, month, day, hour, minute, second, int((m.group(7) or "0").ljust(6, "0")), tzinfo=timezone.utc)


_storable = storable_text


class _Block:
    """One block's memos: tokens, distinct column values, key shapes (see ``normalize_many``)."""

    def __init__(self, ctx: Context) -> None:
        self.store = raw_store(ctx)
        self.day_first = bool(ctx.options.get("day_first"))
        self.source_format, self.batch_id = ctx.source_format, ctx.batch_id
        self.token_field = _storable(tokens.clean_text(_PRIMARY["token"]))
        self.shapes: dict[tuple[str, ...], dict[str, bool] | None] = {}
        # authorization value -> (token, fingerprint): per file when the ingest passes a memo (a token
        # recurs over its lifetime, far beyond one block), bounded; else per block
        memo = ctx.options.get(MEMO_OPTION)
        self.auth: dict[str, tuple[str, str] | None] = memo.setdefault("gateway_auth", {}) if isinstance(memo, dict) else {}
        if len(self.auth) > _AUTH_MEMO_MAX:
            self.auth.clear()
        self.values: dict[tuple[str, type, Any], tuple[Any, bool]] = {}
        self.plain_keys: dict[str, bool] = {}

    def column(self, name: str, value: Any) -> tuple[bool, Any, bool]:
        """(absent, column value, consumed) of a present value, as ``normalize`` computes them."""
        key = (name, type(value), value)  # the type too: 1, 1.0 and True are equal keys but different text
        hit = self.values.get(key)
        if hit is not None:
            return hit
        out: tuple[Any, bool]
        if _is_absent(value):
            self.values[key] = (True, None, False)
            return self.values[key]
        if name == "client_ip":
            try:
                out = (normalize_ip(str(value).split(",")[0] if isinstance(value, str) else value), True)
            except BadValue:
                out = (None, False)  # the unparsable value stays in extra
        elif name == "status":
            try:
                number = to_int(value)
                out = (None, False) if number is not None and not -_INT64 <= number < _INT64 else (number, True)
            except BadValue:
                out = (None, False)
        else:
            text = _text(value)
            if name == "host":
                text = text.lower() if text else None
            elif name == "method":
                text = text.upper() if text else None
            elif name in ("path", "user_agent", "request_id"):
                text = tokens.scrub_text(text) if text else None
            out = (_storable(text) if isinstance(text, str) else text, True)
        self.values[key] = (False, *out)
        return self.values[key]

    def row(self, record: dict[str, Any]) -> tuple[Any, ...] | None:
        """The token_events row of ``record`` in ``_COLUMNS`` order, or None: ``normalize`` decides."""
        keys = tuple(record)
        if keys not in self.shapes:
            self.shapes[keys] = _shape(keys)
        shape = self.shapes[keys]
        if shape is None:
            return None
        auth = record[_PRIMARY["token"]]
        if type(auth) is not str:
            return None
        found = self.auth.get(auth, _MISSING)
        if found is _MISSING:
            token = token_value(auth)
            found = self.auth[auth] = None if token is None else (token, tokens.fingerprint(token))
        if found is None:
            return None
        self.store.add(*found)  # registered as normalize does (the block's store goes to the parent)
        time_value = record[_PRIMARY["time"]]
        when = _iso_z(time_value) if type(time_value) is str else None
        if when is None:
            if _is_absent(time_value):
                return None
            try:
                when = event_time(time_value, day_first=self.day_first)
            except BadValue:
                return None
        values: dict[str, Any] = {}
        consumed = {_PRIMARY["token"], _PRIMARY["time"]}
        memo = self.values
        for name in _OPTIONAL:
            value = record.get(_PRIMARY[name], _MISSING)
            if value is _MISSING:
                absent, values[name], taken = True, None, False
            else:  # TypeError for an object or list value: normalize decides
                hit = memo.get((name, type(value), value))
                absent, values[name], taken = hit if hit is not None else self.column(name, value)
            if absent and shape[name]:  # an alternative field name would be read instead
                return None
            if taken:
                consumed.add(_PRIMARY[name])
        request_id = values["request_id"]
        if not request_id or request_id.isdigit():
            return None  # event id from the whole record: normalize
        rest = {k: v for k, v in record.items() if k not in consumed}
        simple = True
        for k, v in rest.items():
            plain = self.plain_keys.get(k)
            if plain is None:
                plain = self.plain_keys[k] = tokens.scrub_text(k) == k and not tokens.is_credential_key(k)
            if not plain or not (v is None or type(v) in (int, float, bool)):
                simple = False
                break
        if simple:  # plain keys and numbers: scrub_obj changes nothing, and only None is absent
            rest = {k: v for k, v in rest.items() if v is not None}
        else:
            rest = {k: v for k, v in tokens.scrub_obj(rest).items() if not _is_absent(v)}
        extra = None
        if rest:
            text = json.dumps(rest, separators=(",", ":"), ensure_ascii=False, default=str, sort_keys=True)
            extra = tokens.clean_text(text)
            if "eyJ" in extra or not extra.isascii():
                extra = _storable(extra)
        return (
            request_id, when, f"{when.year:04d}-{when.month:02d}-{when.day:02d}", self.source_format, found[1],
            self.token_field,
            values["client_ip"], values["host"], values["path"], values["method"], values["user_agent"],
            values["status"], request_id, extra, self.batch_id,
        )


def normalize_many(records: list[RawRecord], ctx: Context) -> BatchRows:
    """``normalize`` plus the ingest's storable and schema steps, for the records of a block whose
    shape allows it; the others are left for ``normalize`` (``BatchRows.rest``)."""
    if ctx.options.get(FIELDS_OPTION):
        return BatchRows({}, {}, list(range(len(records))))
    return split_block(records, _Block(ctx).row, "token_events", list(_COLUMNS))


FINISH_COLUMNS = ("token_fingerprint", "event_time")  # all that finish reads of a row


def finish(emitted: list[Emitted], ctx: Context) -> list[Emitted]:
    """Aggregate the batch's accepted token_events per token, decode each distinct token once,
    check signatures when ``ctx.options["signature_checker"]`` is set, and return tokens rows."""
    seen: dict[str, list[Any]] = {}
    for item in emitted:
        if item.table != "token_events":
            continue
        fp = item.row.get("token_fingerprint")
        when = item.row.get("event_time")
        if not fp or not isinstance(when, datetime):
            continue
        agg = seen.get(fp)
        if agg is None:
            seen[fp] = [when, when, 1]
        else:
            agg[0] = min(agg[0], when)
            agg[1] = max(agg[1], when)
            agg[2] += 1
    if not seen:
        return []
    store = ctx.options.get(RAW_TOKENS_OPTION)
    if not isinstance(store, tokens.RawTokenStore):
        store = raw_store(ctx) if isinstance(store, dict) else None
    if store is None:
        log.warning("%s: %d tokens not decoded: normalize and finish did not share a Context", ctx.path, len(seen))
        return []

    decodable: dict[str, str] = {}
    columns: dict[str, dict[str, Any]] = {}
    missing = 0
    for fp in seen:
        raw = store.raw(fp)
        if raw is not None:
            decodable[fp] = raw
        elif store.oversized(fp) is not None:
            size = store.oversized(fp)
            columns[fp] = tokens.decoded_columns(
                fp, tokens.DecodedToken(parse_error=f"too large ({size} bytes > {tokens.MAX_TOKEN_BYTES})")
            )
        else:
            missing += 1
    if missing:
        log.warning("%s: %d tokens not decoded: raw token not in this file's memory", ctx.path, missing)
    for fp, cols in zip(decodable, tokens.decode_many(list(decodable.values()))):
        columns[fp] = cols

    signatures = _check_signatures(
        {fp: raw for fp, raw in decodable.items() if columns[fp]["parse_error"] is None}, ctx
    )
    out: list[Emitted] = []
    for fp, (first_seen, last_seen, count) in seen.items():
        if fp not in columns:
            continue
        row = tokens.seen_columns(columns[fp], first_seen, last_seen, count)
        if fp in signatures:
            row["signature_status"], row["signature_key_source"] = signatures[fp]
        row["ingest_batch_id"] = ctx.batch_id
        out.append(Emitted("tokens", row))
    return out


def _check_signatures(raw_tokens: dict[str, str], ctx: Context) -> dict[str, tuple[str, str | None]]:
    """Run the configured checker; a failing checker leaves tokens not_checked (never crashes).

    The ingest calls ``finish`` once per flushed chunk, so results are cached on the Context
    (fingerprint -> status, no raw text) and a token seen in several chunks is verified once.
    """
    checker = ctx.options.get("signature_checker")
    if checker is None or not raw_tokens:
        return {}
    cache: dict[str, tuple[str, str | None]] = ctx.options.setdefault(SIGNATURE_CACHE_OPTION, {})
    todo = {fp: raw for fp, raw in raw_tokens.items() if fp not in cache}
    if todo:
        try:
            results = checker(todo)
        except Exception as exc:  # noqa: BLE001 - the message may quote a token: log only its type
            log.warning("%s: signature checker failed (%s); tokens left not_checked", ctx.path, type(exc).__name__)
            results = {}
        bad = 0
        for fp, result in (results or {}).items():
            try:
                status, source = result
            except (TypeError, ValueError):
                bad += 1
                continue
            if fp not in todo or status not in tokens.SIGNATURE_STATUSES:
                bad += 1
                continue
            cache[fp] = (status, tokens.scrub_text(_text(source)) if source is not None else None)
        if bad:
            log.warning("%s: signature checker returned %d unusable results; those tokens left not_checked", ctx.path, bad)
    return {fp: cache[fp] for fp in raw_tokens if fp in cache}


# ---------------------------------------------------------------------- sniffing and formats
def _sniff_record(record: Any) -> bool:
    if not isinstance(record, dict):
        return False
    value, path = first_present(record, DEFAULT_FIELDS["token"])
    if path is None or not looks_like_token(value):
        return False
    _, time_path = first_present(record, DEFAULT_FIELDS["time"])
    return time_path is not None


def sniff_json(sample: FileSample) -> bool:
    return sample.container in ("ndjson", "json_array", "json_wrapped") and _sniff_record(sample.first)


def sniff_csv(sample: FileSample) -> bool:
    """CSV samples carry only the header, so read the first data row (head of the file only)."""
    if sample.container != "csv":
        return False
    header = {h.lower() for h in sample.header}
    if not header & {n.lower() for n in DEFAULT_FIELDS["token"]} or not header & {n.lower() for n in DEFAULT_FIELDS["time"]}:
        return False
    try:
        first = next((r for r in iter_csv(sample.path) if r.data is not None), None)
    except Exception:  # noqa: BLE001 - sniffing never raises
        return False
    return first is not None and _sniff_record(first.data)


def _json_records(path: Path) -> Iterator[RawRecord]:
    return iter_json_records(path)


FORMATS = [
    SourceFormat(
        name="gateway_jsonl",
        tables=("token_events", "tokens"),
        description="Application / gateway request logs (JSON lines) carrying bearer tokens",
        sniff=sniff_json,
        records=_json_records,
        normalize=normalize,
        finish=finish,
        finish_columns=FINISH_COLUMNS,
        normalize_many=normalize_many,
    ),
    SourceFormat(
        name="gateway_csv",
        tables=("token_events", "tokens"),
        description="Application / gateway request logs (CSV) carrying bearer tokens",
        sniff=sniff_csv,
        records=iter_csv,
        normalize=normalize,
        finish=finish,
        finish_columns=FINISH_COLUMNS,
        normalize_many=normalize_many,
    ),
]
