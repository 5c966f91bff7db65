"""Time-of-day and weekday windows, evaluated in the window's time zone against the injected clock."""

from datetime import datetime

import pytest
from support.inline_policy import MakeEngine, decide

from extauth.clock import ManualClock
from extauth.tools.synthetic import principal

OFFICE_HOURS = """\
routes:
  - name: maintenance
    match: {path: {exact: /maintenance}}
    rules:
      - name: office-hours
        when: {time: {timezone: Europe/Berlin, weekdays: [mon, tue, wed, thu, fri], between: ["08:00", "18:00"]}}
  - name: weekend
    match: {path: {prefix: /weekend}}
    rules:
      - name: saturday
        when: {time: {timezone: Europe/Berlin, weekdays: [sat]}}
  - name: night
    match: {path: {prefix: /night}}
    rules:
      - name: night-shift
        when: {time: {timezone: Asia/Tokyo, between: ["22:00", "06:00"]}}
"""


def at(clock: ManualClock, utc: str) -> ManualClock:
    clock.set(datetime.fromisoformat(utc + "+00:00").timestamp())
    return clock


@pytest.mark.parametrize("utc, allowed", [
    ("2026-11-24T06:59:59", False),  # Tue 07:59:59 in Berlin (CET, UTC+1)
    ("2026-11-24T07:00:00", True),   # Tue 08:00 in Berlin: the start is inside
    ("2026-11-24T16:59:59", True),
    ("2026-11-24T17:00:00", False),  # Tue 18:00 in Berlin: the end is outside
    ("2026-07-07T06:30:00", True),   # Tue 08:30 in Berlin in summer (CEST, UTC+2)
    ("2026-11-24T06:30:00", False),  # the same UTC time in winter is 07:30 in Berlin
    ("2026-11-28T10:00:00", False),  # Saturday
])
def test_office_hours_follow_the_window_time_zone(make_engine: MakeEngine, clock: ManualClock,
                                                  utc: str, allowed: bool) -> None:
    """Mon–Fri 08:00–18:00 Europe/Berlin is judged in Berlin local time, including daylight saving time."""
    engine = make_engine(OFFICE_HOURS)
    at(clock, utc)
    assert decide(engine, principal("u"), "/maintenance").allowed is allowed


@pytest.mark.parametrize("utc, allowed", [
    ("2026-11-27T23:30:00", True),   # Friday in UTC, already Saturday 00:30 in Berlin
    ("2026-11-28T22:59:59", True),   # Saturday 23:59:59 in Berlin
    ("2026-11-28T23:30:00", False),  # Saturday in UTC, Sunday 00:30 in Berlin
])
def test_weekday_is_the_local_weekday(make_engine: MakeEngine, clock: ManualClock, utc: str, allowed: bool) -> None:
    """The weekday changes at local midnight, not at UTC midnight."""
    engine = make_engine(OFFICE_HOURS)
    at(clock, utc)
    assert decide(engine, principal("u"), "/weekend").allowed is allowed


@pytest.mark.parametrize("utc, allowed", [
    ("2026-11-24T13:00:00", True),   # 22:00 in Tokyo
    ("2026-11-24T20:59:59", True),   # 05:59:59
    ("2026-11-24T21:00:00", False),  # 06:00
    ("2026-11-24T03:00:00", False),  # 12:00
])
def test_window_ending_before_it_starts_spans_midnight(make_engine: MakeEngine, clock: ManualClock,
                                                       utc: str, allowed: bool) -> None:
    """`between: ["22:00", "06:00"]` is the night from 22:00 until 06:00."""
    engine = make_engine(OFFICE_HOURS)
    at(clock, utc)
    assert decide(engine, principal("u"), "/night").allowed is allowed


def test_moving_the_clock_changes_the_decision_of_a_compiled_policy(make_engine: MakeEngine,
                                                                    clock: ManualClock) -> None:
    """The window is evaluated per request, not at load: the same engine allows, then denies."""
    engine = make_engine(OFFICE_HOURS)
    at(clock, "2026-11-24T16:00:00")
    assert decide(engine, principal("u"), "/maintenance").allowed
    clock.advance(3600)
    assert not decide(engine, principal("u"), "/maintenance").allowed
