"""End to end: simulated meters -> pty -> ``wattd run`` with every sink -> servers.

Run by hand from the repository root (needs mosquitto and victoria-metrics,
which ``bash .ci/test`` installs)::

    .venv/bin/python benchmarks/bench_e2e.py [--sensors 10,100,1000]
        [--rate 2000] [--duration 20] [--json results.json] [--baseline REV|DIR]

For each fleet size the script starts its own mosquitto and VictoriaMetrics
on free loopback ports and a real ``wattd run`` subprocess with the SQLite
store, MQTT (QoS 1), InfluxDB line protocol (to VictoriaMetrics), the web
dashboard and /metrics all enabled. A feeder thread writes pre-generated
simulator frames to the pty at ``--rate`` frames/s, spread evenly over the
meters (a pty has no baud limit; a real XBee at 9600 baud carries ~10
frames/s, so this is the load of many receivers or a very large site).

Reported per fleet size:

* frames/s actually fed (the feeder blocks when the daemon stops reading);
* loss: frames fed minus readings found in each sink (SQLite rows, MQTT
  messages received by a subscriber, VictoriaMetrics samples) and the
  decoder's ok count; all must be zero;
* CPU µs per frame: the daemon's user+system time (all threads) over the run
  divided by the frames, idle time included;
* latency: the k-th MQTT message of a meter is matched with the k-th frame
  written for it; p50/p99 of (message received - frame written);
* RSS: the daemon's resident set at the end and its peak (VmHWM).

``--baseline REV`` measures the same load twice per fleet size, in turns:
first with the ``wattd`` package of git revision ``REV`` (exported with
``git archive`` to a temporary directory, the checkout untouched), then with
the working tree, and prints both rows and their ratios. ``--baseline DIR``
takes the ``wattd`` package in ``DIR`` instead (a copy of the tree with some
files as they were, to measure just those). Machines differ by
2-3x and so does the load of a shared one, so only a comparison made in one
run says whether a change made the daemon faster.

The daemon runs with the ``Environment=`` settings of ``systemd/wattd.service``
(``PYTHONOPTIMIZE=2``: no docstrings in memory), as in production;
``--no-unit-env`` runs it without them.

All along, a dashboard is open on the event stream and /metrics is scraped
every 5 s, so the web side does its real work too. ``--profile DIR`` runs the
daemon under cProfile (event loop thread) to find where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

# Run as a script or loaded by path (benchmarks/soak.py): the repo root on
# sys.path for tests.fixtures, this folder for e2e_report.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_report import Result, ratios, table

from tests.fixtures.daemon import (
    DaemonProcess,
    meter_sensors,
    unit_environment,
    write_config,
)
from tests.fixtures.pty import Pty
from tests.fixtures.revisions import baseline_code
from tests.fixtures.services import (
    LOOPBACK,
    MissingBinary,
    Mosquitto,
    VictoriaMetrics,
    env_without_proxies,
    free_port,
    require_binary,
)
from wattd.sources.simulate import MeterModel, Simulator, varied_meters

CLK_TCK = os.sysconf("SC_CLK_TCK")

# -- services --------------------------------------------------------------------


def mosquitto(workdir: Path, *, persistent: bool = False) -> Mosquitto:
    """A private broker with room for a fast publisher's backlog."""
    return Mosquitto(
        workdir,
        persistent=persistent,
        max_queued_messages=1_000_000,
        extra_conf="max_inflight_messages 1000",
    )


def sample_counts(tsdb: VictoriaMetrics, metric: str = "power_watts") -> dict[str, int]:
    """Samples per sensor label of one series name (duplicates included)."""
    counts: collections.Counter[str] = collections.Counter()
    for row in tsdb.export(f'{{__name__="{metric}"}}'):
        counts[row["metric"].get("sensor", "?")] += len(row["values"])
    return dict(counts)


# -- the daemon ------------------------------------------------------------------


def sensors_config(meters: list[MeterModel]) -> list[dict[str, Any]]:
    """Sensor entries with each simulated meter's true calibration."""
    racks = "ABCDEFGH"
    return [
        {
            **entry,
            "rack": racks[m.address % len(racks)],
            "customer": f"cust-{m.address % 5}",
        }
        for m, entry in zip(meters, meter_sensors(meters), strict=True)
    ]


def daemon_config(
    workdir: Path,
    device: str,
    meters: list[MeterModel],
    *,
    broker_port: int,
    victoria_url: str,
    web_port: int,
    base_topic: str = "bench",
) -> dict[str, Any]:
    """A config with every sink on, all to loopback servers."""
    return {
        "state_dir": str(workdir / "state"),
        "save_interval_s": 5,
        "ports": [{"device": device, "name": "bench"}],
        "sensors": sensors_config(meters),
        "store": {"enabled": True},
        "mqtt": {
            "enabled": True,
            "host": LOOPBACK,
            "port": broker_port,
            "base_topic": base_topic,
            "node_id": "bench",
            "qos": 1,
            "reconnect_min_s": 0.5,
            "reconnect_max_s": 2.0,
            # Discovery is thousands of retained configs at start-up, not load.
            "discovery": {"enabled": False},
        },
        "influxdb": {
            "enabled": True,
            "url": victoria_url,
            "org": "bench",
            "bucket": "bench",
            "token": "bench",
            "flush_interval_s": 0.5,
            "max_backoff_s": 2,
        },
        "web": {"enabled": True, "port": web_port, "metrics": True},
        "logging": {"level": "warning"},
    }


class Daemon(DaemonProcess):
    """``python -m wattd run``, optionally under cProfile, with its CPU and memory.

    ``code`` is a directory holding another ``wattd`` package to run instead of
    the working tree's (see ``--baseline``).
    """

    def __init__(
        self,
        config: dict[str, Any],
        workdir: Path,
        *,
        profile: Path | None = None,
        unit_env: bool = True,
        code: Path | None = None,
    ) -> None:
        # cProfile sees the event loop thread, which does the per-frame work.
        prof = ["-m", "cProfile", "-o", str(profile)] if profile else []
        # -P keeps the current directory off sys.path, so PYTHONPATH decides
        # which wattd is imported (the editable install's finder comes last).
        super().__init__(
            write_config(workdir / "wattd.yaml", config), python_args=["-P", *prof]
        )
        # As systemd runs it (the unit's Environment=, e.g. PYTHONOPTIMIZE).
        unit = unit_environment() if unit_env else {}
        self.env = {**env_without_proxies(), **unit, "PYTHONUNBUFFERED": "1"}
        if code is not None:
            self.env["PYTHONPATH"] = str(code)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_s(self) -> float:
        """User + system CPU seconds of the daemon (all threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def memory(self) -> tuple[float, float]:
        """(RSS, peak RSS) in MB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        values = {}
        for line in status.splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return values["VmRSS"], values["VmHWM"]

    def stop(self, timeout: float = 60) -> int | None:
        """Stop, giving a backlog time to drain into the sinks."""
        return super().stop(timeout)


def wait_ready(daemon: Daemon, web_port: int, timeout: float = 30) -> None:
    """Wait until the daemon's web server answers (all sinks are then started)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            url = f"http://{LOOPBACK}:{web_port}/healthz"
            with urllib.request.urlopen(url, timeout=1):
                return
        if daemon.proc is not None and daemon.proc.poll() is not None:
            raise RuntimeError(f"wattd exited:\n{daemon.log[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"wattd did not come up:\n{daemon.log[-3000:]}")
        time.sleep(0.05)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The daemon's /metrics as {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(
        f"http://{LOOPBACK}:{port}/metrics", timeout=10
    ) as resp:
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def store_counts(path: Path) -> dict[int, int]:
    """Readings per sensor in the SQLite store."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT sensor, COUNT(*) FROM readings GROUP BY sensor")
        return {int(s): int(n) for s, n in rows}


# -- feeding and subscribing --------------------------------------------------------


def make_frames(
    meters: list[MeterModel], count: int, *, seed: int = 1, **sim_kw: Any
) -> list[tuple[int, bytes]]:
    """``count`` frames in simulated time order as (sensor, wire bytes)."""
    sim = Simulator(meters, seed=seed, **sim_kw)
    out: list[tuple[int, bytes]] = []
    while len(out) < count:
        f = sim.next_frame()
        out.append((f.address, f.data))
    return out


class Feeder(threading.Thread):
    """Writes frames to a pty master at a steady rate, noting when each went out."""

    def __init__(self, fd: int, frames: list[tuple[int, bytes]], rate: float) -> None:
        super().__init__(name="feeder", daemon=True)
        self.fd, self.frames, self.rate = fd, frames, rate
        self.sent: dict[int, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self.count = 0
        self.started_at = 0.0
        self.finished_at = 0.0
        self.stop_event = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        self.started_at = time.monotonic()
        n = len(self.frames)
        i = 0
        while i < n and not self.stop_event.is_set():
            due = int((time.monotonic() - self.started_at) * self.rate) + 1
            if due <= i:
                time.sleep(min(0.005, (i + 1 - due) / self.rate + 0.0005))
                continue
            batch = self.frames[i : min(due, n)]
            data = b"".join(b for _, b in batch)
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
            now = time.time()
            with self.lock:
                for sensor, _ in batch:
                    self.sent[sensor].append(now)
                self.count += len(batch)
            i += len(batch)
        self.finished_at = time.monotonic()


@dataclass
class Subscriber:
    """Counts state messages per sensor and matches them with write times."""

    port: int
    topic: str
    feeder: Feeder | None = None
    counts: collections.Counter[int] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    times: dict[int, list[tuple[str, float]]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    """(time, watts) of every message per sensor, when ``keep_times``: two
    readings of one sensor read in the same chunk share a time, not a value."""
    keep_times: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    client_id: str | None = None

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    LOOPBACK, self.port, identifier=self.client_id,
                    clean_session=self.client_id is None, timeout=5,
                    max_queued_incoming_messages=0,
                ) as client:  # fmt: skip
                    await client.subscribe(self.topic, qos=1)
                    self.ready.set()
                    async for msg in client.messages:
                        self._take(msg.payload)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)

    def _take(self, payload: Any) -> None:
        received = time.time()
        doc = json.loads(payload)
        sensor = int(doc["sensor"])
        self.counts[sensor] += 1
        if self.keep_times:
            self.times[sensor].append((doc["time"], doc.get("watts")))
        if self.feeder is not None:
            with self.feeder.lock:
                queue = self.feeder.sent.get(sensor)
                written = queue.popleft() if queue else None
            if written is not None:
                self.latencies.append(received - written)


async def web_clients(port: int, stop: asyncio.Event) -> int:
    """A dashboard left open and Prometheus scraping every 5 s, until ``stop``.

    Both run outside this process's event loop (curl, and a plain fetch in a
    thread), so they cannot delay the MQTT receive times measured here.
    Returns how many server-sent events the dashboard received.
    """
    fd, events_path = tempfile.mkstemp(prefix="wattd-sse-")
    os.close(fd)
    events = Path(events_path)
    viewer = subprocess.Popen(  # noqa: ASYNC220 - started once, never waited on here
        [require_binary("curl"), "-sN", "-o", events_path,
         f"http://{LOOPBACK}:{port}/api/events"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def fetch_metrics() -> None:
        url = f"http://{LOOPBACK}:{port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read()

    try:
        while not stop.is_set():
            await asyncio.to_thread(fetch_metrics)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5.0)
    finally:
        viewer.terminate()
        viewer.wait(5)
    text = await asyncio.to_thread(events.read_bytes)
    await asyncio.to_thread(events.unlink)
    return text.count(b"\nevent: ") + text.startswith(b"event: ")


async def no_clients(stop: asyncio.Event) -> int:
    """Stand-in for :func:`web_clients` when the web side should stay idle."""
    await stop.wait()
    return 0


# -- one benchmark run ---------------------------------------------------------------


async def bench_one(
    n_sensors: int,
    rate: float,
    duration: float,
    workdir: Path,
    *,
    profile: Path | None = None,
    web_clients_on: bool = True,
    unit_env: bool = True,
    code: Path | None = None,
    label: str = "working tree",
) -> Result:
    meters = varied_meters(n_sensors, seed=n_sensors)
    frames = make_frames(meters, int(rate * duration))
    broker = mosquitto(workdir / "mosquitto")
    tsdb = VictoriaMetrics(workdir / "victoria")
    broker.start()
    tsdb.start()
    pty = Pty()
    web_port = free_port()
    config = daemon_config(
        workdir,
        pty.path,
        meters,
        broker_port=broker.port,
        victoria_url=tsdb.url,
        web_port=web_port,
    )
    daemon = Daemon(config, workdir, profile=profile, unit_env=unit_env, code=code)
    sub_task: asyncio.Task[None] | None = None
    try:
        daemon.start()
        wait_ready(daemon, web_port)
        feeder = Feeder(pty.master, frames, rate)
        sub = Subscriber(broker.port, "bench/+/state", feeder=feeder)
        sub_task = asyncio.create_task(sub.run())
        await asyncio.wait_for(sub.ready.wait(), 10)
        stop_web = asyncio.Event()
        web_task = asyncio.create_task(
            web_clients(web_port, stop_web) if web_clients_on else no_clients(stop_web)
        )
        await asyncio.sleep(1.0)  # let start-up work settle
        cpu0 = daemon.cpu_s()
        feeder.start()
        await asyncio.to_thread(feeder.join)
        fed_rate = feeder.count / (feeder.finished_at - feeder.started_at)
        deadline = time.monotonic() + 120
        # Polls a counter the subscriber task advances.
        while sum(sub.counts.values()) < feeder.count and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        cpu1 = daemon.cpu_s()
        rss, _ = daemon.memory()
        stop_web.set()
        dashboard_events = await web_task
        metrics = await asyncio.to_thread(scrape, web_port)
        decoded = metrics.get(
            ("wattd_frames_total", frozenset({("port", "bench"), ("result", "ok")})),
            0.0,
        )
        influx = {}
        while time.monotonic() < deadline:
            influx = await asyncio.to_thread(sample_counts, tsdb)
            if sum(influx.values()) >= feeder.count:
                break
            await asyncio.sleep(0.5)
        _, peak = daemon.memory()
        exit_code = daemon.stop()
        if exit_code != 0:
            print(daemon.log[-3000:], file=sys.stderr)
        stored = store_counts(workdir / "state" / "wattd.sqlite")
    finally:
        if sub_task is not None:
            sub_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sub_task
        if daemon.proc is not None:
            daemon.stop()
        broker.stop()
        tsdb.stop()
        pty.close()
    lat = sorted(sub.latencies) or [float("nan")]
    return Result(
        code=label,
        sensors=n_sensors,
        target_rate=rate,
        frames=feeder.count,
        fed_rate=round(fed_rate, 1),
        lost_store=feeder.count - sum(stored.values()),
        lost_mqtt=feeder.count - sum(sub.counts.values()),
        lost_influx=feeder.count - sum(influx.values()),
        lost_decoder=feeder.count - int(decoded),
        cpu_us_per_frame=round((cpu1 - cpu0) / max(1, feeder.count) * 1e6, 1),
        latency_p50_ms=round(statistics.median(lat) * 1000, 1),
        latency_p99_ms=round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1),
        rss_mb=round(rss, 1),
        peak_rss_mb=round(peak, 1),
        dashboard_events=dashboard_events,
    )


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sensors", default="10,100,1000", help="fleet sizes, comma-separated"
    )
    parser.add_argument("--rate", type=float, default=2000.0, help="frames/s to feed")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds of feeding per size"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    parser.add_argument(
        "--no-web-clients",
        action="store_true",
        help="no open dashboard and no /metrics scraping during the run",
    )
    parser.add_argument(
        "--no-unit-env",
        action="store_true",
        help="run the daemon without the systemd unit's Environment= settings",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run the daemon under cProfile; writes DIR/wattd-<sensors>.prof",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV|DIR",
        help="also run the wattd of git revision REV (or the wattd package in DIR)"
        " on the same load, in turns, and print the ratios",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sensors.split(",")]
    codes: list[tuple[str, Path | None]] = [("working tree", None)]
    scratch = Path(tempfile.mkdtemp(prefix="wattd-baseline-"))
    if args.baseline:
        try:
            tree = baseline_code(args.baseline, scratch)
        except SystemExit:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        codes.insert(0, (f"baseline {Path(args.baseline).name}", tree))
    print(
        f"wattd end-to-end benchmark: Python {platform.python_version()},"
        f" {os.cpu_count()} CPUs; {args.rate:g} frames/s for {args.duration:g} s"
        " per fleet size",
        file=sys.stderr,
    )
    results = []
    for n in sizes:
        for index, (label, code) in enumerate(codes):
            workdir = Path(tempfile.mkdtemp(prefix=f"wattd-bench-{n}-"))
            try:
                name = f"wattd-{n}" + ("-baseline" if code is not None else "")
                prof = args.profile / f"{name}.prof" if args.profile else None
                if prof is not None:
                    prof.parent.mkdir(parents=True, exist_ok=True)
                result = await bench_one(
                    n,
                    args.rate,
                    args.duration,
                    workdir,
                    profile=prof,
                    web_clients_on=not args.no_web_clients,
                    unit_env=not args.no_unit_env,
                    code=code,
                    label=label,
                )
            finally:
                if not args.keep:
                    shutil.rmtree(workdir, ignore_errors=True)
            results.append(result)
            print(json.dumps({"run": index, **asdict(result)}), file=sys.stderr)
    shutil.rmtree(scratch, ignore_errors=True)
    print(table(results))
    if args.baseline:
        print(f"\nworking tree / {codes[0][0]}:\n")
        print(ratios(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    ok = all(
        r.lost_store == r.lost_mqtt == r.lost_influx == r.lost_decoder == 0
        for r in results
    )
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except MissingBinary as exc:
        sys.exit(str(exc))
