"""Render sample_logs/README.md from the generator's summary, so the document never drifts from the files."""

from __future__ import annotations

from typing import Any

FORMAT_NOTES = {
    "signins/graph_beta/interactiveUser-SignInLogs.json": [
        "UTF-8 BOM, one JSON array, Windows PowerShell `ConvertTo-Json` indentation (`\"key\":  value`, nested "
        "blocks indented from their opening column, empty arrays as `[` blank line `]`), `'` `<` `>` `&` escaped as `\\u0027`...",
        "`createdDateTime` like `2026-11-02T08:15:01Z`; `uniqueTokenIdentifier` = base64url, no padding, of the "
        "request id GUID's little-endian bytes (`pipeline.normalize.unique_token_id_from_request_id`).",
        "Members (`userType` member) and B2B guests (`userType` guest, `homeTenantId` Fabrikam, `resourceTenantId` "
        "Contoso, `crossTenantAccessType` b2bCollaboration). `tokenIssuerType` AzureAD. A few failures (50126), "
        "among them a mistyped password followed 41 s later by a success.",
    ],
    "signins/graph_beta/servicePrincipal-SignInLogs.json": [
        "Same layout; `signInEventTypes` [servicePrincipal], empty user fields, `tokenIssuerType` "
        "`UnknownFutureValue`, `status.failureReason` \"Other.\" with errorCode 0 (as in the real export).",
    ],
    "signins/log_analytics/AADNonInteractiveUserSignInLogs.csv": [
        "Portal \"Export to CSV\": time columns `TimeGenerated [UTC]` (ingestion, 20 s-4 min later) and "
        "`CreatedDateTime [UTC]` (the sign-in) like `11/2/2026, 8:15:01.123 AM`; `ResultType` a string; "
        "`IsInteractive`/`IsRisky` TRUE/FALSE; dynamic columns as JSON text; `LocationDetails` pretty-printed "
        "over several lines in about 30% of rows; `ResourceIdentity` is the resource app id; last column `Type`.",
        "CRLF row ends, LF inside multi-line cells. About 3% failures (700082).",
    ],
    "signins/eventhub/SignInLogs-diagnostic.ndjson": [
        "Diagnostic-settings envelope (`time`, `category` SignInLogs, `resultType` string, `properties` = the Graph "
        "object with `createdDateTime` like `2026-11-19T16:02:11.0000000+00:00`). Re-exports about one in seven "
        "successful member interactive sign-ins (same `id`: they must deduplicate).",
    ],
    "mail/purview/purview_audit_export.csv": [
        "Header `RecordId,CreationDate,RecordType,Operation,UserId,AuditData,AssociatedAdminUnits,AssociatedAdminUnitsNames`, "
        "CRLF, `CreationDate` like `11/2/2026 8:15:01 AM` (UTC), `RecordType` an int, `AuditData` one JSON cell "
        "(`\"\"` quoting, `/` written `\\/`), `CreationTime` without Z.",
        "Operations: MailItemsAccessed (50; `OperationProperties` MailAccessType Bind/Sync and IsThrottled False; "
        "`Folders[].FolderItems[]` for Bind), Send (2), New-InboxRule (1), UserLoggedIn (15; `Id` = the Entra request "
        "id, `DeviceProperties` SessionId). `ClientIP` sometimes carries a port; `OriginatingServer` ends in CR LF.",
        "`AppAccessContext` {AADSessionId, APIId, ClientAppId, IssuedAtTime, UniqueTokenId} matches the sign-in that "
        "issued the token (same user, IssuedAtTime = its createdDateTime); the top-level `SessionId` is Exchange's, not "
        "Entra's (trap). `TokenTenantId`/`TokenObjectId` are present.",
    ],
    "mail/sentinel/OfficeActivity_VIP.ndjson": [
        "Log Analytics JSON export of OfficeActivity (one object per line): `RecordType` ExchangeItemAggregated, "
        "`UserType` Regular, `Logon_Type` Owner, `Client_IPAddress`, `Folders`/`OperationProperties`/`AppAccessContext` "
        "as JSON strings, flat `UniqueTokenId` and `IssuedAtTime` (`...0000000Z`), `<`/`>` written `\\u003c`/`\\u003e`.",
        "MailItemsAccessed of the VIP mailboxes only; every row duplicates a Purview row (`OfficeId` == `RecordId`).",
    ],
    "gateway/gateway-access.jsonl": [
        "One JSON object per line: `time` (`2026-11-02T08:15:01.123Z`), `client_ip`, `host`, `path`, `method`, "
        "`user_agent`, `status`, `request_id`, `duration_ms`, `bytes_out`, `authorization` (`Bearer <JWT>`).",
        "Each benign user token serves 3-6 requests at scale 1 (x `scale` above 1, at most x10), app-only tokens "
        "2-4, forged tokens 10-18. Tokens are RS256, signed at generation time; header "
        "`typ, alg, x5t, kid`; claims include `aud, iss, iat, nbf, exp, azp, oid, preferred_username, scp, sid, tid, "
        "uti, ver`. Hosts: outlook.office365.com, graph.microsoft.com, outlook.live.com (consumer).",
    ],
}


def _table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_readme(s: dict[str, Any]) -> str:
    files = s["files"]
    out: list[str] = []
    add = out.append
    add("# sample_logs: a forged-token scenario at Contoso (generated)\n")
    add(f"Written by `python -m pipeline.samplegen --out sample_logs --seed {s['seed']} --scale {s['scale']}` "
        "(`pipeline/samplegen/`). Do not edit by hand: change the generator and run it again. The same seed and scale "
        "give byte-identical files. `expected.json` holds everything below as data (counts, planted records, "
        "forged-token fingerprints, expected findings) for tests.\n")
    add("Everything is fictional: tenant Contoso `" + s["tenant"]["id"] + "` (contoso.com), partner tenant Fabrikam, "
        "documentation IP ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) for benign traffic. "
        "The attacker IPs, user agents and ClientInfoString are public Storm-0558 indicators. The signing keys are "
        "derived from the seed in memory; only their public halves (JWKS) are written, and no file holds private "
        "key material.\n")
    add("## The story\n")
    add(f"Six weeks, {s['window']['start'][:10]} to 2026-11-20 (UTC). {s['users']['members']} Contoso members sign in "
        "to Exchange Online and Microsoft Graph from Outlook, OWA, Outlook Mobile, Teams and Office: interactively "
        "(Graph JSON) or, far more often, by silent token refresh (Log Analytics CSV); one member a day is on call, "
        "weekends included, so no day lacks sign-ins or mailbox reads. An interactive sign-in issues an access token "
        "whose `uti` is the sign-in's `uniqueTokenIdentifier` and whose `sid` is its `sessionId`, and the gateway logs "
        "that token on several requests; the user's mailbox events carry the token id, session id and issue time of "
        f"the sign-in (interactive or not) that authorized them in `AppAccessContext`. {s['users']['guests']} B2B guests from Fabrikam use Teams; {s['users']['consumers']} "
        "personal Microsoft accounts use Outlook.com with consumer-tenant tokens; two service principals (Contoso Mail "
        "Archiver, Contoso HR Sync) run on a schedule with app-only tokens. Enterprise key A signs until 2026-11-01, "
        "then key B, published on 2026-10-23.\n")
    add("The mail audit was exported three weeks after the fact, so it reaches back only to "
        f"{s['mail_window']['start'][:10]}, while sign-ins and the gateway reach six weeks.\n")
    add("In the last week (Monday-Thursday, 00:00-09:00 UTC) an actor holding the (simulated) Microsoft *consumer* "
        "(MSA) signing key forges access tokens for two executives' mailboxes: signed with the consumer key, yet claiming `tid` and "
        "`iss` of Contoso and `aud` https://outlook.office365.com. The actor calls OWA's GetAccessTokenForResource "
        "and reads mail through the gateway from Storm-0558 proxy IPs; Exchange records MailItemsAccessed (Bind) with "
        "a token id and session id that no sign-in issued, a client app id the tenant has never seen, and "
        "`ClientInfoString` `Client=REST;Client=RESTSystem;;`. One forged token lives 8 hours.\n")

    add("## Files\n")
    rows = []
    for rel, info in files.items():
        rows.append([f"`{rel}`", info["records"], f"{info['bytes']:,}", info.get("first_event", "")[:16],
                     info.get("last_event", "")[:16], info["description"]])
    add(_table(rows, ["file", "records", "bytes", "first event", "last event", "what"]) + "\n")
    add(f"Records in the log files: {s['records_total']:,}. Also: `{s['jwks_files'][0]}` (the current common JWKS, "
        f"`{{\"keys\":[...]}}`), `{s['jwks_files'][1]}` (weekly snapshots, newest first, shaped like "
        f"realdata/jwks_panva_wellknown: `{{source, note, snapshots:[{{commit, commit_date, jwks}}]}}`), "
        f"`{s['indicators_file']}` (scenario indicators in the columns of schemas/indicators.toml), `expected.json`.\n")
    for rel, notes in FORMAT_NOTES.items():
        add(f"**`{rel}`**\n")
        for note in notes:
            add(f"- {note}")
        add("")

    add("## Signing keys\n")
    add(_table([[k["label"], f"`{k['kid']}`", k["scope"], f"`{k['issuer']}`", k["not_before"][:10], k["not_after"][:10],
                 k["first_published"][:10]] for k in s["keys"]],
               ["key", "kid (= x5t)", "scope", "JWKS issuer", "cert not before", "not after", "first in JWKS"]) + "\n")

    add("## Planted bad records\n")
    add("Each is quarantined with a reason naming the file and record, except the mangled bearer token, whose request "
        "is kept while its token row carries a parse error; nothing else should be quarantined. No other record "
        "refers to them. Record numbers are 1-based within the file; lines are where the record starts (CSV: the "
        "header is line 1).\n")
    add(_table([[f"`{p['file']}`", p["record"], p["line"], p["kind"], p["handling"], p["expected"]]
                for p in s["planted_bad_records"]],
               ["file", "record", "line", "kind", "handling", "why it is bad"]) + "\n")

    att = s["attack"]
    add("## The attack\n")
    add(f"Signing key: the consumer key `{att['signing_key']}`. Client app id: `{att['client_app_id']}` (never used "
        f"before in the tenant). ClientInfoString: `{att['client_info_string']}`.\n")
    add(_table([[f["iat"][:16].replace("T", " "), f["victim"], f["client_ip"], f["lifetime_minutes"],
                 f["gateway_requests"], len(f["mail_items_accessed_ids"]), f"`{f['token_fingerprint'][:16]}...`"]
                for f in att["forged_tokens"]],
               ["issued (UTC)", "victim", "source IP", "lifetime (min)", "gateway requests", "MailItemsAccessed",
                "token sha256"]) + "\n")
    add("The IPs are Storm-0558 SoftEther proxies from Microsoft's 2023-07-14 blog. Microsoft's first/last-seen "
        "windows for them are in 2023 (" + "; ".join(f"{ip} {win}" for ip, win in att["attacker_ips"].items()) +
        "), and this scenario is in 2026: an indicator match that honours those windows will not fire; a window-less "
        f"sweep will, and so will `{s['indicators_file']}`, which windows them to the attack week.\n")

    add("## Running it\n")
    add("The demo run, as tests/test_e2e_sample.py does it: `tokenhunt nightly sample_logs --keys sample_logs/jwks "
        "--indicators sample_logs/indicators --exclude expected.json --profile minimal --as-of 2026-11-20` (the "
        "JWKS and indicator folders are imported, not ingested). The `minimal` retention profile (30 days, gaps up "
        "to 3 days) is the one under which exactly one source, the mail audit, is too short; the default M-21-31 "
        "profile (913 days) finds every source too short.\n")
    add("## Expected findings\n")
    add("`detection` is the query id in queries/detections today; counts are in the unit given (a detection may "
        "group them, e.g. one finding per token or per session).\n")
    add(_table([[f"**{f['id']}**", f"`{f['detection']}`", f["count"], f["unit"], f["what"]] for f in s["expected_findings"]],
               ["finding", "detection", "count", "unit", "what"]))
    add("\n## Must not fire\n")
    for item in s["not_findings"]:
        add(f"- {item}")
    add("\n## Counts\n")
    c = s["counts"]

    def kv(d: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items())

    add(f"- sign-ins: {kv(c['sign_ins'])}")
    add(f"- tokens minted: {kv(c['tokens'])}")
    add(f"- gateway requests by token kind: {kv(c['gateway_requests'])}")
    add(f"- mailbox audit records: {kv(c['mail'])}")
    add(f"- benign inbox rules: {', '.join(r['user'] + ' ' + repr(r['rule']) for r in s['benign_inbox_rules'])}")
    add("\n## Growing it\n")
    add("`generate(out_dir, seed=..., scale=...)` multiplies the number of members, guests and consumers by `scale` "
        "and, above 1, the requests each benign token serves (at most x10, as busy clients do); their habits, the "
        "six-week window, the attack and the planted records stay the same, so findings stay comparable at any size. "
        "Records are produced a simulated day at a time and flushed in time order, so "
        "memory holds about one day of records. New behaviour belongs in `pipeline/samplegen/scenario.py` (what "
        "happens) and `records.py` (how each export spells it).\n")
    return "\n".join(out) + "\n"
