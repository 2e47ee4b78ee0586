"""Per-meter interval aggregation: alignment, means, energy, late readings."""

from __future__ import annotations

import dataclasses
import itertools
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattd.core.aggregate import ReadingAggregator
from wattd.core.readings import Flag, Reading

# A whole hour since the epoch, so 10 s and 60 s intervals start on it.
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def reading(sensor: int, at_s: float, **changes: Any) -> Reading:
    base = Reading(
        sensor=sensor,
        name=f"meter-{sensor}",
        time=T0 + timedelta(seconds=at_s),
        monotonic_s=5000.0 + at_s,
        watts=100.0,
        va=125.0,
        vrms=120.0,
        irms=1.0,
        power_factor=0.8,
        wh_total=1000.0 + at_s / 100,
        wh_delta=0.05,
        rssi_dbm=-60,
        port="p0",
    )
    return dataclasses.replace(base, **changes)


def seconds(r: Reading) -> float:
    return (r.time - T0).total_seconds()


# -- pass-through and settings ----------------------------------------------------


def test_interval_zero_passes_the_batch_itself_through() -> None:
    agg = ReadingAggregator(0)
    batch = [reading(1, 0), reading(1, 2), reading(2, 2)]
    assert not agg.active
    assert agg.add(batch) is batch
    assert agg.pending == 0
    assert agg.drain() == []


@pytest.mark.parametrize("bad", [-1.0, 3601.0, math.nan, math.inf])
def test_invalid_intervals_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        ReadingAggregator(bad)


# -- buckets ------------------------------------------------------------------------


def test_buckets_are_aligned_to_the_clock_not_to_the_first_reading() -> None:
    # Two aggregators that start at different moments cut the same intervals.
    early, late = ReadingAggregator(10), ReadingAggregator(10)
    assert early.add([reading(1, 3), reading(1, 7), reading(1, 9.999)]) == []
    assert late.add([reading(1, 7), reading(1, 9.999)]) == []
    out_early = early.add([reading(1, 10)])
    out_late = late.add([reading(1, 10)])
    assert [seconds(r) for r in out_early] == [9.999]
    assert [seconds(r) for r in out_late] == [9.999]
    # 10.0 opened the next interval, which closes at 20.0 and not at 19.999.
    assert early.add([reading(1, 19.999)]) == []
    assert [seconds(r) for r in early.add([reading(1, 20)])] == [19.999]


def test_one_point_per_sensor_per_interval() -> None:
    agg = ReadingAggregator(10)
    readings = [reading(s, t) for t in range(0, 60, 2) for s in (1, 2, 3)]
    out = [*agg.add(readings), *agg.drain()]
    assert len(out) == 6 * 3
    keys = [(r.sensor, int(seconds(r)) // 10) for r in out]
    assert len(set(keys)) == len(keys)
    # Each point carries the time of its interval's last reading.
    assert {seconds(r) for r in out} == {8, 18, 28, 38, 48, 58}


def test_means_are_hand_computed_and_the_rest_comes_from_the_last() -> None:
    agg = ReadingAggregator(60)
    inputs = [
        reading(
            1,
            0,
            watts=100.0,
            va=120.0,
            vrms=119.0,
            irms=1.0,
            rssi_dbm=-60,
            wh_delta=0.1,
            wh_total=10.1,
            flags=frozenset({Flag.DRIFT_CORRECTED}),
            cost_per_hour=0.01,
        ),
        reading(
            1,
            20,
            watts=110.0,
            va=130.0,
            vrms=120.0,
            irms=1.1,
            rssi_dbm=-61,
            wh_delta=0.2,
            wh_total=10.3,
            flags=frozenset({Flag.CLIPPED}),
            gap_s=12.5,
            cost_per_hour=0.02,
        ),
        reading(
            1,
            40,
            watts=130.0,
            va=150.0,
            vrms=121.0,
            irms=1.3,
            rssi_dbm=-65,
            wh_delta=0.3,
            wh_total=10.6,
            sample_interval_ms=1.41,
            port="p1",
            power_factor=None,
            cost_per_hour=0.03,
            cost_today=1.5,
        ),
    ]
    assert agg.add(inputs) == []
    (out,) = agg.drain()
    assert out.watts == pytest.approx(340.0 / 3)
    assert out.va == pytest.approx(400.0 / 3)
    assert out.vrms == pytest.approx(120.0)
    assert out.irms == pytest.approx(3.4 / 3)
    assert out.power_factor == pytest.approx(340.0 / 400.0)  # mean W / mean VA
    assert out.rssi_dbm == -62
    assert out.wh_delta == pytest.approx(0.6)
    assert out.wh_total == 10.6
    assert out.flags == {Flag.DRIFT_CORRECTED, Flag.CLIPPED}
    assert out.gap_s == 12.5
    assert out.cost_per_hour == pytest.approx(0.02)
    assert out.cost_today == 1.5
    assert out.time == inputs[-1].time
    assert out.monotonic_s == inputs[-1].monotonic_s
    assert out.sample_interval_ms == 1.41
    assert out.port == "p1"
    assert out.name == "meter-1"


def test_power_factor_is_none_only_when_no_reading_had_one() -> None:
    agg = ReadingAggregator(10)
    idle = [reading(1, t, watts=0.5, va=1.0, power_factor=None) for t in (0, 2, 4)]
    agg.add(idle)
    (out,) = agg.drain()
    assert out.power_factor is None
    mixed = [
        reading(1, 0, watts=0.0, va=0.0, power_factor=None),
        reading(1, 2, watts=90.0, va=100.0, power_factor=0.9),
    ]
    agg.add(mixed)
    (out,) = agg.drain()
    assert out.power_factor == pytest.approx(45.0 / 50.0)


def test_a_bucket_of_one_reading_is_that_reading() -> None:
    agg = ReadingAggregator(10)
    only = reading(1, 3, watts=42.0, power_factor=None)
    agg.add([only])
    assert agg.drain()[0] is only


def test_non_finite_figures_are_left_out_of_the_means() -> None:
    agg = ReadingAggregator(10)
    agg.add(
        [
            reading(1, 0, watts=100.0),
            reading(1, 2, watts=math.nan),
            reading(1, 4, watts=200.0),
        ]
    )
    (out,) = agg.drain()
    assert out.watts == pytest.approx(150.0)
    assert out.wh_delta == pytest.approx(0.15)


# -- closing ------------------------------------------------------------------------


def test_a_silent_sensor_is_emitted_when_another_shows_its_interval_closed() -> None:
    agg = ReadingAggregator(10)
    assert agg.add([reading(1, 2), reading(2, 3), reading(1, 6)]) == []
    # Sensor 2 falls silent; sensor 1's next interval closes both.
    out = agg.add([reading(1, 10)])
    assert sorted((r.sensor, seconds(r)) for r in out) == [(1, 6), (2, 3)]
    assert agg.pending == 1


def test_drain_emits_every_open_bucket_once() -> None:
    agg = ReadingAggregator(60)
    agg.add([reading(1, 1), reading(2, 2), reading(1, 3, watts=300.0)])
    assert agg.pending == 2
    out = agg.drain()
    assert {r.sensor: r.watts for r in out} == {1: 200.0, 2: 100.0}
    assert agg.pending == 0
    assert agg.drain() == []
    # Aggregation carries on afterwards.
    agg.add([reading(1, 70)])
    assert [seconds(r) for r in agg.drain()] == [70]


def test_a_late_reading_is_emitted_on_its_own_and_nothing_is_lost() -> None:
    agg = ReadingAggregator(10)
    agg.add([reading(1, 10, watts=100.0), reading(1, 12, watts=100.0)])
    late = reading(1, 7, watts=900.0, wh_delta=0.5)
    out = agg.add([late])
    # The open interval is emitted unmixed; the late reading waits in its own.
    assert [(seconds(r), r.watts) for r in out] == [(12, 100.0)]
    out = agg.add([reading(1, 14, watts=100.0)])
    assert out == [late]
    (rest,) = agg.drain()
    assert (seconds(rest), rest.watts) == (14, 100.0)


def test_a_clock_stepped_back_restarts_aggregation_without_a_flood() -> None:
    agg = ReadingAggregator(10)
    before = [reading(1, t) for t in range(3600, 3620, 2)]
    after = [reading(1, t) for t in range(0, 60, 2)]  # an hour earlier
    out = [*agg.add(before), *agg.add(after), *agg.drain()]
    # 2 intervals before the step, 6 after: neither one point per reading
    # (a flood) nor one point an hour later (a stall).
    assert [seconds(r) for r in out] == [3608, 3618, 8, 18, 28, 38, 48, 58]
    total_in = sum(r.wh_delta for r in before + after)
    assert sum(r.wh_delta for r in out) == pytest.approx(total_in)


# -- properties ---------------------------------------------------------------------


_STEP = st.tuples(
    st.integers(min_value=1, max_value=4),  # sensor
    st.floats(min_value=0, max_value=5),  # seconds since the previous reading
    st.integers(min_value=0, max_value=19),  # 0: the clock is stepped back
    st.floats(min_value=0, max_value=120),  # by this much
    st.floats(min_value=-50, max_value=3000),  # watts
    st.floats(min_value=0, max_value=2),  # wh_delta
    st.frozensets(st.sampled_from(list(Flag)), max_size=2),
)


@st.composite
def streams(draw: st.DrawFn) -> list[Reading]:
    """Readings of up to four meters in arrival order, the clock rarely stepped."""
    at = draw(st.floats(min_value=0, max_value=3600))
    out: list[Reading] = []
    for sensor, gap, step, back, watts, wh_delta, flags in draw(
        st.lists(_STEP, max_size=60)
    ):
        at += -back if step == 0 else gap
        out.append(
            reading(
                sensor,
                at,
                watts=watts,
                va=abs(watts) + 10.0,
                wh_delta=wh_delta,
                wh_total=float(len(out)),
                flags=flags,
            )
        )
    return out


@settings(max_examples=200, deadline=None)
@given(
    readings=streams(),
    interval=st.sampled_from([0.5, 1.0, 2.0, 7.5, 10.0, 60.0]),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=6),
)
def test_energy_is_conserved_and_batches_do_not_matter(
    readings: list[Reading], interval: float, cuts: list[int]
) -> None:
    whole = ReadingAggregator(interval)
    out = [*whole.add(readings), *whole.drain()]
    # The same stream handed over in arbitrary batches gives the same points.
    split = ReadingAggregator(interval)
    bounds = [0, *sorted(c for c in cuts if c <= len(readings)), len(readings)]
    pieces: list[Reading] = []
    for lo, hi in itertools.pairwise(bounds):
        pieces.extend(split.add(readings[lo:hi]))
    pieces.extend(split.drain())
    assert pieces == out
    for sensor in {r.sensor for r in readings}:
        ins = [r for r in readings if r.sensor == sensor]
        outs = [r for r in out if r.sensor == sensor]
        assert 1 <= len(outs) <= len(ins)
        assert math.fsum(r.wh_delta for r in outs) == pytest.approx(
            math.fsum(r.wh_delta for r in ins), abs=1e-9
        )
        # The last point carries the meter's latest energy total.
        assert outs[-1].wh_total == ins[-1].wh_total
        assert set().union(*(r.flags for r in outs)) == set().union(
            *(r.flags for r in ins)
        )
        # Every point is stamped with one of the meter's own reading times,
        # in the order they arrived.
        arrival = {r.time: i for i, r in enumerate(ins)}
        order = [arrival[r.time] for r in outs]
        assert order == sorted(order)
        for r in outs:
            assert min(x.watts for x in ins) - 1e-9 <= r.watts
            assert r.watts <= max(x.watts for x in ins) + 1e-9


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(1, 3), st.floats(min_value=0, max_value=4)),
        max_size=60,
    ),
    interval=st.sampled_from([1.0, 5.0, 10.0]),
)
def test_with_a_steady_clock_each_interval_is_one_point_within_it(
    steps: list[tuple[int, float]], interval: float
) -> None:
    at = 0.0
    readings = []
    for sensor, gap in steps:
        at += gap
        readings.append(reading(sensor, at))
    agg = ReadingAggregator(interval)
    out = [*agg.add(readings), *agg.drain()]
    step_ns = round(interval * 1e9)
    wanted = {(r.sensor, r.time_ns // step_ns) for r in readings}
    got = [(r.sensor, r.time_ns // step_ns) for r in out]
    assert sorted(got) == sorted(wanted)
    # Each point is the last reading time of its meter in that interval.
    last = {(r.sensor, r.time_ns // step_ns): r.time for r in readings}
    assert all(last[(r.sensor, r.time_ns // step_ns)] == r.time for r in out)


# -- silence ----------------------------------------------------------------------


def test_silence_closes_open_buckets_after_two_intervals_or_the_minimum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agg = ReadingAggregator(10)
    assert agg.add([reading(1, 0), reading(2, 1), reading(1, 2)], now_s=100.0) == []
    assert agg.pending == 2
    # Two intervals are 20 s of silence: not yet at 19 s.
    assert agg.expire_idle(119.0) == []
    closed = agg.expire_idle(120.0)
    assert [(r.sensor, seconds(r)) for r in closed] == [(1, 2.0), (2, 1.0)]
    assert agg.pending == 0
    assert agg.expire_idle(500.0) == []
    # A short interval still waits for the minimum silence.
    monkeypatch.setattr("wattd.core.aggregate.IDLE_MIN_S", 5.0)
    short = ReadingAggregator(1)
    short.add([reading(3, 0)], now_s=0.0)
    assert short.expire_idle(4.9) == []
    assert [r.sensor for r in short.expire_idle(5.0)] == [3]


def test_silence_is_counted_from_the_last_reading() -> None:
    agg = ReadingAggregator(10)
    agg.add([reading(1, 0)], now_s=0.0)
    agg.add([reading(1, 5)], now_s=15.0)
    agg.add([], now_s=30.0)  # an empty batch is no reading
    assert agg.expire_idle(34.9) == []
    assert len(agg.expire_idle(35.0)) == 1
