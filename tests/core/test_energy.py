"""Energy integration: trapezoids, gaps, a total that never goes down."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattd.core.energy import DEFAULT_MAX_GAP_S, EnergyIntegrator, EnergyState
from wattd.errors import ConfigError, StateError


def feed(
    integrator: EnergyIntegrator, readings: list[tuple[float, float]]
) -> list[float]:
    return [integrator.update(watts, at_s).wh_delta for watts, at_s in readings]


def test_first_reading_only_starts_the_clock() -> None:
    step = EnergyIntegrator().update(500.0, 100.0)
    assert (step.wh_delta, step.wh_total, step.gap_s) == (0.0, 0.0, None)


def test_trapezoid_hand_computed() -> None:
    integrator = EnergyIntegrator(max_gap_s=60.0)
    # 0 W -> 100 W over 36 s: mean 50 W * 36 s = 1800 J = 0.5 Wh.
    # 100 W -> 100 W over 36 s: 3600 J = 1.0 Wh.
    # 100 W -> 300 W over 9 s: 200 W * 9 s = 1800 J = 0.5 Wh.
    deltas = feed(integrator, [(0.0, 0.0), (100.0, 36.0), (100.0, 72.0), (300.0, 81.0)])
    assert deltas == pytest.approx([0.0, 0.5, 1.0, 0.5])
    assert integrator.wh_total == pytest.approx(2.0)


def test_default_gap_limit() -> None:
    assert EnergyIntegrator().max_gap_s == DEFAULT_MAX_GAP_S == 10.0


def test_a_long_gap_is_reported_and_not_integrated() -> None:
    integrator = EnergyIntegrator(max_gap_s=10.0)
    integrator.update(100.0, 0.0)
    step = integrator.update(100.0, 10.5)
    assert step.gap_s == pytest.approx(10.5)
    assert step.wh_delta == 0.0
    assert step.wh_total == 0.0
    # The reading after the gap starts a new segment: only 2 s are integrated.
    step = integrator.update(100.0, 12.5)
    assert step.gap_s is None
    assert step.wh_delta == pytest.approx(100.0 * 2.0 / 3600.0)


def test_a_gap_of_exactly_the_limit_is_integrated() -> None:
    integrator = EnergyIntegrator(max_gap_s=10.0)
    integrator.update(360.0, 0.0)
    step = integrator.update(360.0, 10.0)
    assert step.gap_s is None
    assert step.wh_delta == pytest.approx(1.0)


def test_time_going_backwards_is_ignored() -> None:
    integrator = EnergyIntegrator()
    integrator.update(100.0, 10.0)
    step = integrator.update(5000.0, 5.0)
    assert (step.wh_delta, step.wh_total, step.gap_s) == (0.0, 0.0, None)
    step = integrator.update(100.0, 12.0)
    assert step.wh_delta == pytest.approx(100.0 * 2.0 / 3600.0)


def test_same_timestamp_adds_nothing_but_updates_the_level() -> None:
    integrator = EnergyIntegrator()
    integrator.update(100.0, 1.0)
    assert integrator.update(300.0, 1.0).wh_delta == 0.0
    assert integrator.update(300.0, 4.6).wh_delta == pytest.approx(300.0 * 3.6 / 3600)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_readings_are_ignored(bad: float) -> None:
    integrator = EnergyIntegrator()
    integrator.update(100.0, 0.0)
    assert integrator.update(bad, 2.0).wh_delta == 0.0
    assert integrator.update(100.0, bad).wh_delta == 0.0
    assert integrator.update(100.0, 3.6).wh_delta == pytest.approx(0.1)


def test_overflowing_watts_do_not_poison_the_total() -> None:
    integrator = EnergyIntegrator()
    integrator.update(1e308, 0.0)
    assert integrator.update(1e308, 5.0).wh_delta == 0.0
    assert math.isfinite(integrator.wh_total)


def test_back_feed_must_be_repaid_before_the_total_rises() -> None:
    integrator = EnergyIntegrator()
    integrator.update(3600.0, 0.0)
    integrator.update(3600.0, 10.0)  # +10 Wh
    assert integrator.wh_total == pytest.approx(10.0)
    integrator.update(-3600.0, 10.0)
    step = integrator.update(-3600.0, 14.0)  # -4 Wh
    assert step.wh_delta == 0.0
    assert integrator.wh_total == pytest.approx(10.0)
    assert integrator.state.wh_register == pytest.approx(6.0)
    integrator.update(3600.0, 14.0)
    step = integrator.update(3600.0, 17.0)  # +3 Wh: register 9, total still 10
    assert step.wh_delta == 0.0
    step = integrator.update(3600.0, 19.0)  # +2 Wh: register 11
    assert step.wh_delta == pytest.approx(1.0)
    assert integrator.wh_total == pytest.approx(11.0)


def test_no_load_noise_cancels_instead_of_accumulating() -> None:
    rng = random.Random(42)
    integrator = EnergyIntegrator()
    clipped_wh = 0.0
    previous = 0.0
    t = 0.0
    for _ in range(20_000):  # ~11.5 hours of frames
        watts = rng.gauss(0.0, 2.0)
        t += 2.08
        integrator.update(watts, t)
        clipped_wh += max(0.0, 0.5 * (previous + watts)) * 2.08 / 3600.0
        previous = watts
    # Clipping each step at zero would have invented ~5 Wh.
    assert clipped_wh > 3.0
    assert integrator.wh_total < 0.3


readings = st.lists(
    st.tuples(
        st.floats(-5000.0, 5000.0) | st.sampled_from([math.nan, math.inf]),
        st.floats(-20.0, 30.0),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps=readings, max_gap=st.floats(0.5, 60.0))
def test_total_never_decreases(
    steps: list[tuple[float, float]], max_gap: float
) -> None:
    integrator = EnergyIntegrator(max_gap_s=max_gap)
    t = 0.0
    total = 0.0
    for watts, dt in steps:
        t += dt
        step = integrator.update(watts, t)
        assert step.wh_delta >= 0.0
        assert step.wh_total >= total
        assert step.wh_total - total == pytest.approx(step.wh_delta, abs=1e-9)
        assert step.wh_total == integrator.wh_total
        assert integrator.state.wh_register <= integrator.wh_total
        total = step.wh_total


@settings(max_examples=100, deadline=None)
@given(
    watts=st.floats(0.0, 3000.0),
    # Below max_gap_s with room: summed float times can land a hair above it.
    gaps=st.lists(st.floats(0.01, 9.9), min_size=1, max_size=40),
)
def test_constant_power_integrates_exactly(watts: float, gaps: list[float]) -> None:
    integrator = EnergyIntegrator(max_gap_s=10.0)
    t = 0.0
    integrator.update(watts, t)
    for gap in gaps:
        t += gap
        integrator.update(watts, t)
    assert integrator.wh_total == pytest.approx(watts * t / 3600.0, rel=1e-9, abs=1e-12)


def test_restored_state_continues_like_an_uninterrupted_run() -> None:
    rng = random.Random(3)
    sequence = [(rng.uniform(-50.0, 400.0), 2.0 * k) for k in range(200)]
    whole = EnergyIntegrator()
    feed(whole, sequence)
    first = EnergyIntegrator()
    feed(first, sequence[:120])
    second = EnergyIntegrator(state=first.state)
    feed(second, sequence[120:])
    assert second.state == whole.state


def test_json_state_keeps_totals_but_not_the_old_clock() -> None:
    integrator = EnergyIntegrator()
    feed(integrator, [(3600.0, 0.0), (3600.0, 5.0), (-3600.0, 5.0), (-3600.0, 7.0)])
    saved = json.loads(json.dumps(integrator.state.to_json_dict()))
    assert saved == {"wh_total": pytest.approx(5.0), "wh_register": pytest.approx(3.0)}
    restored = EnergyIntegrator(state=EnergyState.from_json_dict(saved))
    assert restored.wh_total == pytest.approx(5.0)
    # A new process has a new monotonic clock: the first reading starts afresh.
    assert restored.update(3600.0, 0.5).wh_delta == 0.0
    restored.update(3600.0, 4.5)  # +4 Wh on a register of 3
    assert restored.wh_total == pytest.approx(7.0)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"wh_total": "12", "wh_register": 1.0},
        {"wh_total": 1.0, "wh_register": True},
        {"wh_total": math.nan, "wh_register": 0.0},
        {"wh_total": 1.0, "wh_register": 2.0},
    ],
)
def test_bad_saved_state_is_a_state_error(data: dict[str, object]) -> None:
    with pytest.raises(StateError):
        EnergyState.from_json_dict(data)


def test_half_a_last_reading_is_rejected() -> None:
    with pytest.raises(StateError, match="both"):
        EnergyState(last_watts=10.0)


@pytest.mark.parametrize("gap", [0.0, -1.0, math.nan, math.inf])
def test_bad_gap_limit(gap: float) -> None:
    with pytest.raises(ConfigError, match="max_gap_s"):
        EnergyIntegrator(max_gap_s=gap)
