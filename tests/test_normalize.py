"""Normalization rules: times, IPs, booleans, integers, GUIDs, token ids."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.normalize import (
    BadValue,
    extra_json,
    guid,
    name_value_list,
    normalize_ip,
    parse_time,
    to_bool,
    to_int,
    unique_token_id_from_request_id,
)

UTC = timezone.utc


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2025-05-02T00:32:36Z", datetime(2025, 5, 2, 0, 32, 36, tzinfo=UTC)),
        ("2022-01-24T05:10:14.1875602Z", datetime(2022, 1, 24, 5, 10, 14, 187560, tzinfo=UTC)),
        ("2022-01-24T05:10:14.1875602+00:00", datetime(2022, 1, 24, 5, 10, 14, 187560, tzinfo=UTC)),
        ("2007-01-09T09:41:00.535404056Z", datetime(2007, 1, 9, 9, 41, 0, 535404, tzinfo=UTC)),
        ("2007-01-09T11:41:00+02:00", datetime(2007, 1, 9, 9, 41, tzinfo=UTC)),
        ("2023-09-20T04:05:03", datetime(2023, 9, 20, 4, 5, 3, tzinfo=UTC)),  # UAL: naive is UTC
        ("2023-07-26 23:00:20.889", datetime(2023, 7, 26, 23, 0, 20, 889000, tzinfo=UTC)),
        ("9/20/2023 4:05:03 AM", datetime(2023, 9, 20, 4, 5, 3, tzinfo=UTC)),
        ("9/20/2023 4:05:03 PM", datetime(2023, 9, 20, 16, 5, 3, tzinfo=UTC)),
        ("12/1/2023 12:05:03 AM", datetime(2023, 12, 1, 0, 5, 3, tzinfo=UTC)),
        ("6/15/2026, 12:40:24.178 PM", datetime(2026, 6, 15, 12, 40, 24, 178000, tzinfo=UTC)),
        ("1/9/2007 10:41:00 AM +01:00", datetime(2007, 1, 9, 9, 41, tzinfo=UTC)),
        (1700000000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (1700000000000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ],
)
def test_parse_time_formats(text, expected):
    assert parse_time(text) == expected


def test_parse_time_day_first_locale():
    # Search-UnifiedAuditLog on an en-AU host: 3/12/2025 is 3 December.
    assert parse_time("3/12/2025 7:31:34 AM", day_first=True) == datetime(2025, 12, 3, 7, 31, 34, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["2023-02-30T00:00:00Z", "13/40/2023 1:00:00 AM", "yesterday", "2023-09-20T25:00:00", "0/0/2023 13:00:00 PM"])
def test_parse_time_rejects_impossible(bad):
    with pytest.raises(BadValue):
        parse_time(bad)


def test_parse_time_empty_is_none():
    assert parse_time("") is None and parse_time(None) is None and parse_time("   ") is None


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)))
def test_parse_time_roundtrips_iso(dt):
    assert parse_time(dt.isoformat()) == dt
    assert parse_time(dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")) == dt


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)), st.integers(-14 * 60, 14 * 60))
def test_parse_time_offsets_convert_to_utc(naive, minutes):
    tz = timezone(timedelta(minutes=minutes))
    aware = naive.replace(tzinfo=tz)
    assert parse_time(aware.isoformat()) == aware.astimezone(UTC)


@given(st.text(max_size=60))
def test_parse_time_never_raises_unexpected(text):
    try:
        result = parse_time(text)
    except BadValue:
        return
    assert result is None or result.tzinfo is not None


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("1.2.3.4", "1.2.3.4"),
        ("1.2.3.4:25493", "1.2.3.4"),
        ("[203.0.113.5]:443", "203.0.113.5"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:0db8:123:abc::45", "2001:db8:123:abc::45"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("fe80::1%eth0", "fe80::1"),
        ("", None),
        (None, None),
    ],
)
def test_normalize_ip(raw, expected):
    assert normalize_ip(raw) == expected


@pytest.mark.parametrize("bad", ["1.2.3", "999.1.1.1", "not-an-ip", "[1.2.3.4", "1.2.3.4:80:90x"])
def test_normalize_ip_rejects(bad):
    with pytest.raises(BadValue):
        normalize_ip(bad)


@given(st.ip_addresses(), st.integers(0, 65535))
def test_normalize_ip_strips_ports_and_brackets(ip, port):
    canonical = str(ip.ipv4_mapped) if getattr(ip, "ipv4_mapped", None) else str(ip)
    assert normalize_ip(str(ip)) == canonical
    if ip.version == 4:
        assert normalize_ip(f"{ip}:{port}") == canonical
    assert normalize_ip(f"[{ip}]:{port}") == canonical


@given(st.text(max_size=50))
def test_normalize_ip_never_raises_unexpected(text):
    try:
        normalize_ip(text)
    except BadValue:
        pass


@pytest.mark.parametrize("raw, expected", [("TRUE", True), ("true", True), ("False", False), ("FALSE", False), (True, True), (0, False), ("", None)])
def test_to_bool(raw, expected):
    assert to_bool(raw) is expected


def test_to_bool_rejects_garbage():
    with pytest.raises(BadValue):
        to_bool("maybe")


@pytest.mark.parametrize("raw, expected", [("50", 50), (50, 50), ("1156492.00", 1156492), (3.0, 3), ("", None)])
def test_to_int(raw, expected):
    assert to_int(raw) == expected


@pytest.mark.parametrize("bad", ["1.5", "fifty", 2.5])
def test_to_int_rejects(bad):
    with pytest.raises(BadValue):
        to_int(bad)


def test_guid_canonical_and_rejects():
    assert guid("{0C532507-B101-4090-B2F1-4D768E2F3500}") == "0c532507-b101-4090-b2f1-4d768e2f3500"
    with pytest.raises(BadValue):
        guid("not-a-guid")


def test_unique_token_id_real_example():
    # formats.md: ByVTDAGxkECy8U12ji81AA is the bytes_le of 0c532507-b101-4090-b2f1-4d768e2f3500.
    assert unique_token_id_from_request_id("0c532507-b101-4090-b2f1-4d768e2f3500") == "ByVTDAGxkECy8U12ji81AA"


@given(st.uuids())
def test_unique_token_id_roundtrip(u):
    tid = unique_token_id_from_request_id(str(u))
    assert len(tid) == 22 and "=" not in tid
    assert uuid.UUID(bytes_le=base64.urlsafe_b64decode(tid + "==")) == u


def test_name_value_list_from_json_string():
    props = name_value_list('[{"Name":"MailAccessType","Value":"Bind"},{"Name":"IsThrottled","Value":"False"}]')
    assert props == {"MailAccessType": "Bind", "IsThrottled": "False"}


def test_extra_json_keeps_only_unmapped_non_empty():
    assert extra_json({"a": 1, "b": "", "c": {"x": 1}}, ["a"]) == '{"c":{"x":1}}'
    assert extra_json({"a": 1}, ["a"]) is None
