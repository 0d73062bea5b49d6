"""When a rollout may admit a twin: its start and end time, and recurring maintenance windows in the
device's own time zone (an IANA zone from a tag, default UTC), weekly or cron-like.

Pure functions of the schedule, a zone and an instant (unix seconds). Local times are resolved with
`zoneinfo`: a weekly window's start and end are wall-clock times of each local day (an end at or
before the start is on the next day, so "22:00-02:00" runs across midnight); a local time that does
not exist (the hour skipped when clocks go forward) maps to the same offset past the gap, an
ambiguous one (clocks going back) to its first occurrence. Cron windows open at the times the
expression names (`cronsim`, which treats the DST days as Debian's cron does) and stay open for
their duration. A twin is admissible at `now` when a window is open whose remaining time holds its
install (`installSeconds`); a twin whose install would not fit waits for the next window.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from services.contracts.rollout import WEEKDAYS, Schedule, Window
from services.domain.errors import bad_request
from services.domain.json_values import JsonObject

DEFAULT_ZONE = "UTC"
SEARCH_DAYS = 8
"""How far a weekly window's occurrences are searched around an instant (a week and a day)."""
CRON_HORIZON_DAYS = 400
"""Past this, a cron window that never opens (e.g. 30 February) counts as never."""


@dataclass(frozen=True, slots=True, order=True)
class Interval:
    """One occurrence of a window, [start, end) in unix seconds."""

    start: float
    end: float

    def __contains__(self, instant: float) -> bool:
        return self.start <= instant < self.end


@lru_cache(maxsize=1024)
def zone(name: str | None, default: str = DEFAULT_ZONE) -> ZoneInfo:
    """The IANA zone `name`; `default` when it is missing or unknown (a bad tag must not stop a
    rollout: the twin is scheduled in the configuration's zone)."""
    for candidate in (name, default, DEFAULT_ZONE):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo(DEFAULT_ZONE)


def device_zone(schedule: Schedule | None, tags: JsonObject) -> str:
    """The zone name a twin is scheduled in: its `timezoneTag` tag when that names a zone, else the
    schedule's default."""
    if schedule is None:
        return DEFAULT_ZONE
    value = tags.get(schedule.timezone_tag) if schedule.timezone_tag else None
    return zone(value if isinstance(value, str) else None, schedule.timezone).key


def _time_of(text: str) -> time:
    parts = [int(p) for p in text.split(":")]
    return time(parts[0], parts[1], parts[2] if len(parts) == 3 else 0)


def _local(day: date, at: time, tz: ZoneInfo) -> float:
    return datetime.combine(day, at, tzinfo=tz).timestamp()


def _weekly(window: Window, tz: ZoneInfo, around: float, back: int, ahead: int) -> Iterator[Interval]:
    assert window.start is not None and window.end is not None
    start, end = _time_of(window.start), _time_of(window.end)
    days = set(window.days or WEEKDAYS)
    today = datetime.fromtimestamp(around, tz).date()
    for offset in range(-back, ahead + 1):
        day = today + timedelta(days=offset)
        if WEEKDAYS[day.weekday()] not in days:
            continue
        opens = _local(day, start, tz)
        closes = _local(day + timedelta(days=1) if end <= start else day, end, tz)
        if closes > opens:
            yield Interval(opens, closes)


def _cron(expression: str, tz: ZoneInfo, at: float, *, reverse: bool) -> Iterator[float]:
    instant = datetime.fromtimestamp(at, tz)
    # reverse iteration yields starts strictly before its instant: start from just after `at`
    origin = instant + timedelta(microseconds=1) if reverse else instant
    limit = at - CRON_HORIZON_DAYS * 86_400 if reverse else at + CRON_HORIZON_DAYS * 86_400
    for found in CronSim(expression, origin, reverse=reverse):
        stamp = found.timestamp()
        if (stamp < limit) if reverse else (stamp > limit):
            return
        yield stamp


def open_window(windows: Iterable[Window], tz: ZoneInfo, now: float) -> Interval | None:
    """The open occurrence containing `now` that closes last (None: every window is closed)."""
    best: Interval | None = None
    for window in windows:
        found: Interval | None = None
        if window.cron is not None:
            assert window.duration_minutes is not None
            opened = next(_cron(window.cron, tz, now, reverse=True), None)
            if opened is not None:
                found = Interval(opened, opened + window.duration_minutes * 60)
        else:
            found = max((i for i in _weekly(window, tz, now, 2, 0) if now in i), default=None, key=lambda i: i.end)
        if found is not None and now in found and (best is None or found.end > best.end):
            best = found
    return best


def next_opening(windows: Iterable[Window], tz: ZoneInfo, after: float) -> float | None:
    """The earliest window start strictly after `after` (None: none within a year or so)."""
    starts: list[float] = []
    for window in windows:
        if window.cron is not None:
            found = next(_cron(window.cron, tz, after, reverse=False), None)
            if found is not None:
                starts.append(found)
        else:
            starts.extend(i.start for i in _weekly(window, tz, after, 0, SEARCH_DAYS) if i.start > after)
    return min(starts, default=None)


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a twin (in one zone) may be admitted now, and if not, from when on."""

    now: bool
    next_at: float | None
    """When it may be admitted next (now: `now`; None: never again)."""
    closes_at: float | None = None
    """While admissible: when the window closes (None: no window)."""


def admission(schedule: Schedule | None, zone_name: str, now: float) -> Admission:
    """Whether a twin scheduled in `zone_name` is admissible at `now`: inside the start and end
    time, and inside a window whose remaining time holds the install."""
    if schedule is None:
        return Admission(True, now)
    if schedule.end_at is not None and now >= schedule.end_at:
        return Admission(False, None)
    if schedule.start_at is not None and now < schedule.start_at:
        first = admission(schedule, zone_name, float(schedule.start_at))
        return Admission(False, first.next_at)
    if not schedule.windows:
        return Admission(True, now)
    tz = zone(zone_name)
    need = schedule.install_seconds
    current = open_window(schedule.windows, tz, now)
    if current is not None and current.end - now >= need:
        return Admission(True, now, current.end)
    at = now
    for _ in range(2 * len(schedule.windows) * (SEARCH_DAYS + 1)):  # each candidate is a later start
        opening = next_opening(schedule.windows, tz, at)
        if opening is None or (schedule.end_at is not None and opening >= schedule.end_at):
            return Admission(False, None)
        window = open_window(schedule.windows, tz, opening)
        if window is not None and window.end - opening >= need:
            return Admission(False, opening)
        at = opening
    return Admission(False, None)


def check_schedule(schedule: Schedule) -> None:
    """What pydantic cannot check: zones exist, cron expressions parse, installs fit the windows.
    Raises a 400 naming the problem."""
    try:
        ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise bad_request(f"rollout.schedule.timezone {schedule.timezone!r} is not an IANA time zone") from None
    for index, window in enumerate(schedule.windows):
        where = f"rollout.schedule.windows[{index}]"
        if window.cron is not None:
            try:
                CronSim(window.cron, datetime.now(UTC))
            except CronSimError as error:
                raise bad_request(f"{where}.cron {window.cron!r}: {error}") from None
            length = (window.duration_minutes or 0) * 60
        else:
            assert window.start is not None and window.end is not None
            start, end = _time_of(window.start), _time_of(window.end)
            seconds = (end.hour - start.hour) * 3600 + (end.minute - start.minute) * 60 + end.second - start.second
            length = seconds if seconds > 0 else seconds + 86_400
        if length <= schedule.install_seconds:
            raise bad_request(
                f"{where} is open {length}s: an install of {schedule.install_seconds}s never fits; "
                "lengthen the window or lower installSeconds"
            )
