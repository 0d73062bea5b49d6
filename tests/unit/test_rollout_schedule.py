"""Maintenance windows and start/end times: weekly windows across midnight, DST in the device's zone,
cron windows, installs that must fit before a window closes — pure functions of an instant."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.contracts.rollout import WEEKDAYS, Schedule, Window
from services.domain.errors import TwinError
from services.domain.rollout.schedule import (
    admission,
    check_schedule,
    device_zone,
    next_opening,
    open_window,
    zone,
)

ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Sydney", "Asia/Kolkata", "America/Santiago"]
INSTANTS = st.integers(int(datetime(2024, 1, 1).timestamp()), int(datetime(2026, 1, 1).timestamp()))
NIGHT = Window(start="22:00", end="02:00")


def at(zone_name: str, *fields: int) -> float:
    return datetime(*fields, tzinfo=ZoneInfo(zone_name)).timestamp()  # type: ignore[misc]


@settings(max_examples=400)
@given(INSTANTS, st.sampled_from(ZONES))
def test_a_window_across_midnight_is_open_exactly_when_the_local_clock_is_inside_it(instant: int, name: str) -> None:
    local = datetime.fromtimestamp(instant, ZoneInfo(name)).time()
    inside = local >= time(22) or local < time(2)
    found = open_window([NIGHT], zone(name), instant)
    assert (found is not None) == inside
    if found is not None:
        assert found.start <= instant < found.end


@settings(max_examples=200)
@given(INSTANTS, st.sampled_from(ZONES), st.sets(st.sampled_from(WEEKDAYS), min_size=1))
def test_a_weekly_window_opens_once_on_each_of_its_local_days(instant: int, name: str, days: set[str]) -> None:
    window = Window(days=sorted(days), start="03:30", end="05:00")  # type: ignore[arg-type]
    tz = zone(name)
    starts: list[float] = []
    cursor = float(instant)
    for _ in range(10):
        opened = next_opening([window], tz, cursor)
        assert opened is not None and opened > cursor
        starts.append(opened)
        cursor = opened
    dates = [datetime.fromtimestamp(s, tz).date() for s in starts]
    assert len(set(dates)) == len(dates)  # one opening per local day
    assert all(WEEKDAYS[d.weekday()] in days for d in dates)
    # and no day of the window's weekdays between two openings is skipped
    for a, b in pairwise(dates):
        between = [a + timedelta(days=i) for i in range(1, (b - a).days)]
        assert not any(WEEKDAYS[d.weekday()] in days for d in between)


def test_dst_changes_a_windows_length_in_real_time_not_on_the_wall_clock() -> None:
    window = Window(start="01:00", end="04:00")
    ny = zone("America/New_York")
    lengths = {}
    for day in (9, 10, 11):  # clocks go forward on 10 March 2024 at 02:00
        found = open_window([window], ny, at("America/New_York", 2024, 3, day, 1, 30))
        assert found is not None
        lengths[day] = found.end - found.start
    assert lengths == {9: 3 * 3600, 10: 2 * 3600, 11: 3 * 3600}
    back = open_window([window], ny, at("America/New_York", 2024, 11, 3, 0, 59) + 120)
    assert back is not None and back.end - back.start == 4 * 3600  # clocks go back on 3 November


def test_a_start_in_the_skipped_hour_opens_as_the_clock_passes_it() -> None:
    window = Window(start="02:30", end="05:00")
    ny = zone("America/New_York")
    opened = next_opening([window], ny, at("America/New_York", 2024, 3, 10, 0, 0))
    assert opened is not None
    assert datetime.fromtimestamp(opened, ny).strftime("%H:%M") == "03:30"  # 02:30 EST = 03:30 EDT


def test_cron_windows_open_on_the_expression_and_last_their_duration() -> None:
    window = Window(cron="0 23 * * 1-5", duration_minutes=180)  # weeknights 23:00, three hours
    berlin = zone("Europe/Berlin")
    monday_night = at("Europe/Berlin", 2024, 6, 4, 1, 0)  # Tuesday 01:00, after Monday 23:00
    found = open_window([window], berlin, monday_night)
    assert found is not None and found.end - found.start == 3 * 3600
    assert open_window([window], berlin, at("Europe/Berlin", 2024, 6, 8, 23, 30)) is None  # a Saturday
    assert next_opening([window], berlin, monday_night) == at("Europe/Berlin", 2024, 6, 4, 23, 0)
    # cron's DST rule: a time skipped by the clock runs at the first minute after the gap
    skipped = Window(cron="30 2 * * *", duration_minutes=30)
    opened = next_opening([skipped], zone("America/New_York"), at("America/New_York", 2024, 3, 10, 0, 0))
    assert opened == at("America/New_York", 2024, 3, 10, 3, 0)


@settings(max_examples=300)
@given(INSTANTS, st.sampled_from(ZONES), st.integers(0, 3 * 3600))
def test_an_install_is_admitted_only_when_it_fits_and_next_at_is_the_first_admissible_instant(
    instant: int, name: str, install: int
) -> None:
    schedule = Schedule(windows=[NIGHT, Window(days=["sat"], start="12:00", end="16:00")], install_seconds=install)
    found = admission(schedule, name, instant)
    if found.now:
        window = open_window(schedule.windows, zone(name), instant)
        assert window is not None and window.end - instant >= install
        assert found.closes_at == window.end
        return
    assert found.next_at is not None and found.next_at > instant
    assert admission(schedule, name, found.next_at).now
    for k in range(1, 6):  # nothing admissible in between
        probe = instant + (found.next_at - instant) * k / 6
        assert not admission(schedule, name, probe).now


def test_start_and_end_times_bound_every_window() -> None:
    start = at("UTC", 2024, 6, 1, 0, 0)
    schedule = Schedule(
        start_at=int(start), end_at=int(start + 86_400 * 2), windows=[Window(start="10:00", end="11:00")]
    )
    before = admission(schedule, "UTC", start - 3600)
    assert not before.now and before.next_at == at("UTC", 2024, 6, 1, 10, 0)
    assert admission(schedule, "UTC", at("UTC", 2024, 6, 2, 10, 30)).now
    after = admission(schedule, "UTC", at("UTC", 2024, 6, 2, 11, 30))
    assert not after.now and after.next_at is None  # the next window opens after the end time
    assert admission(Schedule(end_at=int(start)), "UTC", start) == admission(Schedule(end_at=int(start)), "UTC", start)
    assert not admission(Schedule(end_at=int(start)), "UTC", start).now


def test_a_device_is_scheduled_in_the_zone_its_tag_names() -> None:
    schedule = Schedule(timezone="Europe/Berlin", timezone_tag="tz")
    assert device_zone(schedule, {"tz": "Asia/Tokyo"}) == "Asia/Tokyo"
    assert device_zone(schedule, {"tz": "Not/AZone"}) == "Europe/Berlin"
    assert device_zone(schedule, {"tz": 5}) == "Europe/Berlin"
    assert device_zone(schedule, {}) == "Europe/Berlin"
    assert device_zone(None, {"tz": "Asia/Tokyo"}) == "UTC"


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (Schedule(timezone="Mars/Olympus"), "not an IANA time zone"),
        (Schedule(windows=[Window(cron="61 * * * *", duration_minutes=5)]), "windows[0].cron"),
        (Schedule(windows=[Window(start="00:00", end="00:10")], install_seconds=600), "never fits"),
    ],
)
def test_bad_schedules_are_400_naming_the_problem(schedule: Schedule, message: str) -> None:
    with pytest.raises(TwinError) as refused:
        check_schedule(schedule)
    assert message in refused.value.message


def test_window_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="either weekly"):
        Window(start="01:00", end="02:00", cron="* * * * *", duration_minutes=5)
    with pytest.raises(ValueError, match="not a time of day"):
        Window(start="25:00", end="02:00")
    with pytest.raises(ValueError, match="differ"):
        Window(start="01:00", end="01:00:00")
    with pytest.raises(ValueError, match="endAt"):
        Schedule(start_at=10, end_at=5)
