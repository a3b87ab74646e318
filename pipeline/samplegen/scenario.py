"""The scenario: six weeks of benign Contoso activity, a Storm-0558-style intrusion, planted bad records.

Day by day, each user may sign in (interactively -> Graph JSON; by refresh -> Log Analytics CSV); a
successful sign-in issues a token that the gateway sees for many requests and that authorizes the
user's mailbox events (Purview CSV, and OfficeActivity for VIP mailboxes). In the last week the
attacker replays tokens signed with the consumer key but claiming Contoso's tenant. A per-day RNG
makes each day independent of the others, and every writer holds at most about a day of records.
"""

from __future__ import annotations

import base64
import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pipeline.normalize import unique_token_id_from_request_id
from pipeline.samplegen import records as r
from pipeline.samplegen import world as w
from pipeline.samplegen.keys import SigningKey, b64url, mint_rs256, token_fingerprint
from pipeline.samplegen.writers import Planted, StreamWriter, ms_json_line, ps_json, ual_json

ISS_CONTOSO = f"https://login.microsoftonline.com/{w.CONTOSO_TID}/v2.0"
ISS_CONSUMER = f"https://login.microsoftonline.com/{w.CONSUMER_TID}/v2.0"
SCOPES = {
    w.EXO: "EWS.AccessAsUser.All Mail.ReadWrite Mail.Send Calendars.ReadWrite Contacts.ReadWrite",
    w.GRAPH: "Calendars.ReadWrite Chat.ReadWrite Files.ReadWrite.All Mail.ReadWrite User.Read",
}

# Per-user rates: scale multiplies the number of users, not their habits.
P_ACTIVE = (0.18, 0.0)  # weekday, weekend (weekends: only the on-call member)
P_SECOND_SESSION = 0.15
P_INTERACTIVE = 0.06  # most sessions refresh a token silently; the on-call member signs in every other day
P_FAIL = (0.04, 0.03)  # interactive, non-interactive
P_SEND = 0.15
P_SECOND_READ = 0.2  # a second MailItemsAccessed within the same token
P_EVENTHUB_COPY = 0.15  # share of successful member interactive sign-ins also streamed by diagnostic settings
P_GUEST_DAY = 0.08
P_CONSUMER_DAY = 0.07
GATEWAY_REQUESTS = (3, 6)  # per benign user token
SERVICE_REQUESTS = (2, 4)  # per app-only token

FILES = {  # key -> (relative path, format, description)
    "graph_user": ("signins/graph_beta/interactiveUser-SignInLogs.json", "ps_json_array",
                   "Graph /beta signIns (interactive, members and B2B guests), Microsoft-Extractor-Suite layout"),
    "graph_sp": ("signins/graph_beta/servicePrincipal-SignInLogs.json", "ps_json_array",
                 "Graph /beta signIns (service principals), Microsoft-Extractor-Suite layout"),
    "la_ni": ("signins/log_analytics/AADNonInteractiveUserSignInLogs.csv", "csv",
              "Log Analytics portal 'Export to CSV' of AADNonInteractiveUserSignInLogs"),
    "eventhub": ("signins/eventhub/SignInLogs-diagnostic.ndjson", "ndjson",
                 "Diagnostic-settings (Event Hub) SignInLogs records, one per line; re-exports some Graph sign-ins"),
    "purview": ("mail/purview/purview_audit_export.csv", "csv",
                "Purview portal audit search export (UAL AuditData as a JSON cell)"),
    "office_activity": ("mail/sentinel/OfficeActivity_VIP.ndjson", "ndjson",
                        "Sentinel OfficeActivity (Log Analytics JSON export), MailItemsAccessed of VIP mailboxes"),
    "gateway": ("gateway/gateway-access.jsonl", "ndjson",
                "Reverse-proxy access log in front of Exchange/Graph: JSON lines with the bearer token"),
}

SUBJECTS = ["Weekly sync notes", "RE: Q4 forecast", "Lunch on Thursday?", "Updated travel policy", "FW: Contract draft",
            "Customer escalation - Northwind", "Offsite agenda", "RE: Budget review", "Invoice 4471", "Team photos"]
ATTACK_SUBJECTS = ["Board deck - Q4 draft (confidential)", "RE: Fabrikam acquisition terms", "Litigation hold - privileged",
                   "FW: Treasury wire approvals", "Outside counsel memo", "M&A pipeline - restricted",
                   "RE: Regulator inquiry response", "Executive compensation 2027"]


@dataclass(frozen=True)
class AttackStep:
    start: datetime
    victim: int  # index into the member list (world.VICTIM_INDEXES)
    ip: str
    lifetime_min: int
    active_min: int
    requests: int
    mail_events: int


def _utc(y: int, mo: int, d: int, h: int, mi: int, s: int) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=timezone.utc)


# Monday-Thursday of the last week, 00:00-09:00 UTC (Storm-0558's working hours)
ATTACK_PLAN = (
    AttackStep(_utc(2026, 11, 16, 2, 7, 13), 0, "185.38.142.229", 75, 55, 14, 3),
    AttackStep(_utc(2026, 11, 17, 3, 41, 52), 1, "51.89.156.153", 80, 60, 12, 3),
    AttackStep(_utc(2026, 11, 18, 1, 12, 5), 0, "185.38.142.229", 480, 360, 18, 4),  # lifetime > 2 h
    AttackStep(_utc(2026, 11, 19, 5, 27, 40), 1, "146.70.157.45", 70, 50, 10, 3),
)
ATTACK_PATHS = [
    ("POST", "/owa/service.svc?action=FindFolder&app=Mail"),
    ("POST", "/owa/service.svc?action=FindConversation&ViewFilter=All&app=Mail"),
    ("POST", "/owa/service.svc?action=GetConversationItems&app=Mail"),
    ("GET", "/owa/service.svc/s/GetFileAttachment?id={msg}&X-OWA-CANARY={canary}"),
    ("GET", "/api/v2.0/me/MailFolders('Inbox')/messages?$top=100"),
]
# Benign inbox rules (New-InboxRule from an OWA session): (local day, member index, name, parameters)
PLANTED_RULES = (
    (_utc(2026, 11, 4, 17, 20, 0), 2, "Newsletters",
     [{"Name": "From", "Value": "news@contoso-weekly.example"}, {"Name": "MoveToFolder", "Value": "Newsletters"},
      {"Name": "Name", "Value": "Newsletters"}, {"Name": "StopProcessingRules", "Value": "False"}]),
    (_utc(2026, 11, 12, 10, 5, 0), 3, "Expenses",
     [{"Name": "SubjectContainsWords", "Value": "expense report"}, {"Name": "MoveToFolder", "Value": "Finance"},
      {"Name": "Name", "Value": "Expenses"}, {"Name": "StopProcessingRules", "Value": "False"}]),
)

PASSWORD_TYPO = (_utc(2026, 11, 9, 16, 58, 3), 4)  # (time, member index): a benign 50126 then a success


def _epoch(dt: datetime) -> int:
    return int(dt.timestamp())


def _graph_text(record: dict[str, Any]) -> str:
    """One element of the Extractor-Suite array: indented four spaces inside ``[``."""
    return "    " + ps_json(record, 4)


def _rand_b64(rng: random.Random, nbytes: int) -> str:
    return base64.b64encode(rng.getrandbits(nbytes * 8).to_bytes(nbytes, "big")).decode("ascii")


class Simulation:
    """Produces every record of the scenario into the stream writers, day by day."""

    def __init__(self, seed: int, scale: float, keys: dict[str, SigningKey], out: Path) -> None:
        self.seed = seed
        self.scale = scale
        self.keys = keys
        self.headers = {label: k.header_b64() for label, k in keys.items()}
        self.members, self.guests, self.consumers = w.build_users(seed, scale)
        # Beyond scale 1 each benign token also serves more requests (up to 10x): real clients poll, and
        # gateway lines, the cheapest records, then dominate large runs as they do in real logs.
        self.request_factor = min(max(scale, 1.0), 10.0)
        self.out = out
        self.writers: dict[str, StreamWriter] = {}
        for key, (rel, fmt, desc) in FILES.items():
            header = ""
            if key == "la_ni":
                header = r.csv_row(r.LA_HEADER)
            elif key == "purview":
                header = r.PURVIEW_HEADER
            self.writers[key] = StreamWriter(out / rel, rel, fmt, desc, header=header).open()
        self.tokens = {"member": 0, "guest": 0, "service": 0, "consumer": 0, "forged": 0}
        self.gateway_by_kind = {"member": 0, "guest": 0, "service": 0, "consumer": 0, "forged": 0}
        self.sign_ins = {"interactive_success": 0, "interactive_failure": 0, "noninteractive_success": 0,
                         "noninteractive_failure": 0, "service_principal": 0, "guest": 0, "eventhub_copies": 0}
        self.mail = {"MailItemsAccessed": 0, "Send": 0, "New-InboxRule": 0, "UserLoggedIn": 0, "office_activity": 0}
        self.forged: list[dict[str, Any]] = []
        self.attack_mail_ids: list[str] = []

    # ------------------------------------------------------------------ plumbing
    def emit(self, key: str, when: datetime, text: str, planted: Planted | None = None) -> bool:
        if when >= w.END or when < w.START:
            return False
        self.writers[key].add(when, text, planted)
        return True

    def _enterprise_key(self, when: datetime) -> SigningKey:
        return self.keys["enterprise-b" if when >= w.KEY_B_ACTIVE else "enterprise-a"]

    def _mint(self, key: SigningKey, claims: dict[str, Any]) -> str:
        return mint_rs256(key, claims, self.headers[key.label])

    @staticmethod
    def _sub(oid: str, app_id: str) -> str:
        return b64url(hashlib.sha256(f"{oid}:{app_id}".encode()).digest())

    def _user_claims(self, u: w.User, s: r.SignIn, exp: datetime) -> dict[str, Any]:
        guest = u.kind == "guest"
        claims: dict[str, Any] = {
            "aud": w.RESOURCES[s.resource]["aud"], "iss": ISS_CONTOSO, "iat": _epoch(s.time), "nbf": _epoch(s.time),
            "exp": _epoch(exp), "acct": 1 if guest else 0, "acr": "1", "amr": ["pwd", "mfa"] if s.mfa else ["pwd"],
            "app_displayname": s.app_name, "azp": s.app_id, "azpacr": "0",
        }
        if guest:
            claims["idp"] = f"https://sts.windows.net/{w.FABRIKAM_TID}/"
        claims.update({
            "idtyp": "user", "ipaddr": s.ip, "name": u.display, "oid": u.oid, "preferred_username": u.upn,
            "scp": SCOPES[s.resource], "sid": s.session_id, "sub": self._sub(u.oid, s.app_id), "tid": w.CONTOSO_TID,
            "uti": s.uti, "ver": "2.0",
        })
        return claims

    def _requests(self, rng: random.Random, bounds: tuple[int, int]) -> int:
        return round(rng.randint(*bounds) * self.request_factor)

    def _gateway_burst(self, rng: random.Random, kind: str, token: str, start: datetime, span_s: float, n: int,
                       ip: str, host: str, paths: tuple[tuple[str, str], ...] | list[tuple[str, str]], ua: str,
                       fill: dict[str, str], first: tuple[str, str] | None = None) -> int:
        """``n`` gateway requests carrying ``token`` spread over ``span_s`` seconds; returns how many were written."""
        span = max(span_s, 10.0) - 3.0
        offsets = sorted(3.0 + span * rng.random() for _ in range(n))
        written = 0
        rand = rng.random
        n_paths = len(paths)
        for i, off in enumerate(offsets):
            method, path = first if (first and i == 0) else paths[int(rand() * n_paths)]
            if "{" in path:
                path = path.format(msg="AAMkAD" + _rand_b64(rng, 18).replace("/", "-").replace("+", "_"), **fill)
            roll = rand()
            status = 429 if roll < 0.01 else (404 if roll < 0.03 and method == "GET" else 200)
            when = start + timedelta(seconds=off)
            line = r.gateway_line(when, ip, host, method, path, ua, status, w.new_guid(rng), 18 + int(rand() * 880),
                                  300 + int(rand() * 90000) if status == 200 else 0, token)
            if self.emit("gateway", when, line):
                written += 1
        self.gateway_by_kind[kind] += written
        return written

    # ------------------------------------------------------------------ benign activity
    def _user_agent(self, u: w.User, app: w.App) -> str:
        if app is w.OWA:
            return w.DEVICES[u.os][2]
        return w.APP_USER_AGENTS[app.app_id][u.os]

    def _new_signin(self, rng: random.Random, u: w.User, when: datetime, app: w.App, kind: str) -> r.SignIn:
        rid = w.new_guid(rng)
        phone = app is w.OUTLOOK_MOBILE
        ip = u.ip_for(when, phone)
        return r.SignIn(
            id=rid, time=when, kind=kind, app_id=app.app_id, app_name=app.name, resource=app.resource, ip=ip,
            correlation_id=w.new_guid(rng), session_id=u.session_for(when, rng, phone), uti=unique_token_id_from_request_id(rid),
            user=u, user_agent=self._user_agent(u, app), client_app_used=app.client_app_used,
            incoming_token_type="primaryRefreshToken" if (kind == "nonInteractiveUser" and u.os == "Windows") else "none",
            mfa=kind == "interactiveUser" and rng.random() < 0.4, processing_ms=rng.randint(40, 400), location=u.office,
        )

    def user_session(self, rng: random.Random, u: w.User, when: datetime, app: w.App, interactive: bool,
                     rule: tuple[str, list[dict[str, str]]] | None = None, fail: bool | None = None) -> None:
        """One sign-in and what its token does; ``fail`` forces (True) or forbids (False) a failure."""
        kind = "interactiveUser" if interactive else "nonInteractiveUser"
        s = self._new_signin(rng, u, when, app, kind)
        roll = rng.random() < P_FAIL[0 if interactive else 1]
        failed = fail if fail is not None else (rule is None and roll)
        if failed:
            if interactive:
                s.error_code, s.failure_reason = 50126, "Error validating credentials due to invalid username or password."
            else:
                s.error_code, s.failure_reason = 700082, "The refresh token has expired due to inactivity."
            s.additional_details = None
        if interactive:
            self.emit("graph_user", when, _graph_text(r.graph_signin(s)))
            key = "guest" if u.kind == "guest" else ("interactive_failure" if failed else "interactive_success")
            self.sign_ins[key] += 1
            if not failed and u.kind == "member" and (rng.random() < P_EVENTHUB_COPY or not self.sign_ins["eventhub_copies"]):
                if self.emit("eventhub", when, ms_json_line(r.eventhub_signin(s))):
                    self.sign_ins["eventhub_copies"] += 1
        else:
            generated = when + timedelta(seconds=rng.randint(20, 240), milliseconds=rng.randint(0, 999))
            cells = r.la_nonint_cells(s, generated, pretty_location=rng.random() < 0.3)
            self.emit("la_ni", when, r.csv_row(cells))
            self.sign_ins["noninteractive_failure" if failed else "noninteractive_success"] += 1
        if failed:
            return
        lifetime = timedelta(minutes=rng.randint(60, 90))
        exp = when + lifetime
        if interactive:
            token = self._mint(self._enterprise_key(when), self._user_claims(u, s, exp))
            kind_key = "guest" if u.kind == "guest" else "member"
            self.tokens[kind_key] += 1
            res = w.RESOURCES[app.resource]
            self._gateway_burst(rng, kind_key, token, when + timedelta(seconds=2), lifetime.total_seconds() - 120,
                                self._requests(rng, GATEWAY_REQUESTS), s.ip, res["host"], app.paths, s.user_agent,
                                {"mbx": u.mailbox_guid, "upn": u.upn, "oid": u.oid, "canary": ""})
            if u.kind == "member" and when >= w.MAIL_START:
                audit = r.user_logged_in(s)
                if self.emit("purview", when, r.purview_row(s.id, when, 15, "UserLoggedIn", u.upn, ual_json(audit))):
                    self.mail["UserLoggedIn"] += 1
        if u.kind == "member" and app.mail and when >= w.MAIL_START:
            self._mail_for_session(rng, u, s, app, exp, rule)

    def _mail_event(self, rng: random.Random, u: w.User, s: r.SignIn, app: w.App, when: datetime, operation: str,
                    exchange_session: str, originating: str) -> r.MailEvent:
        port = f":{rng.randint(1024, 65535)}" if (":" not in s.ip and rng.random() < 0.4) else ""
        return r.MailEvent(
            id=w.new_guid(rng), time=when, operation=operation, user=u, client_ip=s.ip, client_ip_with_port=s.ip + port,
            app_id=app.app_id, client_info=app.client_info, exchange_session=exchange_session, originating=originating,
            client_request_id=w.new_guid(rng), token_uti=s.uti, token_session=s.session_id, token_issued=s.time,
            api_id=app.resource,
        )

    def _folder_items(self, rng: random.Random, n: int, subjects: list[str]) -> list[dict[str, Any]]:
        items = []
        for _ in range(n):
            item_id = "LgAAAAAdhAMRqmYRzZvIAKoAL8RaDQA" + _rand_b64(rng, 12)
            items.append({"Id": item_id, "ImmutableId": item_id,
                          "InternetMessageId": f"<{_rand_b64(rng, 9).replace('/', 'x')}@CH3PR10MB7864.namprd10.prod.outlook.com>",
                          "SizeInBytes": rng.randint(4000, 180000), "Subject": subjects[rng.randrange(len(subjects))]})
        return items

    def _emit_mail(self, e: r.MailEvent, ingest_delay_s: int, planted_purview: Planted | None = None,
                   audit_text: str | None = None) -> None:
        written = self.emit("purview", e.time, r.purview_mail_row(e, audit_text=audit_text), planted_purview)
        if planted_purview is not None or not written:
            return
        self.mail[e.operation] += 1
        if e.operation == "MailItemsAccessed" and e.user.vip:
            line = r.office_activity_line(e, e.time + timedelta(seconds=ingest_delay_s))
            if self.emit("office_activity", e.time, line):
                self.mail["office_activity"] += 1

    def _mail_for_session(self, rng: random.Random, u: w.User, s: r.SignIn, app: w.App, exp: datetime,
                          rule: tuple[str, list[dict[str, str]]] | None) -> None:
        span = (exp - s.time).total_seconds() - 90
        exchange_session = w.new_guid(rng)
        originating = r.ORIGINATING[rng.randrange(len(r.ORIGINATING))]
        for _ in range(1 + (rng.random() < P_SECOND_READ)):
            when = s.time + timedelta(seconds=rng.uniform(20, span))
            e = self._mail_event(rng, u, s, app, when, "MailItemsAccessed", exchange_session, originating)
            bind = app.mail == "bind" or rng.random() < 0.25
            if bind:
                e.access_type = "Bind"
                items = self._folder_items(rng, rng.randint(1, 3), SUBJECTS)
                e.folders = [{"FolderItems": items, "Id": "LgAAAAAdhAMRqmYRzZvIAKoAL8RaAQ" + _rand_b64(rng, 6),
                              "Path": "\\Inbox"}]
                e.operation_count = len(items)
            else:
                e.access_type = "Sync"
                paths = ["\\Inbox"] + (["\\Sent Items"] if rng.random() < 0.5 else [])
                e.folders = [{"Id": "LgAAAAAdhAMRqmYRzZvIAKoAL8RaAQ" + _rand_b64(rng, 6), "Path": p} for p in paths]
                e.operation_count = len(paths)
            self._emit_mail(e, rng.randint(60, 900))
        if rng.random() < P_SEND:
            when = s.time + timedelta(seconds=rng.uniform(60, span))
            e = self._mail_event(rng, u, s, app, when, "Send", exchange_session, originating)
            e.item = {"Id": "LgAAAAAdhAMRqmYRzZvIAKoAL8RaDQA" + _rand_b64(rng, 12),
                      "InternetMessageId": f"<{_rand_b64(rng, 9).replace('/', 'x')}@DM6PR11MB4107.namprd11.prod.outlook.com>",
                      "ParentFolder": {"Id": "LgAAAAAdhAMRqmYRzZvIAKoAL8RaAQ" + _rand_b64(rng, 6), "Path": "\\Sent Items"},
                      "SizeInBytes": rng.randint(3000, 60000), "Subject": SUBJECTS[rng.randrange(len(SUBJECTS))]}
            self._emit_mail(e, rng.randint(60, 900))
        if rule is not None:
            name, params = rule
            when = s.time + timedelta(seconds=rng.uniform(120, span))
            e = self._mail_event(rng, u, s, app, when, "New-InboxRule", exchange_session, originating)
            e.rule, e.rule_name = params, name
            self._emit_mail(e, 300)

    def member_day(self, rng: random.Random, u: w.User, day: datetime) -> None:
        weekday = day.weekday()
        if rng.random() >= P_ACTIVE[0 if weekday < 5 else 1]:
            return
        offset = u.office.utc_offset_hours(day.date())
        for _ in range(1 + (rng.random() < P_SECOND_SESSION)):
            local_hour = rng.uniform(8.0, 18.0)
            when = day + timedelta(hours=local_hour - offset, seconds=rng.randint(0, 59))
            weights = (0.4, 0.22, 0.15, 0.11, 0.12)
            app = rng.choices(u.apps, weights)[0]
            self.user_session(rng, u, when.replace(microsecond=0), app, rng.random() < P_INTERACTIVE)

    def on_call(self, day: datetime) -> None:
        """One member a day (in rotation, weekends too) is on call: a phone refresh daily, an OWA sign-in every other day.

        Real tenants never go a day without sign-ins and mailbox reads; this keeps non-interactive
        sign-ins and MailItemsAccessed present daily, and interactive sign-ins every other day,
        whatever the random draws.
        """
        rng = random.Random(f"tokenhunt-samplegen:{self.seed}:oncall:{day.date()}")
        index = (day - w.START).days
        u = self.members[index * 7 % len(self.members)]
        offset = u.office.utc_offset_hours(day.date())
        when = day + timedelta(hours=rng.uniform(8.5, 11.0) - offset, seconds=rng.randint(0, 59))
        if index % 2 == 0:
            self.user_session(rng, u, when.replace(microsecond=0), w.OWA, True, fail=False)
        later = when + timedelta(hours=rng.uniform(2.0, 6.0))
        self.user_session(rng, u, later.replace(microsecond=0), w.OUTLOOK_MOBILE, False, fail=False)

    def guest_day(self, rng: random.Random, g: w.User, day: datetime) -> None:
        if day.weekday() >= 5 or rng.random() >= P_GUEST_DAY:
            return
        when = day + timedelta(hours=rng.uniform(13.0, 21.0))
        self.user_session(rng, g, when.replace(microsecond=0), w.TEAMS, True)

    def consumer_day(self, rng: random.Random, c: w.User, day: datetime) -> None:
        """Personal accounts on Outlook.com: consumer key, consumer tenant, consumer audience. Benign."""
        if rng.random() >= P_CONSUMER_DAY:
            return
        when = (day + timedelta(hours=rng.uniform(6.0, 23.0))).replace(microsecond=0)
        lifetime = timedelta(minutes=rng.randint(60, 90))
        claims = {
            "aud": "https://outlook.live.com", "iss": ISS_CONSUMER, "iat": _epoch(when), "nbf": _epoch(when),
            "exp": _epoch(when + lifetime), "azp": w.OWA.app_id, "azpacr": "0", "idtyp": "user", "name": c.display,
            "oid": c.oid, "preferred_username": c.upn, "scp": "Mail.ReadWrite Mail.Send Calendars.ReadWrite",
            "sub": self._sub(c.oid, w.OWA.app_id), "tid": w.CONSUMER_TID,
            "uti": b64url(rng.getrandbits(128).to_bytes(16, "little")), "ver": "2.0",
        }
        token = self._mint(self.keys["consumer"], claims)
        self.tokens["consumer"] += 1
        self._gateway_burst(rng, "consumer", token, when + timedelta(seconds=2), lifetime.total_seconds() - 120,
                            self._requests(rng, GATEWAY_REQUESTS), c.home_ip, "outlook.live.com", w.OWA.paths,
                            w.DEVICES["Windows"][2],
                            {"mbx": "", "upn": c.upn, "oid": c.oid, "canary": ""})

    def service_run(self, rng: random.Random, sp: w.ServiceApp, day: datetime) -> None:
        when = (day + timedelta(hours=sp.hour, minutes=rng.randint(0, 30), seconds=rng.randint(0, 59)))
        rid = w.new_guid(rng)
        s = r.SignIn(id=rid, time=when, kind="servicePrincipal", app_id=sp.app_id, app_name=sp.name, resource=w.GRAPH,
                     ip="192.0.2.50", correlation_id=w.new_guid(rng), session_id=w.new_guid(rng),
                     uti=unique_token_id_from_request_id(rid), service=sp, location=w.REDMOND)
        if not self.emit("graph_sp", when, _graph_text(r.graph_signin(s))):
            return
        self.sign_ins["service_principal"] += 1
        exp = when + timedelta(minutes=60)
        claims = {
            "aud": "https://graph.microsoft.com", "iss": ISS_CONTOSO, "iat": _epoch(when), "nbf": _epoch(when),
            "exp": _epoch(exp), "app_displayname": sp.name, "azp": sp.app_id, "azpacr": "2", "idtyp": "app",
            "oid": sp.sp_id, "roles": ["Mail.Read"] if "Mail" in sp.name else ["User.Read.All", "Group.Read.All"],
            "sub": sp.sp_id, "tid": w.CONTOSO_TID, "uti": s.uti, "ver": "2.0",
        }
        token = self._mint(self._enterprise_key(when), claims)
        self.tokens["service"] += 1
        target = self.members[rng.randrange(len(self.members))]
        self._gateway_burst(rng, "service", token, when + timedelta(seconds=1), 1800, self._requests(rng, SERVICE_REQUESTS),
                            s.ip, "graph.microsoft.com", sp.paths, "Contoso-Automation/3.2 (+python-requests/2.32)",
                            {"oid": target.oid, "mbx": "", "upn": "", "canary": ""})

    # ------------------------------------------------------------------ the attack
    def attack(self, step_no: int, step: AttackStep) -> None:
        rng = random.Random(f"tokenhunt-samplegen:{self.seed}:attack:{step_no}")
        victim = self.members[w.VICTIM_INDEXES[step.victim]]
        iat = step.start
        exp = iat + timedelta(minutes=step.lifetime_min)
        uti = b64url(rng.getrandbits(128).to_bytes(16, "little"))  # looks like Entra's, issued by no one
        sid = w.new_guid(rng)
        claims = {
            "aud": "https://outlook.office365.com", "iss": ISS_CONTOSO, "iat": _epoch(iat), "nbf": _epoch(iat),
            "exp": _epoch(exp), "acct": 0, "acr": "1", "amr": ["pwd"], "azp": w.ATTACK_CLIENT_APP_ID, "azpacr": "0",
            "idtyp": "user", "ipaddr": step.ip, "name": victim.display, "oid": victim.oid,
            "preferred_username": victim.upn, "scp": SCOPES[w.EXO], "sid": sid,
            "sub": self._sub(victim.oid, w.ATTACK_CLIENT_APP_ID), "tid": w.CONTOSO_TID, "uti": uti, "ver": "2.0",
        }
        key = self.keys["consumer"]  # the stolen MSA key, trusted for enterprise tokens by a validation flaw
        token = self._mint(key, claims)
        self.tokens["forged"] += 1
        ua = w.ATTACK_USER_AGENTS[step_no % len(w.ATTACK_USER_AGENTS)]
        canary = _rand_b64(rng, 24).replace("/", "_").replace("+", "-")
        n = self._gateway_burst(rng, "forged", token, iat + timedelta(seconds=40), step.active_min * 60,
                                step.requests, step.ip, "outlook.office365.com", ATTACK_PATHS, ua,
                                {"canary": canary}, first=("POST", "/owa/service.svc?action=GetAccessTokenForResource"))
        exchange_session = w.new_guid(rng)
        originating = r.ORIGINATING[rng.randrange(len(r.ORIGINATING))]
        mail_ids = []
        for k in range(step.mail_events):
            when = iat + timedelta(seconds=60 + (step.active_min * 60 - 120) * (k + rng.random()) / step.mail_events)
            when = when.replace(microsecond=0)
            items = self._folder_items(rng, rng.randint(4, 8), ATTACK_SUBJECTS)
            path = ["\\Inbox", "\\Sent Items", "\\Inbox\\Board", "\\Archive"][k % 4]
            e = r.MailEvent(
                id=w.new_guid(rng), time=when, operation="MailItemsAccessed", user=victim, client_ip=step.ip,
                client_ip_with_port=f"{step.ip}:{rng.randint(20000, 65000)}", app_id=w.ATTACK_CLIENT_APP_ID,
                client_info=w.ATTACK_CLIENT_INFO, exchange_session=exchange_session, originating=originating,
                client_request_id=w.new_guid(rng), token_uti=uti, token_session=sid, token_issued=iat,
                access_type="Bind", operation_count=len(items),
                folders=[{"FolderItems": items, "Id": "LgAAAAAdhAMRqmYRzZvIAKoAL8RaAQ" + _rand_b64(rng, 6), "Path": path}],
            )
            self._emit_mail(e, rng.randint(60, 600))
            mail_ids.append(e.id)
        self.attack_mail_ids.extend(mail_ids)
        self.forged.append({
            "token_fingerprint": token_fingerprint(token), "kid": key.kid, "key_scope": key.scope,
            "victim": victim.upn, "victim_oid": victim.oid, "client_ip": step.ip, "tid": w.CONTOSO_TID,
            "iss": ISS_CONTOSO, "aud": claims["aud"], "azp": w.ATTACK_CLIENT_APP_ID,
            "iat": iat.isoformat().replace("+00:00", "Z"), "exp": exp.isoformat().replace("+00:00", "Z"),
            "lifetime_minutes": step.lifetime_min, "uti": uti, "sid": sid, "user_agent": ua,
            "gateway_requests": n, "mail_items_accessed_ids": mail_ids,
        })

    # ------------------------------------------------------------------ planted bad records
    def planted(self, day: datetime) -> None:
        """Deliberately broken records (documented in README.md); none is referenced by any other record."""
        rng = random.Random(f"tokenhunt-samplegen:{self.seed}:bad:{day.date()}")
        d = day.date().isoformat()
        m = self.members
        if d == "2026-10-14":
            s = self._new_signin(rng, m[min(5, len(m) - 1)], day + timedelta(hours=17, minutes=14, seconds=22), w.OWA,
                                 "interactiveUser")
            rec = r.graph_signin(s)
            rec["createdDateTime"] = "2026-11-31T09:14:22Z"
            self.emit("graph_user", s.time, _graph_text(rec),
                      Planted("impossible_date", "createdDateTime 2026-11-31T09:14:22Z is not a valid date (November has 30 days)"))
        elif d == "2026-10-21":
            s = self._new_signin(rng, m[min(6, len(m) - 1)], day + timedelta(hours=16, minutes=2, seconds=9), w.OUTLOOK,
                                 "interactiveUser")
            rec = r.graph_signin(s)
            rec["id"] = rec["originalRequestId"] = s.id[:-1]  # 35 characters: one hex digit lost
            self.emit("graph_user", s.time, _graph_text(rec),
                      Planted("non_guid_id", f"id {s.id[:-1]!r} is not a GUID (35 characters)"))
        elif d == "2026-10-17":
            s = self._new_signin(rng, m[min(7, len(m) - 1)], day + timedelta(hours=15, minutes=31, seconds=4), w.TEAMS,
                                 "nonInteractiveUser")
            cells = r.la_nonint_cells(s, s.time + timedelta(seconds=75), pretty_location=False)
            del cells[r.LA_IP_COLUMN]
            self.emit("la_ni", s.time, r.csv_row(cells),
                      Planted("missing_cell", f"row has {len(cells)} cells, the header has {len(r.LA_HEADER)} "
                                              "(the IPAddress cell is missing, later cells shift left)"))
        elif d == "2026-10-28":
            s = self._new_signin(rng, m[min(8, len(m) - 1)], day + timedelta(hours=18, minutes=44, seconds=51), w.OUTLOOK,
                                 "nonInteractiveUser")
            s.ip = "203.0.113.300"
            self.emit("la_ni", s.time, r.csv_row(r.la_nonint_cells(s, s.time + timedelta(seconds=64), pretty_location=False)),
                      Planted("invalid_ip", "IPAddress '203.0.113.300' is not an IP address"))
        elif d == "2026-11-03":
            u = m[min(9, len(m) - 1)]
            junk = "eyJhdWQiOiJodHRwczovL291dGxvb2sub2ZmaWNlMzY1LmNvbSIsImlzcyI6Imh0dHBzOi8vbG9naW4u" + "%%%"
            token = f"{self.headers['enterprise-b']}.{junk}.c2lnbmF0dXJlLXRydW5jYXRlZA"
            line = r.gateway_line(day + timedelta(hours=16, minutes=3, seconds=12, milliseconds=417), u.office.egress[0],
                                  "outlook.office365.com", "POST", "/EWS/Exchange.asmx", w.APP_USER_AGENTS[w.OUTLOOK.app_id]["Windows"],
                                  401, w.new_guid(rng), 12, 0, token)
            self.emit("gateway", day + timedelta(hours=16, minutes=3, seconds=12), line,
                      Planted("malformed_token", "bearer token payload is not base64url JSON (mangled by the proxy's log "
                                                 "writer): the request row is kept, its token row carries a parse error",
                              handling="token_parse_error"))
        elif d == "2026-11-06":
            u = m[min(10, len(m) - 1)]
            s = self._new_signin(rng, u, day + timedelta(hours=17, minutes=9, seconds=40), w.OWA, "interactiveUser")
            e = self._mail_event(rng, u, s, w.OWA, s.time + timedelta(minutes=3), "MailItemsAccessed", w.new_guid(rng),
                                 r.ORIGINATING[0])
            e.access_type = "Bind"
            e.folders = [{"FolderItems": self._folder_items(rng, 2, SUBJECTS), "Id": "LgAAAAAdhAMRqmYRzZvIAKoAL8RaAQ",
                          "Path": "\\Inbox"}]
            text = ual_json(r.ual_mail(e))
            self._emit_mail(e, 0, Planted("truncated_auditdata", "AuditData is not valid JSON (cut off after "
                                                               f"{len(text) * 3 // 5} of {len(text)} characters)"),
                            audit_text=text[: len(text) * 3 // 5])
        elif d == "2026-11-10":
            u = m[min(2, len(m) - 1)]
            s = self._new_signin(rng, u, day + timedelta(hours=9, minutes=45, seconds=12), w.OWA, "interactiveUser")
            e = self._mail_event(rng, u, s, w.OWA, s.time + timedelta(minutes=2), "MailItemsAccessed", w.new_guid(rng),
                                 r.ORIGINATING[1])
            e.access_type = "Bind"
            e.folders = [{"FolderItems": self._folder_items(rng, 1, SUBJECTS), "Id": "LgAAAAAdhAMRqmYRzZvIAKoAL8RaAQ",
                          "Path": "\\Inbox"}]
            self.emit("office_activity", e.time, r.office_activity_line(e, e.time, time_override="2026-13-10T09:47:12Z"),
                      Planted("invalid_month", "TimeGenerated 2026-13-10T09:47:12Z has month 13"))
        elif d == "2026-11-20":
            s = self._new_signin(rng, m[min(11, len(m) - 1)], day + timedelta(hours=10, minutes=2, seconds=33), w.OWA,
                                 "interactiveUser")
            text = ms_json_line(r.eventhub_signin(s))
            self.emit("eventhub", s.time, text[: len(text) // 2],
                      Planted("truncated_json", "malformed JSON: the line ends in the middle of the record"))

    # ------------------------------------------------------------------ driver
    def run_day(self, day: datetime) -> None:
        rng = random.Random(f"tokenhunt-samplegen:{self.seed}:day:{day.date()}")
        self.on_call(day)
        for u in self.members:
            self.member_day(rng, u, day)
        for g in self.guests:
            self.guest_day(rng, g, day)
        for c in self.consumers:
            self.consumer_day(rng, c, day)
        for sp in w.SERVICE_APPS:
            if day.weekday() in sp.weekdays:
                self.service_run(rng, sp, day)
        for i, (when, idx, name, params) in enumerate(PLANTED_RULES):
            if when.date() == day.date():
                prng = random.Random(f"tokenhunt-samplegen:{self.seed}:rule:{i}")
                self.user_session(prng, self.members[idx % len(self.members)], when, w.OWA, True, rule=(name, params),
                                  fail=False)
        if day.date() == PASSWORD_TYPO[0].date():  # a mistyped password, then the same user gets in
            prng = random.Random(f"tokenhunt-samplegen:{self.seed}:typo")
            user = self.members[PASSWORD_TYPO[1] % len(self.members)]
            self.user_session(prng, user, PASSWORD_TYPO[0], w.OWA, True, fail=True)
            self.user_session(prng, user, PASSWORD_TYPO[0] + timedelta(seconds=41), w.OWA, True, fail=False)
        for i, step in enumerate(ATTACK_PLAN):
            if step.start.date() == day.date():
                self.attack(i, step)
        self.planted(day)

    def run(self) -> None:
        day = w.START
        while day < w.END:
            self.run_day(day)
            day += timedelta(days=1)
            for writer in self.writers.values():
                writer.flush_until(day)
        for writer in self.writers.values():
            writer.close()
