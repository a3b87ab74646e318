"""The fictional tenant the scenario plays in: ids, offices, users, apps, attacker infrastructure.

Everything is a constant or derived from a seeded ``random.Random``, so two runs with the same seed
see the same world. IPs are from documentation ranges (RFC 5737 / RFC 3849) except the attacker's,
which are Storm-0558 indicators published by Microsoft (see ``ATTACKER_IPS``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

# --------------------------------------------------------------------------- time frame
END = datetime(2026, 11, 21, tzinfo=timezone.utc)  # exclusive: the window ends on 2026-11-20
START = END - timedelta(days=42)  # six weeks: 2026-10-10 .. 2026-11-20
MAIL_START = END - timedelta(days=21)  # the mail audit reaches back only three weeks
KEY_B_ACTIVE = datetime(2026, 11, 1, tzinfo=timezone.utc)  # enterprise key rollover A -> B

# --------------------------------------------------------------------------- tenants
CONTOSO_TID = "2b8f4c1e-7d3a-4e59-9c06-5a1f8e2d3b47"
CONTOSO_NAME = "Contoso"
CONTOSO_ORG = "contoso.onmicrosoft.com"
FABRIKAM_TID = "c4e7a912-3b5d-4f08-a6e1-9d2c7b4f0e85"
FABRIKAM_NAME = "Fabrikam"
CONSUMER_TID = "9188040d-6c67-4c5b-b112-36a304b66dad"  # Microsoft's MSA (personal account) tenant
MICROSOFT_SERVICES_TID = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"  # owner tenant of first-party apps

# --------------------------------------------------------------------------- resources
EXO = "00000002-0000-0ff1-ce00-000000000000"
GRAPH = "00000003-0000-0000-c000-000000000000"
RESOURCES = {
    EXO: {"name": "Office 365 Exchange Online", "sp": "7a1c4e93-2f6b-4d80-b5e2-c93f18a6d204",
          "aud": "https://outlook.office365.com", "host": "outlook.office365.com"},
    GRAPH: {"name": "Microsoft Graph", "sp": "3e9b2d71-8c4f-4a15-9e63-0b7d5f2a8c19",
            "aud": GRAPH, "host": "graph.microsoft.com"},
}

# --------------------------------------------------------------------------- the attack
# Storm-0558 SoftEther proxy IPs from Microsoft's 2023-07-14 blog (detections.md 1.1). Their
# documented first/last-seen windows are in 2023; this scenario is in 2026, so a window-respecting
# IP match cannot fire on them: only a window-less IOC sweep (Wiz's AppServiceHTTPLogs example)
# does. The scenario's own indicators (sample_logs/indicators/) window them to the attack week.
ATTACKER_IPS = {
    "185.38.142.229": "2023-05-15..2023-07-12",
    "51.89.156.153": "2023-03-09..2023-07-10",
    "146.70.157.45": "2023-05-12..2023-06-08",
}
# A client id never seen in the tenant before the attack (CISA AA23-193A: "unexpected ClientAppID and AppID").
ATTACK_CLIENT_APP_ID = "4d0a6e2c-5b71-4f3e-a9c8-1e7d2b6f9a35"
ATTACK_CLIENT_INFO = "Client=REST;Client=RESTSystem;;"
ATTACK_USER_AGENTS = [  # exact strings from the Microsoft blog
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/92.0.4515.159 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/106.0.0.0 Safari/537.36 Edg/106.0.1370.52",
]


# --------------------------------------------------------------------------- offices
@dataclass(frozen=True)
class Office:
    name: str
    city: str
    state: str
    country: str
    lat: float
    lon: float
    egress: tuple[str, ...]
    asn: int

    def utc_offset_hours(self, day: date) -> int:
        if self.country == "US":  # Pacific; DST ends 2026-11-01
            return -7 if day < date(2026, 11, 1) else -8
        return 1 if day < date(2026, 10, 25) else 0  # Dublin; IST ends 2026-10-25


REDMOND = Office("Redmond", "Redmond", "Washington", "US", 47.67399, -122.12151,
                 tuple(f"198.51.100.{i}" for i in range(10, 20)), 64500)
DUBLIN = Office("Dublin", "Dublin", "Dublin", "IE", 53.34981, -6.26031,
                tuple(f"203.0.113.{i}" for i in range(40, 50)), 64501)
FABRIKAM_OFFICE = Office("Fabrikam HQ", "Toronto", "Ontario", "CA", 43.65107, -79.34702,
                         tuple(f"203.0.113.{i}" for i in range(200, 206)), 64502)


# --------------------------------------------------------------------------- apps
@dataclass(frozen=True)
class App:
    app_id: str
    name: str
    resource: str  # EXO or GRAPH
    client_app_used: str
    client_info: str  # Exchange ClientInfoString when the app touches mail
    mail: str | None  # None (no mailbox access), "sync" or "bind"
    paths: tuple[tuple[str, str], ...]  # (method, path) the app calls through the gateway


OUTLOOK = App("5d661950-3475-41cd-a2c3-d671a3162bc1", "Microsoft Outlook", EXO, "Mobile Apps and Desktop clients",
              "Client=MSExchangeRPC", "sync",
              (("POST", "/mapi/emsmdb/?MailboxId={mbx}@contoso.com"), ("POST", "/mapi/nspi/?MailboxId={mbx}@contoso.com"),
               ("POST", "/EWS/Exchange.asmx"), ("GET", "/autodiscover/autodiscover.json/v1.0/{upn}?Protocol=EWS")))
OWA = App("9199bf20-a13f-4107-85dc-02114787ef48", "One Outlook Web", EXO, "Browser",
          "Client=OWA;Action=ViaProxy", "bind",
          (("POST", "/owa/service.svc?action=GetFolder&app=Mail"), ("POST", "/owa/service.svc?action=FindConversation&app=Mail"),
           ("POST", "/owa/service.svc?action=GetConversationItems&app=Mail"), ("GET", "/owa/startupdata.ashx?app=Mail")))
OUTLOOK_MOBILE = App("27922004-5251-4030-b22d-91ecd9a37ea4", "Outlook Mobile", EXO, "Mobile Apps and Desktop clients",
                     "Client=OutlookService;Outlook-iOS/2.0;", "sync",
                     (("GET", "/api/v2.0/me/MailFolders/Inbox/messages?$top=25"), ("GET", "/api/v2.0/me/events?$top=10"),
                      ("PATCH", "/api/v2.0/me/messages/{msg}")))
TEAMS = App("1fec8e78-bce4-4aaf-ab1b-5451cc387264", "Microsoft Teams", GRAPH, "Mobile Apps and Desktop clients",
            "", None,
            (("GET", "/v1.0/me/chats?$top=50"), ("GET", "/beta/me/presence"), ("GET", "/v1.0/me/joinedTeams"),
             ("GET", "/v1.0/me/events?$top=20")))
OFFICE = App("d3590ed6-52b3-4102-aeff-aad2292ab01c", "Microsoft Office", GRAPH, "Mobile Apps and Desktop clients",
             "Client=REST;;", "bind",
             (("GET", "/v1.0/me"), ("GET", "/v1.0/me/messages?$top=10&$select=subject,from"), ("GET", "/v1.0/me/drive/recent"),
              ("GET", "/v1.0/me/insights/used")))
USER_APPS = (OUTLOOK, OWA, OUTLOOK_MOBILE, TEAMS, OFFICE)


@dataclass(frozen=True)
class ServiceApp:
    app_id: str
    name: str
    sp_id: str
    credential_key_id: str
    thumbprint: str
    weekdays: tuple[int, ...]  # days of the week it runs (0 = Monday)
    hour: int
    paths: tuple[tuple[str, str], ...]


SERVICE_APPS = (
    ServiceApp("8a2e5f14-c93b-4d67-a1f0-6e4b2d9c7a38", "Contoso Mail Archiver", "e6d1b7a4-2c58-4f93-8b0e-1a7c3f5d9e62",
               "0f4c8a21-6d3e-4b97-a5c2-8e1f7b3d4a90", "9C41B7E2D05A3F68C1E4B2A7D9F03E5C6B8A1D47", (0,), 2,
               (("GET", "/v1.0/users/{oid}/messages?$top=100&$select=id,subject,receivedDateTime"),
                ("GET", "/v1.0/users/{oid}/mailFolders/inbox/messages/delta"))),
    ServiceApp("b5c9d3e7-1f42-4a86-9e0d-3c7b6a2f8e15", "Contoso HR Sync", "4a8f2c6e-9d13-4b75-8e0a-2f6c1d9b7e34",
               "7e2b9d4f-1a63-4c85-b0e7-5d3a8f2c6b19", "3F7A1C9E5B2D8064A7C3E1F9B5D2A8064C7E3B19", (4,), 3,
               (("GET", "/v1.0/users?$select=id,displayName,jobTitle&$top=999"), ("GET", "/v1.0/groups?$top=999"))),
)

# --------------------------------------------------------------------------- people
BASE_USERS = [
    "Megan Bowen", "Lidia Holloway", "Patti Fernandez", "Nestor Wilke", "Patrick O'Neil", "Alex Wilber",
    "Diego Siciliani", "Isaiah Langer", "Johanna Lorenz", "Lee Gu", "Lynne Robbins", "Miriam Graham",
    "Pradeep Gupta", "Grady Archie", "Henrietta Mueller", "Irvin Sayers", "Joni Sherman", "Christie Cline",
    "Enrico Cattaneo", "Allan Deyoung", "Debra Berger", "Emily Braun", "Adele Vance", "Brian Johnson",
    "Cameron White",
]
VICTIM_INDEXES = (0, 1)  # Megan Bowen (CFO) and Lidia Holloway (General Counsel)
VIP_COUNT = 4  # the first users are on the Sentinel VIP watchlist (OfficeActivity export)
FIRST_NAMES = ["Ava", "Noah", "Mia", "Liam", "Zoe", "Omar", "Nina", "Ravi", "Ines", "Hugo", "Yara", "Tom",
               "Leah", "Ken", "Sara", "Ivan", "Maya", "Luis", "Anya", "Ben"]
LAST_NAMES = ["Okafor", "Lindqvist", "Moreau", "Tanaka", "Novak", "Haddad", "Kowalski", "Duarte", "Brennan",
              "Schmidt", "Ferreira", "Ahmed", "Larsen", "Rossi", "Nguyen", "Walsh", "Castillo", "Berg"]
GUESTS = ["Kai Carter", "Lena Ortiz", "Sam Reyes"]
CONSUMERS = [("k.tanaka@outlook.com", "Kenji Tanaka"), ("j.moreau@hotmail.com", "Julie Moreau"),
             ("r.silva@live.com", "Rafael Silva")]

DEVICES = {  # os -> (operatingSystem, browser, user agent for browser apps)
    "Windows": ("Windows10", "Edge 142.0.0", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                                             "Chrome/142.0.0.0 Safari/537.36 Edg/142.0.0.0"),
    "MacOs": ("MacOs", "Safari 19.1", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                                      "Version/19.1 Safari/605.1.15"),
}
APP_USER_AGENTS = {
    OUTLOOK.app_id: {"Windows": "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.19328; Pro)",
                     "MacOs": "Outlook-Mac/16.103.25111015"},
    OUTLOOK_MOBILE.app_id: {"Windows": "Outlook-iOS/2.0", "MacOs": "Outlook-iOS/2.0"},
    TEAMS.app_id: {"Windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 "
                              "Safari/537.36 Teams/25290.205.4069.4894/49",
                   "MacOs": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                            "Teams/25290.205.4069.4894/49"},
    OFFICE.app_id: {"Windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 "
                               "Safari/537.36 Edg/142.0.0.0 OfficeHub/1.0",
                    "MacOs": "Microsoft Office/16.0 (Macintosh; Mac OS X 15.6; Microsoft Word 16.103)"},
}


_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_V4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_guid(rng: random.Random) -> str:
    """A random version-4 GUID from ``rng`` (same text as ``str(uuid.UUID(int=..., version=4))``)."""
    h = f"{(rng.getrandbits(128) & _V4_CLEAR) | _V4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class User:
    index: int
    display: str
    upn: str
    oid: str
    kind: str  # member, guest, consumer
    office: Office
    os: str
    device_id: str
    puid: str  # Exchange UserKey (PUID hex)
    mailbox_guid: str
    sid: str  # on-premises-style SID Exchange logs as MailboxOwnerSid
    home_ip: str
    mobile_ip: str
    apps: tuple[App, ...]
    vip: bool = False
    victim: bool = False
    session_ids: dict[tuple[int, bool], str] = field(default_factory=dict)  # (ISO week, phone?) -> session id

    def session_for(self, when: datetime, rng: random.Random, phone: bool = False) -> str:
        """The device's Entra session id: one per device (computer, phone), renewed every week."""
        key = (when.isocalendar()[1], phone)
        sid = self.session_ids.get(key)
        if sid is None:
            sid = self.session_ids[key] = new_guid(rng)
        return sid

    def ip_for(self, when: datetime, phone: bool = False) -> str:
        """Phone: its mobile address. Computer: the office's NAT address (sticky per user), or home one weekday in five."""
        if phone and self.mobile_ip:
            return self.mobile_ip
        local = when + timedelta(hours=self.office.utc_offset_hours(when.date()))
        if self.kind == "member" and (self.index + local.weekday()) % 5 == 0:
            return self.home_ip
        return self.office.egress[self.index % len(self.office.egress)]


def _slug(name: str) -> str:
    return name.lower().replace("'", "").replace(" ", ".")


def build_users(seed: int, scale: float) -> tuple[list[User], list[User], list[User]]:
    """Members, B2B guests and consumer (MSA) users; the member count grows with ``scale``."""
    rng = random.Random(f"tokenhunt-samplegen:{seed}:users")
    n_members = max(5, round(len(BASE_USERS) * scale))
    names: list[tuple[str, str]] = []
    for i in range(n_members):
        if i < len(BASE_USERS):
            names.append((BASE_USERS[i], f"{_slug(BASE_USERS[i])}@contoso.com"))
        else:
            first, last = FIRST_NAMES[i % len(FIRST_NAMES)], LAST_NAMES[(i // len(FIRST_NAMES)) % len(LAST_NAMES)]
            names.append((f"{first} {last}", f"{first.lower()}.{last.lower()}{i}@contoso.com"))
    sid_base = "S-1-5-21-3021558470-2714495863-1480271917"
    members: list[User] = []
    for i, (display, upn) in enumerate(names):
        office = REDMOND if rng.random() < 0.6 else DUBLIN
        os_name = "Windows" if rng.random() < 0.75 else "MacOs"
        apps = [OUTLOOK if os_name == "Windows" else OWA, TEAMS, OUTLOOK_MOBILE, OWA, OFFICE]
        members.append(User(
            index=i, display=display, upn=upn, oid=new_guid(rng), kind="member", office=office, os=os_name,
            device_id=new_guid(rng), puid=f"10032{rng.getrandbits(44):011X}", mailbox_guid=new_guid(rng),
            sid=f"{sid_base}-{1105 + i}", home_ip=f"192.0.2.{10 + i % 200}",
            mobile_ip=f"2001:db8:4f00:{i:x}::{rng.randrange(1, 0xffff):x}", apps=tuple(apps),
            vip=i < VIP_COUNT, victim=i in VICTIM_INDEXES,
        ))
    n_guests = max(1, round(len(GUESTS) * scale))
    guests: list[User] = []
    for g in range(n_guests):
        display = GUESTS[g % len(GUESTS)] + ("" if g < len(GUESTS) else f" {g}")
        guests.append(User(
            index=1000 + g, display=display, upn=f"{_slug(display)}@fabrikam.com", oid=new_guid(rng),
            kind="guest", office=FABRIKAM_OFFICE, os="Windows", device_id="", puid="", mailbox_guid="", sid="",
            home_ip=FABRIKAM_OFFICE.egress[g % len(FABRIKAM_OFFICE.egress)], mobile_ip="", apps=(TEAMS,),
        ))
    n_consumers = max(1, round(len(CONSUMERS) * scale))
    consumers: list[User] = []
    for c in range(n_consumers):
        upn, display = CONSUMERS[c % len(CONSUMERS)]
        if c >= len(CONSUMERS):
            upn = upn.replace("@", f"{c}@")
        # MSA object ids in the consumer tenant start with 16 zero hex digits
        oid = f"00000000-0000-0000-{rng.getrandbits(16):04x}-{rng.getrandbits(48):012x}"
        consumers.append(User(
            index=2000 + c, display=display, upn=upn, oid=oid, kind="consumer", office=REDMOND, os="Windows",
            device_id="", puid="", mailbox_guid="", sid="", home_ip=f"192.0.2.{220 + c % 30}", mobile_ip="", apps=(),
        ))
    return members, guests, consumers
