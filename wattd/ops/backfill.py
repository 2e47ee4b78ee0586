"""Re-sending stored readings to the central time-series store (``wattd backfill``).

The readings come from the local store, opened read-only on a thread of its own
(so the daemon keeps writing), one sensor at a time in time order. They are
turned back into readings and encoded by the caller's encoder, the InfluxDB
sink's own, so every point has the measurement, tags, fields and timestamp the
sink would have written: a point sent twice is the same point, which the
server overwrites (InfluxDB) or collapses (VictoriaMetrics with
``-dedup.minScrapeInterval=1ms``). With ``aggregate_s`` the readings are folded
into the same per-meter interval means first, over whole intervals only.

Progress is a checkpoint file: per range and destination, the time of each
sensor's last point the server acknowledged. It is replaced atomically after
every batch, so an interrupted run continues where the server last said yes.
A batch never ends between two readings of one sensor with the same time, so
resuming after that time skips nothing.

:func:`run_gap_backfill` sends just the ranges the daemon could not deliver
(the spool's open gaps: dropped or dead-lettered points, per meter) and closes
each once the server has taken all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol

from wattd.clients.influx import InfluxBusy, InfluxRejected
from wattd.core.aggregate import ReadingAggregator
from wattd.core.readings import Reading
from wattd.errors import WattdError
from wattd.storage.files import atomic_write, set_aside
from wattd.storage.store import Store, floor_ns, from_ns
from wattd.support.backoff import backoff_delay
from wattd.support.worker import DedicatedThread

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

    from wattd.clients.influx import InfluxWriter
    from wattd.storage.spool import Gap
    from wattd.storage.store import StoredReading

__all__ = [
    "DEFAULT_BATCH_POINTS",
    "BackfillError",
    "BackfillJob",
    "BackfillProgress",
    "BackfillResult",
    "Checkpoint",
    "GapBackfillResult",
    "LineEncoder",
    "gap_job",
    "run_backfill",
    "run_gap_backfill",
    "stored_to_reading",
]

DEFAULT_BATCH_POINTS: Final = 10_000
"""Points per write: big enough to amortise a request, small enough for any server."""
CHECKPOINT_FORMAT: Final = 1
BUSY_RETRIES: Final = 5
"""How often a batch is retried while the server says it is busy (429, 5xx)."""
BUSY_BACKOFF_S: Final = (1.0, 30.0)
"""First and longest wait between those retries."""
_NO_LABELS: Final = MappingProxyType[str, str]({})


class BackfillError(WattdError):
    """The backfill cannot start or go on (bad range, unreadable checkpoint)."""


class LineEncoder(Protocol):
    """What encodes a reading as one line of line protocol (the sink's encoder)."""

    def encode(self, reading: Reading) -> bytes | None:
        """One line without the newline, or None for a reading with no field."""
        ...


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BackfillJob:
    """What to send: a range of the store, to one destination, in batches."""

    destination: str
    """The server and bucket or database, without secrets; keys the checkpoint."""
    from_ns: int
    until_ns: int
    open_end: bool = False
    """``until_ns`` is "now": the checkpoint entry is then shared by later runs."""
    sensors: Sequence[int] | None = None
    aggregate_s: float = 0.0
    batch_points: int = DEFAULT_BATCH_POINTS
    max_batches: int | None = None
    """Stop after this many batches (the next run continues)."""

    @property
    def key(self) -> str:
        """The checkpoint entry of this range and destination."""
        until = "now" if self.open_end else str(self.until_ns)
        mean = f" mean {self.aggregate_s:g}s" if self.aggregate_s else ""
        return f"{self.destination} [{self.from_ns}, {until}){mean}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BackfillProgress:
    """Where a running backfill stands."""

    points_sent: int
    readings_done: int
    readings_total: int
    elapsed_s: float

    @property
    def fraction(self) -> float:
        """Share of the range's readings read and sent, 0-1."""
        if self.readings_total <= 0:
            return 1.0
        return min(1.0, self.readings_done / self.readings_total)

    @property
    def points_per_s(self) -> float:
        """Mean rate so far."""
        return self.points_sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BackfillResult:
    """How a backfill run ended."""

    points_sent: int
    batches_sent: int
    elapsed_s: float
    complete: bool
    """False when it stopped early (a stop request or ``max_batches``)."""
    resumed: bool
    """It continued from a checkpoint."""

    @property
    def points_per_s(self) -> float:
        """Mean rate of the run."""
        return self.points_sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Checkpoint:
    """Per range: each sensor's last acknowledged point time, in one JSON file."""

    def __init__(self, path: Path, key: str, sent_ns: dict[int, int]) -> None:
        self.path = path
        self.key = key
        self.sent_ns = sent_ns
        """Sensor -> time of its last point the server took (ns)."""

    @classmethod
    def load(cls, path: Path, key: str, *, restart: bool = False) -> Checkpoint:
        """The entry for ``key`` (empty with ``restart`` or when there is none).

        A damaged file is renamed aside and the range starts over: re-sending
        is harmless.

        Raises:
            BackfillError: the file cannot be read.
        """
        doc = cls._read(path)
        entry = doc.get("ranges", {}).get(key, {}) if not restart else {}
        sent = {int(s): int(t) for s, t in entry.get("sent_through_ns", {}).items()}
        return cls(path, key, sent)

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            msg = f"cannot read the backfill checkpoint {path}: {exc.strerror}"
            raise BackfillError(msg) from None
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
                raise ValueError
            for entry in doc.get("ranges", {}).values():
                {int(s): int(t) for s, t in entry["sent_through_ns"].items()}
        except (ValueError, TypeError, KeyError, AttributeError):
            with contextlib.suppress(OSError):
                set_aside(path, time.time_ns())
            return {}
        return doc

    def forget(self) -> None:
        """Remove this entry from the file (its range is done for good)."""
        doc = self._read(self.path)
        ranges = doc.get("ranges", {})
        if ranges.pop(self.key, None) is None:
            return
        body = {"format": CHECKPOINT_FORMAT, "ranges": ranges}
        atomic_write(self.path, json.dumps(body, indent=1).encode() + b"\n")

    def save(self) -> None:
        """Write this entry into the file atomically, keeping the other ranges."""
        doc = self._read(self.path)
        ranges = doc.get("ranges", {})
        ranges[self.key] = {
            "sent_through_ns": {str(s): t for s, t in sorted(self.sent_ns.items())},
            "updated_ns": time.time_ns(),
        }
        body = {"format": CHECKPOINT_FORMAT, "ranges": ranges}
        atomic_write(self.path, json.dumps(body, indent=1).encode() + b"\n")


def stored_to_reading(stored: StoredReading, labels: Any = _NO_LABELS) -> Reading:
    """A stored reading as the pipeline made it, for the sinks' encoders.

    The store keeps a non-finite figure as NULL; it comes back as NaN, which
    the encoders leave out just as they left out the original.
    """
    return Reading(
        sensor=stored.sensor,
        name=stored.name,
        time=from_ns(stored.time_ns),
        monotonic_s=0.0,
        watts=math.nan if stored.watts is None else stored.watts,
        va=math.nan if stored.va is None else stored.va,
        vrms=math.nan if stored.vrms is None else stored.vrms,
        irms=math.nan if stored.irms is None else stored.irms,
        power_factor=stored.power_factor,
        wh_total=math.nan if stored.wh_total is None else stored.wh_total,
        wh_delta=stored.wh_delta,
        rssi_dbm=stored.rssi_dbm,
        flags=stored.flags,  # type: ignore[arg-type]  # stored as the Flag strings
        sample_interval_ms=stored.sample_interval_ms,
        cycles=stored.cycles,
        gap_s=stored.gap_s,
        current_zero_drift_counts=stored.zero_drift_counts,
        port=stored.port,
        labels=labels,
        frame_hash=stored.frame_hash,
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Batch:
    body: bytes
    points: int
    readings: int
    marks_ns: dict[int, int]
    """Sensor -> time of its last point in this batch."""


class _Source:
    """Reads and encodes batches; lives on the store's thread."""

    def __init__(
        self, job: BackfillJob, store: Store, encoder: LineEncoder, done: dict[int, int]
    ) -> None:
        self._job = job
        self._store = store
        self._encoder = encoder
        self._from_ns, self._until_ns = job.from_ns, job.until_ns
        step = round(job.aggregate_s * 1e9)
        if step:
            # Whole intervals only: a cut one would give a mean the sink never sent.
            self._from_ns = -floor_ns(-job.from_ns, step)
            self._until_ns = floor_ns(job.until_ns, step)
        known = sorted(store.known_sensors())
        wanted = known if job.sensors is None else sorted(set(job.sensors))
        self._starts = {
            s: max(self._from_ns, done[s] + 1) if s in done else self._from_ns
            for s in wanted
        }
        self.total = sum(
            store.reading_summary(start, self._until_ns, s)[0]
            for s, start in self._starts.items()
            if start < self._until_ns
        )
        self._aggregator = ReadingAggregator(job.aggregate_s)
        self._readings = self._each_reading()

    def _each_reading(self) -> Iterator[tuple[Reading, bool, bool]]:
        """Every reading in order; may a batch end after it; is it its sensor's last."""
        for sensor, start in self._starts.items():
            if start >= self._until_ns:
                continue
            previous: Reading | None = None
            for stored in self._store.iter_readings(start, self._until_ns, [sensor]):
                reading = stored_to_reading(stored)
                if previous is not None:
                    yield previous, previous.time_ns != reading.time_ns, False
                previous = reading
            if previous is not None:
                yield previous, True, True

    def next_batch(self) -> _Batch | None:
        """The next batch, or None when the range is done."""
        encode = self._encoder.encode
        aggregator = self._aggregator
        lines: list[bytes] = []
        marks: dict[int, int] = {}
        count = 0
        limit = self._job.batch_points
        for reading, may_end, sensor_ends in self._readings:
            count += 1
            out: Sequence[Reading] = aggregator.add([reading])
            if sensor_ends:
                out = [*out, *aggregator.drain()]
            for point in out:
                line = encode(point)
                if line is not None:
                    lines.append(line)
                marks[point.sensor] = point.time_ns
            # Readings of an interval still open are read again by a resumed
            # run (the mark is the last point sent), so only readings of equal
            # time must stay together: resuming skips past their time.
            if len(lines) >= limit and may_end:
                break
        if count == 0:
            return None
        return _Batch(
            body=b"\n".join(lines), points=len(lines), readings=count, marks_ns=marks
        )


async def run_backfill(
    job: BackfillJob,
    *,
    store_path: Path,
    encoder: LineEncoder,
    writer: InfluxWriter,
    checkpoint: Checkpoint,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[BackfillProgress], object] | None = None,
) -> BackfillResult:
    """Send the job's range in batches, saving the checkpoint after each.

    The next batch is read and encoded on the store's thread while the current
    one is on its way. ``stop`` ends the run after the batch in flight.

    Raises:
        StoreError: the store cannot be read.
        SinkError: the server refused a batch or stayed unreachable; what was
            acknowledged before stays in the checkpoint.
    """
    thread = DedicatedThread("wattd-backfill-store")
    started = time.monotonic()
    resumed = bool(checkpoint.sent_ns)
    sent = batches = done = 0
    complete = False
    store: Store | None = None
    upcoming: asyncio.Future[_Batch | None] | None = None
    try:
        store = await thread.run(Store.open, store_path, readonly=True)
        source = await thread.run(_Source, job, store, encoder, checkpoint.sent_ns)
        upcoming = asyncio.ensure_future(thread.run(source.next_batch))
        while True:
            batch = await upcoming
            if batch is None:
                complete = True
                break
            upcoming = asyncio.ensure_future(thread.run(source.next_batch))
            if batch.points:
                await _send(writer, batch.body)
            sent += batch.points
            done += batch.readings
            batches += 1
            checkpoint.sent_ns.update(batch.marks_ns)
            await asyncio.to_thread(checkpoint.save)
            if on_progress is not None:
                on_progress(
                    BackfillProgress(
                        points_sent=sent,
                        readings_done=done,
                        readings_total=source.total,
                        elapsed_s=time.monotonic() - started,
                    )
                )
            if (stop is not None and stop.is_set()) or (
                job.max_batches is not None and batches >= job.max_batches
            ):
                # The batch read ahead is dropped; its readings come next run.
                with contextlib.suppress(Exception):
                    await upcoming
                break
    finally:
        if upcoming is not None and not upcoming.done():
            # A read still running on the thread must end before the store closes.
            with contextlib.suppress(Exception):
                await upcoming
        if store is not None:
            await thread.run(store.close)
        thread.close(wait=False)
    return BackfillResult(
        points_sent=sent,
        batches_sent=batches,
        elapsed_s=time.monotonic() - started,
        complete=complete,
        resumed=resumed,
    )


async def _send(writer: InfluxWriter, body: bytes) -> None:
    """One write; a busy server gets a few tries, anything else ends the run."""
    attempt = 0
    while True:
        try:
            await writer.write(body)
        except InfluxBusy as exc:
            attempt += 1
            if attempt > BUSY_RETRIES:
                raise
            wait_s = backoff_delay(
                attempt, initial_s=BUSY_BACKOFF_S[0], max_s=BUSY_BACKOFF_S[1]
            )
            await asyncio.sleep(max(wait_s, exc.retry_after_s or 0.0))
        else:
            return


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GapBackfillResult:
    """How a run over the open gaps ended."""

    closed: int
    still_open: int
    """Gaps not closed: refused again, grown meanwhile, or not reached."""
    points_sent: int
    elapsed_s: float
    errors: tuple[str, ...] = ()
    """One line per gap the server refused again."""


def gap_job(
    gap: Gap,
    *,
    destination: str,
    aggregate_s: float = 0.0,
    batch_points: int = DEFAULT_BATCH_POINTS,
) -> BackfillJob:
    """The backfill of one gap: its meter, over the whole of its range.

    With ``aggregate_s`` a gap's times are those of interval means (each the
    last reading of its interval), so the range covers their whole intervals.
    """
    step = round(aggregate_s * 1e9)
    if step:
        from_ns = floor_ns(gap.first_ns, step)
        until_ns = floor_ns(gap.last_ns, step) + step
    else:
        from_ns, until_ns = gap.first_ns, gap.last_ns + 1
    return BackfillJob(
        destination=destination,
        from_ns=from_ns,
        until_ns=until_ns,
        sensors=None if gap.meter is None else [gap.meter],
        aggregate_s=aggregate_s,
        batch_points=batch_points,
    )


async def run_gap_backfill(
    gaps: Sequence[Gap],
    *,
    destination: str,
    store_path: Path,
    encoder: LineEncoder,
    writer: InfluxWriter,
    checkpoint_path: Path,
    close_gap: Callable[[Gap], bool],
    aggregate_s: float = 0.0,
    batch_points: int = DEFAULT_BATCH_POINTS,
    stop: asyncio.Event | None = None,
) -> GapBackfillResult:
    """Re-send each gap's range from the store; close it once all was taken.

    ``close_gap`` marks a gap closed in the spool and says whether it was
    still the same range; it is called on the event loop's thread (a spool is
    used from the thread that opened it), and its transaction is short. A gap
    the server refuses again stays open and the run goes on with the next.

    Raises:
        StoreError: the store cannot be read.
        SinkError: the server stayed unreachable.
    """
    started = time.monotonic()
    closed = sent = 0
    errors: list[str] = []
    for gap in gaps:
        if stop is not None and stop.is_set():
            break
        job = gap_job(
            gap,
            destination=destination,
            aggregate_s=aggregate_s,
            batch_points=batch_points,
        )
        checkpoint = Checkpoint.load(checkpoint_path, job.key)
        try:
            result = await run_backfill(
                job,
                store_path=store_path,
                encoder=encoder,
                writer=writer,
                checkpoint=checkpoint,
                stop=stop,
            )
        except InfluxRejected as exc:
            meter = "every meter" if gap.meter is None else f"meter {gap.meter}"
            errors.append(f"gap {gap.id} ({meter}): {exc}")
            continue
        sent += result.points_sent
        if result.complete and close_gap(gap):
            closed += 1
            await asyncio.to_thread(checkpoint.forget)
    return GapBackfillResult(
        closed=closed,
        still_open=len(gaps) - closed,
        points_sent=sent,
        elapsed_s=time.monotonic() - started,
        errors=tuple(errors),
    )
