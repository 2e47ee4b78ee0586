"""Re-derive stored readings from the raw frame archive with the current config.

After a calibration change the stored history is wrong, but the exact wire
bytes of every frame are archived. Reprocessing a range:

1. widens it to whole UTC hours, so every hourly rollup it touches is rebuilt
   from complete data;
2. warms a fresh :class:`~wattd.core.pipeline.ReadingPipeline` up on the archived
   frames of the ten minutes before the range (so drift tracking, the interval
   estimate and the first trapezoid of energy start as a live run would) and
   seeds each sensor's energy total from its last stored reading before the
   range;
3. replays the range's IO frames in arrival order, with the archived wall-clock
   arrival time standing in for the monotonic clock;
4. in one transaction: deletes the range's readings, writes the new ones,
   shifts ``wh_total`` of every later reading (and rollup and last total) by the
   change in energy, and rebuilds the range's rollups.

It refuses to run while a daemon writes to the store, and refuses to delete a
sensor's readings when the archive cannot replace them. With numpy installed
the frames go through the batch path (:mod:`wattd.core.batch`) a few thousand
at a time, with the same results. A stop request between two batches rolls
the transaction back: the range is left exactly as it was, never half
replaced, and the same command run again does the whole range.
"""

from __future__ import annotations

import dataclasses
import logging
from itertools import islice
from typing import TYPE_CHECKING, Final

from wattd.config import pipeline_settings
from wattd.core.batch import UNAVAILABLE_MESSAGE, available
from wattd.core.drift import DriftState
from wattd.core.energy import EnergyState
from wattd.core.frames import FrameDecoder
from wattd.core.iosample import IoSampleFrame
from wattd.core.pipeline import PipelineState, ReadingPipeline, SensorState
from wattd.errors import StoreError, WattdError
from wattd.storage.store import (
    HOUR_NS,
    NS_PER_S,
    WRITER_HEARTBEAT_KEY,
    ceil_ns,
    floor_ns,
    from_ns,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from wattd.config import Config
    from wattd.core.batch.frames import FrameBatch
    from wattd.core.batch.pipeline import BatchPipeline
    from wattd.core.readings import Reading
    from wattd.storage.store import Store, StoredFrame

__all__ = [
    "FRAME_BATCH",
    "HEARTBEAT_FRESH_S",
    "WARMUP_S",
    "ReprocessStopped",
    "ReprocessSummary",
    "SensorChange",
    "reprocess",
]

WARMUP_S: Final = 600.0
"""Archived frames this long before the range prime the pipeline's state."""
HEARTBEAT_FRESH_S: Final = 60.0
"""A writer heartbeat younger than this means a daemon is using the store.

The sink refreshes it every 10 s and clears it when it stops, so only a crashed
daemon leaves a stale one, and that one expires after this long.
"""
_INSERT_BATCH: Final = 1000
FRAME_BATCH: Final = 20_000
"""Archived frames per batch on the batch path."""

log = logging.getLogger(__name__)


_STOPPED: Final = (
    "stopped by a signal; nothing was changed (the range is as it was). Run"
    " the same command again to reprocess it"
)


class ReprocessStopped(WattdError):
    """A stop request ended the run; the transaction was rolled back."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SensorChange:
    """What reprocessing did (or would do) to one sensor.

    ``wh_before``/``wh_after`` are the energy inside the range (sums of
    ``wh_delta``); ``shift_wh`` is what every later ``wh_total`` moved by.
    """

    sensor: int
    name: str
    readings_before: int
    readings_after: int
    wh_before: float
    wh_after: float
    wh_total_end_before: float | None
    wh_total_end_after: float | None
    shift_wh: float
    later_readings: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReprocessSummary:
    """The outcome of one reprocess run."""

    from_ns: int
    to_ns: int
    frames: int
    frames_skipped: int
    sensors: tuple[SensorChange, ...]
    dry_run: bool
    warmup_frames: int


@dataclasses.dataclass(slots=True)
class _Tally:
    count: int = 0
    wh: float = 0.0
    last_total: float | None = None
    last_time_ns: int | None = None
    name: str = ""


def reprocess(
    store: Store,
    config: Config,
    from_ns: int,
    to_ns: int,
    *,
    now_ns: int,
    sensors: Iterable[int] | None = None,
    dry_run: bool = False,
    batch: bool | None = None,
    batch_frames: int = FRAME_BATCH,
    stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, float], object] | None = None,
) -> ReprocessSummary:
    """Recompute readings, rollups and energy in ``[from_ns, to_ns)``.

    ``batch`` picks the batch path (default: when numpy is there), which
    reads ``batch_frames`` archived frames at a time. ``stop``
    is asked between batches; ``on_progress`` gets the frames done so far and
    the share of the range they reach.

    Raises:
        StoreError: a daemon is writing to the store, the archive no longer
            covers the range, or a sensor's readings could not be replaced.
        ReprocessStopped: ``stop`` said so; nothing was changed.
    """
    start = floor_ns(from_ns, HOUR_NS)
    end = ceil_ns(to_ns, HOUR_NS)
    if end <= start:
        raise StoreError("the reprocess range is empty; --to must be after --from")
    if not dry_run:
        _refuse_if_daemon_writes(store, now_ns)
    purged = store.purged_before_ns("frames")
    if purged is not None and start < purged:
        raise StoreError(
            f"{store.path}: frames before {from_ns_text(purged)} are no longer"
            f" archived (store.frames_retention_days); choose --from at or after"
            f" that (the range is widened to whole hours, from {from_ns_text(start)})"
        )
    chosen = (
        sorted(set(sensors))
        if sensors is not None
        else store.sensors_in_range(start, end)
    )
    if not chosen:
        return ReprocessSummary(
            from_ns=start,
            to_ns=end,
            frames=0,
            frames_skipped=0,
            sensors=(),
            dry_run=dry_run,
            warmup_frames=0,
        )
    if batch is None:
        batch = available()
        if not batch:
            log.info(UNAVAILABLE_MESSAGE)
    run = _Run(store, config, start, end, chosen, dry_run=dry_run, batch=batch)
    run.stop = stop
    run.batch_frames = batch_frames
    run.on_progress = on_progress
    return run.execute()


def from_ns_text(time_ns: int) -> str:
    """A store time as ISO-8601 UTC, for messages."""
    return from_ns(time_ns).isoformat().replace("+00:00", "Z")


def _refuse_if_daemon_writes(store: Store, now_ns: int) -> None:
    beat = store.meta(WRITER_HEARTBEAT_KEY)
    if beat is None:
        return
    age_s = (now_ns - beat) / NS_PER_S
    if age_s < HEARTBEAT_FRESH_S:
        raise StoreError(
            f"{store.path}: a wattd daemon is writing to this store (last write"
            f" {max(age_s, 0.0):.0f} s ago); stop it first (systemctl stop wattd),"
            " reprocess, then start it again. --dry-run works while it runs"
        )


class _Run:
    """One reprocess pass; holds the per-sensor tallies."""

    def __init__(
        self,
        store: Store,
        config: Config,
        start: int,
        end: int,
        sensors: list[int],
        *,
        dry_run: bool,
        batch: bool = False,
    ) -> None:
        self.store = store
        self.config = config
        self.start = start
        self.end = end
        self.sensors = sensors
        self.wanted = frozenset(sensors)
        self.dry_run = dry_run
        self.frames = 0
        self.skipped = 0
        self.warmup_frames = 0
        self.after = {s: _Tally() for s in sensors}
        self.batch = batch
        self.stop: Callable[[], bool] | None = None
        self.batch_frames = FRAME_BATCH
        self.on_progress: Callable[[int, float], object] | None = None
        self._reached_ns = start

    def execute(self) -> ReprocessSummary:
        store = self.store
        before: dict[int, _Tally] = {}
        seeds: dict[int, float] = {}
        for sensor in self.sensors:
            count, wh, last = store.reading_summary(self.start, self.end, sensor)
            before[sensor] = _Tally(count=count, wh=wh, last_total=last)
            prior = store.last_before(sensor, self.start)
            if prior is not None:
                seeds[sensor] = prior[1]
        pipeline = self._pipeline(self._seeded_state(seeds))
        later: dict[int, int] = {}
        if self.dry_run:
            for reading in self._replay(pipeline):
                self._count(reading)
            self._check_replaced(before)
            for sensor in self.sensors:
                if self._shift(sensor, before[sensor], seeds.get(sensor)):
                    later[sensor] = store.reading_summary(self.end, 1 << 62, sensor)[0]
        else:
            with store.transaction():
                self._rewrite(pipeline, before, seeds, later)
        changes = tuple(
            SensorChange(
                sensor=s,
                name=self.after[s].name or self._name(s),
                readings_before=before[s].count,
                readings_after=self.after[s].count,
                wh_before=before[s].wh,
                wh_after=self.after[s].wh,
                wh_total_end_before=before[s].last_total,
                wh_total_end_after=self.after[s].last_total,
                shift_wh=self._shift(s, before[s], seeds.get(s)),
                later_readings=later.get(s, 0),
            )
            for s in self.sensors
        )
        return ReprocessSummary(
            from_ns=self.start,
            to_ns=self.end,
            frames=self.frames,
            frames_skipped=self.skipped,
            sensors=changes,
            dry_run=self.dry_run,
            warmup_frames=self.warmup_frames,
        )

    def _rewrite(
        self,
        pipeline: ReadingPipeline | BatchPipeline,
        before: dict[int, _Tally],
        seeds: dict[int, float],
        later: dict[int, int],
    ) -> None:
        """The writing half, inside the caller's transaction."""
        store = self.store
        latest_before = {s: store.latest_known(s) for s in self.sensors}
        first_before = {
            s: store.first_reading(s, self.start, self.end) for s in self.sensors
        }
        for sensor in self.sensors:
            store.delete_readings(self.start, self.end, sensor)
        batch: list[Reading] = []
        for reading in self._replay(pipeline):
            self._count(reading)
            batch.append(reading)
            if len(batch) >= _INSERT_BATCH:
                store.insert_readings(batch, update_rollups=False)
                batch = []
        store.insert_readings(batch, update_rollups=False)
        self._check_replaced(before)
        for sensor in self.sensors:
            shift = self._shift(sensor, before[sensor], seeds.get(sensor))
            if shift:
                later[sensor] = store.shift_totals(sensor, self.end, shift)
            known = latest_before[sensor]
            latest = store.latest_reading(sensor)
            # A latest reading after the range was shifted with the rest; one
            # inside or before it may have been replaced.
            if latest is not None and (known is None or known[0] < self.end):
                store.replace_latest(
                    sensor,
                    name=latest.name,
                    time_ns=latest.time_ns,
                    wh_total=latest.wh_total,
                )
        store.rebuild_rollups(self.start, self.end, self.sensors)
        for sensor in self.sensors:
            # The range's first reading also spread energy into the hour before.
            old = first_before[sensor]
            new = store.first_reading(sensor, self.start, self.end)
            store.shift_edge_energy(
                sensor,
                self.start,
                old=None if old is None else (old.time_ns, old.wh_delta),
                new=None if new is None else (new.time_ns, new.wh_delta),
            )

    # -- pipeline ------------------------------------------------------------------

    def _pipeline(
        self, state: PipelineState | None = None
    ) -> ReadingPipeline | BatchPipeline:
        settings = pipeline_settings(self.config)
        if self.batch:
            from wattd.core.batch.pipeline import BatchPipeline

            return BatchPipeline(settings, state=state)
        return ReadingPipeline(settings, state=state)

    def _seeded_state(self, seeds: dict[int, float]) -> PipelineState:
        """Warm-up state per sensor, with energy set to the stored total."""
        warm = self._pipeline()
        warm_start = self.start - round(WARMUP_S * NS_PER_S)
        if isinstance(warm, ReadingPipeline):
            for stored, frame in self._frames(warm_start, self.start):
                self.warmup_frames += 1
                warm.process(
                    frame,
                    time=stored.time,
                    monotonic_s=stored.time_ns / NS_PER_S,
                    port=stored.port,
                )
        else:
            for batch in self._frame_batches(warm_start, self.start):
                self.warmup_frames += len(batch)
                warm.process(batch)
        warmed = warm.state().sensors
        offsets = {s.address: s.energy_offset_wh for s in self.config.sensors}
        out: dict[int, SensorState] = {}
        for sensor in self.sensors:
            seed = seeds.get(sensor)
            primed = warmed.get(sensor)
            if seed is None and primed is None:
                continue
            # The pipeline adds the sensor's energy_offset_wh to its register.
            internal = 0.0 if seed is None else seed - offsets.get(sensor, 0.0)
            if primed is None:
                energy = EnergyState(wh_total=internal, wh_register=internal)
                out[sensor] = SensorState(energy=energy, drift=DriftState())
                continue
            # Keep the warm-up's last reading (for the first trapezoid), but the
            # total comes from the store: the warm-up counted from zero.
            energy = dataclasses.replace(
                primed.energy, wh_total=internal, wh_register=internal
            )
            out[sensor] = dataclasses.replace(primed, energy=energy)
        return PipelineState(sensors=out)

    def _frames(
        self, start: int, end: int
    ) -> Iterator[tuple[StoredFrame, IoSampleFrame]]:
        for stored in self.store.iter_frames(start, end, kinds=["io"]):
            if stored.sensor is not None and stored.sensor not in self.wanted:
                continue
            decoder = FrameDecoder(stored.api_mode)
            events = decoder.feed(stored.raw)
            frames = [e for e in events if isinstance(e, IoSampleFrame)]
            if not frames:
                if start >= self.start:
                    self.skipped += 1
                continue
            for frame in frames:
                if frame.sensor_id in self.wanted:
                    yield stored, frame

    def _frame_batches(self, start: int, end: int) -> Iterator[FrameBatch]:
        """The range's IO frames of the chosen sensors, a batch at a time."""
        from wattd.core.batch.frames import archive_batch

        stored_frames = self.store.iter_frames(start, end, kinds=["io"])
        while True:
            part = [
                s
                for s in islice(stored_frames, self.batch_frames)
                if s.sensor is None or s.sensor in self.wanted
            ]
            if not part:
                return
            times_ns = [s.time_ns for s in part]
            self._reached_ns = times_ns[-1]
            batch, empty = archive_batch(
                [s.raw for s in part],
                [s.api_mode for s in part],
                times_ns,
                [s.port for s in part],
                wanted=self.wanted,
            )
            if start >= self.start:
                self.skipped += empty
            yield batch
            if self.stop is not None and self.stop():
                raise ReprocessStopped(_STOPPED)

    def _replay(self, pipeline: ReadingPipeline | BatchPipeline) -> Iterator[Reading]:
        if not isinstance(pipeline, ReadingPipeline):
            for batch in self._frame_batches(self.start, self.end):
                self.frames += len(batch)
                yield from pipeline.process(batch, hashes=True).readings()
                if self.on_progress is not None:
                    self.on_progress(self.frames, self._share(self._reached_ns))
            return
        for stored, frame in self._frames(self.start, self.end):
            if self.stop is not None and self.frames % 1000 == 0 and self.stop():
                raise ReprocessStopped(_STOPPED)
            if self.on_progress is not None and self.frames % 1000 == 0:
                self.on_progress(self.frames, self._share(stored.time_ns))
            self.frames += 1
            reading = pipeline.process(
                frame,
                time=stored.time,
                monotonic_s=stored.time_ns / NS_PER_S,
                port=stored.port,
            )
            if reading is not None:
                yield reading

    def _share(self, time_ns: int) -> float:
        return (time_ns - self.start) / (self.end - self.start)

    # -- bookkeeping ---------------------------------------------------------------

    def _count(self, reading: Reading) -> None:
        tally = self.after[reading.sensor]
        tally.count += 1
        tally.wh += reading.wh_delta
        tally.last_total = reading.wh_total
        tally.last_time_ns = reading.time_ns
        tally.name = reading.name

    def _check_replaced(self, before: dict[int, _Tally]) -> None:
        for sensor in self.sensors:
            if before[sensor].count and not self.after[sensor].count:
                raise StoreError(
                    f"sensor {sensor}: the range holds {before[sensor].count} readings"
                    " but its archived frames give none (no frames archived, or the"
                    " config's channels do not match them); nothing was changed"
                )

    def _shift(self, sensor: int, before: _Tally, seed: float | None) -> float:
        old_end = before.last_total if before.last_total is not None else seed
        new_end = self.after[sensor].last_total
        if new_end is None:
            new_end = seed
        if old_end is None or new_end is None:
            return 0.0
        return new_end - old_end

    def _name(self, sensor: int) -> str:
        for s in self.config.sensors:
            if s.address == sensor:
                return s.display_name
        return self.store.known_sensors().get(sensor, f"sensor-{sensor}")
