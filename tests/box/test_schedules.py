"""Schedule semantics: property tests (hypothesis) plus examples with concrete dates.

The properties compare the engine with independent, simpler statements of the same rule: is_active against
intervals, a split range against the whole, a brute-force minute grid against check_no_overlap, wall-clock
readings against the DST-aware engine on ordinary days.
"""

from __future__ import annotations

import calendar
import itertools
import math
import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agent.box.schedules import (
    DataSourceTime,
    Polling,
    Schedule,
    ScheduleError,
    ScheduleType,
    TimeWindow,
    check_no_overlap,
    clip_to_data_source_times,
    intervals,
    is_active,
    merge_windows,
    next_transition,
    parse_cycle_dates,
    parse_data_source_times,
    parse_media_offset,
    parse_schedule,
    parse_schedule_times,
    parse_time_of_day,
)

ZONES = ["Europe/Berlin", "America/New_York", "Asia/Shanghai", "UTC"]
US = timedelta(microseconds=1)
PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# DST changes (UTC instants) the strategies steer towards.
DST_UTC = [
    datetime(2024, 3, 31, 1, tzinfo=UTC),  # Berlin spring forward 02:00 -> 03:00
    datetime(2024, 10, 27, 1, tzinfo=UTC),  # Berlin fall back 03:00 -> 02:00
    datetime(2024, 3, 10, 7, tzinfo=UTC),  # New York spring forward 02:00 -> 03:00
    datetime(2024, 11, 3, 6, tzinfo=UTC),  # New York fall back 02:00 -> 01:00
    datetime(2025, 3, 30, 1, tzinfo=UTC),
    datetime(2025, 11, 2, 6, tzinfo=UTC),
]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc,arg-type]


def local(tz: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz), fold=fold)  # type: ignore[misc,arg-type]


def win(start: str, end: str) -> TimeWindow:
    return TimeWindow.parse(start, end)


def sched(kind: str, times: list[tuple[str, str]] | None = None, tz: str = "UTC", **kw: object) -> Schedule:
    raw = [{"StartTime": s, "EndTime": e} for s, e in (times or [])]
    return parse_schedule(kind, times=raw, tz=tz, **kw)  # type: ignore[arg-type]


def member(spans: list[tuple[datetime, datetime]], t: datetime) -> bool:
    return any(s <= t < e or s == e == t for s, e in spans)


def union(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """A plain re-statement of 'sorted union, touching spans merged, covered instants dropped'."""
    out: list[tuple[datetime, datetime]] = []
    for s, e in sorted(x for x in spans if x[1] > x[0]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    for t in sorted({s for s, e in spans if s == e}):
        if not any(s <= t < e for s, e in out):
            out.append((t, t))
    return sorted(out)


def check_shape(spans: list[tuple[datetime, datetime]], lo: datetime, hi: datetime) -> None:
    for s, e in spans:
        assert s.tzinfo is UTC and e.tzinfo is UTC
        assert lo <= s <= e
        assert e <= hi
        assert s < hi
    for (s0, e0), (s1, e1) in itertools.pairwise(spans):
        assert (s0, e0) < (s1, e1)
        assert e0 <= s1
        if s0 < e0 and s1 < e1:
            assert e0 < s1, "touching positive spans must be merged"


# ------------------------------------------------------------------------------------- strategies

seconds_of_day = st.one_of(
    st.integers(0, 1439).map(lambda m: m * 60),  # on the minute: coincidences between windows
    st.integers(0, 86_399),
    st.sampled_from([0, 3600, 5400, 7200, 9000, 10_800]),  # around DST hours
)


def as_time(s: int) -> time:
    return time(s // 3600, s // 60 % 60, s % 60)


@st.composite
def windows(draw: st.DrawFn) -> TimeWindow:
    start = draw(seconds_of_day)
    kind = draw(st.sampled_from(["plain", "plain", "instant", "any"]))
    if kind == "instant":
        end = start
    elif kind == "plain":
        end = draw(st.integers(start, 86_399)) if start < 86_399 else start
    else:
        end = draw(seconds_of_day)
    return TimeWindow(as_time(start), as_time(end))


@st.composite
def schedules(draw: st.DrawFn, polling: bool = True) -> Schedule:
    kind = draw(st.sampled_from(list(ScheduleType)))
    tz = draw(st.sampled_from(ZONES))
    days: tuple[int, ...] = ()
    if kind is ScheduleType.EVERY_WEEK:
        days = tuple(sorted(draw(st.sets(st.integers(1, 7), min_size=1))))
    elif kind is ScheduleType.EVERY_MONTH:
        days = tuple(sorted(draw(st.sets(st.integers(1, 31), min_size=1, max_size=8))))
    times: tuple[TimeWindow, ...] = ()
    if kind is not ScheduleType.LONG_RUNNING:
        times = tuple(draw(st.lists(windows(), max_size=4)))
    poll = None
    if polling and draw(st.booleans()):
        every = draw(st.integers(5, 180))
        poll = Polling(draw(st.integers(1, every * 60)), every)
    once = draw(st.dates(date(2023, 1, 1), date(2026, 12, 31))) if kind is ScheduleType.ONCE else None
    return Schedule(kind, days, times, tz, poll, once)


instants = st.one_of(
    st.datetimes(datetime(2023, 1, 1), datetime(2026, 12, 31), timezones=st.just(UTC)),
    st.builds(
        lambda base, off: base + timedelta(seconds=off),
        st.sampled_from(DST_UTC),
        st.integers(-2 * 86_400, 2 * 86_400),
    ),
)


def near_once(s: Schedule, t: datetime, shift: int) -> datetime:
    """Keep ONCE examples near their day, where something happens."""
    if s.once_date is None:
        return t
    return datetime.combine(s.once_date, time(), UTC) + timedelta(seconds=shift)


# ------------------------------------------------------------------------------- core properties


@PROPS
@given(
    schedules(),
    instants,
    st.integers(1, 4 * 86_400),
    st.lists(st.floats(0, 1), max_size=6),
    st.integers(-86_400, 86_400),
)
def test_is_active_agrees_with_intervals(
    s: Schedule, start: datetime, length: int, fractions: list[float], shift: int
) -> None:
    start = near_once(s, start, shift)
    end = start + timedelta(seconds=length)
    spans = intervals(s, start, end)
    check_shape(spans, start, end)
    probes = [start + (end - start) * f for f in fractions]
    for a, b in spans[:8]:
        probes += [a - US, a, a + US, b - US, b, b + US]
    for t in probes:
        if start <= t < end:
            assert is_active(s, t) == member(spans, t), t


@PROPS
@given(
    schedules(),
    instants,
    st.integers(1, 3 * 86_400),
    st.integers(0, 3 * 86_400),
    st.integers(-86_400, 86_400),
)
def test_split_range_gives_the_same_intervals(s: Schedule, a: datetime, l1: int, l2: int, shift: int) -> None:
    a = near_once(s, a, shift)
    b = a + timedelta(seconds=l1)
    c = b + timedelta(seconds=l2)
    whole = intervals(s, a, c)
    assert whole == union(intervals(s, a, b) + intervals(s, b, c))
    # The same range in another zone is the same range.
    ny = ZoneInfo("America/New_York")
    assert intervals(s, a.astimezone(ny), c.astimezone(ny)) == whole


@PROPS
@given(schedules(), instants, st.integers(-86_400, 86_400))
def test_next_transition_is_the_next_change(s: Schedule, after: datetime, shift: int) -> None:
    after = near_once(s, after, shift)
    t = next_transition(s, after)
    if t is None:
        if s.type is not ScheduleType.ONCE:
            horizon = after + timedelta(days=10)
            assert intervals(s, after, horizon) in ([], [(after, horizon)])
        else:
            spans = intervals(s, after - timedelta(days=3), after + timedelta(days=3))
            assert all(e <= after for _, e in spans)
        return
    assert t > after
    assert t.tzinfo is UTC
    between = intervals(s, after, t)
    assert between in ([], [(after, after)], [(after, t)]), between
    changes = is_active(s, t - US) != is_active(s, t) or is_active(s, t) != is_active(s, t + US)
    assert changes


@PROPS
@given(st.lists(windows(), min_size=1, max_size=6), st.randoms(), st.sampled_from(ZONES), instants)
def test_merge_windows_keeps_the_meaning(
    ws: list[TimeWindow], rnd: random.Random, tz: str, at: datetime
) -> None:
    merged = merge_windows(ws)
    assert merge_windows(merged) == merged
    shuffled = list(ws)
    rnd.shuffle(shuffled)
    assert merge_windows(shuffled) == merged
    assert 1 <= len(merged) <= len(set(ws))
    for kind, days in (("EVERY_WEEK", "1,3,7"), ("EVERYDAY", None), ("EVERY_MONTH", "1,31")):
        a = Schedule(
            ScheduleType(kind), parse_cycle_dates(days, ScheduleType(kind)) if days else (), tuple(ws), tz
        )
        b = Schedule(a.type, a.cycle_dates, merged, tz)
        end = at + timedelta(days=3)
        assert intervals(a, at, end) == intervals(b, at, end)


@PROPS
@given(st.lists(windows(), max_size=5))
def test_check_no_overlap_matches_a_minute_grid(ws: list[TimeWindow]) -> None:
    ws = [TimeWindow(w.start.replace(second=0), w.end.replace(second=0)) for w in ws]

    def minutes(w: TimeWindow) -> set[int]:
        a, b = w.start_s // 60, w.end_s // 60
        return {a % 1440} if a == b else {m % 1440 for m in range(a, b)}

    grid_overlap = any(minutes(x) & minutes(y) for i, x in enumerate(ws) for y in ws[i + 1 :])
    if grid_overlap:
        with pytest.raises(ScheduleError) as err:
            check_no_overlap(ws)
        assert err.value.field == "ScheduleTimes"
        assert "overlap" in err.value.message
    else:
        check_no_overlap(ws)


# ---------------------------------------------------------------------- month ends, week boundaries


@FEW
@given(
    st.sets(st.integers(1, 31), min_size=1, max_size=6),
    st.integers(2020, 2030),
    st.integers(1, 12),
    st.sampled_from(ZONES),
)
def test_every_month_runs_on_exactly_the_days_the_month_has(
    days: set[int], year: int, month: int, tz: str
) -> None:
    s = parse_schedule("EVERY_MONTH", sorted(days), tz=tz)
    zone = ZoneInfo(tz)
    first = datetime(year, month, 1, tzinfo=zone)
    last = first + timedelta(days=40)
    spans = intervals(s, first, last)
    active_days = set()
    for a, b in spans:
        d = a.astimezone(zone).date()
        while datetime.combine(d, time(), zone) < b:
            active_days.add(d)
            d += timedelta(days=1)
    expected = {
        first.date() + timedelta(days=i) for i in range(40) if (first.date() + timedelta(days=i)).day in days
    }
    assert active_days == expected
    # Days the month lacks are skipped, not moved.
    n = calendar.monthrange(year, month)[1]
    assert not any(d.month == month and d.day > n for d in active_days)


@FEW
@given(
    st.sets(st.integers(1, 7), min_size=1),
    st.dates(date(2020, 12, 20), date(2031, 1, 10)),
    st.sampled_from(ZONES),
    seconds_of_day,
    st.integers(60, 86_340),
)
def test_every_week_windows_belong_to_their_start_day(
    days: set[int], d: date, tz: str, start_s: int, length: int
) -> None:
    start = as_time(start_s)
    end = as_time((start_s + length) % 86_400)
    assume(end != start)
    s = Schedule(ScheduleType.EVERY_WEEK, tuple(sorted(days)), (TimeWindow(start, end),), tz)
    zone = ZoneInfo(tz)
    # Clear of DST changes on the window's two days, the wall clock reads straight.
    offsets = {datetime.combine(d + timedelta(days=k), time(), zone).utcoffset() for k in range(3)}
    assume(len(offsets) == 1)
    runs_today = d.isoweekday() in days
    opened = datetime.combine(d, start, zone)
    assert is_active(s, opened) == runs_today
    assert not is_active(s, opened - timedelta(seconds=1)) or (d - timedelta(days=1)).isoweekday() in days
    closing = datetime.combine(d + timedelta(days=1 if end < start else 0), end, zone) - timedelta(seconds=1)
    assert is_active(s, closing) == runs_today


def test_week_boundaries_examples() -> None:
    # 2023-12-31 is a Sunday, 2024-01-01 a Monday: the window crosses both the week and the year.
    s = sched("EVERY_WEEK", [("22:00:00", "02:00:00")], tz="Asia/Shanghai", cycle_dates="7")
    sh = "Asia/Shanghai"
    assert not is_active(s, local(sh, 2023, 12, 31, 21, 59, 59))
    assert is_active(s, local(sh, 2023, 12, 31, 22))
    assert is_active(s, local(sh, 2024, 1, 1, 1, 59, 59))
    assert not is_active(s, local(sh, 2024, 1, 1, 2))
    assert not is_active(s, local(sh, 2024, 1, 1, 22, 30))  # Monday does not run
    assert intervals(s, utc(2023, 12, 25), utc(2024, 1, 8)) == [
        (utc(2023, 12, 31, 14), utc(2023, 12, 31, 18)),
        (utc(2024, 1, 7, 14), utc(2024, 1, 7, 18)),
    ]
    monday = sched("EVERY_WEEK", [("00:00:00", "01:00:00")], tz="UTC", cycle_dates=[1])
    assert next_transition(monday, utc(2023, 12, 31, 23)) == utc(2024, 1, 1)


def test_month_end_examples() -> None:
    s = sched("EVERY_MONTH", [("12:00:00", "13:00:00")], cycle_dates="[29, 30, 31]")
    spans = intervals(s, utc(2023, 1, 1), utc(2024, 4, 1))
    feb = [a.date() for a, _ in spans if a.month == 2]
    assert feb == [date(2024, 2, 29)]  # 2023 has no Feb 29/30/31; 2024 has the 29th only
    assert date(2023, 4, 31 - 1) in [a.date() for a, _ in spans]
    assert not any(a.month == 4 and a.day == 31 for a, _ in spans)
    only_31 = sched("EVERY_MONTH", cycle_dates="31")
    months = sorted({a.month for a, _ in intervals(only_31, utc(2024, 1, 1), utc(2025, 1, 1))})
    assert months == [1, 3, 5, 7, 8, 10, 12]
    assert next_transition(only_31, utc(2024, 4, 1)) == utc(2024, 5, 31)
    assert next_transition(only_31, utc(2024, 5, 31, 12)) == utc(2024, 6, 1)


# ------------------------------------------------------------------------------------------ DST


@FEW
@given(st.dates(date(2020, 1, 1), date(2030, 12, 31)), st.sampled_from(ZONES))
def test_a_whole_day_lasts_the_local_day(d: date, tz: str) -> None:
    s = Schedule(ScheduleType.ONCE, (), (), tz, once_date=d)
    zone = ZoneInfo(tz)
    spans = intervals(s, utc(2019, 12, 1), utc(2031, 2, 1))
    assert len(spans) == 1
    a, b = spans[0]
    assert a == datetime.combine(d, time(), zone).astimezone(UTC)
    expected = datetime.combine(d + timedelta(days=1), time(), zone).astimezone(UTC) - a
    assert b - a == expected
    assert expected in (timedelta(hours=23), timedelta(hours=24), timedelta(hours=25))
    if tz in ("Asia/Shanghai", "UTC"):
        assert expected == timedelta(hours=24)


@PROPS
@given(
    st.lists(windows().filter(lambda w: w.start < w.end), min_size=1, max_size=3),
    st.sampled_from(ZONES),
    instants,
)
def test_on_ordinary_days_the_wall_clock_decides(ws: list[TimeWindow], tz: str, t: datetime) -> None:
    zone = ZoneInfo(tz)
    here = t.astimezone(zone)
    midnight = datetime.combine(here.date(), time(), zone)
    assume(midnight.utcoffset() == (midnight + timedelta(days=1)).utcoffset())
    assume(midnight.utcoffset() == (midnight - timedelta(days=1)).utcoffset())
    s = Schedule(ScheduleType.EVERYDAY, (), tuple(ws), tz)
    wall = here.time().replace(microsecond=0, tzinfo=None)
    assert is_active(s, t.replace(microsecond=0)) == any(w.start <= wall < w.end for w in ws)


@pytest.mark.parametrize(
    ("tz", "times", "day", "expected"),
    [
        # Berlin spring forward (2024-03-31, 02:00 CET -> 03:00 CEST): the start moves to 03:00.
        (
            "Europe/Berlin",
            ("02:30:00", "04:00:00"),
            (2024, 3, 31),
            (utc(2024, 3, 31, 1), utc(2024, 3, 31, 2)),
        ),
        (
            "Europe/Berlin",
            ("01:00:00", "03:00:00"),
            (2024, 3, 31),
            (utc(2024, 3, 31, 0), utc(2024, 3, 31, 1)),
        ),
        # Berlin fall back (2024-10-27, 03:00 CEST -> 02:00 CET): 02:00-03:00 lasts two real hours.
        (
            "Europe/Berlin",
            ("02:00:00", "03:00:00"),
            (2024, 10, 27),
            (utc(2024, 10, 27, 0), utc(2024, 10, 27, 2)),
        ),
        (
            "Europe/Berlin",
            ("02:15:00", "02:45:00"),
            (2024, 10, 27),
            (utc(2024, 10, 27, 0, 15), utc(2024, 10, 27, 1, 45)),
        ),
        # New York spring forward (2024-03-10, 02:00 EST -> 03:00 EDT).
        (
            "America/New_York",
            ("02:30:00", "03:30:00"),
            (2024, 3, 10),
            (utc(2024, 3, 10, 7), utc(2024, 3, 10, 7, 30)),
        ),
        # New York fall back (2024-11-03, 02:00 EDT -> 01:00 EST): 01:00-02:00 lasts two real hours.
        (
            "America/New_York",
            ("01:00:00", "02:00:00"),
            (2024, 11, 3),
            (utc(2024, 11, 3, 5), utc(2024, 11, 3, 7)),
        ),
        (
            "America/New_York",
            ("00:00:00", "01:30:00"),
            (2024, 11, 3),
            (utc(2024, 11, 3, 4), utc(2024, 11, 3, 6, 30)),
        ),
        # Shanghai never shifts.
        (
            "Asia/Shanghai",
            ("02:30:00", "04:00:00"),
            (2024, 3, 31),
            (utc(2024, 3, 30, 18, 30), utc(2024, 3, 30, 20)),
        ),
    ],
)
def test_dst_examples(tz: str, times: tuple[str, str], day: tuple[int, int, int], expected: tuple) -> None:  # type: ignore[type-arg]
    s = sched("ONCE", [times], tz=tz, once_date=date(*day))
    assert intervals(s, utc(2024, 1, 1), utc(2025, 1, 1)) == [expected]
    assert next_transition(s, utc(2024, 1, 1)) == expected[0]
    assert next_transition(s, expected[0]) == expected[1]
    assert next_transition(s, expected[1]) is None


def test_window_inside_the_gap_collapses_to_one_instant() -> None:
    s = sched("EVERYDAY", [("02:10:00", "02:20:00")], tz="Europe/Berlin")
    spans = intervals(s, utc(2024, 3, 30), utc(2024, 4, 1))
    assert spans == [
        (utc(2024, 3, 30, 1, 10), utc(2024, 3, 30, 1, 20)),
        (utc(2024, 3, 31, 1), utc(2024, 3, 31, 1)),  # 03:00 CEST, when the gap ends
    ]
    assert is_active(s, utc(2024, 3, 31, 1))
    assert not is_active(s, utc(2024, 3, 31, 1) + US)


def test_whole_day_everyday_is_continuous_across_dst() -> None:
    for tz in ("Europe/Berlin", "America/New_York"):
        s = sched("EVERYDAY", tz=tz)
        assert intervals(s, utc(2024, 3, 1), utc(2024, 12, 1)) == [(utc(2024, 3, 1), utc(2024, 12, 1))]
        assert next_transition(s, utc(2024, 3, 1)) is None


# ------------------------------------------------------------------ instants, midnight, polling


def test_instant_window_is_one_zero_length_interval() -> None:
    s = sched("EVERYDAY", [("12:00:00", "12:00:00")], tz="Asia/Shanghai")
    at = utc(2024, 5, 1, 4)  # 12:00 in Shanghai
    assert intervals(s, utc(2024, 5, 1), utc(2024, 5, 2)) == [(at, at)]
    assert is_active(s, at)
    assert not is_active(s, at - timedelta(seconds=1))
    assert not is_active(s, at + US)
    assert next_transition(s, utc(2024, 5, 1)) == at
    assert next_transition(s, at) == at + timedelta(days=1)
    # Instants inside a window add nothing, nor does one at a window's very end (it belongs to the window,
    # so a window collapsed to an instant by a DST gap means the same merged or not).
    s2 = sched("EVERYDAY", [("10:00:00", "11:00:00"), ("10:30:00", "10:30:00"), ("11:00:00", "11:00:00")])
    assert intervals(s2, utc(2024, 5, 1), utc(2024, 5, 2)) == [(utc(2024, 5, 1, 10), utc(2024, 5, 1, 11))]
    s3 = sched("EVERYDAY", [("10:00:00", "11:00:00"), ("11:00:01", "11:00:01")])
    assert intervals(s3, utc(2024, 5, 1), utc(2024, 5, 2)) == [
        (utc(2024, 5, 1, 10), utc(2024, 5, 1, 11)),
        (utc(2024, 5, 1, 11, 0, 1), utc(2024, 5, 1, 11, 0, 1)),
    ]
    check_no_overlap([win("10:00:00", "11:00:00"), win("11:00:00", "11:00:00")])
    with pytest.raises(
        ScheduleError, match=r"ScheduleTimes\[0\] 10:00:00-11:00:00 and ScheduleTimes\[1\] 10:30"
    ):
        check_no_overlap([win("10:00:00", "11:00:00"), win("10:30:00", "10:30:00")])


def test_window_crossing_midnight() -> None:
    s = sched("EVERY_WEEK", [("22:00:00", "06:00:00")], tz="UTC", cycle_dates="5")  # Fridays
    assert is_active(s, utc(2024, 5, 3, 23))  # Friday night
    assert is_active(s, utc(2024, 5, 4, 5, 59, 59))  # Saturday morning still Friday's window
    assert not is_active(s, utc(2024, 5, 4, 6))
    assert not is_active(s, utc(2024, 5, 4, 22, 30))  # Saturday night does not run
    assert not is_active(s, utc(2024, 5, 3, 5))  # Friday morning belongs to Thursday
    assert next_transition(s, utc(2024, 5, 4, 6)) == utc(2024, 5, 10, 22)
    with pytest.raises(ScheduleError, match="overlap"):
        check_no_overlap([win("22:00:00", "02:00:00"), win("01:00:00", "03:00:00")])
    check_no_overlap([win("22:00:00", "02:00:00"), win("02:00:00", "03:00:00")])


def test_overlapping_windows_run_as_their_union() -> None:
    s = sched("EVERYDAY", [("10:00:00", "12:00:00"), ("11:00:00", "14:00:00")], tz="UTC")
    assert intervals(s, utc(2024, 1, 1), utc(2024, 1, 2)) == [(utc(2024, 1, 1, 10), utc(2024, 1, 1, 14))]
    assert merge_windows(s.times) == (win("10:00:00", "14:00:00"),)
    assert merge_windows([win("00:00:00", "12:00:00"), win("12:00:00", "00:00:00")]) == (
        win("00:00:00", "12:00:00"),
        win("12:00:00", "00:00:00"),
    )  # a whole day cannot be one window: kept as given
    assert merge_windows([]) == ()


@PROPS
@given(
    seconds_of_day,
    st.integers(60, 86_400 - 60),
    st.integers(1, 240),
    st.data(),
    st.dates(date(2023, 1, 1), date(2026, 12, 31)),
)
def test_polling_slices(start_s: int, length: int, every_min: int, data: st.DataObject, d: date) -> None:
    slice_s = data.draw(st.integers(1, every_min * 60))
    start, end = as_time(start_s), as_time((start_s + length) % 86_400)
    s = Schedule(
        ScheduleType.ONCE, (), (TimeWindow(start, end),), "Asia/Shanghai", Polling(slice_s, every_min), d
    )
    zone = ZoneInfo("Asia/Shanghai")
    opened = datetime.combine(d, start, zone).astimezone(UTC)
    spans = intervals(s, opened - timedelta(days=1), opened + timedelta(days=2))
    period = every_min * 60
    if slice_s == period:
        assert spans == [(opened, opened + timedelta(seconds=length))]
        return
    assert len(spans) == math.ceil(length / period)
    for k, (a, b) in enumerate(spans):
        assert a == opened + timedelta(seconds=k * period)
        assert b - a == timedelta(seconds=min(slice_s, length - k * period))


def test_polling_example_from_the_seed() -> None:
    # CreateComputeInstance example: 10:00-11:00, IsPolling, 60 s every 10 min.
    s = parse_schedule(
        "EVERYDAY",
        "[]",
        '[{"StartTime":"10:00:00","EndTime":"11:00:00"}]',
        tz="Asia/Shanghai",
        is_polling="True",
        slice_execution_time="60",
        overall_execution_time="10",
    )
    assert s.polling == Polling(60, 10)
    spans = intervals(s, local("Asia/Shanghai", 2024, 6, 1), local("Asia/Shanghai", 2024, 6, 2))
    assert [
        (a.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%H:%M"), (b - a).seconds) for a, b in spans
    ] == [
        ("10:00", 60),
        ("10:10", 60),
        ("10:20", 60),
        ("10:30", 60),
        ("10:40", 60),
        ("10:50", 60),
    ]
    assert not is_active(s, local("Asia/Shanghai", 2024, 6, 1, 10, 1))
    assert next_transition(s, local("Asia/Shanghai", 2024, 6, 1, 10, 1)) == utc(2024, 6, 1, 2, 10)


def test_long_running() -> None:
    s = parse_schedule("LONG_RUNNING", "garbage ignored", "also ignored", tz="Europe/Berlin")
    assert s.times == () and s.cycle_dates == ()
    assert is_active(s, utc(2024, 10, 27, 1))
    assert intervals(s, utc(2024, 1, 1), utc(2024, 2, 1)) == [(utc(2024, 1, 1), utc(2024, 2, 1))]
    assert next_transition(s, utc(2024, 1, 1)) is None
    polled = parse_schedule(
        "LONG_RUNNING", tz="UTC", is_polling=True, slice_execution_time=30, overall_execution_time=60
    )
    assert next_transition(polled, utc(2024, 1, 1, 0, 0, 30)) == utc(2024, 1, 1, 1)  # aligned to midnight


def test_once() -> None:
    s = sched("ONCE", [("23:00:00", "01:00:00")], tz="UTC", once_date=date(2024, 2, 28))
    assert intervals(s, utc(2024, 1, 1), utc(2025, 1, 1)) == [(utc(2024, 2, 28, 23), utc(2024, 2, 29, 1))]
    assert not is_active(s, utc(2024, 2, 29, 23, 30))
    assert next_transition(s, utc(2024, 2, 29, 1)) is None
    assert next_transition(s, utc(2020, 1, 1)) == utc(2024, 2, 28, 23)  # years ahead is fine


# ------------------------------------------------------------------------------------------ parsing


def test_parse_accepts_every_api_spelling() -> None:
    spellings = ["1,4,6", "[1, 4, 6]", [1, 4, 6], ["1", "4", "6"], "6, 4, 1, 4"]
    for v in spellings:
        assert parse_schedule("EVERY_WEEK", v, tz="UTC").cycle_dates == (1, 4, 6)
    as_json = parse_schedule_times('[{"EndTime":"18:00:00","StartTime":"08:00:00"}]')
    as_list = parse_schedule_times([{"StartTime": "08:00:00", "EndTime": "18:00:00"}])
    assert as_json == as_list == (TimeWindow(time(8), time(18)),)
    for flag in (True, "True", "true", " TRUE "):
        assert parse_schedule(
            "EVERYDAY", tz="UTC", is_polling=flag, slice_execution_time=1, overall_execution_time=1
        )
    assert parse_schedule("everyday", tz="UTC", is_polling="False", slice_execution_time="x").polling is None
    assert parse_time_of_day("9:05:00") == time(9, 5)
    assert parse_media_offset("100:00:01") == 360_001


def test_to_api_round_trips() -> None:
    s = parse_schedule(
        "EVERY_MONTH", "[1, 15, 31]", [{"StartTime": "22:00:00", "EndTime": "02:00:00"}], tz="UTC"
    )
    api = s.to_api()
    assert api == {
        "ScheduleType": "EVERY_MONTH",
        "ScheduleCycleDates": "[1, 15, 31]",
        "ScheduleTimes": '[{"StartTime":"22:00:00","EndTime":"02:00:00"}]',
    }
    assert parse_schedule(api["ScheduleType"], api["ScheduleCycleDates"], api["ScheduleTimes"], tz="UTC") == s


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"schedule_type": "HOURLY"}, "ScheduleType", "allowed: ONCE, EVERYDAY"),
        ({"schedule_type": None}, "ScheduleType", "not a schedule type"),
        ({"schedule_type": "EVERY_WEEK"}, "ScheduleCycleDates", "required for EVERY_WEEK"),
        (
            {"schedule_type": "EVERY_WEEK", "cycle_dates": "[0]"},
            "ScheduleCycleDates",
            "1 = Monday .. 7 = Sunday",
        ),
        ({"schedule_type": "EVERY_WEEK", "cycle_dates": "1,8"}, "ScheduleCycleDates", "8 is out of range"),
        ({"schedule_type": "EVERY_MONTH", "cycle_dates": "0,15"}, "ScheduleCycleDates", "0 is not a day"),
        ({"schedule_type": "EVERY_MONTH", "cycle_dates": [32]}, "ScheduleCycleDates", "1..31"),
        ({"schedule_type": "EVERY_MONTH", "cycle_dates": "[1,"}, "ScheduleCycleDates", "not valid JSON"),
        ({"schedule_type": "EVERY_MONTH", "cycle_dates": "1,x"}, "ScheduleCycleDates", "'x' is not a whole"),
        ({"schedule_type": "EVERY_MONTH", "cycle_dates": [True]}, "ScheduleCycleDates", "True"),
        ({"schedule_type": "EVERYDAY", "times": "{}"}, "ScheduleTimes", "expected a JSON array"),
        ({"schedule_type": "EVERYDAY", "times": "[1]"}, "ScheduleTimes[0]", "StartTime"),
        (
            {"schedule_type": "EVERYDAY", "times": '[{"StartTime":"10:00:00"}]'},
            "ScheduleTimes[0].EndTime",
            "missing",
        ),
        (
            {"schedule_type": "EVERYDAY", "times": '[{"StartTime":"1:00:00","EndTime":"2:00:00","X":1}]'},
            "ScheduleTimes[0]",
            "unknown key(s) ['X']",
        ),
        (
            {"schedule_type": "EVERYDAY", "times": [{"StartTime": "10:00:00", "EndTime": "10:60:00"}]},
            "ScheduleTimes[0].EndTime",
            "'10:60:00' is out of range",
        ),
        (
            {"schedule_type": "EVERYDAY", "times": [{"StartTime": "10:00", "EndTime": "11:00:00"}]},
            "ScheduleTimes[0].StartTime",
            "expected HH:MM:SS",
        ),
        (
            {"schedule_type": "EVERYDAY", "times": [{"StartTime": "22:00:00", "EndTime": "24:00:00"}]},
            "ScheduleTimes[0].EndTime",
            "ends at 00:00:00",
        ),
        (
            {"schedule_type": "EVERYDAY", "times": [{"StartTime": 36000, "EndTime": "11:00:00"}]},
            "ScheduleTimes[0].StartTime",
            "quote it",
        ),
        (
            {
                "schedule_type": "EVERYDAY",
                "times": [
                    {"StartTime": "08:00:00", "EndTime": "09:00:00"},
                    {"StartTime": "10:00:00", "EndTime": "12:00:00"},
                    {"StartTime": "11:00:00", "EndTime": "14:00:00"},
                ],
                "overlap": "reject",
            },
            "ScheduleTimes",
            "ScheduleTimes[1] 10:00:00-12:00:00 and ScheduleTimes[2] 11:00:00-14:00:00 overlap",
        ),
        ({"schedule_type": "EVERYDAY", "is_polling": "yes"}, "IsPolling", "true or false"),
        ({"schedule_type": "EVERYDAY", "is_polling": True}, "SliceExecutionTime", "required"),
        (
            {"schedule_type": "EVERYDAY", "is_polling": True, "slice_execution_time": 60},
            "OverallExecutionTime",
            "required",
        ),
        (
            {
                "schedule_type": "EVERYDAY",
                "is_polling": True,
                "slice_execution_time": "0",
                "overall_execution_time": 1,
            },
            "SliceExecutionTime",
            "at least 1",
        ),
        (
            {
                "schedule_type": "EVERYDAY",
                "is_polling": True,
                "slice_execution_time": 5,
                "overall_execution_time": "1.5",
            },
            "OverallExecutionTime",
            "whole number",
        ),
        (
            {
                "schedule_type": "EVERYDAY",
                "is_polling": True,
                "slice_execution_time": 601,
                "overall_execution_time": 10,
            },
            "SliceExecutionTime",
            "longer than the polling period",
        ),
        ({"schedule_type": "ONCE"}, "once_date", "creation day"),
        ({"schedule_type": "EVERYDAY", "tz": "Mars/Olympus"}, "tz", "not a known IANA time zone"),
        ({"schedule_type": "EVERYDAY", "tz": "../etc/passwd"}, "tz", "not a known IANA time zone"),
        (
            {
                "schedule_type": "EVERYDAY",
                "data_source_times": [{"StartTime": "00:10:00", "EndTime": "00:05:00"}],
            },
            "DataSourceTimes[0]",
            "before StartTime 00:10:00",
        ),
        (
            {
                "schedule_type": "EVERYDAY",
                "data_source_times": '[{"StartTime":"0:00:00","EndTime":"1:99:00"}]',
            },
            "DataSourceTimes[0].EndTime",
            "minutes and seconds 00-59",
        ),
    ],
)
def test_parse_errors_name_the_field(kwargs: dict[str, object], field: str, text: str) -> None:
    kwargs = {"tz": "UTC", **kwargs}
    with pytest.raises(ScheduleError) as err:
        parse_schedule(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field
    assert text in err.value.message
    assert str(err.value).startswith(f"{field}: ")
    assert isinstance(err.value, ValueError)  # pydantic validators turn it into a validation error


@given(st.text(max_size=12) | st.integers() | st.none() | st.lists(st.integers(), max_size=3))
@settings(max_examples=200, deadline=None)
def test_garbage_never_crashes(value: object) -> None:
    for kind in ("EVERY_WEEK", "EVERY_MONTH"):
        try:
            parse_schedule(kind, value, value, tz="UTC", is_polling=value, data_source_times=value)
        except ScheduleError:
            pass
    for fn in (parse_time_of_day, parse_media_offset):
        try:
            fn(value)
        except ValueError as exc:
            assert repr(value)[:5] in str(exc) or isinstance(value, int)


def test_value_types_validate_themselves() -> None:
    with pytest.raises(ValueError, match="whole seconds"):
        TimeWindow(time(1, 0, 0, 5), time(2))
    with pytest.raises(ValueError, match="EndTime '7' is not a time of day"):
        TimeWindow.parse("01:00:00", "7")
    with pytest.raises(ValueError, match="longer than the polling period"):
        Polling(61, 1)
    with pytest.raises(ValueError, match="whole number"):
        Polling.parse("1", "ten")
    with pytest.raises(ScheduleError, match="must be empty for LONG_RUNNING"):
        Schedule(ScheduleType.LONG_RUNNING, (), (win("01:00:00", "02:00:00"),), "UTC")
    with pytest.raises(ScheduleError, match="must be empty for EVERYDAY"):
        Schedule(ScheduleType.EVERYDAY, (1,), (), "UTC")
    with pytest.raises(ValueError, match="timezone-aware"):
        is_active(sched("EVERYDAY"), datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="before start"):
        intervals(sched("EVERYDAY"), utc(2024, 1, 2), utc(2024, 1, 1))
    assert intervals(sched("EVERYDAY"), utc(2024, 1, 1), utc(2024, 1, 1)) == []
    assert win("22:00:00", "02:00:00").crosses_midnight and win("03:00:00", "03:00:00").is_instant
    assert str(win("22:00:00", "02:00:00")) == "22:00:00-02:00:00"


# ---------------------------------------------------------------------------------- DataSourceTimes


@PROPS
@given(
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 120)), max_size=5),
    st.integers(0, 300),
    st.integers(0, 300),
)
def test_clip_to_data_source_times_covers_exactly_the_spans(
    raw: list[tuple[int, int]], media_start: int, media_len: int
) -> None:
    spans = [DataSourceTime(s, s + n) for s, n in raw]
    media_end = media_start + media_len
    parts = clip_to_data_source_times(spans, media_start, media_end)
    for (s0, e0), (s1, e1) in itertools.pairwise(parts):
        assert e0 <= s1 and (s0, e0) < (s1, e1)
    for s, e in parts:
        assert media_start <= s <= e <= media_end and s < media_end
    for t in range(media_start, media_end):
        wanted = not spans or any(sp.start_s <= t < sp.end_s or sp.start_s == sp.end_s == t for sp in spans)
        got = any(s <= t < e or s == e == t for s, e in parts)
        assert got == wanted, t


def test_data_source_times_example() -> None:
    s = parse_schedule(
        "EVERYDAY",
        tz="UTC",
        data_source_times='[{"StartTime":"00:10:00","EndTime":"00:20:00"},{"StartTime":"00:15:00","EndTime":"00:30:00"},'
        '{"StartTime":"01:00:00","EndTime":"01:00:00"}]',
    )
    assert s.data_source_times[2].to_api() == {"StartTime": "01:00:00", "EndTime": "01:00:00"}
    assert clip_to_data_source_times(s.data_source_times, 0, 3000) == [(600.0, 1800.0)]
    assert clip_to_data_source_times(s.data_source_times, 900, 7200) == [(900.0, 1800.0), (3600.0, 3600.0)]
    assert clip_to_data_source_times((), 5, 65) == [(5.0, 65.0)]
    assert parse_data_source_times(None) == ()
