"""Backfill speed: stored readings to VictoriaMetrics, points per second.

Fills a store with readings of many meters, starts its own ``victoria-metrics``
(with ``-dedup.minScrapeInterval=1ms``) on a free loopback port and runs the
backfill job as ``wattd backfill`` does. In the same run it times the sink's
per-reading path on the same readings (``PointEncoder.encode`` of each, joined
into bodies, no network) and prints the ratio: how close the whole backfill,
store reads and HTTP included, comes to the cost of encoding alone.

    .venv/bin/python benchmarks/bench_backfill.py --meters 100 --readings 500000
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Run as a script: put the repo root on sys.path so that tests.fixtures imports.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.services import MissingBinary, VictoriaMetrics, running
from wattd.clients.influx import InfluxTarget, InfluxWriter
from wattd.config import Config, parse_config
from wattd.core.readings import Reading
from wattd.ops.backfill import BackfillJob, Checkpoint, run_backfill
from wattd.sinks.influx.lineprotocol import PointEncoder
from wattd.storage.store import Store, to_ns

START = datetime(2025, 1, 1, tzinfo=UTC)


def make_readings(meters: int, count: int) -> list[Reading]:
    per_meter = max(1, count // meters)
    return [
        Reading(
            sensor=s,
            name=f"meter-{s}",
            time=START + timedelta(seconds=2 * i, microseconds=s),
            monotonic_s=2.0 * i,
            watts=50.0 + (i % 97) * 1.5,
            va=60.0 + (i % 89),
            vrms=120.0 + (i % 7) * 0.1,
            irms=0.5 + (i % 11) * 0.01,
            power_factor=0.8 + (i % 5) * 0.01,
            wh_total=i * 0.03,
            wh_delta=0.03,
            rssi_dbm=-40 - i % 20,
        )
        for s in range(1, meters + 1)
        for i in range(per_meter)
    ]


def config_for(state: Path, url: str) -> Config:
    return parse_config(
        f"state_dir: {str(state)!r}\n"
        "mqtt: {node_id: bench}\n"
        f"influxdb: {{url: {url!r}, org: bench, bucket: bench, token: t}}\n"
    )


def time_sink_encode(config: Config, readings: list[Reading], batch: int) -> float:
    """Seconds for the sink's path: one ``encode`` per reading, bodies joined."""
    encoder = PointEncoder.from_config(config)
    started = time.perf_counter()
    for k in range(0, len(readings), batch):
        lines = [encoder.encode(r) for r in readings[k : k + batch]]
        b"\n".join(line for line in lines if line is not None)
    return time.perf_counter() - started


async def time_backfill(config: Config, batch: int) -> tuple[int, float]:
    target = InfluxTarget.from_config(config.influxdb)
    job = BackfillJob(
        destination=target.describe(),
        from_ns=0,
        until_ns=to_ns(START + timedelta(days=3650)),
        batch_points=batch,
    )
    checkpoint = Checkpoint.load(config.state_dir / "backfill.json", job.key)
    writer = InfluxWriter(target)
    try:
        result = await run_backfill(
            job,
            store_path=config.store_path,
            encoder=PointEncoder.from_config(config),
            writer=writer,
            checkpoint=checkpoint,
        )
    finally:
        await writer.close()
    return result.points_sent, result.elapsed_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--readings", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wattd-bench-backfill-") as tmp:
        root = Path(tmp)
        try:
            server = VictoriaMetrics(root / "vm")
        except MissingBinary as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            return 1
        server.argv.append("-dedup.minScrapeInterval=1ms")
        readings = make_readings(args.meters, args.readings)
        with running(server):
            config = config_for(root, server.url)
            with Store.open(config.store_path) as store:
                for k in range(0, len(readings), 50_000):
                    store.add(readings[k : k + 50_000])
            encode_s = time_sink_encode(config, readings, args.batch_size)
            points, backfill_s = asyncio.run(time_backfill(config, args.batch_size))
        encode_rate = len(readings) / encode_s
        rate = points / backfill_s
        print(
            f"{platform.machine()}, {platform.python_implementation()}"
            f" {platform.python_version()}; {args.meters} meters,"
            f" {len(readings):,} readings, batches of {args.batch_size:,}"
        )
        print(f"sink per-reading encode only : {encode_rate:12,.0f} points/s")
        print(
            f"backfill to VictoriaMetrics  : {rate:12,.0f} points/s"
            f" ({points:,} points in {backfill_s:.2f} s)"
        )
        print(f"ratio backfill / encode      : {rate / encode_rate:12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
