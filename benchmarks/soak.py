"""Fault soak: everything goes wrong at once, and no frame goes missing.

Run by hand from the repository root (a short version runs in the test suite,
``tests/test_soak.py``)::

    .venv/bin/python benchmarks/soak.py [--duration 120] [--meters 12] [--speed 20]

Simulated meters write frames through a socat pty pair (stable device path)
to a real ``wattd run`` with the SQLite store, MQTT, InfluxDB line protocol
(to VictoriaMetrics) and the web server on. While frames keep coming, and with
the outages overlapping:

* the broker is killed with SIGKILL and started again a few seconds later
  (with persistence, so the test's subscriber session survives, as a real
  consumer's would);
* the time-series database is stopped, then started again;
* garbage bytes (line noise, including stray 0x7E start bytes) are sent
  between frames all along, in bursts during the outages;
* wattd gets SIGHUP with a changed config file (a new label);
* the serial adapter is unplugged (socat killed: the device path vanishes) and
  plugged back in. Frames a meter transmits while its receiver is unplugged
  never reach any serial port, so the feeder holds them back; it first waits
  until wattd has read what was already on the line.

Then, after recovery, every frame written to the line must be accounted for:
as a reading in every sink (SQLite rows, MQTT state messages, VictoriaMetrics
samples; resends deduplicated) or, for frames garbage broke, as a counted
decode error. The decoder's reject counters must have seen the garbage.
Loopback only; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

# Run as a script or loaded by path (tests/test_soak.py): the repo root on
# sys.path for tests.fixtures, this folder for bench_e2e.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_e2e import (
    Daemon,
    Subscriber,
    daemon_config,
    mosquitto,
    scrape,
    store_counts,
    wait_ready,
)

from tests.fixtures.pty import SocatLink
from tests.fixtures.services import MissingBinary, VictoriaMetrics, free_port
from wattd.sources.simulate import MeterModel, Simulator, varied_meters

REJECT_RESULTS = ("bad_checksum", "bad_length", "truncated", "bad_payload", "encrypted")


class LineFeeder(threading.Thread):
    """Writes simulator frames in real time, with line noise, to a replaceable fd."""

    def __init__(
        self, sim: Simulator, fd: int, *, speed: float, garbage_rate: float, seed: int
    ) -> None:
        super().__init__(name="line-feeder", daemon=True)
        self.sim, self.fd, self.speed = sim, fd, speed
        self.garbage_rate = garbage_rate
        self.rng = random.Random(seed)
        self.sent: collections.Counter[int] = collections.Counter()
        self.held_back = 0
        self.garbage_bytes = 0
        self.lock = threading.Lock()
        self.plugged = threading.Event()
        self.plugged.set()
        self.paused = threading.Event()
        self.stopped = threading.Event()

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.sent.values())

    def _garbage(self) -> bytes:
        # Noise with the start byte in it now and then: the decoder must not
        # let a bogus candidate swallow the real frames behind it.
        data = bytearray(self.rng.randbytes(self.rng.randint(1, 30)))
        if self.rng.random() < 0.5:
            data[self.rng.randrange(len(data))] = 0x7E
        return bytes(data)

    def run(self) -> None:
        start_real = time.monotonic()
        start_sim = self.sim.now_s
        while not self.stopped.is_set():
            t_next = self.sim.next_time_s()
            assert t_next is not None
            delay = start_real + (t_next - start_sim) / self.speed - time.monotonic()
            if delay > 0:
                self.stopped.wait(min(delay, 0.02))
                continue
            frame = self.sim.next_frame()
            if not self.plugged.is_set() or self.paused.is_set():
                self.held_back += 1  # transmitted into the void
                continue
            data = frame.data
            noise = b""
            if self.rng.random() < self.garbage_rate:
                noise = self._garbage()
            try:
                os.write(self.fd, noise + data)
            except OSError:
                self.held_back += 1
                continue
            with self.lock:
                self.sent[frame.address] += 1
                self.garbage_bytes += len(noise)


@dataclasses.dataclass
class SoakReport:
    """What was sent, what each sink holds, and what the decoder counted."""

    sent: dict[int, int]
    held_back: int
    garbage_bytes_sent: int
    store: dict[int, int]
    mqtt: dict[int, int]
    influx: dict[int, int]
    decoded_ok: int
    decode_errors: int
    garbage_bytes_counted: int
    mqtt_duplicates: int
    influx_duplicates: int
    reloads_applied: bool
    port_outages: int
    timeline: list[str]

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())

    def missing(self, sink: dict[int, int]) -> int:
        """Frames sent that this sink does not hold as readings."""
        return sum(max(0, n - sink.get(s, 0)) for s, n in self.sent.items())

    def problems(self) -> list[str]:
        """Everything that is not accounted for (empty when the soak passed)."""
        out = []
        lost = self.total_sent - self.decoded_ok
        if lost > self.decode_errors:
            out.append(f"{lost} frames neither decoded nor counted as decode errors")
        for name, sink in (
            ("store", self.store),
            ("mqtt", self.mqtt),
            ("influx", self.influx),
        ):
            if self.missing(sink) > max(0, lost):
                out.append(
                    f"{name}: {self.missing(sink)} frames missing {sink} vs {self.sent}"
                )
            extra = sum(max(0, n - self.sent.get(s, 0)) for s, n in sink.items())
            if extra:
                out.append(f"{name}: {extra} readings more than frames sent")
        if self.garbage_bytes_sent and not self.garbage_bytes_counted:
            out.append("garbage was sent but the decoder counted none")
        if not self.reloads_applied:
            out.append("the SIGHUP reload was not applied")
        if not self.port_outages:
            out.append("the unplug was not seen as a port outage")
        return out

    def summary(self) -> str:
        return (
            f"sent {self.total_sent} frames"
            f" ({self.held_back} held back while unplugged),"
            f" {self.garbage_bytes_sent} garbage bytes; decoded ok {self.decoded_ok},"
            f" decode errors {self.decode_errors}, garbage bytes counted"
            f" {self.garbage_bytes_counted}; missing: store {self.missing(self.store)},"
            f" mqtt {self.missing(self.mqtt)} (+{self.mqtt_duplicates} resends),"
            f" influx {self.missing(self.influx)} (+{self.influx_duplicates} resends)"
        )


def _metric(metrics: dict[Any, float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= ls)


def _influx_unique(tsdb: VictoriaMetrics) -> tuple[dict[int, int], int]:
    """Distinct (timestamp, value) samples per sensor, and how many repeats."""
    seen: dict[int, set[tuple[int, float]]] = collections.defaultdict(set)
    total = 0
    for row in tsdb.export('{__name__="power_watts"}'):
        sensor = int(row["metric"]["sensor"])
        pairs = list(zip(row["timestamps"], row["values"], strict=True))
        total += len(pairs)
        seen[sensor].update(pairs)
    counts = {s: len(v) for s, v in seen.items()}
    return counts, total - sum(counts.values())


async def _until(check: Any, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        if await asyncio.to_thread(check):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"soak: {what} not reached within {limit_s:g} s")
        await asyncio.sleep(0.1)


async def run_soak(
    workdir: Path,
    *,
    duration_s: float = 60.0,
    meters: int = 12,
    speed: float = 20.0,
    garbage_rate: float = 0.05,
    seed: int = 1,
    log: Any = print,
) -> SoakReport:
    """Run the soak in ``workdir``; faults happen in the middle third of the run."""
    models: list[MeterModel] = varied_meters(meters, seed=seed)
    sim = Simulator(models, seed=seed)
    broker = mosquitto(workdir / "mosquitto", persistent=True)
    tsdb = VictoriaMetrics(workdir / "victoria")
    link = SocatLink(workdir)
    broker.start()
    tsdb.start()
    link.replug()
    fd = link.open_peer()
    web_port = free_port()
    config = daemon_config(
        workdir,
        str(link.device),
        models,
        broker_port=broker.port,
        victoria_url=tsdb.url,
        web_port=web_port,
        base_topic="soak",
    )
    config["mqtt"].update(reconnect_min_s=0.2, reconnect_max_s=1.0)
    config["influxdb"].update(max_backoff_s=1, flush_interval_s=0.2, timeout_s=2)
    daemon = Daemon(config, workdir)
    timeline: list[str] = []
    t0 = time.monotonic()

    def note(text: str) -> None:
        line = f"{time.monotonic() - t0:6.1f} s  {text}"
        timeline.append(line)
        log(line)

    sub = Subscriber(broker.port, "soak/+/state", keep_times=True, client_id="soak-sub")
    sub_task = asyncio.create_task(sub.run())
    feeder = LineFeeder(sim, fd, speed=speed, garbage_rate=garbage_rate, seed=seed)
    try:
        daemon.start()
        await asyncio.to_thread(wait_ready, daemon, web_port)
        await asyncio.wait_for(sub.ready.wait(), 10)
        feeder.start()
        note("feeding")
        third = duration_s / 3

        async def drained() -> None:
            """Wait until wattd has read everything on the line (io count settles)."""
            last: list[float] = []

            def check() -> bool:
                io = _metric(scrape(web_port), "wattd_io_frames_total")
                last.append(io)
                settled = len(last) >= 4 and last[-1] == last[-4]
                return io >= feeder.total or settled

            await _until(check, 20, "wattd reading everything on the line")

        async def reopened(connections: float) -> None:
            def check() -> bool:
                m = scrape(web_port)
                return _metric(m, "wattd_port_connections_total") > connections

            await _until(check, 20, "wattd reopening the serial port")

        async def broker_outage() -> None:
            await asyncio.sleep(third)
            note("broker: SIGKILL")
            await asyncio.to_thread(broker.stop, signal.SIGKILL)
            await asyncio.sleep(third * 0.4)
            await asyncio.to_thread(broker.start)
            note("broker: back")

        async def tsdb_outage() -> None:
            await asyncio.sleep(third * 1.1)
            note("tsdb: stopped")
            await asyncio.to_thread(tsdb.stop)
            await asyncio.sleep(third * 0.5)
            await asyncio.to_thread(tsdb.start)
            note("tsdb: back")

        async def noise_burst() -> None:
            await asyncio.sleep(third * 1.05)
            note("line noise: burst")
            feeder.garbage_rate = min(1.0, garbage_rate * 8)
            await asyncio.sleep(third * 0.5)
            feeder.garbage_rate = garbage_rate
            note("line noise: normal")

        async def reload() -> None:
            await asyncio.sleep(third * 1.2)
            changed = yaml.safe_load(daemon.config_path.read_text())
            changed["sensors"][0]["labels"] = {"soak": "reloaded"}
            daemon.config_path.write_text(yaml.safe_dump(changed, sort_keys=False))
            daemon.signal(signal.SIGHUP)
            note("wattd: SIGHUP with a changed config")

        async def unplug() -> None:
            nonlocal fd
            await asyncio.sleep(third * 1.3)
            feeder.paused.set()
            await drained()
            metrics = await asyncio.to_thread(scrape, web_port)
            connections = _metric(metrics, "wattd_port_connections_total")
            feeder.plugged.clear()
            link.unplug()
            with contextlib.suppress(OSError):
                os.close(fd)
            note("serial: unplugged")
            await asyncio.sleep(third * 0.4)
            await asyncio.to_thread(link.replug)
            fd = link.open_peer()
            feeder.fd = fd
            note("serial: plugged back in")
            # A frame sent to a device end that nobody has open may be lost
            # on the way (socat), so the meters' frames count from the reopen on.
            await reopened(connections)
            feeder.plugged.set()
            feeder.paused.clear()
            note("serial: wattd reading again")

        await asyncio.gather(
            broker_outage(), tsdb_outage(), noise_burst(), reload(), unplug()
        )
        remaining = duration_s - (time.monotonic() - t0)
        if remaining > 0:
            await asyncio.sleep(remaining)
        feeder.stopped.set()
        await asyncio.to_thread(feeder.join, 5)
        note(f"feeding stopped: {feeder.total} frames on the line")

        sent = dict(feeder.sent)
        await drained()

        def mqtt_caught_up() -> bool:
            return all(len(set(sub.times[s])) >= n for s, n in sent.items())

        await _until(mqtt_caught_up, 60, "MQTT delivering the backlog")

        def influx_caught_up() -> bool:
            counts, _ = _influx_unique(tsdb)
            return all(counts.get(s, 0) >= n for s, n in sent.items())

        with contextlib.suppress(TimeoutError):
            await _until(influx_caught_up, 60, "InfluxDB receiving the backlog")
        note("sinks caught up")
        metrics = await asyncio.to_thread(scrape, web_port)
        influx, influx_dups = await asyncio.to_thread(_influx_unique, tsdb)
        code = await asyncio.to_thread(daemon.stop)
        if code != 0:
            log(daemon.log[-3000:])
        stored = store_counts(workdir / "state" / "wattd.sqlite")
    finally:
        feeder.stopped.set()
        sub_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sub_task
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        broker.stop()
        tsdb.stop()
        link.unplug()
        with contextlib.suppress(OSError):
            os.close(fd)
    mqtt_unique = {s: len(set(times)) for s, times in sub.times.items()}
    errors = sum(
        _metric(metrics, "wattd_frames_total", result=r) for r in REJECT_RESULTS
    )
    return SoakReport(
        sent=sent,
        held_back=feeder.held_back,
        garbage_bytes_sent=feeder.garbage_bytes,
        store=stored,
        mqtt=mqtt_unique,
        influx=influx,
        decoded_ok=int(_metric(metrics, "wattd_io_frames_total")),
        decode_errors=int(errors),
        garbage_bytes_counted=int(_metric(metrics, "wattd_garbage_bytes_total")),
        mqtt_duplicates=sum(len(t) for t in sub.times.values())
        - sum(mqtt_unique.values()),
        influx_duplicates=influx_dups,
        reloads_applied=_metric(metrics, "wattd_config_last_reload_success") == 1
        and _metric(metrics, "wattd_config_last_reload_timestamp_seconds")
        > _metric(metrics, "wattd_start_time_seconds"),
        port_outages=int(_metric(metrics, "wattd_port_outages_total")),
        timeline=timeline,
    )


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of feeding"
    )
    parser.add_argument("--meters", type=int, default=12)
    parser.add_argument(
        "--speed",
        type=float,
        default=20.0,
        help="simulated seconds per real second (20: each meter every ~0.1 s)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="wattd-soak-"))
    try:
        report = await run_soak(
            workdir,
            duration_s=args.duration,
            meters=args.meters,
            speed=args.speed,
            seed=args.seed,
        )
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report.summary())
    problems = report.problems()
    for p in problems:
        print(f"PROBLEM: {p}")
    print("soak passed" if not problems else "soak FAILED")
    return 0 if not problems else 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except MissingBinary as exc:
        sys.exit(str(exc))
