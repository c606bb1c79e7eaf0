"""The pts sampler and the keyframe-only rule (pure functions: no streams needed)."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.sampling import GopEstimator, Sampler, SamplingError, interval_for, keyframe_only, plan


def take(sampler: Sampler, pts: list[float]) -> list[float]:
    return [p for p in pts if sampler.due(p)]


def frames(fps: float, seconds: float, start: float = 0.0) -> list[float]:
    return [start + i / fps for i in range(round(fps * seconds))]


@pytest.mark.parametrize(
    "kwargs",
    [{"spf": 0.5}, {"spf": 3601}, {"fps": 0}, {"fps": 61}, {}, {"spf": 2, "fps": 2}, {"spf": float("nan")}],
)
def test_rates_outside_the_documented_ranges_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(SamplingError):
        Sampler(**kwargs)


def test_range_edges_are_accepted() -> None:
    assert interval_for(spf=1) == 1.0
    assert interval_for(spf=3600) == 3600.0
    assert interval_for(fps=60) == pytest.approx(1 / 60)
    assert interval_for(fps=1) == 1.0


def test_spf2_on_25fps_gives_one_frame_per_two_seconds_of_stream_time() -> None:
    got = take(Sampler(spf=2), frames(25, 60))
    assert len(got) == 30
    assert [round(b - a, 6) for a, b in itertools.pairwise(got)] == [2.0] * 29


def test_fps5_on_25fps_takes_every_fifth_frame() -> None:
    pts = frames(25, 10)
    got = take(Sampler(fps=5), pts)
    assert got == pts[::5]


def test_asking_more_than_the_stream_has_takes_every_frame() -> None:
    pts = frames(25, 4)
    assert take(Sampler(fps=60), pts) == pts


def test_a_gap_in_the_stream_does_not_turn_into_a_burst() -> None:
    pts = frames(25, 3.9) + frames(25, 6, start=3.96)  # frames 1.9 .. 3.95 lost... then dense again
    pts = [p for p in pts if not 1.9 <= p < 3.95]
    got = take(Sampler(spf=2), pts)
    spacing = [b - a for a, b in itertools.pairwise(got)]
    assert min(spacing) >= 2.0 - 1e-9
    assert got == pytest.approx([0.0, 3.96, 5.96, 7.96])  # the grid restarts after the gap


def test_a_reconnect_that_restarts_pts_keeps_the_schedule() -> None:
    sampler = Sampler(spf=2)
    first = take(sampler, frames(25, 5.0))  # 0, 2, 4; last pts 4.96, next due 6.0
    second = take(sampler, frames(25, 5.0, start=0.0))  # pts restart at 0: next due 1.04 on the new clock
    assert first == [0.0, 2.0, 4.0]
    assert second[0] == pytest.approx(1.04, abs=0.021)
    assert [round(b - a, 6) for a, b in itertools.pairwise(second)] == [2.0]


def test_a_huge_forward_jump_is_a_splice_not_a_stall() -> None:
    sampler = Sampler(spf=10)
    take(sampler, frames(25, 3))  # took 0, next due 10
    later = take(sampler, frames(25, 30, start=95_000.0))  # e.g. a 33-bit wrap seen the other way round
    assert later[0] == pytest.approx(95_000 + 7.04, abs=0.05)
    assert len(later) == 3


def test_keyframes_only_input_at_the_gop_rate_is_all_taken() -> None:
    keys = [i * 2.0 for i in range(30)]
    assert take(Sampler(spf=2), keys) == keys
    assert len(take(Sampler(spf=4), keys)) == 15


def test_rate_change_applies_from_the_last_frame_taken() -> None:
    sampler = Sampler(spf=5)
    pts = frames(25, 20)
    got = take(sampler, pts[:250])  # 0..9.96 -> 0, 5
    assert got == [0.0, 5.0]
    sampler.set_rate(fps=1)
    assert take(sampler, pts[250:])[:3] == [pytest.approx(10.0), pytest.approx(11.0), pytest.approx(12.0)]
    with pytest.raises(SamplingError):
        sampler.set_rate(spf=0)
    assert sampler.interval_s == 1.0


def test_jittery_timestamps_keep_the_average_rate() -> None:
    rnd = random.Random(7)
    pts = [i / 25 + rnd.uniform(-0.01, 0.01) for i in range(25 * 120)]
    pts.sort()
    assert 59 <= len(take(Sampler(spf=2), pts)) <= 61


@settings(max_examples=200, deadline=None)
@given(
    interval=st.floats(min_value=1 / 60, max_value=30),
    steps=st.lists(st.floats(min_value=0.001, max_value=5), min_size=1, max_size=400),
)
def test_never_more_than_one_frame_per_interval_on_average(interval: float, steps: list[float]) -> None:
    sampler = Sampler(spf=interval) if interval >= 1 else Sampler(fps=1 / interval)
    pts, t = [], 0.0
    for step in steps:
        t += step
        pts.append(t)
    got = take(sampler, pts)
    assert got and got[0] == pts[0]
    duration = pts[-1] - pts[0]
    assert len(got) <= duration / sampler.interval_s + 2
    tol = min(0.02, 0.25 * sampler.interval_s)
    assert all(b - a >= 0.5 * sampler.interval_s - tol - 1e-9 for a, b in itertools.pairwise(got))


def test_gop_is_the_longest_recent_keyframe_spacing() -> None:
    gop = GopEstimator()
    assert gop.gop_s is None
    for t in (0.0, 2.0, 3.0, 5.0):  # a scene-cut keyframe at 3.0
        gop.observe_keyframe(t)
    assert gop.gop_s == 2.0
    gop.observe_keyframe(0.5)  # pts went backwards: start measuring again
    assert gop.gop_s is None


def test_keyframe_only_rule() -> None:
    assert keyframe_only(2.0, 2.0)
    assert keyframe_only(2.0, 2.01)  # 90 kHz rounding slack
    assert not keyframe_only(1.0, 2.0)
    assert not keyframe_only(2.0, None)
    assert not keyframe_only(None, 2.0)
    assert plan(None, 2.0, None).decode is False
    assert plan(2.0, None, 2.0).keyframes_only  # declared GOP until one is measured
    assert not plan(2.0, 4.0, 2.0).keyframes_only  # measured GOP wins
