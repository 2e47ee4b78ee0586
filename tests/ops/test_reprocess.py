"""Reprocessing stored history from the raw frame archive after a recalibration.

The store is filled the way the daemon fills it: simulated meters send frames,
a pipeline with a *wrong* calibration turns them into readings, and both the
readings and the exact wire bytes go into the store. Reprocessing with the
right calibration must then give exactly what a pipeline with the right
calibration computes directly from the same frames.
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from wattd.config import Config, StoreConfig, pipeline_settings
from wattd.core.frames import FrameDecoder
from wattd.core.iosample import IoSampleFrame
from wattd.core.pipeline import ReadingPipeline
from wattd.core.readings import FrameRecord, Reading
from wattd.errors import StoreError
from wattd.ops.reprocess import HEARTBEAT_FRESH_S, reprocess
from wattd.sources.simulate import MeterModel, ResistiveLoad, Simulator, StepsLoad
from wattd.storage.store import (
    MINUTE_NS,
    NS_PER_S,
    WRITER_HEARTBEAT_KEY,
    Resolution,
    Store,
    StoredReading,
    to_ns,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
PERIOD_S = 20.0  # one frame per 20 s keeps three hours of history small
HOURS = 3
FAR = 1 << 62


def meters() -> list[MeterModel]:
    heater = MeterModel.with_quirks(1, ResistiveLoad(watts=800.0), seed=7)
    steps = StepsLoad(
        steps=((0.0, ResistiveLoad(watts=60.0)), (5000.0, ResistiveLoad(watts=1500.0)))
    )
    lamp_then_kettle = MeterModel.with_quirks(2, steps, seed=7)
    return [
        dataclasses.replace(heater, frame_period_s=PERIOD_S),
        dataclasses.replace(lamp_then_kettle, frame_period_s=PERIOD_S),
    ]


def make_config(state_dir: Path, *, wrong: bool, **extra: Any) -> Config:
    sensors = []
    for m in meters():
        cal: dict[str, Any] = {**m.calibration_values(), "name": f"meter{m.address}"}
        if wrong and m.address == 1:
            cal["current_zero"] = cal["current_zero"] + 9.0
            cal["counts_per_amp"] = 13.0
        sensors.append(cal)
    return Config.model_validate(
        {
            "state_dir": str(state_dir),
            "sensors": sensors,
            "energy": {"max_gap_s": 60.0},
            "store": StoreConfig().model_dump(),
            **extra,
        }
    )


@dataclasses.dataclass(frozen=True)
class Archived:
    at: datetime
    frame: IoSampleFrame


def simulate() -> list[Archived]:
    sim = Simulator(meters(), seed=3)
    out: list[Archived] = []
    for sf in sim.advance(HOURS * 3600.0):
        for event in FrameDecoder(1).feed(sf.data):
            assert isinstance(event, IoSampleFrame)
            out.append(Archived(T0 + timedelta(seconds=sf.time_s), event))
    return out


def record(frames: list[Archived]) -> list[FrameRecord]:
    return [
        FrameRecord(
            time=a.at,
            port="/dev/ttyUSB0",
            api_mode=1,
            kind="io",
            raw=a.frame.raw,
            sensor=a.frame.sensor_id,
        )
        for a in frames
    ]


def compute(
    cfg: Config, frames: list[Archived], *, monotonic_base: float | None
) -> list[Reading]:
    """Readings of a pipeline; ``monotonic_base`` None uses the wall clock's seconds."""
    pipeline = ReadingPipeline(pipeline_settings(cfg))
    out = []
    for a in frames:
        mono = (
            to_ns(a.at) / NS_PER_S
            if monotonic_base is None
            else monotonic_base + (a.at - T0).total_seconds()
        )
        r = pipeline.process(a.frame, time=a.at, monotonic_s=mono, port="/dev/ttyUSB0")
        if r is not None:
            out.append(r)
    return out


@pytest.fixture(scope="module")
def frames() -> list[Archived]:
    return simulate()


@pytest.fixture
def live(
    tmp_path: Path, frames: list[Archived]
) -> Iterator[tuple[Store, list[Reading]]]:
    """A store as the daemon left it, with readings from the wrong calibration."""
    wrong = make_config(tmp_path, wrong=True)
    # The daemon's monotonic clock has nothing to do with the wall clock.
    readings = compute(wrong, frames, monotonic_base=91_234.5)
    store = Store.open(wrong.store_path)
    records = record(frames)
    for i in range(0, len(readings), 200):
        store.add(readings[i : i + 200])
    store.add(frames=records)
    yield store, readings
    store.close()


FIGURES = (
    "watts",
    "va",
    "vrms",
    "irms",
    "power_factor",
    "sample_interval_ms",
    "cycles",
)


def same_figures(got: StoredReading, want: Reading) -> None:
    assert got.sensor == want.sensor
    assert got.time_ns == want.time_ns
    for name in FIGURES:
        assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-12), name
    assert got.flags == {str(f) for f in want.flags}


def test_full_history_reprocess_equals_direct_computation(
    tmp_path: Path, live: tuple[Store, list[Reading]], frames: list[Archived]
) -> None:
    store, old = live
    right = make_config(tmp_path, wrong=False)
    summary = reprocess(
        store, right, to_ns(T0), to_ns(T0 + timedelta(hours=HOURS)), now_ns=to_ns(T0)
    )
    direct = compute(right, frames, monotonic_base=None)
    got = store.readings(0, FAR)
    by_key = {(r.sensor, r.time_ns): r for r in direct}
    assert len(got) == len(direct) == len(old)
    for g in got:
        want = by_key[(g.sensor, g.time_ns)]
        same_figures(g, want)
        assert g.wh_delta == pytest.approx(want.wh_delta, rel=1e-12, abs=1e-12)
        assert g.wh_total == pytest.approx(want.wh_total, rel=1e-12)
    # The wrong calibration was really wrong for meter 1, and right for meter 2.
    old_1 = [r for r in old if r.sensor == 1]
    new_1 = [r for r in got if r.sensor == 1]
    assert new_1[-1].watts is not None
    assert abs(old_1[-1].watts - new_1[-1].watts) > 50
    assert new_1[-1].watts == pytest.approx(800.0, rel=0.03)
    assert abs(old_1[-1].irms - new_1[-1].irms) > 0.3  # type: ignore[operator]
    # Energy of meter 1 is now the true energy (a heater: 800 W for ~3 h).
    total_1 = new_1[-1].wh_total
    span_h = (new_1[-1].time_ns - new_1[0].time_ns) / NS_PER_S / 3600
    assert total_1 == pytest.approx(800.0 * span_h, rel=0.03)
    # The summary reports before and after per sensor.
    changes = {c.sensor: c for c in summary.sensors}
    assert summary.frames == len(frames)
    assert changes[1].readings_before == changes[1].readings_after == len(old_1)
    assert changes[1].wh_before == pytest.approx(sum(r.wh_delta for r in old_1))
    assert changes[1].wh_after == pytest.approx(total_1)
    assert changes[2].wh_after == pytest.approx(changes[2].wh_before, rel=1e-6)
    assert not summary.dry_run
    # Rollups were rebuilt from the new readings.
    minutes = store.rollups("1m", 0, FAR, [1])
    assert sum(m.wh for m in minutes) == pytest.approx(total_1)
    assert store.last_wh_totals()[1] == pytest.approx(total_1)


def test_sub_range_reprocess_keeps_the_series_consistent(
    tmp_path: Path, live: tuple[Store, list[Reading]], frames: list[Archived]
) -> None:
    store, old = live
    right = make_config(tmp_path, wrong=False)
    lo, hi = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    # A range inside the hour is widened to the whole hour.
    summary = reprocess(
        store,
        right,
        to_ns(lo + timedelta(minutes=10)),
        to_ns(hi - timedelta(minutes=5)),
        now_ns=to_ns(T0),
    )
    assert (summary.from_ns, summary.to_ns) == (to_ns(lo), to_ns(hi))
    assert summary.warmup_frames > 0
    direct = {
        (r.sensor, r.time_ns): r for r in compute(right, frames, monotonic_base=None)
    }
    got = store.readings(0, FAR)
    assert len(got) == len(old)
    for sensor in (1, 2):
        olds = [r for r in old if r.sensor == sensor]
        news = [r for r in got if r.sensor == sensor]
        inside = [r for r in news if to_ns(lo) <= r.time_ns < to_ns(hi)]
        seed = [r for r in olds if r.time < lo][-1].wh_total
        old_end = [r for r in olds if r.time < hi][-1].wh_total
        total = seed
        for g in inside:
            want = direct[(sensor, g.time_ns)]
            same_figures(g, want)
            # Warm-up gave the first trapezoid the right previous reading too.
            assert g.wh_delta == pytest.approx(want.wh_delta, rel=1e-9, abs=1e-12)
            total += g.wh_delta
            assert g.wh_total == pytest.approx(total, rel=1e-12)
        shift = inside[-1].wh_total - old_end  # type: ignore[operator]
        change = {c.sensor: c for c in summary.sensors}[sensor]
        assert change.shift_wh == pytest.approx(shift)
        for o, g in zip(olds, news, strict=True):
            assert o.time_ns == g.time_ns
            if o.time < lo:
                assert g.wh_total == o.wh_total
                assert g.watts == o.watts
            elif o.time >= hi:
                assert g.wh_total == pytest.approx(o.wh_total + shift, rel=1e-12)
                assert g.wh_delta == o.wh_delta
        # No jump at either edge: each total is the previous one plus its delta.
        for a, b in itertools.pairwise(news):
            assert a.wh_total is not None
            assert b.wh_total == pytest.approx(a.wh_total + b.wh_delta, rel=1e-9), (
                b.time
            )
        assert change.later_readings == len([r for r in olds if r.time >= hi])
        assert store.last_wh_totals()[sensor] == pytest.approx(news[-1].wh_total)
        # Rollups agree with the readings everywhere, edges included.
        hours = store.rollups("1h", 0, FAR, [sensor])
        for h in hours:
            in_h = [r for r in news if h.start_ns <= r.time_ns < h.end_ns]
            assert h.wh_total_last == pytest.approx(in_h[-1].wh_total)
            assert h.n_readings == len(in_h)
        assert sum(h.wh for h in hours) == pytest.approx(sum(r.wh_delta for r in news))
    meter_1 = {c.sensor: c for c in summary.sensors}[1]
    assert meter_1.wh_after != pytest.approx(meter_1.wh_before, rel=0.01)
    # Every bucket, including those just outside the range, equals a rebuild of
    # the whole history from the final readings.
    resolutions: tuple[Resolution, ...] = ("1m", "1h")
    kept = {res: store.rollups(res, 0, FAR) for res in resolutions}
    store.rebuild_rollups(to_ns(T0), to_ns(T0 + timedelta(hours=HOURS)))
    for res, rows in kept.items():
        fresh = store.rollups(res, 0, FAR)
        assert [(r.sensor, r.start_ns, r.n_readings) for r in rows] == [
            (r.sensor, r.start_ns, r.n_readings) for r in fresh
        ]
        for kept_row, fresh_row in zip(rows, fresh, strict=True):
            assert kept_row.wh == pytest.approx(fresh_row.wh, rel=1e-9, abs=1e-9)
            assert kept_row.wh_total_last == pytest.approx(
                fresh_row.wh_total_last, rel=1e-12
            )


def test_dry_run_reports_the_same_and_changes_nothing(
    tmp_path: Path, live: tuple[Store, list[Reading]]
) -> None:
    store, _old = live
    right = make_config(tmp_path, wrong=False)
    span = (to_ns(T0 + timedelta(hours=1)), to_ns(T0 + timedelta(hours=2)))
    before = (
        store.readings(0, FAR),
        store.rollups("1m", 0, FAR),
        store.last_wh_totals(),
    )
    # A live daemon does not stop a dry run.
    store.set_meta(WRITER_HEARTBEAT_KEY, to_ns(T0))
    dry = reprocess(store, right, *span, now_ns=to_ns(T0), dry_run=True)
    assert dry.dry_run
    assert (
        store.readings(0, FAR),
        store.rollups("1m", 0, FAR),
        store.last_wh_totals(),
    ) == before
    store.set_meta(WRITER_HEARTBEAT_KEY, None)
    real = reprocess(store, right, *span, now_ns=to_ns(T0))
    assert dataclasses.replace(dry, dry_run=False) == real


def test_refuses_while_a_daemon_writes(
    tmp_path: Path, live: tuple[Store, list[Reading]]
) -> None:
    store, _old = live
    right = make_config(tmp_path, wrong=False)
    now = to_ns(T0 + timedelta(days=1))
    store.set_meta(WRITER_HEARTBEAT_KEY, now - 5 * NS_PER_S)
    with pytest.raises(StoreError, match="daemon is writing"):
        reprocess(store, right, to_ns(T0), to_ns(T0 + timedelta(hours=1)), now_ns=now)
    # A heartbeat left by a crashed daemon goes stale.
    stale = now - round((HEARTBEAT_FRESH_S + 1) * NS_PER_S)
    store.set_meta(WRITER_HEARTBEAT_KEY, stale)
    summary = reprocess(
        store, right, to_ns(T0), to_ns(T0 + timedelta(hours=1)), now_ns=now
    )
    assert summary.frames > 0


def test_refuses_ranges_whose_frames_are_gone(
    tmp_path: Path, live: tuple[Store, list[Reading]]
) -> None:
    store, _old = live
    right = make_config(tmp_path, wrong=False)
    cfg = StoreConfig(
        frames_retention_days=1,
        readings_retention_days=0,
        rollup_1m_retention_days=0,
        rollup_1h_retention_days=0,
    )
    # One day after T0 + 1 h: the first hour's frames are gone.
    store.apply_retention(cfg, now_ns=to_ns(T0 + timedelta(days=1, hours=1)))
    before = store.readings(0, FAR)
    with pytest.raises(StoreError, match="no longer archived"):
        reprocess(store, right, to_ns(T0), to_ns(T0 + timedelta(hours=2)), now_ns=0)
    assert store.readings(0, FAR) == before
    later = reprocess(
        store,
        right,
        to_ns(T0 + timedelta(hours=1)),
        to_ns(T0 + timedelta(hours=2)),
        now_ns=0,
    )
    assert later.frames > 0


def test_readings_without_frames_are_not_deleted(
    tmp_path: Path, live: tuple[Store, list[Reading]]
) -> None:
    store, _old = live
    right = make_config(tmp_path, wrong=False)
    store._conn.execute("DELETE FROM frames WHERE sensor = 2")
    before = store.readings(0, FAR)
    with pytest.raises(StoreError, match=r"sensor 2: .* its archived frames give none"):
        reprocess(store, right, to_ns(T0), to_ns(T0 + timedelta(hours=1)), now_ns=0)
    assert store.readings(0, FAR) == before
    only_1 = reprocess(
        store, right, to_ns(T0), to_ns(T0 + timedelta(hours=1)), now_ns=0, sensors=[1]
    )
    assert [c.sensor for c in only_1.sensors] == [1]
    after = store.readings(0, FAR)
    assert [r for r in after if r.sensor == 2] == [r for r in before if r.sensor == 2]
    assert [r.watts for r in after if r.sensor == 1] != [
        r.watts for r in before if r.sensor == 1
    ]


def test_minute_rollups_after_reprocess_match_a_fresh_store(
    tmp_path: Path, live: tuple[Store, list[Reading]], frames: list[Archived]
) -> None:
    store, _old = live
    right = make_config(tmp_path, wrong=False)
    reprocess(store, right, to_ns(T0), to_ns(T0 + timedelta(hours=HOURS)), now_ns=0)
    with Store.open(tmp_path / "fresh.sqlite") as fresh:
        fresh.add(compute(right, frames, monotonic_base=None))
        want = fresh.rollups("1m", 0, FAR)
    got = store.rollups("1m", 0, FAR)
    assert [(r.sensor, r.start_ns, r.n_readings) for r in got] == [
        (r.sensor, r.start_ns, r.n_readings) for r in want
    ]
    for g, w in zip(got, want, strict=True):
        assert g.wh == pytest.approx(w.wh, rel=1e-9, abs=1e-12)
        assert g.start_ns % MINUTE_NS == 0
