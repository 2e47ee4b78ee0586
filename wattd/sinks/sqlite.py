"""The default sink: readings and raw frames into the local SQLite store.

SQLite calls are blocking, so they run on one dedicated thread that owns the
connection; the event loop only hands over lists. Readings and frames are
buffered briefly and written together in one transaction when ``batch_size``
items are waiting, every ``flush_interval_s`` and at shutdown.

In the daemon the other sinks get a reading only once it is committed here
(:mod:`wattd.daemon.handoff`), so while readings wait for that, they are written as
soon as they arrive, at most every :data:`COMMIT_SPACING_S`: readings that
come in meanwhile share the next transaction. That keeps the hand-off within
tens of milliseconds and the number of transactions bounded under load. A
commit in WAL mode with ``synchronous=NORMAL`` costs no fsync and survives a
killed process.

Trouble with the file never stops the daemon: a locked store is retried (the
data waits, first in a small buffer, then in the sink's queue in front of it,
which drops the oldest items when full), a corrupt file is moved aside and a
fresh store started, and anything else is logged with what to do and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, ClassVar, Final, ParamSpec, TypeVar

from wattd.errors import SinkUnavailable, StoreCorrupt, StoreError
from wattd.sinks.base import Sink
from wattd.storage.sqlite import set_aside_database
from wattd.storage.store import (
    DEFAULT_BUSY_TIMEOUT_S,
    WRITER_HEARTBEAT_KEY,
    RetentionResult,
    Store,
)
from wattd.support.throttle import LogThrottle
from wattd.support.worker import DedicatedThread

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from wattd.config import Config
    from wattd.core.readings import FrameRecord, Reading
    from wattd.sinks.base import CommitListener

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

HEARTBEAT_INTERVAL_S: Final = 10.0
# Retention deletes are cheap but not free; every ten minutes keeps tables
# within minutes of their limit. A pass does at most this many delete batches
# so a flush never waits long behind it; leftovers go at the next tick.
RETENTION_INTERVAL_S: Final = 600.0
RETENTION_MAX_BATCHES: Final = 20
COMMIT_SPACING_S: Final = 0.05
"""Least time between two commits that other sinks wait for."""


class SqliteSink(Sink):
    """Write readings, rollups and the raw frame archive to the SQLite store."""

    name = "store"
    wants_frames: ClassVar[bool] = True

    def __init__(
        self,
        config: Config,
        *,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        self._config = config
        self._busy_timeout_s = busy_timeout_s
        self.batch_size = config.store.batch_size
        self._wall_clock_ns = wall_clock_ns
        self._monotonic = monotonic
        self._thread: DedicatedThread | None = None
        self._store: Store | None = None
        self._store_path: Path = config.store_path
        self._readings: list[Reading] = []
        self._frames: list[FrameRecord] = []
        self._lock = asyncio.Lock()
        self._throttle = LogThrottle(clock=monotonic)
        self._last_heartbeat: float | None = None
        self._next_retention = 0.0
        self._counters: dict[str, float] = {
            "readings_written": 0,
            "frames_written": 0,
            "flushes": 0,
            "flush_errors": 0,
            "retention_deleted": 0,
            "corrupt_set_aside": 0,
            "last_flush_ms": 0.0,
        }
        self._healthy = True
        self._listener: CommitListener | None = None
        self._last_commit: float | None = None

    def set_commit_listener(self, listener: CommitListener | None) -> None:
        """Report every commit and failed write to ``listener`` (the hand-off)."""
        self._listener = listener

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Start the store thread and open the store (trouble is retried later)."""
        if self._thread is None:
            self._thread = DedicatedThread("wattd-store")
        try:
            await self._call(self._open_sync)
        except StoreError as exc:
            self._report(exc, "opening")
        self._next_retention = self._monotonic()

    async def write(self, readings: Sequence[Reading]) -> None:
        """Buffer readings; write them once a batch is full.

        Raises:
            SinkUnavailable: the store has refused writes for a while and the
                buffer is full; the batch stays with the caller.
        """
        await self._make_room()
        self._readings.extend(readings)
        # While the store fails, nothing waits for it (the hand-off lets the
        # others have readings directly), so this never hammers a bad file.
        listener = self._listener
        if listener is not None and listener.waiting:
            await self._commit_soon()
        else:
            await self._flush_if_full()

    async def write_frames(self, frames: Sequence[FrameRecord]) -> None:
        """Buffer raw frames for the archive, like :meth:`write`."""
        await self._make_room()
        self._frames.extend(frames)
        await self._flush_if_full()

    async def run(self) -> None:
        """Flush on the interval, keep the heartbeat fresh, apply retention."""
        while True:
            await asyncio.sleep(self._config.store.flush_interval_s)
            try:
                await self._flush()
            except StoreError as exc:
                self._report(exc, "writing")
            if self._monotonic() >= self._next_retention:
                await self._retention()

    def reconfigure(self, config: Config) -> None:
        """Take new batch, interval and retention settings; a new path reopens."""
        self._config = config
        self.batch_size = config.store.batch_size
        self._next_retention = self._monotonic()
        if config.store_path != self._store_path:
            self._store_path = config.store_path
            self._healthy = False  # makes the next flush reopen at the new path

    async def flush(self) -> None:
        """Write everything buffered now.

        Raises:
            SinkUnavailable: the store could not take it.
        """
        try:
            await self._flush(force=True)
        except StoreError as exc:
            raise SinkUnavailable(str(exc), sink=self.name) from exc

    async def stop(self) -> None:
        """Flush what is left, clear the heartbeat and close the store."""
        with contextlib.suppress(StoreError):
            await self._flush(force=True)
        if self._readings or self._frames:
            log.error(
                "store: %d readings and %d frames could not be written at shutdown",
                len(self._readings),
                len(self._frames),
            )
        if self._thread is not None:
            with contextlib.suppress(StoreError):
                await self._call(self._close_sync)
            self._thread.close(wait=True)
            self._thread = None

    def stats(self) -> dict[str, float]:
        """Write counters, buffer depth and store health."""
        out = dict(self._counters)
        out["buffered_readings"] = len(self._readings)
        out["buffered_frames"] = len(self._frames)
        out["store_ok"] = 1.0 if self._healthy and self._store is not None else 0.0
        return out

    # -- event-loop side -----------------------------------------------------------

    async def _call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        if self._thread is None:
            raise StoreError(f"{self._store_path}: the store sink is not started")
        return await self._thread.run(fn, *args, **kwargs)

    def _pending(self) -> int:
        return len(self._readings) + len(self._frames)

    async def _make_room(self) -> None:
        if self._pending() < self.batch_size:
            return
        try:
            await self._flush()
        except StoreError as exc:
            self._report(exc, "writing")
            raise SinkUnavailable(str(exc), sink=self.name) from exc

    async def _commit_soon(self) -> None:
        """Commit now, or once :data:`COMMIT_SPACING_S` has passed since the last."""
        if self._last_commit is not None:
            wait = self._last_commit + COMMIT_SPACING_S - self._monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        try:
            await self._flush()
        except StoreError as exc:
            # The data stays buffered and is retried on the interval; the
            # listener has already let the other sinks have it.
            self._report(exc, "writing")

    async def _flush_if_full(self) -> None:
        if self._pending() < self.batch_size:
            return
        try:
            await self._flush()
        except StoreError as exc:
            # The data stays buffered; the next write or tick tries again.
            self._report(exc, "writing")

    async def _flush(self, *, force: bool = False) -> None:
        async with self._lock:
            now = self._monotonic()
            beat_due = (
                self._last_heartbeat is None
                or now - self._last_heartbeat >= HEARTBEAT_INTERVAL_S
            )
            if not self._pending() and not beat_due and not force:
                return
            readings, self._readings = self._readings, []
            frames, self._frames = self._frames, []
            started = self._monotonic()
            try:
                await self._call(self._write_sync, readings, frames)
            except StoreError:
                self._readings[:0] = readings
                self._frames[:0] = frames
                self._counters["flush_errors"] += 1
                self._healthy = False
                if self._listener is not None:
                    self._listener.failed()
                raise
            self._last_heartbeat = now
            self._last_commit = self._monotonic()
            if self._listener is not None:
                self._listener.committed(readings[-1] if readings else None)
            if not self._healthy:
                log.info("store: writing to %s again", self._store_path)
            self._healthy = True
            self._counters["flushes"] += 1
            self._counters["readings_written"] += len(readings)
            self._counters["frames_written"] += len(frames)
            self._counters["last_flush_ms"] = (self._monotonic() - started) * 1000.0

    async def _retention(self) -> None:
        async with self._lock:
            try:
                result = await self._call(self._retention_sync)
            except StoreError as exc:
                self._report(exc, "applying retention to")
                self._next_retention = self._monotonic() + RETENTION_INTERVAL_S / 10
                return
        deleted = sum(result.deleted.values())
        self._counters["retention_deleted"] += deleted
        if deleted:
            log.debug("store: retention deleted %s", result.deleted)
        # Unfinished work continues at the next tick rather than in one long pass.
        delay = RETENTION_INTERVAL_S if result.complete else 0.0
        self._next_retention = self._monotonic() + delay

    def _report(self, exc: StoreError, doing: str) -> None:
        suppressed = self._throttle.allow(type(exc).__name__)
        if suppressed is None:
            return
        more = f" ({suppressed} similar errors not logged)" if suppressed else ""
        log.error(
            "store: %s %s failed: %s; will retry%s", doing, self._store_path, exc, more
        )

    # -- store thread --------------------------------------------------------------

    def _open_sync(self) -> Store:
        if self._store is not None and self._store.path == self._store_path:
            return self._store
        self._close_sync()
        path = self._store_path
        try:
            self._store = Store.open(path, busy_timeout_s=self._busy_timeout_s)
        except StoreCorrupt as exc:
            aside = _set_aside(path, self._wall_clock_ns())
            self._counters["corrupt_set_aside"] += 1
            log.error("store: %s; moved it to %s and started a new store", exc, aside)
            self._store = Store.open(path, busy_timeout_s=self._busy_timeout_s)
        return self._store

    def _close_sync(self) -> None:
        store, self._store = self._store, None
        if store is None:
            return
        try:
            if self._last_heartbeat is not None:
                store.set_meta(WRITER_HEARTBEAT_KEY, None)
            store.checkpoint()
        finally:
            store.close()

    def _write_sync(self, readings: list[Reading], frames: list[FrameRecord]) -> None:
        for attempt in (1, 2):
            if not self._healthy:
                # After a failure start from a fresh connection (and path).
                self._close_quietly()
            store = self._open_sync()
            try:
                with store.transaction():
                    store.insert_readings(readings)
                    store.insert_frames(frames)
                    store.set_meta(WRITER_HEARTBEAT_KEY, self._wall_clock_ns())
                    store.set_meta("writer_pid", os.getpid())
            except StoreCorrupt:
                # Corruption found mid-write: set the file aside, retry once fresh.
                self._close_quietly()
                if attempt == 2:
                    raise
                aside = _set_aside(self._store_path, self._wall_clock_ns())
                self._counters["corrupt_set_aside"] += 1
                log.error(
                    "store: %s was corrupt; moved it to %s", self._store_path, aside
                )
                continue
            return

    def _close_quietly(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()

    def _retention_sync(self) -> RetentionResult:
        store = self._open_sync()
        return store.apply_retention(
            self._config.store,
            now_ns=self._wall_clock_ns(),
            max_batches=RETENTION_MAX_BATCHES,
        )


def _set_aside(path: Path, now_ns: int) -> Path:
    """Rename a damaged store and its WAL files out of the way; return the new name."""
    try:
        return set_aside_database(path, now_ns)
    except OSError as exc:
        raise StoreError(
            f"{path}: the store is corrupt and cannot be moved aside"
            f" ({exc.strerror}); move or delete it by hand"
        ) from None
