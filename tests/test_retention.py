"""Retention-gap report: lakes with known spans and gaps -> exact reach, gaps, verdicts and windows."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.lake import Lake
from pipeline.retention import (
    EXIT_OK,
    EXIT_VIOLATIONS,
    EXIT_WARNINGS,
    DetectionMeta,
    Gap,
    RetentionInputError,
    detection_coverage,
    find_gaps,
    parse_window,
    read_detection_headers,
    retention_report,
    window_coverage,
)
from pipeline.retention.policy import PolicyError, load_policy, profiles

TENANT_A = "11111111-1111-1111-1111-111111111111"
TENANT_B = "22222222-2222-2222-2222-222222222222"
TENANT_C = "33333333-3333-3333-3333-333333333333"
STORM_KID = "1LTMzakihiRla_8z2BEJVXeWMqo"
AS_OF = date(2026, 6, 1)


# --------------------------------------------------------------------------- lake builders
def _ts(d: date, hour: int = 12) -> datetime:
    return datetime(d.year, d.month, d.day, hour, tzinfo=timezone.utc)


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def signin(d: date, sign_in_type: str = "interactive", tenant: str = TENANT_A) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "event_time": _ts(d),
        "event_date": d.isoformat(),
        "source_format": "test",
        "sign_in_type": sign_in_type,
        "tenant_id": tenant,
        "home_tenant_id": tenant,
        "user_principal_name": "alice@contoso.example",
    }


def mail(d: date, operation: str = "MailItemsAccessed", tenant: str = TENANT_A, mailbox: str = "alice@contoso.example", throttled: bool = False) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "event_time": _ts(d),
        "event_date": d.isoformat(),
        "source_format": "test",
        "operation": operation,
        "organization_id": tenant,
        "mailbox_owner_upn": mailbox,
        "is_throttled": throttled,
    }


def token_event(d: date) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "event_time": _ts(d),
        "event_date": d.isoformat(),
        "source_format": "test",
        "token_fingerprint": hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
    }


def write_lake(root: Path, tables: dict[str, list[dict]]) -> Lake:
    """Rows through the lake's own batch writer (one committed batch)."""
    lake = Lake(root)
    with lake.lock():
        batch = lake.begin()
        for table, rows in tables.items():
            for row in rows:
                row.setdefault("ingest_batch_id", batch.batch_id)
            batch.add(table, rows)
        batch.commit({"source": "test_retention"})
    return lake


def daily(rows_per_day: int, start: date, end: date, make, skip: set[date] = frozenset(), **kw) -> list[dict]:  # noqa: ANN001
    return [make(d, **kw) for d in _days(start, end) if d not in skip for _ in range(rows_per_day)]


def write_policy(tmp_path: Path, text: str, name: str = "policy.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def no_detections(tmp_path: Path) -> Path:
    d = tmp_path / "detections"
    d.mkdir()
    return d


SMALL_POLICY = """
name = "small"
[defaults]
required_days = 30
max_gap_days = 1
[sources.signins]
tier = "entra_p1"
required_sign_in_types = ["interactive"]
[sources.token_events]
required_days = 0
"""


# --------------------------------------------------------------------------- reach, gaps, verdicts
def test_reach_gaps_and_verdicts_are_exact(tmp_path: Path, no_detections: Path) -> None:
    gap = set(_days(date(2026, 5, 10), date(2026, 5, 12)))  # 3 days without sign-ins
    low_day = date(2026, 5, 20)
    rows = [r for r in daily(20, AS_OF - timedelta(days=100), AS_OF - timedelta(days=1), signin, skip=gap | {low_day})]
    rows.append(signin(low_day))  # 1 event where 20 is normal
    mails = daily(3, AS_OF - timedelta(days=41), AS_OF - timedelta(days=1), mail)
    lake = write_lake(tmp_path / "lake", {"signins": rows, "mail_events": mails})
    policy = write_policy(tmp_path, SMALL_POLICY.replace("required_days = 30", "required_days = 90"))

    report = retention_report(lake, policy=policy, as_of=AS_OF, detections_dir=no_detections)

    s = report.source("signins")
    assert (s.earliest, s.latest) == (AS_OF - timedelta(days=100), AS_OF - timedelta(days=1))
    assert s.reach_days == 100 and s.span_days == 100
    assert s.days_covered == 97 and s.events == 96 * 20 + 1
    assert [(g.kind, g.start, g.end, g.days) for g in s.gaps] == [
        ("missing", date(2026, 5, 10), date(2026, 5, 12), 3),
        ("low_volume", low_day, low_day, 1),
    ]
    assert s.gaps[1].events == 1 and s.gaps[1].normal == 20
    assert s.verdict == "violation"
    texts = [r.text for r in s.reasons]
    assert "no signins events on 2026-05-10..2026-05-12 (3 days); policy tolerates gaps of 1" in texts
    assert any(t.startswith("signins volume was far below its normal on 2026-05-20: 1 events (normal ~20/day)") for t in texts)
    assert not any("reaches back" in t for t in texts)  # 100 >= 90

    m = report.source("mail_events")
    assert m.reach_days == 41 and m.gaps == []
    assert m.reasons[0].level == "violation"
    assert m.reasons[0].text.startswith("mail_events reaches back 41 days (earliest event 2026-04-21); policy requires 90")
    # audit_standard keeps 180 days: what the lake lacks can still be exported
    assert "the source (audit_standard) keeps 180 days and still holds events from 2026-03-03: backfill them now" in m.reasons[0].text
    assert report.source("mail_events.MailItemsAccessed").verdict == "violation"
    assert report.source("token_events").verdict == "ok"  # required_days = 0 in this policy
    assert report.status == "violation" and report.exit_code == EXIT_VIOLATIONS == 21

    doc = report.to_dict()
    signins_doc = next(x for x in doc["sources"] if x["source"] == "signins")
    assert signins_doc["gaps"][0] == {
        "start": "2026-05-10", "end": "2026-05-12", "days": 3, "kind": "missing", "events": 0, "normal_per_day": None
    }
    assert signins_doc["policy"]["required_days"] == 90
    assert json.loads(json.dumps(doc))["exit_code"] == 21


def test_lake_meeting_the_policy_is_ok(tmp_path: Path, no_detections: Path) -> None:
    start, end = AS_OF - timedelta(days=35), AS_OF - timedelta(days=1)
    lake = write_lake(
        tmp_path / "lake",
        {
            "signins": daily(5, start, end, signin) + daily(5, start, end, signin, sign_in_type="non_interactive"),
            "mail_events": daily(4, start, end, mail),
            "token_events": daily(2, start, end, token_event),
        },
    )
    report = retention_report(lake, policy=write_policy(tmp_path, SMALL_POLICY), as_of=AS_OF, detections_dir=no_detections)
    assert [f.text for f in report.findings] == []
    assert report.status == "ok" and report.exit_code == EXIT_OK
    s = report.source("signins")
    assert s.required_window_share == 1.0
    assert s.reasons[0].text == "signins reaches back 35 days (policy 30); 100% of those days have events"
    assert report.source("signins.non_interactive").events == 175
    assert report.mail_audit.tenants_without_mail_items_accessed == []


def test_stale_export_warns_before_the_source_deletes_it(tmp_path: Path, no_detections: Path) -> None:
    # Entra Free keeps sign-ins 7 days; the lake's newest copy is 6 days old: 2 days left.
    signins = daily(5, AS_OF - timedelta(days=40), AS_OF - timedelta(days=6), signin)
    mails = daily(2, AS_OF - timedelta(days=40), AS_OF - timedelta(days=1), mail)
    tokens = daily(2, AS_OF - timedelta(days=40), AS_OF - timedelta(days=1), token_event)
    lake = write_lake(tmp_path / "lake", {"signins": signins, "mail_events": mails, "token_events": tokens})
    policy = write_policy(tmp_path, SMALL_POLICY.replace('tier = "entra_p1"', 'tier = "entra_free"'))

    report = retention_report(lake, policy=policy, as_of=AS_OF, detections_dir=no_detections)
    s = report.source("signins")
    assert s.staleness_days == 6
    assert [r.level for r in s.reasons] == ["warn", "warn"]
    assert s.reasons[0].text == "signins newest event is 6 days old (2026-05-26); the export may have stopped"
    assert s.reasons[1].text == (
        "signins newest copy in the lake is 6 days old and the source (entra_free) keeps 7 days: "
        "export within 2 days or events after 2026-05-26 are lost for good"
    )
    assert report.status == "warn" and report.exit_code == EXIT_WARNINGS == 20

    later = retention_report(lake, policy=policy, as_of=AS_OF + timedelta(days=4), detections_dir=no_detections)
    permanent = [r.text for r in later.source("signins").reasons if "permanent" in r.text]
    assert permanent == [
        "signins newest copy in the lake is 10 days old but the source (entra_free) keeps 7 days: "
        "events of 2026-05-27..2026-05-29 are gone at the source (permanent gap)"
    ]


def test_required_sign_in_types_and_operations_must_be_present(tmp_path: Path, no_detections: Path) -> None:
    start, end = AS_OF - timedelta(days=30), AS_OF - timedelta(days=1)
    lake = write_lake(
        tmp_path / "lake",
        {"signins": daily(3, start, end, signin), "mail_events": daily(3, start, end, mail, operation="Send")},
    )
    report = retention_report(lake, profile="audit-standard", as_of=AS_OF, detections_dir=no_detections)
    ni = report.source("signins.non_interactive")
    assert ni.must_exist and ni.verdict == "violation"
    assert ni.reasons[0].text.startswith("signins.non_interactive has no events; policy requires it for 180 days")
    mia = report.source("mail_events.MailItemsAccessed")
    assert mia.verdict == "violation" and "mailbox audit setting missing" in mia.reasons[0].text
    # listed but not required to be present, and empty: reported, fine
    assert report.source("signins.managed_identity").verdict == "ok"
    # discovered, not in the policy: reported, not judged
    send = report.source("mail_events.Send")
    assert send.verdict == "ok" and not send.rule.listed and send.events == 90


# --------------------------------------------------------------------------- pure functions
def test_find_gaps_uses_recent_normal_and_spares_the_last_day() -> None:
    rule = load_policy().rule("signins")
    start = date(2026, 1, 1)
    counts = {start + timedelta(days=i): 100 for i in range(20)}
    counts[start + timedelta(days=10)] = 5  # low
    counts[start + timedelta(days=19)] = 3  # the last day: usually a partial export, never called low
    del counts[start + timedelta(days=5)]
    gaps = find_gaps(counts, rule)
    assert [(g.kind, g.start) for g in gaps] == [("missing", start + timedelta(days=5)), ("low_volume", start + timedelta(days=10))]
    # below min_normal_per_day (10) the volume is not judged
    assert [g.kind for g in find_gaps({start + timedelta(days=i): (1 if i == 9 else 5) for i in range(12)}, rule)] == []


def test_window_coverage_and_answerable_from() -> None:
    rule = load_policy().rule("token_events")  # max_gap_days 1, max_staleness_days 2
    days = {d: 1 for d in _days(date(2023, 1, 1), date(2023, 3, 31)) if d not in {date(2023, 2, 10), date(2023, 2, 11)}}
    cov = window_coverage("token_events", days, date(2023, 1, 15), date(2023, 3, 31), date(2023, 6, 1), rule)
    assert cov.window_days == 76 and cov.covered_days == 74
    assert cov.answerable_from == date(2023, 2, 12)  # the 2-day hole is longer than the 1 tolerated
    assert cov.spans == [(date(2023, 1, 15), date(2023, 2, 9)), (date(2023, 2, 12), date(2023, 3, 31))]
    # the window end is not covered: nothing answerable
    late = window_coverage("token_events", days, date(2023, 3, 1), date(2023, 5, 1), date(2023, 6, 1), rule)
    assert late.answerable_from is None and late.covered_days == 31
    # open window ending at the report date: the usual export lag is tolerated
    lag = window_coverage("token_events", days, date(2023, 3, 1), date(2023, 4, 2), date(2023, 4, 2), rule)
    assert lag.answerable_from == date(2023, 3, 1)


def test_parse_window_errors() -> None:
    assert parse_window("2023-05-15..2023-06-16") == (date(2023, 5, 15), date(2023, 6, 16))
    assert parse_window("2023-05-15T10:00:00Z..2023-06-16T23:59:59+00:00") == (date(2023, 5, 15), date(2023, 6, 16))
    with pytest.raises(RetentionInputError, match="START..END"):
        parse_window("2023-05-15")
    with pytest.raises(RetentionInputError, match="ends .* before it starts"):
        parse_window("2023-06-16..2023-05-15")
    with pytest.raises(RetentionInputError, match="not a date"):
        parse_window("yesterday..today")


# --------------------------------------------------------------------------- policy
def test_profiles_load_with_their_numbers() -> None:
    assert {"default", "m-21-31", "audit-standard", "audit-premium", "minimal"} <= set(profiles())
    default = load_policy()
    assert default.rule("signins").required_days == 913 and default.rule("mail_events").required_values == ("MailItemsAccessed",)
    assert default.rule("signins").source_retention_days == 30 and default.tiers["management_api"] == 7
    assert load_policy(profile="m-21-31").rule("mail_events.MailItemsAccessed").required_days == 913
    premium = load_policy(profile="audit-premium").rule("mail_events")
    assert (premium.required_days, premium.tier, premium.source_retention_days) == (365, "audit_premium", 365)
    assert load_policy(profile="audit-standard").rule("signins.interactive").required_days == 180
    minimal = load_policy(profile="minimal")
    assert minimal.rule("signins").required_values == ("interactive",) and minimal.rule("mail_events").required_values == ()
    assert minimal.rule("token_events").judged is False
    # sub-sources inherit from their table, which inherits from [defaults]
    assert default.rule("signins.interactive").gap_check == "auto" and default.rule("signins.interactive").tier == "entra_p1"


def test_user_policy_merges_over_profile(tmp_path: Path) -> None:
    path = write_policy(tmp_path, 'extends = "audit-premium"\n[sources.mail_events]\nrequired_days = 400\n')
    pol = load_policy(path)
    assert pol.rule("mail_events").required_days == 400 and pol.rule("signins").required_days == 365
    assert pol.files[-1] == str(path) and "audit-premium" in pol.files[-2]
    with pytest.raises(PolicyError, match="extends 'audit-premium' but --profile asks for 'minimal'"):
        load_policy(path, "minimal")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sources.signins]\nrequried_days = 30\n", "sources.signins.requried_days: unknown field"),
        ('[sources.signins]\nrequired_days = "a year"\n', "sources.signins.required_days: must be a non-negative integer, got 'a year'"),
        ("[defaults]\nlow_volume_ratio = 3\n", "defaults.low_volume_ratio: must be a number between 0 and 1"),
        ('[sources.mail_events]\ntier = "gold"\n', "sources.mail_events.tier: unknown tier 'gold'"),
        ("[sources.firewall]\nrequired_days = 30\n", "sources.firewall: 'firewall' is not a log table"),
        ('[sources."signins.robots"]\nrequired_days = 30\n', "sources.signins.robots: 'robots' is not a sign_in_type"),
        ('[sources.signins]\nrequired_operations = ["Send"]\n', "sources.signins.required_operations: only [sources.mail_events] may set"),
        ('[sources.signins]\nrequired_sign_in_types = ["human"]\n', "'human' is not one of interactive"),
        ('[sources."token_events.x"]\nrequired_days = 1\n', "only signins.<sign_in_type>, mail_events.<operation> sub-sources exist"),
        ("retention = 5\n", "retention: unknown top-level field"),
        ("[defaults\nrequired_days = 1\n", "not valid TOML"),
        ('extends = "platinum"\n', "unknown retention profile 'platinum'"),
    ],
)
def test_policy_errors_name_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write_policy(tmp_path, text, "team-policy.toml")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert message in str(info.value)
    if "profile" not in message:
        assert str(info.value).startswith(f"{path}: ")


def test_missing_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nope\.toml: cannot read policy"):
        load_policy(tmp_path / "nope.toml")


# --------------------------------------------------------------------------- forensic windows
def test_storm0558_key_windows(tmp_path: Path, no_detections: Path) -> None:
    """The key's certificate expired 2021-04-04; it was used from 2023-05-15: what can the lake say?"""
    as_of = date(2023, 8, 1)
    lake = write_lake(
        tmp_path / "lake",
        {
            "token_events": daily(3, date(2023, 1, 1), date(2023, 7, 31), token_event),
            "signins": daily(3, date(2023, 3, 1), date(2023, 7, 31), signin),
            "signing_keys": [
                {
                    "kid": STORM_KID,
                    "event_date": "2016-08-01",
                    "source": "jwks:common",
                    "scope": "consumer",
                    "status": "compromised",
                    "cert_not_before": datetime(2016, 4, 5, 14, 43, 35, tzinfo=timezone.utc),
                    "cert_not_after": datetime(2021, 4, 4, 14, 43, 35, tzinfo=timezone.utc),
                    "first_seen": datetime(2016, 8, 1, tzinfo=timezone.utc),
                    "last_seen": datetime(2023, 7, 3, tzinfo=timezone.utc),
                },
                {"kid": "retired-kid", "event_date": "2020-01-01", "source": "jwks:common", "status": "retired",
                 "first_seen": datetime(2020, 1, 1, tzinfo=timezone.utc), "last_seen": datetime(2022, 1, 1, tzinfo=timezone.utc)},
                {"kid": "active-kid", "event_date": "2023-01-01", "source": "jwks:common", "status": "active",
                 "first_seen": datetime(2023, 1, 1, tzinfo=timezone.utc), "last_seen": datetime(2023, 8, 1, tzinfo=timezone.utc)},
            ],
            "indicators": [
                {"indicator_type": "kid", "value": STORM_KID, "event_date": "2023-07-14", "campaign": "Storm-0558",
                 "valid_from": datetime(2023, 5, 15, tzinfo=timezone.utc), "valid_until": datetime(2023, 7, 3, tzinfo=timezone.utc),
                 "source": "MSTIC 2023-07-14"},
            ],
        },
    )
    report = retention_report(lake, profile="minimal", as_of=as_of, detections_dir=no_detections)
    windows = {(w.kid, w.kind): w for w in report.windows}
    assert {k for k, _ in windows} == {STORM_KID, "retired-kid"}  # active keys have no forensic window

    cert = windows[(STORM_KID, "key_certificate")]
    assert (cert.start, cert.end, cert.label) == (date(2016, 4, 5), date(2021, 4, 4), f"{STORM_KID} (Storm-0558): certificate validity")
    cov = {c.source: c for c in cert.coverage}
    assert cov["token_events"].covered_days == 0 and cov["token_events"].share == 0.0
    assert cert.confirm_from is None and cert.rule_out_from is None

    use = windows[(STORM_KID, "key_indicator")]
    assert (use.start, use.end) == (date(2023, 5, 15), date(2023, 7, 3))
    cov = {c.source: c for c in use.coverage}
    assert cov["token_events"].share == 1.0 and cov["signins"].share == 1.0
    assert use.confirm_from == date(2023, 5, 15) and use.rule_out_from == date(2023, 5, 15)

    exposure = windows[(STORM_KID, "key_exposure")]
    assert (exposure.start, exposure.end) == (date(2016, 4, 5), date(2023, 7, 3))
    cov = {c.source: c for c in exposure.coverage}
    assert cov["token_events"].window_days == (date(2023, 7, 3) - date(2016, 4, 5)).days + 1 == 2646
    assert cov["token_events"].covered_days == 184  # 2023-01-01..2023-07-03
    assert cov["token_events"].answerable_from == date(2023, 1, 1) and cov["signins"].answerable_from == date(2023, 3, 1)
    assert exposure.confirm_from == date(2023, 1, 1) and exposure.rule_out_from == date(2023, 3, 1)
    assert exposure.note == "trusted or used 820 days after its certificate expired on 2021-04-04"

    retired = windows[("retired-kid", "key_published")]
    assert retired.key_status == "retired" and retired.confirm_from is None

    doc = next(w for w in report.to_dict()["windows"] if w["kind"] == "key_indicator")
    assert doc["confirm_from"] == "2023-05-15" and doc["days"] == 50


def test_incident_window_coverage_warns(tmp_path: Path, no_detections: Path) -> None:
    gap = set(_days(date(2026, 5, 10), date(2026, 5, 13)))
    start, end = AS_OF - timedelta(days=40), AS_OF - timedelta(days=1)
    lake = write_lake(
        tmp_path / "lake",
        {
            "signins": daily(2, start, end, signin, skip=gap),
            "mail_events": daily(2, start, end, mail),
            "token_events": daily(2, start, end, token_event),
        },
    )
    pol = write_policy(tmp_path, SMALL_POLICY.replace("max_gap_days = 1", "max_gap_days = 5"))
    report = retention_report(lake, policy=pol, incident="2026-05-01..2026-05-20", as_of=AS_OF, detections_dir=no_detections)
    incident = report.windows[0]
    assert incident.kind == "incident" and (incident.start, incident.end) == (date(2026, 5, 1), date(2026, 5, 20))
    cov = {c.source: c for c in incident.coverage}
    assert cov["signins"].share == 0.8 and cov["signins"].answerable_from == date(2026, 5, 1)  # 4-day hole tolerated (5)
    assert [f.text for f in report.findings if f.area == "incident"] == [
        "signins covers 80% of the incident window 2026-05-01..2026-05-20; continuous from 2026-05-01",
        "signins.interactive covers 80% of the incident window 2026-05-01..2026-05-20; continuous from 2026-05-01",
    ]
    assert report.exit_code == EXIT_WARNINGS


# --------------------------------------------------------------------------- mail audit, detections
def test_mail_audit_throttling_and_tenants_without_mail_items_accessed(tmp_path: Path, no_detections: Path) -> None:
    start, end = AS_OF - timedelta(days=10), AS_OF - timedelta(days=1)
    rows = daily(2, start, end, mail, tenant=TENANT_A)
    rows += [mail(d, mailbox="ceo@contoso.example", throttled=True) for d in (date(2026, 5, 25), date(2026, 5, 27))]
    rows += daily(2, start, end, mail, operation="Send", tenant=TENANT_B, mailbox="bob@fabrikam.example")
    signins = daily(1, start, end, signin, tenant=TENANT_C)
    outbound = signin(end, tenant=TENANT_B)  # not a tenant of ours: home tenant differs
    outbound["home_tenant_id"] = TENANT_A
    partner = signin(end, tenant="44444444-4444-4444-4444-444444444444")
    lake = write_lake(tmp_path / "lake", {"mail_events": rows, "signins": signins + [outbound, partner]})

    report = retention_report(
        lake, profile="minimal", as_of=AS_OF, detections_dir=no_detections, partner_tenants=["44444444-4444-4444-4444-444444444444"]
    )
    m = report.mail_audit
    assert [(t["mailbox"], t["days"], t["first"], t["last"]) for t in m.throttled] == [("ceo@contoso.example", 2, "2026-05-25", "2026-05-27")]
    assert m.tenants_without_mail_items_accessed == [TENANT_B, TENANT_C]
    texts = {r.level: [] for r in m.reasons}
    for r in m.reasons:
        texts[r.level].append(r.text)
    # minimal does not require MailItemsAccessed: missing is a warning there
    assert any(t.startswith(f"tenant {TENANT_B} has 20 mail audit events but no MailItemsAccessed") for t in texts["warn"])
    assert any(t.startswith(f"tenant {TENANT_C} appears in sign-ins but has no mail audit events at all") for t in texts["warn"])
    assert any("1 mailbox(es) had MailItemsAccessed auditing throttled" in t for t in texts["warn"])

    strict = retention_report(lake, profile="audit-standard", as_of=AS_OF, detections_dir=no_detections)
    assert {r.level for r in strict.mail_audit.reasons if "tenant" in r.text} == {"violation"}


def test_detection_headers_and_coverage(tmp_path: Path) -> None:
    ddir = tmp_path / "detections"
    ddir.mkdir()
    (ddir / "a.sql").write_text('-- id = "needs_tokens"\n-- title = "T"\n-- requires = ["tokens", "token_events"]\n-- lookback_days = 0\nSELECT 1\n')
    (ddir / "b.sql").write_text('-- id = "long_lookback"\n-- description = """\n-- two lines\n-- """\n-- requires = ["signins"]\n-- lookback_days = 90\nSELECT 1\n')
    (ddir / "c.sql").write_text('-- id = "short_lookback"\n-- requires = ["signins", "findings"]\n-- lookback_days = 7\nSELECT 1\n')
    (ddir / "d.sql").write_text('-- id = "needs_keys"\n-- requires = ["signing_keys"]\nSELECT 1\n')
    (ddir / "e.sql").write_text("-- id = \n-- requires = [\nSELECT 1\n")
    metas, problems = read_detection_headers(ddir)
    assert [m.id for m in metas] == ["needs_tokens", "long_lookback", "short_lookback", "needs_keys"]
    assert metas[1].lookback_days == 90 and metas[1].requires == ["signins"]
    assert len(problems) == 1 and problems[0].startswith(f"{ddir / 'e.sql'}: header is not valid TOML")

    lake = write_lake(tmp_path / "lake", {"signins": daily(2, AS_OF - timedelta(days=41), AS_OF - timedelta(days=1), signin)})
    report = retention_report(lake, profile="minimal", as_of=AS_OF, detections_dir=tmp_path / "empty-dir-absent")
    assert report.notes == [f"no detections directory at {tmp_path / 'empty-dir-absent'}"]
    cov = {d.meta.id: d for d in detection_coverage(metas, report.sources, {"signing_keys": 0, "indicators": 0}, AS_OF)}
    assert cov["needs_tokens"].status == "blind"
    assert cov["needs_tokens"].reasons[0].text == "needs_tokens is blind: needs tokens, which has no events"
    assert cov["long_lookback"].status == "partial"
    assert cov["long_lookback"].reasons[0].text == "long_lookback is partial: looks back 90 days but signins reaches back 41"
    assert cov["short_lookback"].status == "covered"
    assert cov["needs_keys"].status == "blind" and "signing_keys, which is empty" in cov["needs_keys"].reasons[0].text


def test_project_detections_are_read(tmp_path: Path) -> None:
    """The repository's own detections (through pipeline.detect when it loads) get a coverage row each."""
    lake = write_lake(tmp_path / "lake", {"signins": [signin(AS_OF - timedelta(days=1))]})
    report = retention_report(lake, profile="minimal", as_of=AS_OF)
    on_disk = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "queries" / "detections").glob("*.sql"))
    ids = sorted(d.meta.id for d in report.detections)
    # every file has a coverage row, or the report says why it could not be read
    assert [s for s in on_disk if s not in ids and not any(f"{s}.sql" in n for n in report.notes)] == []
    assert all(d.status in ("covered", "partial", "blind") for d in report.detections)


# --------------------------------------------------------------------------- rendering and CLI
def _storm_lake(tmp_path: Path) -> Lake:
    gap = set(_days(date(2026, 5, 10), date(2026, 5, 13)))
    start = AS_OF - timedelta(days=60)
    return write_lake(
        tmp_path / "lake",
        {
            "signins": daily(3, start, AS_OF - timedelta(days=1), signin, skip=gap),
            "mail_events": daily(2, AS_OF - timedelta(days=41), AS_OF - timedelta(days=1), mail),
            "signing_keys": [
                {"kid": STORM_KID, "event_date": "2016-08-01", "source": "t", "status": "compromised",
                 "cert_not_before": datetime(2016, 4, 5, tzinfo=timezone.utc), "cert_not_after": datetime(2021, 4, 4, tzinfo=timezone.utc)}
            ],
        },
    )


def test_html_report_is_self_contained_with_svg_chart(tmp_path: Path, no_detections: Path) -> None:
    report = retention_report(_storm_lake(tmp_path), as_of=AS_OF, incident="2026-05-01..2026-05-20", detections_dir=no_detections)
    page = report.to_html()
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page
    assert re.search(r"<svg[^>]*>", page), "the coverage timeline SVG is missing"
    assert "<script" not in page.lower()
    assert not re.search(r"<(link|img|iframe|object|embed)\b[^>]*\b(href|src|data)\s*=\s*[\"']?(https?:)?//", page, re.I)
    assert not re.search(r"@import|url\(\s*[\"']?https?:", page, re.I)
    # the chart has one row per source and the window rows
    assert "mail_events.MailItemsAccessed" in page and "key 1LTMzakihi… certificate" in page
    assert "no signins events on 2026-05-10..2026-05-13 (4 days)" in page
    md = report.to_markdown()
    assert md.startswith("# Retention-gap report: VIOLATION") and "| signins |" in md
    text = report.to_text()
    assert "retention VIOLATION" in text and "signins" in text


def test_cli_formats_and_exit_codes(tmp_path: Path) -> None:
    lake = _storm_lake(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["retention", "--lake", str(lake.root), "--as-of", "2026-06-01", "--format", "json"])
    assert res.exit_code == 21, res.output
    doc = json.loads(res.stdout)
    assert doc["status"] == "violation" and doc["as_of"] == "2026-06-01"
    out = tmp_path / "out" / "retention.html"
    res = runner.invoke(app, ["retention", "--lake", str(lake.root), "--as-of", "2026-06-01", "--format", "html", "--out", str(out)])
    assert res.exit_code == 21 and "<svg" in out.read_text()
    bad = write_policy(tmp_path, "[defaults]\nmax_gap_days = -1\n", "bad.toml")
    res = runner.invoke(app, ["retention", "--lake", str(lake.root), "--policy", str(bad)])
    assert res.exit_code == 2 and "bad.toml" in res.output and "defaults.max_gap_days" in res.output
    res = runner.invoke(app, ["retention", "--lake", str(lake.root), "--incident", "2026-05-01"])
    assert res.exit_code == 2 and "START..END" in res.output
    res = runner.invoke(app, ["retention", "--lake", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "no lake at" in res.output


def test_nightly_api_defaults(tmp_path: Path) -> None:
    """retention_report(lake, policy=None, profile=None, incident=None, as_of=None): the nightly call."""
    lake = write_lake(tmp_path / "lake", {"signins": [signin(datetime.now(timezone.utc).date())]})
    report = retention_report(lake.root, None, None, None, None)
    assert report.as_of == datetime.now(timezone.utc).date()
    assert report.exit_code in (EXIT_OK, EXIT_WARNINGS, EXIT_VIOLATIONS)
    assert isinstance(report.to_dict(), dict) and report.to_markdown() and "<svg" in report.to_html()


def test_gap_dict_shape() -> None:
    g = Gap(date(2026, 1, 1), date(2026, 1, 3), "low_volume", 12, 400.0)
    assert g.to_dict() == {"start": "2026-01-01", "end": "2026-01-03", "days": 3, "kind": "low_volume", "events": 12, "normal_per_day": 400.0}
    assert DetectionMeta("x", "", ["signins"], 0).requires == ["signins"]
