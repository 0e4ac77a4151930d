"""Night labels: local evening date, rollover, daylight saving, DATE-OBS parsing."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from biaswatch.rules.nights import night_end, night_label, night_start, parse_date_obs

CHICAGO = ZoneInfo("America/Chicago")
NOON = dt.time(12, 0)


def utc(text: str) -> dt.datetime:
    """An aware UTC datetime from ISO text."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("when", "night"),
    [
        # CST is UTC-6 in November.
        ("2026-11-24T21:00:00", "2026-11-24"),  # 15:00 local, afternoon bias
        ("2026-11-25T05:59:59", "2026-11-24"),  # 23:59:59 local, before local midnight
        ("2026-11-25T06:00:00", "2026-11-24"),  # 00:00 local, across local midnight
        ("2026-11-25T14:00:00", "2026-11-24"),  # 08:00 local, next-morning bias
        ("2026-11-25T17:59:59", "2026-11-24"),  # 11:59:59 local, just before rollover
        ("2026-11-25T18:00:00", "2026-11-25"),  # 12:00 local: the label changes
        ("2026-12-31T23:30:00", "2026-12-31"),  # year end: 17:30 local on the 31st
        ("2027-01-01T12:00:00", "2026-12-31"),  # 06:00 local on 1 January
    ],
)
def test_night_label(when: str, night: str) -> None:
    """Afternoon and next-morning frames share the evening's date; rollover starts a new night."""
    assert night_label(utc(when), CHICAGO, NOON).isoformat() == night


def test_label_across_dst_end() -> None:
    """On 2026-11-01 (CDT->CST) the rollover still happens at local noon of each day."""
    # 2026-10-31 evening is CDT (UTC-5); clocks fall back at 02:00 local on 11-01.
    assert night_label(utc("2026-11-01T16:59:00"), CHICAGO, NOON).isoformat() == "2026-10-31"
    assert night_label(utc("2026-11-01T17:59:00"), CHICAGO, NOON).isoformat() == "2026-10-31"
    assert night_label(utc("2026-11-01T18:00:00"), CHICAGO, NOON).isoformat() == "2026-11-01"


def test_label_across_dst_start() -> None:
    """On 2026-03-08 (CST->CDT) the rollover moves to 17:00 UTC."""
    assert night_label(utc("2026-03-08T16:59:59"), CHICAGO, NOON).isoformat() == "2026-03-07"
    assert night_label(utc("2026-03-08T17:00:00"), CHICAGO, NOON).isoformat() == "2026-03-08"


def test_night_end_is_the_next_morning_for_an_early_end() -> None:
    """night_end 10:00 with a noon rollover falls on the following calendar day."""
    end = night_end(dt.date(2026, 11, 24), CHICAGO, NOON, dt.time(10, 0))
    assert end == utc("2026-11-25T16:00:00")


def test_night_end_after_rollover_is_the_same_day() -> None:
    """An end time later than the rollover falls on the night's own date."""
    end = night_end(dt.date(2026, 11, 24), CHICAGO, NOON, dt.time(18, 0))
    assert end == utc("2026-11-25T00:00:00")


def test_night_end_across_dst_change() -> None:
    """The night of 2026-10-31 ends at 10:00 CST, after clocks fell back."""
    end = night_end(dt.date(2026, 10, 31), CHICAGO, NOON, dt.time(10, 0))
    assert end == utc("2026-11-01T16:00:00")


@given(
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1)),
    st.sampled_from(["America/Chicago", "Pacific/Auckland", "UTC", "America/Santiago"]),
    st.times(),
)
def test_every_instant_lies_inside_its_night(
    naive: dt.datetime, zone_name: str, rollover: dt.time
) -> None:
    """An instant is never before the start of its night nor at or after the next night's start."""
    zone = ZoneInfo(zone_name)
    rollover = rollover.replace(microsecond=0, tzinfo=None)
    when = naive.replace(tzinfo=dt.UTC)
    night = night_label(when, zone, rollover)
    start = night_start(night, zone, rollover)
    following = night_start(night + dt.timedelta(days=1), zone, rollover)
    assert start <= when < following or _in_dst_gap(night, zone, rollover)


def _in_dst_gap(night: dt.date, zone: ZoneInfo, rollover: dt.time) -> bool:
    # A rollover inside a spring-forward gap has no exact instant; fold=0 maps
    # it an hour early. Such nights are an hour shorter at one end, by design.
    for day in (night, night + dt.timedelta(days=1)):
        local = dt.datetime.combine(day, rollover, tzinfo=zone)
        back = local.astimezone(dt.UTC).astimezone(zone)
        if back.replace(tzinfo=None) != local.replace(tzinfo=None):
            return True
    return False


@pytest.mark.parametrize(
    ("value", "time_obs", "expected"),
    [
        ("2026-11-25T02:03:04.5", None, "2026-11-25T02:03:04.500000+00:00"),
        ("2026-11-25T02:03:04Z", None, "2026-11-25T02:03:04+00:00"),
        ("2026-11-25 02:03:04", None, "2026-11-25T02:03:04+00:00"),
        ("2026-11-25", "02:03:04", "2026-11-25T02:03:04+00:00"),
        ("2026-11-25", None, "2026-11-25T00:00:00+00:00"),
    ],
)
def test_parse_date_obs(value: str, time_obs: str | None, expected: str) -> None:
    """ISO DATE-OBS forms (with TIME-OBS for date-only headers) parse as UTC."""
    parsed = parse_date_obs(value, time_obs)
    assert parsed is not None
    assert parsed.isoformat() == expected


@pytest.mark.parametrize("value", [None, "", "yesterday", "2026-13-45T00:00:00", 20261125])
def test_parse_date_obs_rejects_garbage(value: object) -> None:
    """Missing or malformed DATE-OBS gives None, never an exception."""
    assert parse_date_obs(value) is None
