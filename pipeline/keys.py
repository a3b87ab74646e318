"""Signing-key registry (JWKS import, indicators) and offline token signature validation.

Three jobs, each callable from Python (the CLI only parses and prints):

* **Registry.** ``import_keys`` reads JWKS documents (``{"keys": [...]}`` as served by
  ``.../discovery/v2.0/keys``), OpenID configurations beside them, and histories of snapshots
  (``{"snapshots": [{"commit_date", "jwks"}]}`` or a plain list of ``{"date"|"observed_at", "jwks"}``)
  into ``signing_keys``: one row per (kid, source) with its issuer, scope, certificate window,
  first/last/removed observation and status. A key is public material: any private member
  (``d, p, q, dp, dq, qi, oth``) is stripped and reported, a symmetric key (``kty: oct``) is refused.
* **Indicators.** ``queries/indicators/*.csv`` ship cited indicator lists (the Storm-0558 key,
  its IPs and client strings); ``load_indicators`` writes them to ``indicators``;
  ``mark_compromised`` adds an analyst's own. A kid or thumbprint named by an indicator makes the
  registry status ``compromised``.
* **Validation.** ``SignatureVerifier`` checks signatures offline while the raw token is in memory
  (ingest). Everything else about a token and its key is computed when ``tokens`` is read, by ONE
  SQL expression set (``tokens_view_sql``), so the answers follow the registry as it is *now*.

Order of arrival (why the split): the ingest stores only what needs the raw token, i.e.
``signature_status`` / ``signature_key_source``. Key scope, status, issuer/tenant mismatches,
certificate expiry and JWKS-window checks are joins against ``signing_keys`` at read time. A user
who imports last year's JWKS after the tokens were ingested gets correct kid- and claim-based
answers at once, without re-ingesting; ``signature_status`` stays ``not_checked`` (or
``unknown_key``) for tokens ingested before their key was known, until the original logs are
ingested again: ingest is idempotent, the new rows carry the new status, and the view keeps the
best status per token (valid > invalid > untrusted_header > unsupported_alg > unknown_key >
not_checked).

Observation dates: a snapshot's own date (``commit_date``, ``date``, ``observed_at``) when it
has one; a plain JWKS document without a date is taken as observed at the file's modification
time (UTC), NOT the import time, so importing the same file twice gives the same registry.
A registry *source* is the file name (``--source`` overrides): documents of the same source form
its history, and importing a source replaces that source's rows (other sources are kept).

Caveat for deduplicated histories (such as panva/wellknown's, where each distinct document is kept
once, dated by its latest capture, and Microsoft's CDN flips between versions): ``last_seen`` is
exact but ``first_seen`` can be later than the true first publication (by up to ~6 days in the
real 2024 Entra history), so "iat before first_seen" in ``key_outside_jwks_window`` is weaker
there than with chronological daily snapshots; widen the tolerance for such sources.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import json
import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from pipeline import normalize, schemas
from pipeline.lake import Lake, new_batch_id, utcnow

MSA_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
TENANT_TEMPLATE = "{tenantid}"
SCOPES = ("consumer", "enterprise", "unknown")
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")
UNTRUSTED_HEADERS = ("jku", "jwk", "x5u")  # RFC 8725 §3.10: key hints are never trusted
BUILTIN_PREFIX = "builtin:"
INDICATORS_DIR = Path(__file__).resolve().parent.parent / "queries" / "indicators"
INDICATOR_COLUMNS = ("indicator_type", "value", "campaign", "scope", "valid_from", "valid_until", "reason", "source")
SNAPSHOT_DATE_FIELDS = ("commit_date", "observed_at", "date", "fetched_at")

# Read-time defaults for the derived token columns (``tokens_view_sql`` parameters).
DEFAULT_JWKS_TOLERANCE_SECONDS = 2 * 86400  # key caches are refreshed at least daily (Wiz, detections.md 2.4)
DEFAULT_CLOCK_SKEW_SECONDS = 300  # 5 minutes, the usual JWT validator skew (detections.md 5.6)

# The view keeps the most informative signature status a token got in any batch.
STATUS_RANK = {"valid": 5, "invalid": 4, "untrusted_header": 3, "unsupported_alg": 2, "unknown_key": 1, "not_checked": 0}


class KeyImportError(ValueError):
    """A document or key cannot be imported; the message names the file and the record."""


# =============================================================================== key material
def b64url_decode(text: str) -> bytes:
    """Strict base64url (padding optional); raises ValueError on anything else."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    data = text.strip().replace("-", "+").replace("_", "/")
    data += "=" * (-len(data) % 4)
    try:
        return binascii.a2b_base64(data.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"not base64url: {exc}") from None


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def scope_of_issuer(issuer: str | None) -> str:
    """consumer for the MSA tenant, enterprise for the ``{tenantid}`` template, else unknown."""
    if not issuer:
        return "unknown"
    low = issuer.lower()
    if MSA_TENANT_ID in low:
        return "consumer"
    if TENANT_TEMPLATE in low:
        return "enterprise"
    return "unknown"


@dataclass
class KeyInfo:
    """One published key, reduced to what the registry stores."""

    kid: str
    kty: str | None
    alg: str | None
    use: str | None
    issuer: str | None
    x5t: str | None
    x5t_hex: str | None
    modulus_sha256: str | None
    public_jwk: str
    cert_subject: str | None = None
    cert_not_before: datetime | None = None
    cert_not_after: datetime | None = None


_CERT_CACHE: dict[str, tuple[str | None, datetime | None, datetime | None, str, Any]] = {}


def _parse_cert(b64_der: str) -> tuple[str | None, datetime | None, datetime | None, str, Any]:
    """(subject, notBefore, notAfter, sha1 hex, public key) of an x5c entry (standard base64 DER)."""
    if b64_der in _CERT_CACHE:
        return _CERT_CACHE[b64_der]
    from cryptography import x509

    der = base64.b64decode(b64_der, validate=True)
    cert = x509.load_der_x509_certificate(der)
    out = (
        cert.subject.rfc4514_string(),
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
        hashlib.sha1(der).hexdigest(),  # noqa: S324 - the x5t thumbprint is SHA-1 by definition (RFC 7515)
        cert.public_key(),
    )
    if len(_CERT_CACHE) < 10_000:
        _CERT_CACHE[b64_der] = out
    return out


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


def key_info(jwk: Any, where: str, warnings: list[str], default_issuer: str | None = None) -> KeyInfo | None:
    """Validate one JWK into a KeyInfo; None (with a warning naming ``where``) when unusable.

    Private members are stripped (never stored, never echoed); ``kty: oct`` is refused outright.
    """
    if not isinstance(jwk, dict):
        warnings.append(f"{where}: key is not a JSON object; skipped")
        return None
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid.strip():
        warnings.append(f"{where}: key has no kid; skipped")
        return None
    where = f"{where} kid {kid}"
    kty = jwk.get("kty") if isinstance(jwk.get("kty"), str) else None
    if kty == "oct" or "k" in jwk:
        warnings.append(f"{where}: symmetric key (kty oct) refused: a shared secret is never public key material")
        return None
    private = [m for m in PRIVATE_MEMBERS if m in jwk]
    if private:
        warnings.append(f"{where}: private member(s) {', '.join(private)} stripped; only the public key is kept")
    public = {k: v for k, v in jwk.items() if k not in PRIVATE_MEMBERS and not k.startswith("tokenhunt_")}

    modulus_sha256 = None
    members = {"RSA": ("n", "e"), "EC": ("x", "y")}.get(kty or "")
    if members is None:
        warnings.append(f"{where}: key type {kty!r} is not RSA or EC; kept without key material")
    else:
        decoded: dict[str, bytes] = {}
        for member in members:  # name the member at fault: "field n is missing", not a KeyError
            if member not in public:
                warnings.append(f"{where}: {kty} key has no {member!r} member; skipped")
                return None
            try:
                decoded[member] = b64url_decode(public[member])
            except ValueError:
                warnings.append(f"{where}: member {member!r} is not base64url text; skipped")
                return None
        if kty == "RSA":
            modulus_sha256 = hashlib.sha256(_int_bytes(int.from_bytes(decoded["n"], "big"))).hexdigest()
        else:
            modulus_sha256 = hashlib.sha256(b"\x04" + decoded["x"] + decoded["y"]).hexdigest()

    subject = not_before = not_after = cert_sha1 = None
    x5c = public.get("x5c")
    if isinstance(x5c, list) and x5c and isinstance(x5c[0], str):
        try:
            subject, not_before, not_after, cert_sha1, _ = _parse_cert(x5c[0])
        except Exception as exc:  # noqa: BLE001 - any certificate problem only loses the cert columns
            warnings.append(f"{where}: x5c[0] is not a DER certificate ({type(exc).__name__}); certificate columns left empty")

    x5t = public.get("x5t") if isinstance(public.get("x5t"), str) else None
    x5t_hex = None
    if x5t:
        try:
            x5t_hex = b64url_decode(x5t).hex()
        except ValueError:
            warnings.append(f"{where}: x5t {x5t!r:.40} is not base64url")
    if cert_sha1:
        if x5t_hex and x5t_hex != cert_sha1:
            warnings.append(f"{where}: x5t does not match the SHA-1 of x5c[0]; the certificate's thumbprint is used")
        x5t_hex = cert_sha1
        x5t = x5t or b64url_encode(bytes.fromhex(cert_sha1))
    issuer = public.get("issuer") if isinstance(public.get("issuer"), str) and public.get("issuer") else default_issuer
    return KeyInfo(
        kid=kid.strip(),
        kty=kty,
        alg=public.get("alg") if isinstance(public.get("alg"), str) else None,
        use=public.get("use") if isinstance(public.get("use"), str) else None,
        issuer=issuer,
        x5t=x5t,
        x5t_hex=x5t_hex,
        modulus_sha256=modulus_sha256,
        public_jwk=json.dumps(public, sort_keys=True, separators=(",", ":")),
        cert_subject=subject,
        cert_not_before=not_before,
        cert_not_after=not_after,
    )


# =============================================================================== documents
@dataclass
class Snapshot:
    """One observed JWKS document: which keys a source published at a time."""

    source: str
    observed_at: datetime
    keys: list[Any]
    where: str  # file and record, for messages
    directory: Path
    file_name: str
    issuer_default: str | None = None


@dataclass
class OpenIdConfig:
    issuer: str
    jwks_uri: str
    path: Path


@dataclass
class ParsedDocuments:
    snapshots: list[Snapshot] = field(default_factory=list)
    configs: list[OpenIdConfig] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # a file or record that could not be read
    files: list[Path] = field(default_factory=list)


def _expand(paths: Iterable[Path | str]) -> tuple[list[Path], list[str]]:
    files: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in (".json", ".jwks"))
            if not found:
                problems.append(f"{p}: folder holds no .json or .jwks file")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            problems.append(f"{p}: no such file or folder")
    return files, problems


def _snapshot_date(entry: dict, where: str) -> datetime:
    for name in SNAPSHOT_DATE_FIELDS:
        if entry.get(name) not in (None, ""):
            try:
                value = normalize.parse_time(entry[name])
            except normalize.BadValue as exc:
                raise KeyImportError(f"{where}: {name}: {exc}") from None
            if value is not None:
                return value
    raise KeyImportError(f"{where}: snapshot has no date ({' / '.join(SNAPSHOT_DATE_FIELDS)})")


def _snapshot_keys(entry: dict, where: str) -> list[Any]:
    jwks = entry.get("jwks", entry)
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise KeyImportError(f"{where}: snapshot has no jwks.keys list")
    return jwks["keys"]


def read_documents(paths: Iterable[Path | str], source: str | None = None) -> ParsedDocuments:
    """Classify and read every file; a bad file or record is reported, never fatal for the others."""
    out = ParsedDocuments()
    files, out.problems = _expand(paths)
    out.files = files
    for path in files:
        try:
            doc = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError) as exc:
            out.problems.append(f"{path}: cannot read: {exc}")
            continue
        except json.JSONDecodeError as exc:
            out.problems.append(f"{path}: not JSON: line {exc.lineno} column {exc.colno}: {exc.msg}")
            continue
        src = source or path.name
        base = dict(source=src, directory=path.parent.resolve(), file_name=path.name)
        entries: list[Any] | None = None
        if isinstance(doc, dict) and isinstance(doc.get("snapshots"), list):
            entries = doc["snapshots"]
        elif isinstance(doc, list):
            entries = doc
        if entries is not None:
            for i, entry in enumerate(entries, start=1):
                where = f"{path} snapshot {i}"
                try:
                    if not isinstance(entry, dict):
                        raise KeyImportError(f"{where}: snapshot is not a JSON object")
                    out.snapshots.append(Snapshot(observed_at=_snapshot_date(entry, where), keys=_snapshot_keys(entry, where), where=where, **base))
                except KeyImportError as exc:
                    out.problems.append(str(exc))
            continue
        if isinstance(doc, dict) and isinstance(doc.get("keys"), list):
            try:
                observed = _snapshot_date(doc, str(path))
            except KeyImportError:
                observed = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)  # see module doc
            out.snapshots.append(Snapshot(observed_at=observed, keys=doc["keys"], where=str(path), **base))
            continue
        if isinstance(doc, dict) and isinstance(doc.get("jwks_uri"), str) and isinstance(doc.get("issuer"), str):
            out.configs.append(OpenIdConfig(issuer=doc["issuer"], jwks_uri=doc["jwks_uri"], path=path))
            continue
        out.problems.append(f"{path}: not a JWKS document ({{\"keys\": [...]}}), a JWKS history or an OpenID configuration")
    _apply_configs(out)
    return out


def _apply_configs(parsed: ParsedDocuments) -> None:
    """An OpenID configuration in the same folder gives the issuer of keys that publish none.

    With several configurations in one folder, the one whose ``jwks_uri`` tenant segment
    (``common``, ``organizations``, ``consumers`` or a tenant id) appears in the JWKS file name wins.
    """
    by_dir: dict[Path, list[OpenIdConfig]] = defaultdict(list)
    for cfg in parsed.configs:
        by_dir[cfg.path.parent.resolve()].append(cfg)
    for snap in parsed.snapshots:
        configs = by_dir.get(snap.directory, [])
        if len(configs) == 1:
            snap.issuer_default = configs[0].issuer
        elif configs:
            for cfg in configs:
                parts = [p for p in cfg.jwks_uri.split("/") if p]
                segment = parts[parts.index("discovery") - 1] if "discovery" in parts and parts.index("discovery") > 0 else None
                if segment and segment.lower() in snap.file_name.lower():
                    snap.issuer_default = cfg.issuer
                    break
    if parsed.configs and not parsed.snapshots:
        uris = ", ".join(sorted({c.jwks_uri for c in parsed.configs}))
        parsed.problems.append(f"OpenID configuration(s) without a JWKS document: save {uris} beside it (tokenhunt never fetches)")


# =============================================================================== registry rows
def registry_rows(
    snapshots: list[Snapshot],
    warnings: list[str],
    *,
    scope_override: str | None = None,
    batch_id: str = "",
    today: str | None = None,
) -> list[dict[str, Any]]:
    """One ``signing_keys`` row per (kid, source) from the snapshots of each source.

    first_seen / last_seen: first and last snapshot listing the kid. removed_seen: the first later
    snapshot that no longer lists it (when the kid left the published JWKS). A kid that appears,
    leaves and comes back counts from its first to its last appearance. Key material comes from the
    newest snapshot listing the kid. Status here is active/retired; ``apply_status`` adds compromised.
    """
    if scope_override is not None and scope_override not in SCOPES:
        raise KeyImportError(f"scope {scope_override!r} is not one of {', '.join(SCOPES)}")
    today = today or utcnow().date().isoformat()
    by_source: dict[str, list[Snapshot]] = defaultdict(list)
    for snap in snapshots:
        by_source[snap.source].append(snap)
    rows: list[dict[str, Any]] = []
    for source, snaps in sorted(by_source.items()):
        dates = sorted({s.observed_at for s in snaps})
        seen: dict[str, set[datetime]] = defaultdict(set)
        newest: dict[str, tuple[datetime, KeyInfo]] = {}
        for snap in sorted(snaps, key=lambda s: s.observed_at):
            kids_here: set[str] = set()
            for i, jwk in enumerate(snap.keys, start=1):
                info = key_info(jwk, f"{snap.where} key {i}", warnings, snap.issuer_default)
                if info is None:
                    continue
                if info.kid in kids_here:
                    warnings.append(f"{snap.where}: kid {info.kid} listed twice; the last entry is kept")
                kids_here.add(info.kid)
                seen[info.kid].add(snap.observed_at)
                newest[info.kid] = (snap.observed_at, info)
        for kid in sorted(seen):
            times = sorted(seen[kid])
            later = [d for d in dates if d > times[-1]]
            info = newest[kid][1]
            rows.append(
                _row(
                    info,
                    source=source,
                    scope=scope_override or scope_of_issuer(info.issuer),
                    first_seen=times[0],
                    last_seen=times[-1],
                    snapshot_count=len(times),
                    removed_seen=later[0] if later else None,
                    source_first_snapshot=dates[0],
                    source_snapshot_count=len(dates),
                    batch_id=batch_id,
                    today=today,
                )
            )
    return rows


def _row(info: KeyInfo, *, source: str, scope: str, batch_id: str, today: str, **seen: Any) -> dict[str, Any]:
    first = seen.get("first_seen")
    return {
        "kid": info.kid,
        "event_date": first.date().isoformat() if first else today,
        "x5t": info.x5t,
        "x5t_hex": info.x5t_hex,
        "kty": info.kty,
        "alg": info.alg,
        "use": info.use,
        "issuer": info.issuer,
        "scope": scope,
        "modulus_sha256": info.modulus_sha256,
        "public_jwk": info.public_jwk,
        "cert_subject": info.cert_subject,
        "cert_not_before": info.cert_not_before,
        "cert_not_after": info.cert_not_after,
        "first_seen": first,
        "last_seen": seen.get("last_seen"),
        "snapshot_count": seen.get("snapshot_count", 0),
        "removed_seen": seen.get("removed_seen"),
        "source_first_snapshot": seen.get("source_first_snapshot"),
        "source_snapshot_count": seen.get("source_snapshot_count", 0),
        "status": "retired" if seen.get("removed_seen") or not seen.get("source_snapshot_count") else "active",
        "source": source,
        "ingest_batch_id": batch_id,
    }


def apply_status(rows: list[dict[str, Any]], indicators: Iterable[dict[str, Any]]) -> None:
    """compromised when an indicator names the kid or the thumbprint; else active (in the newest
    snapshot of its source, i.e. not removed) or retired. Built-in rows have no snapshots: retired."""
    indicators = list(indicators)
    kids = {i["value"] for i in indicators if i.get("indicator_type") == "kid"}
    thumbs = {str(i["value"]).lower() for i in indicators if i.get("indicator_type") == "x5t_hex"}
    for row in rows:
        if row["kid"] in kids or (row.get("x5t_hex") or "").lower() in thumbs:
            row["status"] = "compromised"
        elif row.get("source_snapshot_count") and row.get("removed_seen") is None:
            row["status"] = "active"
        else:
            row["status"] = "retired"


def builtin_key_rows(warnings: list[str] | None = None, batch_id: str = "", today: str | None = None) -> list[dict[str, Any]]:
    """Registry rows for the keys shipped in ``queries/indicators/*.jwks.json`` (no snapshot history)."""
    warnings = [] if warnings is None else warnings
    today = today or utcnow().date().isoformat()
    rows = []
    for path in sorted(INDICATORS_DIR.glob("*.jwks.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for i, jwk in enumerate(doc.get("keys", []), start=1):
            info = key_info(jwk, f"{path} key {i}", warnings)
            if info is None:
                continue
            scope = jwk.get("tokenhunt_scope") or scope_of_issuer(info.issuer)
            rows.append(_row(info, source=BUILTIN_PREFIX + path.name, scope=scope, batch_id=batch_id, today=today))
    return rows


# =============================================================================== indicators
def builtin_indicators(directory: Path = INDICATORS_DIR) -> list[dict[str, Any]]:
    """Every row of ``queries/indicators/*.csv`` as an ``indicators`` row (without batch id/date)."""
    return read_indicator_files([directory])


def read_indicator_files(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Indicator rows from CSV files or folders of them (later files win on the same type and value).

    Raises KeyImportError naming the file and line when a row is malformed.
    """
    allowed = schemas.table("indicators").column("indicator_type").allowed or ()
    out: dict[tuple[str, str], dict[str, Any]] = {}
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.glob("*.csv"))
        elif path.is_file():
            files.append(path)
        else:
            raise KeyImportError(f"{path}: no such indicator file or folder")
    for path in files:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != INDICATOR_COLUMNS:
                raise KeyImportError(f"{path}: header must be {','.join(INDICATOR_COLUMNS)}")
            for line, rec in enumerate(reader, start=2):
                where = f"{path} line {line}"
                kind, value = (rec.get("indicator_type") or "").strip(), (rec.get("value") or "").strip()
                if kind not in allowed or not value:
                    raise KeyImportError(f"{where}: indicator_type must be one of {', '.join(allowed)} with a value")
                if not (rec.get("source") or "").strip():
                    raise KeyImportError(f"{where}: every indicator needs its source")
                try:
                    valid_from = normalize.parse_time(rec.get("valid_from") or None)
                    valid_until = normalize.parse_time(rec.get("valid_until") or None)
                except normalize.BadValue as exc:
                    raise KeyImportError(f"{where}: {exc}") from None
                if kind == "x5t_hex":
                    value = value.lower()
                out[(kind, value)] = {
                    "indicator_type": kind,
                    "value": value,
                    "campaign": rec.get("campaign") or None,
                    "scope": rec.get("scope") or None,
                    "valid_from": valid_from,
                    "valid_until": valid_until,
                    "reason": rec.get("reason") or None,
                    "source": rec["source"].strip(),
                }
    return list(out.values())


def _content(row: dict[str, Any], ignore: tuple[str, ...] = ("ingest_batch_id", "event_date")) -> str:
    """Canonical text of a row without its lineage columns (to tell a real change from a re-import)."""
    return json.dumps({k: v for k, v in row.items() if k not in ignore}, sort_keys=True, default=str)


def _merge_indicators(
    existing: list[dict], new: list[dict], batch_id: str, today: str, *, only_missing: bool = False
) -> tuple[list[dict], bool]:
    """Existing rows plus ``new`` (same key: ``new`` wins, or is skipped with ``only_missing``);
    returns (rows, changed)."""
    by_key = {(r["indicator_type"], r["value"]): r for r in existing}
    changed = False
    for row in new:
        key = (row["indicator_type"], row["value"])
        old = by_key.get(key)
        if old is not None and (only_missing or _content(old) == _content({**old, **row})):
            continue
        by_key[key] = {**row, "event_date": today, "ingest_batch_id": batch_id}
        changed = True
    return list(by_key.values()), changed


def _read(lake: Lake, table: str) -> list[dict[str, Any]]:
    return lake.read_table(table).to_pylist()


def _validate(table: str, rows: list[dict[str, Any]]) -> None:
    spec = schemas.table(table)
    for row in rows:
        problems = spec.violations(row)
        if problems:
            raise KeyImportError(f"{table} row {row.get('kid') or row.get('value')!s:.60}: {'; '.join(problems)}")


@dataclass
class ImportSummary:
    batch_id: str | None
    files: list[str]
    sources: dict[str, dict[str, int]]  # source -> counts (snapshots, keys, consumer, enterprise, ...)
    rows: int
    changed: bool
    problems: list[str]
    warnings: list[str]


def _source_counts(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        c = out.setdefault(row["source"], {"snapshots": row.get("source_snapshot_count") or 0, "keys": 0})
        c["keys"] += 1
        for name in (row["scope"], row["status"]):
            c[name] = c.get(name, 0) + 1
    return out


def import_keys(
    lake: Lake,
    paths: Iterable[Path | str],
    scope_override: str | None = None,
    *,
    source: str | None = None,
) -> ImportSummary:
    """Import JWKS documents/histories into ``signing_keys`` (the whole table is replaced).

    Rows of the sources being imported are rebuilt from the files; rows of other sources are
    kept; built-in keys are refreshed; indicators (shipped and marked) set ``compromised``.
    The built-in indicator lists are loaded into ``indicators`` in the same batch. Nothing is
    committed when the registry would not change (re-importing the same files is a no-op).
    """
    if scope_override is not None and scope_override not in SCOPES:
        raise KeyImportError(f"scope {scope_override!r} is not one of {', '.join(SCOPES)}")
    parsed = read_documents(paths, source)
    warnings: list[str] = []
    batch_id = new_batch_id()
    today = utcnow().date().isoformat()
    new_rows = registry_rows(parsed.snapshots, warnings, scope_override=scope_override, batch_id=batch_id, today=today)
    imported_sources = {s.source for s in parsed.snapshots}
    with lake.lock():
        existing = _read(lake, "signing_keys")
        # Shipped lists only fill in what is missing here: load_indicators decides who wins on conflicts.
        indicators, ind_changed = _merge_indicators(
            _read(lake, "indicators"), builtin_indicators(), batch_id, today, only_missing=True
        )
        kept = [r for r in existing if r["source"] not in imported_sources and not r["source"].startswith(BUILTIN_PREFIX)]
        rows = kept + new_rows + builtin_key_rows(warnings, batch_id, today)
        apply_status(rows, indicators)
        changed = _registry_changed(existing, rows)
        summary = ImportSummary(
            batch_id=None, files=[str(f) for f in parsed.files], sources=_source_counts([r for r in rows if r["source"] in imported_sources]),
            rows=len(rows), changed=changed, problems=parsed.problems, warnings=warnings,
        )
        if not changed and not ind_changed:
            return summary
        _validate("signing_keys", rows)
        _validate("indicators", indicators)
        batch = lake.begin(batch_id)
        try:
            if changed:
                batch.replace("signing_keys", _restamp(rows, existing, batch_id))
            if ind_changed:
                batch.replace("indicators", indicators)
            batch.commit(_record("keys_import", summary, started=utcnow()))
        except BaseException:
            batch.abort()
            raise
        summary.batch_id = batch_id
    return summary


def _registry_changed(existing: list[dict], rows: list[dict]) -> bool:
    return sorted(_content(r) for r in existing) != sorted(_content(r) for r in rows)


def _restamp(rows: list[dict], existing: list[dict], batch_id: str) -> list[dict]:
    """Keep the batch id and partition of rows that did not change, so lineage points at their writer."""
    old = {(r["kid"], r["source"]): r for r in existing}
    out = []
    for row in rows:
        prev = old.get((row["kid"], row["source"]))
        if prev is not None and _content(prev) == _content(row):
            row = {**row, "ingest_batch_id": prev["ingest_batch_id"], "event_date": prev["event_date"]}
        else:
            row = {**row, "ingest_batch_id": batch_id}
        out.append(row)
    return out


def _record(kind: str, summary: Any, started: datetime) -> dict[str, Any]:
    return {
        "kind": kind,
        "started": started.isoformat(),
        "finished": utcnow().isoformat(),
        "files": getattr(summary, "files", []),
        "rows": getattr(summary, "rows", None),
        "problems": len(getattr(summary, "problems", []) or []),
    }


def load_indicators(lake: Lake, paths: Iterable[Path] = (), *, lock: bool = True) -> dict[str, Any]:
    """Write the shipped indicator lists plus the given CSV files/folders to ``indicators`` and
    refresh the registry statuses. A user's file wins over a shipped row with the same type and
    value, and marked indicators are kept. Idempotent: nothing is committed when nothing changed."""
    paths = [Path(p) for p in paths]
    batch_id = new_batch_id()
    today = utcnow().date().isoformat()
    rows = read_indicator_files([INDICATORS_DIR, *paths])
    extra = {"rows": len(rows), "files": [str(p) for p in paths]}
    with lake.lock() if lock else nullcontext():
        indicators, changed = _merge_indicators(_read(lake, "indicators"), rows, batch_id, today)
        return _commit_indicators(lake, indicators, changed, batch_id, "indicators_load", extra)


def mark_compromised(
    lake: Lake, kid: str, reason: str, source: str | None = None, campaign: str | None = None
) -> dict[str, Any]:
    """Record an analyst's indicator that ``kid`` is compromised; registry rows of the kid turn
    ``compromised`` (now, and on every later import)."""
    kid = (kid or "").strip()
    if not kid:
        raise KeyImportError("a kid is required")
    if not (reason or "").strip():
        raise KeyImportError("a reason is required (why is the key compromised?)")
    batch_id = new_batch_id()
    today = utcnow().date().isoformat()
    with lake.lock():
        registry = [r for r in _read(lake, "signing_keys") if r["kid"] == kid]
        scopes = sorted({r["scope"] for r in registry})
        row = {
            "indicator_type": "kid",
            "value": kid,
            "campaign": campaign,
            "scope": scopes[0] if len(scopes) == 1 else None,
            "valid_from": None,
            "valid_until": None,
            "reason": reason.strip(),
            "source": (source or "").strip() or "analyst: tokenhunt keys mark",
        }
        indicators, changed = _merge_indicators(_read(lake, "indicators"), [row], batch_id, today)
        result = _commit_indicators(lake, indicators, changed, batch_id, "keys_mark", {"kid": kid})
    result["registry_rows"] = len(registry)
    return result


def _commit_indicators(lake: Lake, indicators: list[dict], changed: bool, batch_id: str, kind: str, extra: dict) -> dict[str, Any]:
    """Replace ``indicators`` and re-derive registry statuses from them (caller holds the lock)."""
    started = utcnow()
    existing = _read(lake, "signing_keys")
    rows = [dict(r) for r in existing]
    apply_status(rows, indicators)
    keys_changed = _registry_changed(existing, rows)
    out = {"batch_id": None, "indicators": len(indicators), "changed": changed or keys_changed, **extra}
    if not (changed or keys_changed):
        return out
    _validate("indicators", indicators)
    batch = lake.begin(batch_id)
    try:
        if changed:
            batch.replace("indicators", indicators)
        if keys_changed:
            batch.replace("signing_keys", _restamp(rows, existing, batch_id))
        batch.commit({"kind": kind, "started": started.isoformat(), "finished": utcnow().isoformat(), **extra})
    except BaseException:
        batch.abort()
        raise
    out["batch_id"] = batch_id
    return out


def registry_version(lake: Lake) -> str | None:
    """Batch id of the newest commit that wrote ``signing_keys`` (batch ids sort by time), or None.

    The ingest can compare it with a file's commit to re-check signatures of a file ingested
    before the registry changed (its tokens were stored ``not_checked`` / ``unknown_key``).
    """
    versions = [
        batch_id
        for batch_id, rec in lake.committed().items()
        if any(str(f).startswith("signing_keys/") for f in rec.get("files", []))
    ]
    return max(versions) if versions else None


def list_keys(lake: Lake) -> list[dict[str, Any]]:
    """Registry rows, newest first within each source (for ``tokenhunt keys list``)."""
    rows = _read(lake, "signing_keys")
    far = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(rows, key=lambda r: (r["source"], -(r["last_seen"] or far).timestamp(), r["kid"]))


# =============================================================================== signatures
_RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGS = {"ES256": ("secp256r1", 32), "ES384": ("secp384r1", 48), "ES512": ("secp521r1", 66)}
SUPPORTED_ALGS = frozenset(_RSA_ALGS) | frozenset(_EC_ALGS)
PARALLEL_MIN_TOKENS = 50_000  # below this the pool's start-up (~0.3 s) costs about what it saves
_HEADER_CACHE_MAX = 10_000  # distinct header segments kept (real issuers use a handful)
_HEADER_CACHE_SEGMENT_MAX = 2_048


@dataclass(frozen=True)
class _Key:
    source: str
    kty: str
    alg: str | None  # alg the JWK pins, if any (RFC 8725 §3.1: one key, one algorithm)
    curve: str | None
    key: Any  # cryptography public key object, built once

    def allows(self, alg: str) -> bool:
        if self.alg and self.alg != alg:
            return False
        if self.kty == "RSA":
            return alg in _RSA_ALGS
        if self.kty == "EC":
            return alg in _EC_ALGS and _EC_ALGS[alg][0] == self.curve
        return False


def _hash_for(alg: str) -> Any:
    from cryptography.hazmat.primitives import hashes

    return {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}[alg[2:]]()


def _load_key(row: dict[str, Any]) -> _Key | None:
    """A public key object from a registry row's ``public_jwk`` (pyjwt builds it), or None."""
    import jwt.algorithms

    try:
        jwk = json.loads(row.get("public_jwk") or "null")
        if not isinstance(jwk, dict):
            return None
        jwk = {k: v for k, v in jwk.items() if k not in PRIVATE_MEMBERS}
        kty = jwk.get("kty")
        if kty == "RSA":
            key = jwt.algorithms.RSAAlgorithm.from_jwk(jwk)
            curve = None
        elif kty == "EC":
            key = jwt.algorithms.ECAlgorithm.from_jwk(jwk)
            curve = key.curve.name
        else:
            return None
        if hasattr(key, "private_numbers"):
            return None  # never verify with (or keep) a private key
        return _Key(source=row.get("source") or "", kty=kty, alg=jwk.get("alg") if isinstance(jwk.get("alg"), str) else None, curve=curve, key=key)
    except Exception:  # noqa: BLE001 - a malformed registry key only means that key cannot verify
        return None


class SignatureVerifier:
    """Offline JWS signature checks against the registry (RFC 7515/7518, RFC 8725).

    Statuses: ``untrusted_header`` (jku/jwk/x5u present: key hints are never followed),
    ``unsupported_alg`` (none, HS*, anything but RS*/PS*/ES*, or an alg the key does not allow),
    ``unknown_key`` (no registry key for the kid, or x5t when there is no kid), ``valid``,
    ``invalid`` (no key of that kid verifies), ``not_checked`` (not a three-part JWS with a JSON
    header). ``check`` never raises and never puts a token into a message.

    Cost: public keys are built once per registry key and parsed headers are cached per header
    segment (tokens of one issuer share a handful of headers), so a check is one base64 decode plus
    one OpenSSL verify. Measured on the 2-core dev machine (RSA-2048, RS256, distinct tokens):
    see ``PERFORMANCE`` below; large sets go through a process pool.
    """

    PERFORMANCE = (
        "RS256/RSA-2048, ~1.2 KB tokens, 2-core dev machine shared with other jobs: serial 27k-37k tokens/s; "
        "2-process pool 44k tokens/s on 200k tokens (pool start-up ~0.3 s included)"
    )

    def __init__(self, registry: Iterable[dict[str, Any]]):
        self._rows = [
            {k: r.get(k) for k in ("kid", "x5t", "public_jwk", "source")} for r in registry if r.get("kid") and r.get("public_jwk")
        ]
        self.by_kid: dict[str, list[_Key]] = defaultdict(list)
        self.by_x5t: dict[str, list[_Key]] = defaultdict(list)
        seen: set[tuple[str, str]] = set()
        # Deterministic order: sources with snapshot history before built-in lists, then by name.
        for row in sorted(self._rows, key=lambda r: (str(r["source"]).startswith(BUILTIN_PREFIX), str(r["source"]))):
            key = _load_key(row)
            if key is None:
                continue
            ident = (row["kid"], row["public_jwk"])
            if ident in seen:
                continue
            seen.add(ident)
            self.by_kid[row["kid"]].append(key)
            if row.get("x5t"):
                self.by_x5t[row["x5t"]].append(key)
        self._headers: dict[str, tuple[str | None, list[_Key]]] = {}

    @classmethod
    def from_lake(cls, lake: Lake) -> "SignatureVerifier":
        return cls(_read(lake, "signing_keys"))

    # -- one token
    def _header(self, segment: str) -> tuple[str | None, list[_Key]]:
        """(precheck status or None, candidate keys) for a header segment; cached."""
        hit = self._headers.get(segment)
        if hit is not None:
            return hit
        try:
            header = json.loads(b64url_decode(segment))
        except (ValueError, UnicodeDecodeError, RecursionError):
            header = None
        if not isinstance(header, dict):
            out: tuple[str | None, list[_Key]] = ("not_checked", [])
        elif any(h in header for h in UNTRUSTED_HEADERS):
            out = ("untrusted_header", [])
        else:
            alg = header.get("alg")
            if not isinstance(alg, str) or alg not in SUPPORTED_ALGS:
                out = ("unsupported_alg", [])
            else:
                kid, x5t = header.get("kid"), header.get("x5t")
                keys = self.by_kid.get(kid, []) if isinstance(kid, str) else []
                if not keys and not isinstance(kid, str) and isinstance(x5t, str):
                    keys = self.by_x5t.get(x5t, [])
                if not keys:
                    out = ("unknown_key", [])
                else:
                    usable = [k for k in keys if k.allows(alg)]
                    out = ("unsupported_alg", []) if not usable else (alg, usable)
        if len(segment) <= _HEADER_CACHE_SEGMENT_MAX:  # bounded memory: odd, huge headers are not cached
            if len(self._headers) >= _HEADER_CACHE_MAX:
                self._headers.clear()
            self._headers[segment] = out
        return out

    def check_one(self, raw: Any) -> tuple[str, str | None]:
        """Status and verifying key source of one raw token. Never raises."""
        try:
            if isinstance(raw, bytes):
                raw = raw.decode("ascii")
            if not isinstance(raw, str):
                return "not_checked", None
            parts = raw.strip().split(".")
            if len(parts) != 3:
                return "not_checked", None
            pre, keys = self._header(parts[0])
            if pre not in SUPPORTED_ALGS:
                return pre or "not_checked", None
            try:
                signature = b64url_decode(parts[2])
            except ValueError:
                return "invalid", None
            signing_input = (parts[0] + "." + parts[1]).encode("ascii")
            for key in keys:
                if _verify(key, pre, signing_input, signature):
                    return "valid", key.source
            return "invalid", None
        except Exception:  # noqa: BLE001 - never raise on input; an unexpected failure is "not checked"
            return "not_checked", None

    def check(self, raw_tokens: dict[str, Any], workers: int | None = None) -> dict[str, tuple[str, str | None]]:
        """``{fingerprint: raw}`` -> ``{fingerprint: (status, key_source)}``; each token verified once.

        ``workers`` > 1 (default: the CPU count when there are >= PARALLEL_MIN_TOKENS tokens) spreads
        the work over a spawned process pool; the raw tokens cross to the workers through pipes only.
        """
        if workers is None:
            workers = (os.cpu_count() or 1) if len(raw_tokens) >= PARALLEL_MIN_TOKENS else 1
        if workers > 1 and len(raw_tokens) > 1:
            try:
                return self._check_parallel(raw_tokens, workers)
            except Exception:  # noqa: BLE001 - a pool that cannot start falls back to one process
                pass
        return {fp: self.check_one(raw) for fp, raw in raw_tokens.items()}

    def _check_parallel(self, raw_tokens: dict[str, Any], workers: int) -> dict[str, tuple[str, str | None]]:
        import multiprocessing

        items = list(raw_tokens.items())
        size = max(1, -(-len(items) // (workers * 4)))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        out: dict[str, tuple[str, str | None]] = {}
        ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold DuckDB threads
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(self._rows,)) as pool:
            for part in pool.map(_worker_check, chunks):
                out.update(part)
        return out


def _verify(key: _Key, alg: str, signing_input: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    try:
        if key.kty == "RSA":
            h = _hash_for(alg)
            if alg.startswith("PS"):
                pad = padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
            else:
                pad = padding.PKCS1v15()
            key.key.verify(signature, signing_input, pad, h)
            return True
        size = _EC_ALGS[alg][1]
        if len(signature) != 2 * size:
            return False
        r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
        key.key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(_hash_for(alg)))
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


_WORKER: SignatureVerifier | None = None


def _worker_init(rows: list[dict[str, Any]]) -> None:
    global _WORKER
    _WORKER = SignatureVerifier(rows)


def _worker_check(chunk: list[tuple[str, Any]]) -> dict[str, tuple[str, str | None]]:
    assert _WORKER is not None
    return {fp: _WORKER.check_one(raw) for fp, raw in chunk}


def verify_signatures(lake: Lake) -> Callable[[dict[str, str]], dict[str, tuple[str, str | None]]]:
    """The ingest's ``SignatureChecker``: loads the registry once, checks batches of raw tokens."""
    return SignatureVerifier.from_lake(lake).check


# =============================================================================== read-time SQL
def tokens_view_sql(
    stored_tokens_relation: str,
    signing_keys_relation: str,
    *,
    tolerance_seconds: int = DEFAULT_JWKS_TOLERANCE_SECONDS,
    skew_seconds: int = DEFAULT_CLOCK_SKEW_SECONDS,
) -> str:
    """SELECT turning stored ``tokens`` rows + ``signing_keys`` into the full ``tokens`` view.

    One row per token_fingerprint (stored rows are one per batch): min first_seen / event_date /
    ingest_batch_id, max last_seen, summed seen_count, best signature_status (see STATUS_RANK) and
    the key source that gave it. Derived columns, all recomputed on every read:

    * The registry row for the token's kid (``kid``, or ``x5t`` when the header has no kid) is
      chosen as: a row whose scope matches the token's tenant (consumer for the MSA tenant,
      enterprise for any other tid) first, then a source with snapshot history over a built-in
      list, then the latest last_seen, then the source name. ``key_scope`` and the certificate
      come from it; ``key_status`` is compromised when any row of the kid is.
    * ``kid_known`` / ``kid_in_issuer_jwks`` are NULL (unknowable) while the registry holds no
      imported JWKS at all, rather than flagging every token.
    * ``key_issuer_mismatch`` follows EnableAadSigningKeyIssuerValidation (detections.md 5.2):
      effective = key issuer with {tenantid} -> tid; mismatch when it equals neither iss nor the v2
      issuer ``https://login.microsoftonline.com/<tid>/v2.0`` (the second form is how .NET accepts
      v1 ``sts.windows.net`` tokens). A key with no issuer passes; a key issuer with no tid fails
      (IDX40009). Compared case-insensitively.
    * ``key_outside_jwks_window`` uses only sources with more than one snapshot: iat after
      ``removed_seen`` + tolerance, or before ``first_seen`` - tolerance when the kid appeared after
      the source's first snapshot (a kid present from the start may predate the history). True
      only when outside the window of every such source listing the kid.

    Portable SQL (plain joins, CASE, window functions, REPLACE/POSITION/DATE_DIFF); the engine
    binds the two relations by name.
    """
    tol = int(tolerance_seconds)
    skew = int(skew_seconds)
    if tol < 0 or skew < 0:
        raise ValueError("tolerance and skew must be >= 0 seconds")
    tokens_spec = schemas.table("tokens")
    stored_cols = [c.name for c in tokens_spec.stored_columns]
    agg = {
        "token_fingerprint": None,
        "event_date": "MIN",
        "first_seen": "MIN",
        "last_seen": "MAX",
        "seen_count": "SUM",
        "ingest_batch_id": "MIN",
        "signature_status": None,
        "signature_key_source": None,
    }
    tok_select = ["s.token_fingerprint"]
    for name in stored_cols:
        if name in ("token_fingerprint", "signature_status", "signature_key_source"):
            continue
        fn = agg.get(name, "MAX")
        sql_type = tokens_spec.column(name).sql_type
        tok_select.append(f"CAST({fn}(s.{name}) AS {sql_type}) AS {name}")
    rank_case = "CASE signature_status " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in STATUS_RANK.items()) + " ELSE 0 END"
    unrank_case = "CASE b.best_rank " + " ".join(f"WHEN {v} THEN '{k}'" for k, v in STATUS_RANK.items()) + " ELSE 'not_checked' END"
    tol_i = f"INTERVAL '{tol}' SECOND"
    skew_i = f"INTERVAL '{skew}' SECOND"
    derived = {
        "key_scope": "c.scope",
        "key_status": "CASE WHEN c.any_compromised = 1 THEN 'compromised' ELSE c.status END",
        "kid_known": (
            "CASE WHEN c.kid IS NOT NULL THEN TRUE WHEN r.jwks_rows = 0 THEN CAST(NULL AS BOOLEAN) ELSE FALSE END"
        ),
        "kid_in_issuer_jwks": (
            "CASE WHEN t.expected_scope IS NULL THEN CAST(NULL AS BOOLEAN) WHEN c.any_scope_match = 1 THEN TRUE "
            "WHEN r.jwks_rows = 0 THEN CAST(NULL AS BOOLEAN) ELSE FALSE END"
        ),
        "issuer_tenant_mismatch": (
            "CASE WHEN t.tid_n IS NULL THEN CAST(NULL AS BOOLEAN) WHEN t.iss IS NULL THEN TRUE "
            "ELSE POSITION(LOWER(t.tid_n) IN LOWER(t.iss)) = 0 END"
        ),
        "key_issuer_mismatch": (
            "CASE WHEN c.kid IS NULL THEN CAST(NULL AS BOOLEAN) WHEN c.issuer IS NULL OR c.issuer = '' THEN FALSE "
            "WHEN t.tid_n IS NULL THEN TRUE "
            "ELSE LOWER(REPLACE(c.issuer, '{tenantid}', t.tid_n)) <> LOWER(COALESCE(t.iss, '')) "
            "AND LOWER(REPLACE(c.issuer, '{tenantid}', t.tid_n)) <> LOWER('https://login.microsoftonline.com/' || t.tid_n || '/v2.0') END"
        ),
        "key_expired_at_issue": (
            "CASE WHEN c.cert_not_after IS NULL OR t.iat IS NULL THEN CAST(NULL AS BOOLEAN) ELSE t.iat > c.cert_not_after END"
        ),
        "key_outside_jwks_window": (
            "CASE WHEN c.outside_all IS NULL THEN CAST(NULL AS BOOLEAN) WHEN c.outside_all = 1 THEN TRUE ELSE FALSE END"
        ),
        "lifetime_seconds": (
            "CASE WHEN t.iat IS NULL OR t.exp IS NULL THEN CAST(NULL AS BIGINT) ELSE CAST(DATE_DIFF('second', t.iat, t.exp) AS BIGINT) END"
        ),
        "iat_in_future": (
            f"CASE WHEN t.first_seen IS NULL OR (t.iat IS NULL AND t.nbf IS NULL) THEN CAST(NULL AS BOOLEAN) "
            f"WHEN t.iat > t.first_seen + {skew_i} OR t.nbf > t.first_seen + {skew_i} THEN TRUE ELSE FALSE END"
        ),
    }
    missing = [c.name for c in tokens_spec.columns if c.derived and c.name not in derived]
    if missing:
        raise KeyError(f"tokens.toml has derived columns with no SQL: {', '.join(missing)}")
    final = []
    for col in tokens_spec.columns:
        if col.derived:
            final.append(f"{derived[col.name]} AS {col.name}")
        else:
            final.append(f"t.{col.name} AS {col.name}")
    outside_flag = (
        f"CASE WHEN k.removed_seen IS NOT NULL AND t.iat > k.removed_seen + {tol_i} THEN 1 "
        f"WHEN k.first_seen IS NOT NULL AND k.source_first_snapshot IS NOT NULL AND k.first_seen > k.source_first_snapshot "
        f"AND t.iat < k.first_seen - {tol_i} THEN 1 ELSE 0 END"
    )
    part = "PARTITION BY t.token_fingerprint"
    return f"""
WITH
th_stored AS (SELECT * FROM {stored_tokens_relation}),
th_ranked AS (
  SELECT token_fingerprint, signature_key_source, {rank_case} AS status_rank FROM th_stored
),
th_best AS (
  SELECT token_fingerprint, MAX(status_rank) AS best_rank FROM th_ranked GROUP BY token_fingerprint
),
th_best_source AS (
  SELECT x.token_fingerprint, MAX(x.signature_key_source) AS signature_key_source
  FROM th_ranked x JOIN th_best b ON x.token_fingerprint = b.token_fingerprint AND x.status_rank = b.best_rank
  GROUP BY x.token_fingerprint
),
th_agg AS (
  SELECT {", ".join(tok_select)} FROM th_stored s GROUP BY s.token_fingerprint
),
th_tok AS (
  SELECT a.*, {unrank_case} AS signature_status, bs.signature_key_source AS signature_key_source,
    COALESCE(a.kid, a.x5t) AS lookup_kid,
    NULLIF(TRIM(a.tid), '') AS tid_n,
    CASE WHEN NULLIF(TRIM(a.tid), '') IS NULL THEN NULL
         WHEN LOWER(TRIM(a.tid)) = '{MSA_TENANT_ID}' THEN 'consumer' ELSE 'enterprise' END AS expected_scope
  FROM th_agg a JOIN th_best b ON a.token_fingerprint = b.token_fingerprint
  LEFT JOIN th_best_source bs ON a.token_fingerprint = bs.token_fingerprint
),
th_reg AS (
  SELECT COUNT(*) AS jwks_rows FROM {signing_keys_relation} WHERE source_snapshot_count > 0
),
th_cand AS (
  SELECT t.token_fingerprint, k.kid, k.scope, k.status, k.issuer, k.cert_not_after,
    ROW_NUMBER() OVER ({part} ORDER BY
      CASE WHEN k.scope = t.expected_scope THEN 0 ELSE 1 END,
      CASE WHEN k.source_snapshot_count > 0 THEN 0 ELSE 1 END,
      k.last_seen DESC NULLS LAST, k.source) AS rn,
    MAX(CASE WHEN k.scope = t.expected_scope THEN 1 ELSE 0 END) OVER ({part}) AS any_scope_match,
    MAX(CASE WHEN k.status = 'compromised' THEN 1 ELSE 0 END) OVER ({part}) AS any_compromised,
    MIN(CASE WHEN k.source_snapshot_count > 1 AND t.iat IS NOT NULL THEN {outside_flag} END) OVER ({part}) AS outside_all
  FROM th_tok t JOIN {signing_keys_relation} k ON k.kid = t.lookup_kid
)
SELECT
  {(","+chr(10)+"  ").join(final)}
FROM th_tok t
LEFT JOIN th_cand c ON c.token_fingerprint = t.token_fingerprint AND c.rn = 1
CROSS JOIN th_reg r
""".strip()


TOKENS_DERIVED_SQL = tokens_view_sql("tokens_stored", "signing_keys")
