"""InfluxDB sink throughput: readings through the spool into a local VictoriaMetrics.

Run by hand from the repository root::

    .venv/bin/python benchmarks/bench_influx.py [--points 100000] [--batch 5000]

The script starts its own ``victoria-metrics`` on a free loopback port (it
accepts InfluxDB's ``/api/v2/write``), in a temporary directory removed at the
end. Measured, each on a fresh spool file:

* encode: ``PointEncoder.encode`` alone, CPU microseconds per reading;
* spool: ``Spool.append`` in batches of 1,000, then peek + ack in batches of
  ``--batch``, without any network;
* sustained: ``InfluxSink.write`` in batches of 1,000 while ``run()`` drains,
  from the first write until the server confirmed the last point;
* drain after an outage: ``--points`` readings are spooled while the server
  is unreachable (the sink is not running), then ``run()`` starts and the time
  until the spool is empty is measured.

CPU per point is this process's CPU time (all threads: encoding, SQLite,
gzip, HTTP) divided by the points; VictoriaMetrics runs on the same two cores
and is not counted. Results are a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Run as a script: put the repo root on sys.path so that tests.fixtures imports.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.services import MissingBinary, VictoriaMetrics, running
from wattd.config import Config, parse_config
from wattd.core.readings import Reading
from wattd.sinks.influx.lineprotocol import PointEncoder
from wattd.sinks.influx.sink import STREAM, InfluxSink
from wattd.storage.spool import Spool

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SENSORS = 20
WRITE_BATCH = 1_000


def readings(count: int, offset: int = 0) -> list[Reading]:
    out = []
    for k in range(count):
        i = k + offset
        sensor = i % SENSORS + 1
        out.append(
            Reading(
                sensor=sensor,
                name=f"meter-{sensor:02d}",
                time=T0 + timedelta(milliseconds=i),
                monotonic_s=i / 1000,
                watts=100.0 + (i % 977) * 0.37,
                va=120.0 + (i % 661) * 0.41,
                vrms=119.0 + (i % 17) * 0.1,
                irms=0.8 + (i % 101) * 0.01,
                power_factor=0.82 + (i % 13) * 0.01,
                wh_total=1000.0 + i * 0.0123,
                wh_delta=0.0123,
                rssi_dbm=-40 - i % 30,
                labels={
                    "rack": f"r{sensor % 4}",
                    "customer": "acme",
                    "location": "lab 2",
                },
            )
        )
    return out


def make_config(workdir: Path, url: str, batch: int, gzip: bool) -> Config:
    return parse_config(
        f"state_dir: {workdir}\n"
        "mqtt: {node_id: bench}\n"
        f"influxdb: {{enabled: true, url: '{url}', org: o, bucket: b, token: t,"
        f" batch_size: {batch}, flush_interval_s: 0.05, gzip: {str(gzip).lower()}}}\n"
    )


class Meter:
    """Wall and CPU time of a block."""

    def __enter__(self) -> Meter:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def bench_encode(n: int) -> tuple[float, float]:
    encoder = PointEncoder(measurement="power", node="bench", sensor_tags={})
    rs = readings(n)
    with Meter() as m:
        for r in rs:
            encoder.encode(r)
    return n / m.wall, m.cpu / n * 1e6


def bench_spool(workdir: Path, n: int, batch: int) -> tuple[float, float]:
    spool = Spool(workdir / "spool-only.sqlite", max_items=10 * n)
    payload = b"x" * 260
    with Meter() as appending:
        for start in range(0, n, WRITE_BATCH):
            spool.append(STREAM, [(start + k, payload) for k in range(WRITE_BATCH)])
    with Meter() as draining:
        while items := spool.peek(STREAM, batch):
            spool.ack(STREAM, [i.id for i in items])
    spool.close()
    return n / appending.wall, n / draining.wall


async def bench_sustained(config: Config, n: int) -> tuple[float, float]:
    rs = readings(n, offset=10_000_000)
    sink = InfluxSink(config)
    await sink.start()
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(sink.run())
        with Meter() as m:
            for start in range(0, n, WRITE_BATCH):
                await sink.write(rs[start : start + WRITE_BATCH])
            # Polls the public stats, as a monitoring system would.
            while sink.stats()["points_written"] < n:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        runner.cancel()
    await sink.stop()
    return n / m.wall, m.cpu / n * 1e6


async def bench_drain(config: Config, n: int) -> tuple[float, float]:
    rs = readings(n, offset=20_000_000)
    sink = InfluxSink(config)
    await sink.start()
    # The server is "down": nothing drains while the backlog builds up.
    for start in range(0, n, WRITE_BATCH):
        await sink.write(rs[start : start + WRITE_BATCH])
    assert sink.stats()["spool_depth"] == n
    async with asyncio.TaskGroup() as tg:
        with Meter() as m:
            runner = tg.create_task(sink.run())
            # Polls the public stats, as a monitoring system would.
            while sink.stats()["points_written"] < n:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        runner.cancel()
    await sink.stop()
    return n / m.wall, m.cpu / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5_000, help="influxdb.batch_size")
    args = parser.parse_args()
    n = args.points - args.points % WRITE_BATCH
    rows: list[tuple[str, str, str]] = []
    rate, cpu = bench_encode(n)
    rows.append(("encode line protocol", f"{rate:,.0f}", f"{cpu:.1f}"))
    with tempfile.TemporaryDirectory(prefix="wattd-bench-") as tmp:
        work = Path(tmp)
        append_rate, drain_rate = bench_spool(work, n, args.batch)
        rows.append(
            ("spool append (1,000 per transaction)", f"{append_rate:,.0f}", "-")
        )
        rows.append(
            (f"spool peek + ack ({args.batch:,} per batch)", f"{drain_rate:,.0f}", "-")
        )
        with running(VictoriaMetrics(work / "victoria")) as tsdb:
            url = tsdb.url
            for gzip in (True, False):
                label = "gzip" if gzip else "no gzip"
                run_dir = work / f"run-{label.replace(' ', '-')}"
                config = make_config(run_dir, url, args.batch, gzip)
                rate, cpu = asyncio.run(bench_sustained(config, n))
                rows.append(
                    (
                        f"sustained write -> server ({label})",
                        f"{rate:,.0f}",
                        f"{cpu:.1f}",
                    )
                )
                rate, cpu = asyncio.run(bench_drain(config, n))
                rows.append(
                    (f"drain after outage ({label})", f"{rate:,.0f}", f"{cpu:.1f}")
                )
    print(
        f"{n:,} points, batch_size {args.batch:,}, {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}, VictoriaMetrics on loopback\n"
    )
    print("| measurement | points/s | CPU µs/point |")
    print("|---|---:|---:|")
    for name, rate_text, cpu_text in rows:
        print(f"| {name} | {rate_text} | {cpu_text} |")


if __name__ == "__main__":
    try:
        main()
    except MissingBinary as exc:
        sys.exit(str(exc))
