"""The daemon: serial ports in, readings out to every sink, under one TaskGroup.

Data path, all in the event loop thread and none of it awaiting::

    SerialSource.chunks() -> FrameDecoder.feed() -> ReadingPipeline.process()
        -> Handoff.publish() -> the store's bounded queue, and once stored,
           one bounded queue per other sink (see :mod:`wattd.daemon.handoff`)

Each port has a reader task (``wattd[serial:NAME].reader``); each sink has a
writer task and optionally a background task (see :mod:`wattd.daemon.bus`); one
housekeeping task (``wattd.main``) pings the systemd watchdog, updates
``STATUS=``, saves the state every ``save_interval_s`` and applies reloads.
What the daemon knows for status (per-sensor counters, the snapshot) is kept
by :class:`~wattd.daemon.monitor.Monitor`.
Nothing is fire-and-forget: every task belongs to the TaskGroup, and each one
handles its own failures, so a dead device or sink never cancels the group.

Shutdown (:meth:`Supervisor.request_stop`, SIGTERM/SIGINT): stop reading, let
the store and then every other sink write what is queued and flush (within
``flush_timeout_s`` in all), save the state, return. Reload
(:meth:`Supervisor.request_reload`, SIGHUP): validate the file again; if it is
bad, log why and keep the old config; otherwise apply calibration/sensor
changes in place, open added ports, close removed ones, restart a port only if
its own settings changed, and start or stop sinks that were enabled or disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final, Protocol

from wattd import __version__
from wattd.config import Config, PortConfig, load_config, pipeline_settings
from wattd.core.readings import Reading
from wattd.daemon.bus import Bus, SinkChannel
from wattd.daemon.handoff import Handoff
from wattd.daemon.monitor import Monitor
from wattd.daemon.ports import ChunkSource, PortReader
from wattd.daemon.sdnotify import SdNotifier
from wattd.daemon.watch import FileWatch
from wattd.errors import ConfigError, StateError, WattdError
from wattd.sources.serial import SYSTEM_CLOCK, Chunk, Clock, SerialSource
from wattd.storage.state import StateFile, recorded_energy_totals, restore_pipeline
from wattd.support.clock import utc_now
from wattd.support.logsetup import setup_logging
from wattd.support.throttle import LogThrottle
from wattd.support.worker import run_blocking

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from wattd.core.iosample import IoSampleFrame
    from wattd.core.pipeline import PipelineSettings, PipelineState
    from wattd.core.snapshot import DaemonSnapshot
    from wattd.sinks.base import Sink

log = logging.getLogger(__name__)

DEFAULT_FLUSH_TIMEOUT_S: Final = 10.0
# However long the store took to flush at shutdown, the other sinks get this.
MIN_FLUSH_AFTER_STORE_S: Final = 1.0
# The main loop's tick: the watchdog ping and status refresh ride on it.
TICK_S: Final = 1.0
STATUS_EVERY_S: Final = 5.0
# A sensor not heard from in this long no longer counts as "seen" in STATUS=.
STALE_AFTER_S: Final = 60.0
# A port task that crashed on a bug is restarted after this pause.
PORT_RESTART_S: Final = 1.0


class Pipeline(Protocol):
    """What the supervisor needs of :class:`wattd.core.pipeline.ReadingPipeline`."""

    def process(
        self,
        frame: IoSampleFrame,
        *,
        time: datetime,
        monotonic_s: float,
        port: str = "",
    ) -> Reading | None:
        """Turn one IO frame into a reading (or None)."""
        ...

    def reconfigure(self, settings: PipelineSettings) -> None:
        """Apply new calibration and sensors, keeping energy."""
        ...

    def state(self) -> PipelineState:
        """A snapshot of the per-sensor state."""
        ...

    def raise_energy_floor(self, sensor: int, wh_total: float) -> None:
        """Never publish a total below ``wh_total`` for ``sensor``."""
        ...

    def drain_new_unknown(self) -> list[int]:
        """Addresses heard for the first time without a config entry."""
        ...


PipelineFactory = Callable[[Config, "PipelineState | None"], Pipeline]
SinkFactory = Callable[[Config], list["Sink"]]
SourceFactory = Callable[[PortConfig, Clock], "ChunkSource"]


class Stage(Protocol):
    """A step after the pipeline that may enrich a reading (e.g. live cost)."""

    def apply(self, reading: Reading) -> Reading:
        """Return the reading, possibly replaced by an enriched copy."""
        ...

    def reconfigure(self, config: Config) -> None:
        """Take a new, already validated config (SIGHUP)."""
        ...

    def prepare(self) -> None:
        """Blocking start-up work (reading the store); runs in a worker thread."""
        ...


def default_stages(config: Config) -> list[Stage]:
    """The stages ``wattd run`` uses: live price band and cost per reading."""
    from wattd.costing.livecost import LiveCost
    from wattd.storage.intervals import recent_intervals

    return [
        LiveCost(
            config,
            history=lambda start, end: recent_intervals(config, start, end),
            now=utc_now,
        )
    ]


def _default_pipeline(config: Config, state: PipelineState | None) -> Pipeline:
    from wattd.core.pipeline import ReadingPipeline

    return ReadingPipeline(pipeline_settings(config), state=state)


def _default_sinks(config: Config) -> list[Sink]:
    from wattd.sinks.registry import build_sinks

    return build_sinks(config)


def _default_source(port: PortConfig, clock: Clock) -> ChunkSource:
    return SerialSource(port, clock=clock)


class Supervisor:
    """Runs the daemon until asked to stop."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        clock: Clock = SYSTEM_CLOCK,
        pipeline_factory: PipelineFactory = _default_pipeline,
        sink_factory: SinkFactory = _default_sinks,
        source_factory: SourceFactory = _default_source,
        stages: Sequence[Stage] | None = None,
        notifier: SdNotifier | None = None,
        store_totals: Callable[[Config], Mapping[int, float]] = recorded_energy_totals,
        flush_timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S,
        handle_signals: bool = False,
        log_level: str | None = None,
    ) -> None:
        self.config = config
        # A level given on the command line outranks the config, reloads too.
        self._log_level = log_level
        self.config_path = config_path
        self.ready = asyncio.Event()
        self._clock = clock
        self._pipeline_factory = pipeline_factory
        self._sink_factory = sink_factory
        self._source_factory = source_factory
        self._stages = tuple(default_stages(config) if stages is None else stages)
        self._notifier = notifier or SdNotifier()
        self._store_totals = store_totals
        self._flush_timeout_s = flush_timeout_s
        self._handle_signals = handle_signals
        self._pipeline: Pipeline | None = None
        self._state_file = StateFile(config.state_path)
        self._bus = Bus()
        self._handoff = Handoff(self._bus, clock=clock.monotonic)
        self._ports: dict[str, PortReader] = {}
        self._port_tasks: dict[str, asyncio.Task[None]] = {}
        self._monitor = Monitor(
            clock=clock,
            ports=self._ports,
            bus=self._bus,
            state_file=self._state_file,
            config_path=config_path,
        )
        self._stop = asyncio.Event()
        self._reload_wanted = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._throttle = LogThrottle()
        self._last_save_mono = clock.monotonic()
        self._price_files = FileWatch(config, clock.monotonic())
        self._pipeline_errors = 0
        self._saving: asyncio.Future[None] | None = None

    # -- control ---------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin an orderly shutdown (safe to call from a signal handler)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Re-read the config file at the next tick."""
        self._reload_wanted.set()

    @property
    def bus(self) -> Bus:
        """The fan-out (tests and embedders may inspect its channels)."""
        return self._bus

    @property
    def pipeline(self) -> Pipeline:
        """The reading pipeline (exists once :meth:`run` has started)."""
        if self._pipeline is None:
            msg = "the pipeline exists only while the supervisor runs"
            raise RuntimeError(msg)
        return self._pipeline

    async def run(self) -> None:
        """Run until :meth:`request_stop`; returns after an orderly shutdown.

        Raises:
            WattdError: only for start-up problems that retrying cannot fix
                (such as an unusable state directory or a bad sink section).
        """
        state = await run_blocking(self._state_file.load)
        pipeline = self._pipeline_factory(self.config, state)
        floors = await run_blocking(self._store_totals, self.config)
        restore_pipeline(pipeline, floors)
        for stage in self._stages:
            await run_blocking(stage.prepare)
        self._pipeline = pipeline
        sinks = self._sink_factory(self.config)
        loop = asyncio.get_running_loop()
        if self._handle_signals:
            self._install_signals(loop)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for sink in sinks:
                    self._add_sink(sink, tg)
                for port in self.config.ports:
                    self._open_port(port, tg)
                main = tg.create_task(self._main_loop(), name="wattd.main")
                self._log_start()
                self.ready.set()
                self._notifier.ready(self.snapshot().status_line(STALE_AFTER_S))
                await self._stop.wait()
                log.info("stopping: closing ports, flushing sinks")
                self._notifier.stopping()
                await self._close_ports()
                await self._close_sinks()
                main.cancel()
        finally:
            self._tg = None
            if self._handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
        # Save last, after the sinks flushed: the store then holds at least the
        # saved totals, so the next start's max() is consistent.
        await self._save_state_final()
        self._notifier.close()
        log.info("stopped")

    # -- start-up and shutdown -----------------------------------------------

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def _log_start(self) -> None:
        log.info(
            "wattd %s running: %d ports, %d configured sensors, sinks: %s",
            __version__,
            len(self._ports),
            len(self.config.sensors),
            ", ".join(c.name for c in self._bus.channels) or "none",
        )
        if not self.config.ports:
            log.warning("no ports configured; add one under ports: in the config")

    def _add_sink(self, sink: Sink, tg: asyncio.TaskGroup) -> None:
        channel = SinkChannel(sink)
        self._bus.add(channel)
        self._handoff.attach(channel)
        try:
            sink.attach(self.snapshot)
        except Exception:
            log.exception("sink %s: attach failed; it runs without status", sink.name)
        channel.start(tg)

    async def _close_sinks(self) -> None:
        channels = self._bus.channels
        if not channels:
            return
        timeout_s = self._flush_timeout_s
        store = self._handoff.store
        if store is not None:
            # The store first: its last commits hand the readings that still
            # wait for it to the other sinks, which then flush them as well,
            # in what is left of the same time budget.
            started = self._clock.monotonic()
            await store.close(timeout_s)
            self._handoff.detach()
            elapsed = self._clock.monotonic() - started
            timeout_s = max(MIN_FLUSH_AFTER_STORE_S, timeout_s - elapsed)
        async with asyncio.TaskGroup() as tg:
            for channel in channels:
                if channel is store:
                    continue
                tg.create_task(
                    channel.close(timeout_s),
                    name=f"wattd[sink:{channel.name}].close",
                )
        for channel in channels:
            self._bus.remove(channel.name)

    async def _close_ports(self) -> None:
        tasks = list(self._port_tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._port_tasks.clear()

    # -- ports ---------------------------------------------------------------

    def _open_port(self, port: PortConfig, tg: asyncio.TaskGroup) -> None:
        reader = PortReader(port, self._source_factory(port, self._clock))
        self._ports[port.device] = reader
        self._port_tasks[port.device] = tg.create_task(
            self._read_port(reader), name=f"wattd[serial:{reader.name}].reader"
        )

    async def _close_port(self, device: str) -> None:
        reader = self._ports.pop(device, None)
        task = self._port_tasks.pop(device, None)
        if reader is None or task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("port %s: closed", reader.name)

    async def _read_port(self, reader: PortReader) -> None:
        while True:
            try:
                async with contextlib.aclosing(reader.source.chunks()) as chunks:
                    async for chunk in chunks:
                        self._handle_chunk(reader, chunk)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "port %s: reader failed unexpectedly; restarting it in %.0f s",
                    reader.name,
                    PORT_RESTART_S,
                )
                await asyncio.sleep(PORT_RESTART_S)

    def _handle_chunk(self, reader: PortReader, chunk: Chunk) -> None:
        for item in reader.decode(chunk):
            self._bus.publish_frame(item.record)
            if item.frame is not None:
                self._handle_io(reader, item.frame, chunk)
            elif item.claimed_sensor is not None:
                self._monitor.corrupt_frame(item.claimed_sensor)

    def _handle_io(
        self, reader: PortReader, frame: IoSampleFrame, chunk: Chunk
    ) -> None:
        sensor = frame.sensor_id
        track = self._monitor.heard(
            sensor, reader.name, chunk.wall_time, chunk.monotonic_s
        )
        try:
            reading = self.pipeline.process(
                frame,
                time=chunk.wall_time,
                monotonic_s=chunk.monotonic_s,
                port=reader.name,
            )
            if reading is None:
                return
            for stage in self._stages:
                reading = stage.apply(reading)
        except Exception as exc:
            self._pipeline_errors += 1
            if self._throttle.allow(("pipeline", type(exc))) is not None:
                log.exception(
                    "sensor %d: frame could not be turned into a reading; skipped",
                    sensor,
                )
            return
        self._monitor.produced(track, reading)
        self._handoff.publish(reading)

    # -- main loop -----------------------------------------------------------

    async def _main_loop(self) -> None:
        last_status = -STATUS_EVERY_S
        watchdog_s = self._notifier.watchdog_interval_s
        tick = TICK_S if watchdog_s is None else min(TICK_S, watchdog_s / 3)
        while True:
            # Wake for the next save on time: the save interval is the promise
            # of how much energy a crash can lose.
            due = self._last_save_mono + self.config.save_interval_s
            wait = max(0.0, min(tick, due - self._clock.monotonic()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._reload_wanted.wait()
            try:
                now = self._clock.monotonic()
                self._notifier.watchdog()
                if self._price_files.changed(self.config, now):
                    self._reload_wanted.set()
                if self._reload_wanted.is_set():
                    self._reload_wanted.clear()
                    await self.reload()
                for sensor in self.pipeline.drain_new_unknown():
                    log.warning(
                        "sensor %d (0x%04X) is not in the config; using default"
                        " calibration. Add it under sensors: to name and calibrate it",
                        sensor,
                        sensor,
                    )
                self._handoff.release_overdue()
                if now - last_status >= STATUS_EVERY_S:
                    last_status = now
                    self._notifier.status(self.snapshot().status_line(STALE_AFTER_S))
                # The epsilon absorbs timer rounding so a save is never a tick late.
                if now - self._last_save_mono >= self.config.save_interval_s - 0.01:
                    await self._save_state()
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._throttle.allow("main") is not None:
                    log.exception("main loop step failed; continuing")

    async def _save_state(self) -> None:
        self._last_save_mono = self._clock.monotonic()
        state = self.pipeline.state()
        # Shielded: if shutdown cancels the main loop mid-save, the write still
        # completes, and the final save waits for it instead of racing it.
        self._saving = asyncio.get_running_loop().create_task(
            run_blocking(self._state_file.save, state), name="wattd.storage.state.save"
        )
        try:
            await asyncio.shield(self._saving)
        except StateError as exc:
            if self._throttle.allow("save") is not None:
                log.error("%s", exc)

    async def _save_state_final(self) -> None:
        if self._pipeline is None:
            return
        if self._saving is not None:
            with contextlib.suppress(Exception):
                await self._saving
        try:
            self._state_file.save(self._pipeline.state())
        except StateError as exc:
            log.error("%s", exc)
        else:
            log.info("state saved to %s", self._state_file.path)

    # -- reload ----------------------------------------------------------------

    async def reload(self, config: Config | None = None) -> bool:
        """Re-read (or take) a config and apply it; False if it was rejected."""
        self._notifier.reloading()
        try:
            if config is None:
                if self.config_path is None:
                    log.warning("reload requested, but there is no config file to read")
                    return False
                config = await run_blocking(load_config, self.config_path)
            await self._apply(config)
        except ConfigError as exc:
            self._monitor.config_rejected(str(exc))
            # One line per rejected reload, however many problems it had.
            log.error(
                "config reload rejected, still running the previous config: %s",
                exc.one_line(),
            )
            return False
        except WattdError as exc:
            self._monitor.config_rejected(str(exc))
            log.error("config reload failed: %s", exc)
            return False
        finally:
            self._notifier.ready(self.snapshot().status_line(STALE_AFTER_S))
        self._monitor.config_applied()
        return True

    async def _apply(self, new: Config) -> None:
        old = self.config
        tg = self._tg
        if tg is None:
            msg = "reload needs a running supervisor"
            raise RuntimeError(msg)
        # Build first: a sink section that cannot be built rejects the reload
        # before anything has changed.
        candidates = self._sink_factory(new)
        self.pipeline.reconfigure(pipeline_settings(new))
        for stage in self._stages:
            stage.reconfigure(new)
        self.config = new
        if new.logging != old.logging:
            setup_logging(self._log_level or new.logging.level, new.logging.format)
        for channel in self._bus.channels:
            try:
                channel.sink.reconfigure(new)
            except Exception:
                log.exception("sink %s: could not apply the new config", channel.name)
        if new.state_path != old.state_path:
            log.warning(
                "state_dir changed to %s; it takes effect at the next restart",
                new.state_dir,
            )
        await self._apply_ports(old, new, tg)
        await self._apply_sinks(candidates, tg)
        log.info(
            "config reloaded: %d ports, %d sensors, sinks: %s",
            len(new.ports),
            len(new.sensors),
            ", ".join(c.name for c in self._bus.channels) or "none",
        )

    async def _apply_ports(
        self, old: Config, new: Config, tg: asyncio.TaskGroup
    ) -> None:
        before = {p.device: p for p in old.ports}
        after = {p.device: p for p in new.ports}
        for device, port in before.items():
            if after.get(device) != port:
                await self._close_port(device)
        for device, port in after.items():
            if before.get(device) != port:
                self._open_port(port, tg)

    async def _apply_sinks(self, candidates: list[Sink], tg: asyncio.TaskGroup) -> None:
        # Sinks already running keep their instance (reconfigure() above); the
        # fresh instance of those is dropped unstarted, which is why sink
        # constructors must not do IO.
        running = {c.name for c in self._bus.channels}
        wanted = {s.name for s in candidates}
        added = [s for s in candidates if s.name not in running]
        for channel in self._bus.channels:
            if channel.name not in wanted:
                self._bus.remove(channel.name)
                log.info("sink %s: disabled by the new config; flushing", channel.name)
                await channel.close(self._flush_timeout_s)
                self._handoff.detach(channel)
        for sink in added:
            log.info("sink %s: enabled by the new config", sink.name)
            self._add_sink(sink, tg)

    # -- monitoring ------------------------------------------------------------

    def snapshot(self) -> DaemonSnapshot:
        """The current counters as one typed, frozen object."""
        return self._monitor.snapshot(self.config)


__all__ = ["Pipeline", "Stage", "Supervisor", "default_stages"]
