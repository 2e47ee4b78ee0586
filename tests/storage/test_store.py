"""The SQLite store: schema, batches, rollups, retention, concurrency, errors."""

from __future__ import annotations

import math
import random
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from wattd.config import StoreConfig
from wattd.core.readings import Flag, FrameRecord, Reading
from wattd.errors import StoreCorrupt, StoreError, StoreLocked
from wattd.storage.store import (
    HOUR_NS,
    MINUTE_NS,
    SCHEMA_VERSION,
    Resolution,
    Rollup,
    Store,
    from_ns,
    split_energy,
    to_ns,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
S = 1_000_000_000


def reading(
    sensor: int,
    at: datetime,
    *,
    watts: float = 100.0,
    vrms: float = 120.0,
    wh_total: float = 0.0,
    wh_delta: float = 0.0,
    flags: frozenset[Flag] = frozenset(),
    name: str | None = None,
) -> Reading:
    return Reading(
        sensor=sensor,
        name=name or f"sensor-{sensor}",
        time=at,
        monotonic_s=(at - T0).total_seconds(),
        watts=watts,
        va=watts * 1.1,
        vrms=vrms,
        irms=watts / vrms,
        power_factor=0.9,
        wh_total=wh_total,
        wh_delta=wh_delta,
        rssi_dbm=-45,
        flags=flags,
        sample_interval_ms=1.3,
        port="/dev/ttyUSB0",
    )


def series(
    sensor: int, start: datetime, count: int, *, step_s: float = 2.0, seed: int = 1
) -> list[Reading]:
    """Readings whose energy is integrated like the daemon does it."""
    rng = random.Random(seed)
    out: list[Reading] = []
    total = 0.0
    for i in range(count):
        at = start + timedelta(seconds=i * step_s + rng.uniform(0, 0.3))
        watts = rng.uniform(5.0, 1500.0)
        delta = 0.0 if not out else watts * (at - out[-1].time).total_seconds() / 3600
        total += delta
        out.append(
            reading(
                sensor,
                at,
                watts=watts,
                vrms=rng.uniform(115, 125),
                wh_total=total,
                wh_delta=delta,
            )
        )
    return out


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "state" / "wattd.sqlite")
    yield s
    s.close()


def all_rollups(store: Store, resolution: Resolution) -> list[Rollup]:
    return store.rollups(resolution, -(1 << 62), 1 << 62)


# -- schema and files ------------------------------------------------------------


def test_new_store_is_wal_with_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "wattd.sqlite"
    with Store.open(path) as s:
        assert s.journal_mode == "wal"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    conn.close()
    assert {"readings", "rollup_1m", "rollup_1h", "frames", "sensors", "meta"} <= tables


def test_reopen_keeps_data_and_readonly_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "wattd.sqlite"
    with Store.open(path) as s:
        s.add(series(3, T0, 5))
    with Store.open(path, readonly=True) as ro:
        assert [r.sensor for r in ro.recent_readings()] == [3] * 5
        with pytest.raises(StoreError):
            ro.add(series(3, T0 + timedelta(hours=1), 2))


def test_readonly_open_of_missing_store_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store here yet"):
        Store.open(tmp_path / "nope.sqlite", readonly=True)


def test_garbage_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "wattd.sqlite"
    path.write_bytes(b"this is not an sqlite file at all" * 200)
    with pytest.raises(StoreCorrupt) as info:
        Store.open(path)
    text = str(info.value)
    assert str(path) in text
    assert ".recover" in text


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"not a wattd store.*invoices"):
        Store.open(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wattd.sqlite"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this wattd"):
        Store.open(path)


def test_locked_store_gives_store_locked(tmp_path: Path) -> None:
    path = tmp_path / "wattd.sqlite"
    Store.open(path).close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with Store.open(path, busy_timeout_s=0.05) as s:
            with pytest.raises(StoreLocked) as info:
                s.add(series(1, T0, 3))
            assert "locked" in str(info.value)
            assert str(path) in str(info.value)
            # Reads are not blocked by a writer in WAL mode.
            assert s.recent_readings() == []
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


# -- writing ---------------------------------------------------------------------


def test_readings_round_trip(store: Store) -> None:
    r = reading(
        7,
        T0 + timedelta(microseconds=123456),
        watts=42.5,
        wh_total=1.5,
        wh_delta=0.25,
        flags=frozenset({Flag.CLIPPED, Flag.ENERGY_GAP}),
        name="fridge",
    )
    store.add([r])
    (got,) = store.recent_readings([7])
    assert got.time == r.time
    assert got.time_ns == r.time_ns
    assert (got.sensor, got.name, got.watts, got.wh_total, got.wh_delta) == (
        7,
        "fridge",
        42.5,
        1.5,
        0.25,
    )
    assert got.flags == {"clipped", "energy_gap"}
    assert Flag.CLIPPED in got.flags
    assert got.port == "/dev/ttyUSB0"
    assert got.sample_interval_ms == pytest.approx(1.3)


def test_non_finite_figures_are_stored_as_null(store: Store) -> None:
    r = reading(1, T0, watts=math.nan, wh_total=2.0)
    store.add([r])
    (got,) = store.recent_readings()
    assert got.watts is None
    assert got.wh_total == 2.0


def test_64_bit_addresses_round_trip(store: Store) -> None:
    big = 0xFFFF_FFFF_FFFF_FFF0
    mid = 0x0013_A200_4000_0001
    store.add([reading(big, T0, wh_total=1.0), reading(mid, T0, wh_total=2.0)])
    assert store.last_wh_totals() == {big: 1.0, mid: 2.0}
    assert {r.sensor for r in store.recent_readings()} == {big, mid}
    assert {r.sensor for r in all_rollups(store, "1m")} == {big, mid}


def test_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    store.add(series(1, T0, 10))
    before = (store.count("readings"), all_rollups(store, "1m"), store.last_wh_totals())
    more = series(1, T0 + timedelta(minutes=5), 10, seed=2)

    def fail_midway() -> None:
        with store.transaction():
            store.insert_readings(more)
            store.insert_frames([frame(T0, b"\x7e\x00")])
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_midway()
    after = (store.count("readings"), all_rollups(store, "1m"), store.last_wh_totals())
    assert after == before
    assert store.count("frames") == 0


def test_dry_run_transaction_rolls_back(store: Store) -> None:
    with store.transaction(dry_run=True):
        store.add(series(1, T0, 10))
        assert store.count("readings") == 10
    assert store.count("readings") == 0
    assert all_rollups(store, "1m") == []


def test_batch_is_invisible_to_readers_until_committed(tmp_path: Path) -> None:
    path = tmp_path / "wattd.sqlite"
    with Store.open(path) as writer, Store.open(path, readonly=True) as reader:
        with writer.transaction():
            writer.insert_readings(series(1, T0, 50))
            assert reader.count("readings") == 0
            writer.insert_readings(series(1, T0 + timedelta(minutes=2), 50))
            assert reader.count("readings") == 0
        assert reader.count("readings") == 100


def frame(
    at: datetime, raw: bytes, *, kind: str = "io", sensor: int | None = 1
) -> FrameRecord:
    return FrameRecord(
        time=at, port="/dev/ttyUSB0", api_mode=1, kind=kind, raw=raw, sensor=sensor
    )


def test_frames_archive_keeps_exact_bytes_in_arrival_order(store: Store) -> None:
    raws = [bytes([0x7E, i, 0x7E, 0x7D, 0x13, 0xFF]) for i in range(6)]
    frames = [
        frame(T0 + timedelta(seconds=i // 2), raw, sensor=i % 3 or None)
        for i, raw in enumerate(raws)
    ]
    frames.append(frame(T0, b"\x00garbage", kind="garbage", sensor=None))
    store.add(frames=frames)
    got = store.frames(to_ns(T0), to_ns(T0 + timedelta(minutes=1)))
    # Same time: insertion order decides.
    assert [f.raw for f in got] == [raws[0], raws[1], b"\x00garbage", *raws[2:]]
    assert got[0].kind == "io"
    assert got[0].time == T0
    assert got[0].api_mode == 1
    io_2 = store.frames(0, 1 << 62, sensors=[2], kinds=["io"])
    assert [f.raw for f in io_2] == [raws[2], raws[5]]
    assert [f.kind for f in store.frames(0, 1 << 62, kinds=["garbage"])] == ["garbage"]


# -- rollups ---------------------------------------------------------------------


def test_split_energy_by_hand() -> None:
    # 3 Wh over (50 s, 130 s]: 10 s, 60 s and 10 s in three minute buckets.
    pieces = split_energy(3.0, 50 * S, 130 * S, MINUTE_NS)
    assert [b for b, _ in pieces] == [0, MINUTE_NS, 2 * MINUTE_NS]
    assert [wh for _, wh in pieces] == pytest.approx([0.375, 2.25, 0.375])
    assert sum(wh for _, wh in pieces) == 3.0
    # An interval ending exactly on an edge belongs wholly to the bucket before.
    assert split_energy(1.0, 100 * S, 120 * S, MINUTE_NS) == [(MINUTE_NS, 1.0)]
    # Inside one bucket, and the degenerate cases.
    assert split_energy(1.0, 61 * S, 119 * S, MINUTE_NS) == [(MINUTE_NS, 1.0)]
    assert split_energy(2.0, 130 * S, 130 * S, MINUTE_NS) == [(2 * MINUTE_NS, 2.0)]
    assert split_energy(2.0, 140 * S, 130 * S, MINUTE_NS) == [(2 * MINUTE_NS, 2.0)]
    # Hours: 0.5 Wh from 59:00 to 61:00 splits in half.
    halves = split_energy(0.5, 59 * MINUTE_NS, 61 * MINUTE_NS, HOUR_NS)
    assert halves == [(0, 0.25), (HOUR_NS, 0.25)]


def test_energy_is_split_at_bucket_edges_by_hand(store: Store) -> None:
    base = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
    # 100 W readings at 12:00:50, 12:01:10 (20 s later) and 13:00:10 (a 59 min gap
    # is still integrated here; the store spreads whatever the pipeline says).
    a = reading(1, base + timedelta(seconds=50), watts=100, wh_total=0, wh_delta=0)
    b = reading(1, base + timedelta(seconds=70), watts=100, wh_total=0.6, wh_delta=0.6)
    c = reading(
        1, base + timedelta(hours=1, seconds=10), watts=50, wh_total=6.6, wh_delta=6.0
    )
    store.add([a, b, c])
    minutes = {r.start: r for r in all_rollups(store, "1m")}
    # b's 0.6 Wh covers 12:00:50-12:01:10: half in each minute.
    assert minutes[base].wh == pytest.approx(0.3)
    assert minutes[base].n_readings == 1
    # c's 6 Wh covers 12:01:10-13:00:10 (3540 s): 50 s of it in 12:01, 60 s in
    # each of 12:02..12:59, and 10 s in 13:00.
    per_s = 6.0 / 3540
    assert minutes[base + timedelta(minutes=1)].wh == pytest.approx(0.3 + 50 * per_s)
    assert minutes[base + timedelta(minutes=1)].n_readings == 1
    assert minutes[base + timedelta(minutes=30)].wh == pytest.approx(60 * per_s)
    assert minutes[base + timedelta(minutes=30)].n_readings == 0
    assert minutes[base + timedelta(minutes=30)].watts_mean is None
    assert minutes[base + timedelta(hours=1)].wh == pytest.approx(10 * per_s)
    assert minutes[base + timedelta(hours=1)].wh_total_last == 6.6
    hours = {r.start: r for r in all_rollups(store, "1h")}
    assert hours[base].wh == pytest.approx(0.6 + 3530 * per_s)
    assert hours[base].n_readings == 2
    assert hours[base].wh_total_last == 0.6
    assert hours[base + timedelta(hours=1)].wh == pytest.approx(10 * per_s)
    assert sum(r.wh for r in minutes.values()) == pytest.approx(6.6)


def test_rollups_equal_sums_of_readings(store: Store) -> None:
    start = datetime(2024, 3, 1, 11, 58, 17, tzinfo=UTC)
    data = series(1, start, 400, step_s=2.1) + series(2, start, 300, step_s=2.9, seed=5)
    data.sort(key=lambda r: r.time)
    for i in range(0, len(data), 37):  # arbitrary batch sizes
        store.add(data[i : i + 37])
    sizes: tuple[tuple[Resolution, int], ...] = (("1m", MINUTE_NS), ("1h", HOUR_NS))
    for resolution, size in sizes:
        rollups = all_rollups(store, resolution)
        for sensor in (1, 2):
            mine = [r for r in data if r.sensor == sensor]
            buckets = [r for r in rollups if r.sensor == sensor]
            assert sum(b.wh for b in buckets) == pytest.approx(
                sum(r.wh_delta for r in mine)
            )
            assert sum(b.n_readings for b in buckets) == len(mine)
            for b in buckets:
                inside = [
                    r for r in mine if b.start_ns <= r.time_ns < b.start_ns + size
                ]
                assert b.n_readings == len(inside)
                if inside:
                    assert b.watts_mean == pytest.approx(
                        sum(r.watts for r in inside) / len(inside)
                    )
                    assert b.watts_min == min(r.watts for r in inside)
                    assert b.watts_max == max(r.watts for r in inside)
                    assert b.vrms_mean == pytest.approx(
                        sum(r.vrms for r in inside) / len(inside)
                    )
                    assert b.wh_total_last == inside[-1].wh_total
    # Minute and hour buckets agree on energy per hour.
    minutes = all_rollups(store, "1m")
    for h in all_rollups(store, "1h"):
        in_hour = [
            m.wh
            for m in minutes
            if m.sensor == h.sensor and h.start_ns <= m.start_ns < h.end_ns
        ]
        assert sum(in_hour) == pytest.approx(h.wh)


def test_rebuild_reproduces_incremental_rollups(store: Store) -> None:
    start = datetime(2024, 3, 1, 11, 58, 17, tzinfo=UTC)
    data = series(4, start, 300, step_s=3.0)
    for i in range(0, len(data), 50):
        store.add(data[i : i + 50])
    incremental = {res: all_rollups(store, res) for res in ("1m", "1h")}
    # Wreck the rollups, then rebuild a range covering part of the data.
    store._conn.execute("UPDATE rollup_1m SET wh = wh * 7, n = 0")
    store._conn.execute("UPDATE rollup_1h SET wh = 0")
    lo, hi = store.rebuild_rollups(to_ns(start), to_ns(start + timedelta(minutes=20)))
    assert lo % HOUR_NS == 0
    assert hi % HOUR_NS == 0
    for res in ("1m", "1h"):
        rebuilt = all_rollups(store, res)
        assert len(rebuilt) == len(incremental[res])
        for x, y in zip(rebuilt, incremental[res], strict=True):
            assert (x.sensor, x.start_ns, x.n_readings) == (
                y.sensor,
                y.start_ns,
                y.n_readings,
            )
            assert x.wh == pytest.approx(y.wh, rel=1e-9, abs=1e-12)
            assert x.watts_max == y.watts_max
            assert x.wh_total_last == y.wh_total_last


def test_minute_rollups_for_pricing(store: Store) -> None:
    store.add(series(1, T0, 90, step_s=2.0) + series(2, T0, 45, step_s=4.0, seed=3))
    lo, hi = to_ns(T0), to_ns(T0 + timedelta(minutes=2))
    rows = store.minute_rollups(lo, hi, sensors=[2])
    assert {r.sensor for r in rows} == {2}
    assert [r.start for r in rows] == [T0, T0 + timedelta(minutes=1)]
    assert all(r.n_readings == 15 for r in rows)
    assert all(r.watts_max is not None and r.watts_mean is not None for r in rows)


def test_recent_rollups_and_readings_per_sensor(store: Store) -> None:
    store.add(series(1, T0, 200) + series(2, T0, 30, seed=9))
    recent = store.recent_readings(limit_per_sensor=4)
    assert [r.sensor for r in recent] == [1] * 4 + [2] * 4
    ones = [r.time_ns for r in recent if r.sensor == 1]
    assert ones == sorted(ones)
    newest = store.readings(0, 1 << 62, sensors=[1])[-1]
    assert ones[-1] == newest.time_ns
    roll = store.recent_rollups("1m", [1], limit_per_sensor=2)
    assert len(roll) == 2
    assert roll[0].start_ns < roll[1].start_ns
    assert roll[1].start_ns == max(
        r.start_ns for r in all_rollups(store, "1m") if r.sensor == 1
    )


# -- totals ------------------------------------------------------------------------


def test_last_totals_follow_time_not_insert_order(store: Store) -> None:
    store.add([reading(1, T0 + timedelta(seconds=10), wh_total=5.0)])
    store.add([reading(1, T0, wh_total=4.0)])  # late arrival of an older reading
    store.add([reading(2, T0, wh_total=1.0, name="kettle")])
    assert store.last_wh_totals() == {1: 5.0, 2: 1.0}
    assert store.known_sensors() == {1: "sensor-1", 2: "kettle"}
    assert store.last_before(1, to_ns(T0 + timedelta(seconds=10))) == (to_ns(T0), 4.0)
    assert store.last_before(1, to_ns(T0)) is None


def test_shift_totals_moves_later_history(store: Store) -> None:
    data = series(1, T0, 120, step_s=60.0)  # two hours of minute readings
    store.add(data)
    cut = T0 + timedelta(hours=1)
    changed = store.shift_totals(1, to_ns(cut), 10.0)
    assert changed == 60
    got = store.readings(0, 1 << 62)
    for old, new in zip(data, got, strict=True):
        expect = old.wh_total + (10.0 if old.time >= cut else 0.0)
        assert new.wh_total == pytest.approx(expect)
    assert store.last_wh_totals()[1] == pytest.approx(data[-1].wh_total + 10.0)
    for h in all_rollups(store, "1h"):
        last = [r.wh_total for r in got if h.start_ns <= r.time_ns < h.end_ns][-1]
        assert h.wh_total_last == pytest.approx(last)


# -- retention ---------------------------------------------------------------------


def test_retention_deletes_old_rows_per_table(store: Store) -> None:
    old = series(1, T0, 30, step_s=60.0)
    new = series(1, T0 + timedelta(days=10), 30, step_s=60.0, seed=2)
    store.add(old + new, [frame(r.time, b"\x7e\x01") for r in old + new])
    cfg = StoreConfig(
        readings_retention_days=5,
        frames_retention_days=3,
        rollup_1m_retention_days=0,  # keep forever
        rollup_1h_retention_days=2,
    )
    now = T0 + timedelta(days=10, hours=12)
    result = store.apply_retention(cfg, now_ns=to_ns(now))
    assert result.complete
    assert result.deleted["readings"] == 30
    assert result.deleted["frames"] == 30
    assert "rollup_1m" not in result.deleted
    assert {r.time_ns for r in store.readings(0, 1 << 62)} == {r.time_ns for r in new}
    assert store.count("frames") == 30
    assert min(r.start for r in all_rollups(store, "1m")) <= T0
    assert min(r.start for r in all_rollups(store, "1h")) >= T0 + timedelta(days=10)
    assert store.purged_before_ns("readings") == to_ns(now - timedelta(days=5))
    # The last totals outlive the readings.
    assert store.last_wh_totals()[1] == new[-1].wh_total


def test_retention_keeps_buckets_that_straddle_the_cutoff(store: Store) -> None:
    store.add(series(1, T0, 60, step_s=60.0))
    cfg = StoreConfig(
        readings_retention_days=0,
        frames_retention_days=0,
        rollup_1m_retention_days=1,
        rollup_1h_retention_days=1,
    )
    # The cutoff falls 30 minutes into the data's hour.
    now = T0 + timedelta(days=1, minutes=30)
    store.apply_retention(cfg, now_ns=to_ns(now))
    assert [r.start for r in all_rollups(store, "1h")] == [T0]
    minutes = [r.start for r in all_rollups(store, "1m")]
    assert minutes[0] == T0 + timedelta(minutes=30)
    assert store.count("readings") == 60


def test_retention_works_in_bounded_batches(store: Store) -> None:
    store.add(series(1, T0, 25, step_s=60.0), [frame(T0, b"x")] * 4)
    cfg = StoreConfig(
        readings_retention_days=1,
        frames_retention_days=1,
        rollup_1m_retention_days=0,
        rollup_1h_retention_days=0,
    )
    now = to_ns(T0 + timedelta(days=3))
    first = store.apply_retention(cfg, now_ns=now, batch_rows=10, max_batches=2)
    assert not first.complete
    assert first.deleted["readings"] == 20
    assert store.count("readings") == 5
    mark = store.purged_before_ns("readings")
    assert mark is not None
    assert mark <= min(r.time_ns for r in store.readings(0, 1 << 62))
    second = store.apply_retention(cfg, now_ns=now, batch_rows=10, max_batches=5)
    assert second.complete
    assert second.deleted == {"readings": 5, "frames": 4}
    assert store.count("readings") == 0


def test_energy_split_after_readings_were_purged_uses_rollup_times(
    store: Store,
) -> None:
    first = reading(1, T0 + timedelta(seconds=50), wh_total=0.0)
    store.add([first])
    cfg = StoreConfig(
        readings_retention_days=1,
        frames_retention_days=0,
        rollup_1m_retention_days=0,
        rollup_1h_retention_days=0,
    )
    store.apply_retention(cfg, now_ns=to_ns(T0 + timedelta(days=2)))
    assert store.count("readings") == 0
    # A reading 20 s later still splits its energy from 12:00:50.
    store.add([reading(1, T0 + timedelta(seconds=70), wh_total=0.6, wh_delta=0.6)])
    minutes = {r.start: r.wh for r in all_rollups(store, "1m")}
    assert minutes[T0] == pytest.approx(0.3)
    assert minutes[T0 + timedelta(minutes=1)] == pytest.approx(0.3)


# -- concurrency -----------------------------------------------------------------


def test_reads_work_while_another_thread_writes(tmp_path: Path) -> None:
    path = tmp_path / "wattd.sqlite"
    Store.open(path).close()
    data = series(1, T0, 3000, step_s=1.0)
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            with Store.open(path) as writer:
                for i in range(0, len(data), 100):
                    writer.add(data[i : i + 100])
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=write)
    seen: list[int] = []
    with Store.open(path, readonly=True, busy_timeout_s=0.5) as reader:
        thread.start()
        while not done.is_set() or len(seen) < 3:
            n = reader.count("readings")
            rolled = sum(r.n_readings for r in reader.rollups("1h", 0, 1 << 62))
            # Batches of 100 become visible whole, readings and rollups alike.
            assert n % 100 == 0
            assert rolled % 100 == 0
            assert rolled >= n
            seen.append(n)
            if done.is_set():
                break
    thread.join()
    assert not errors
    assert seen == sorted(seen)
    with Store.open(path, readonly=True) as reader:
        assert reader.count("readings") == 3000


def test_time_helpers_round_trip() -> None:
    moment = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert from_ns(to_ns(moment)) == moment
    with pytest.raises(ValueError, match="naive"):
        to_ns(datetime(2024, 1, 1))
