"""MQTT sink throughput: readings/s to a local mosquitto, and CPU µs per reading.

Run by hand from the repository root (needs the ``mosquitto`` binary)::

    .venv/bin/python benchmarks/bench_mqtt.py [--readings 20000] [--json out.json]
        [--baseline REV|DIR]

The script starts its own mosquitto on a free loopback port and, for each
case, a fresh :class:`~wattd.sinks.mqtt.sink.MqttSink` with its own spool file. The
readings are handed to ``write()`` in batches of 1000 (what the daemon's bus
does when a sink falls behind) while ``run()`` publishes. A case ends when
the sink has published every reading: for QoS 1 that means every PUBACK is in
and the spool rows are acked; for QoS 0, that paho has written every message.

Cases: QoS 0 (in-memory queue, no spool), QoS 1 (durable spool, fsync per
batch) and QoS 1 with per-field topics (nine messages per reading). There is
no subscriber in the process: the sink counts what it published, so the CPU
figure (``time.process_time``: event loop plus spool thread) is the sink's
alone; mosquitto's own CPU is not included.

``--baseline REV`` first runs the same cases with the ``wattd`` package of git
revision ``REV`` (exported with ``git archive``; the checkout is untouched),
in a child process, and prints both tables and the ratio of CPU per reading.
``--baseline DIR`` takes the ``wattd`` package in ``DIR`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

# Run as a script: put the repo root on sys.path so that tests.fixtures imports.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# A --baseline child: another revision's wattd package goes first.
sys.path.insert(0, os.environ.get("WATTD_BENCH_CODE") or sys.path[0])

from tests.fixtures.revisions import baseline_code
from tests.fixtures.services import MissingBinary, Mosquitto, running
from wattd.config import Config
from wattd.core.readings import Reading
from wattd.sinks.mqtt.sink import MqttSink

BATCH = 1000
CODE_ENV = "WATTD_BENCH_CODE"


@dataclass
class Result:
    case: str
    qos: int
    readings: int
    messages: int
    seconds: float
    readings_per_s: float
    cpu_us_per_reading: float


async def until(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Poll ``check`` (a benchmark may poll; the sink has no event for this)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            msg = f"no progress within {timeout_s} s"
            raise TimeoutError(msg)
        await asyncio.sleep(0.001)


def readings(n: int) -> list[Reading]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        Reading(
            sensor=1 + i % 10,
            name=f"meter-{1 + i % 10}",
            time=start + timedelta(milliseconds=200 * i),
            monotonic_s=0.2 * i,
            watts=100.0 + i % 50,
            va=110.0,
            vrms=120.0,
            irms=0.9,
            power_factor=0.91,
            wh_total=0.01 * i,
            wh_delta=0.01,
            rssi_dbm=-55,
        )
        for i in range(n)
    ]


async def run_case(
    name: str, port: int, workdir: Path, n: int, *, qos: int, per_field: bool
) -> Result:
    config = Config.model_validate(
        {
            "state_dir": str(workdir / name),
            "mqtt": {
                "enabled": True,
                "host": "127.0.0.1",
                "port": port,
                "node_id": name,
                "qos": qos,
                "per_field_topics": per_field,
                "discovery": {"enabled": False},
            },
            "sensors": [{"address": a, "name": f"meter-{a}"} for a in range(1, 11)],
        }
    )
    data = readings(n)
    sink = MqttSink(config)
    await sink.start()
    task = asyncio.create_task(sink.run())
    try:
        await until(lambda: sink.connected)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for i in range(0, n, BATCH):
            # Keep a few batches queued, like a producer just ahead of the
            # sink; QoS 0's bounded queue would otherwise drop the oldest.
            await until(lambda: sink.stats()["backlog"] <= 4 * BATCH)
            await sink.write(data[i : i + BATCH])
        await until(lambda: sink.counters["published"] >= n)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        await sink.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    per_reading = 9 if per_field else 1
    return Result(
        case=name,
        qos=qos,
        readings=n,
        messages=n * per_reading,
        seconds=round(seconds, 3),
        readings_per_s=round(n / seconds),
        cpu_us_per_reading=round(cpu / n * 1e6, 1),
    )


async def main_async(n: int) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "mosquitto", max_queued_messages=1_000_000)
        with running(broker):
            port = broker.port
            return [
                await run_case("qos0", port, work, n, qos=0, per_field=False),
                await run_case("qos1", port, work, n, qos=1, per_field=False),
                await run_case("qos1-fields", port, work, n, qos=1, per_field=True),
            ]


def table(results: list[Result]) -> str:
    lines = [
        "| case | QoS | readings | MQTT messages | seconds | readings/s"
        " | CPU µs/reading |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.case} | {r.qos} | {r.readings} | {r.messages} | {r.seconds} |"
        f" {r.readings_per_s} | {r.cpu_us_per_reading} |"
        for r in results
    ]
    return "\n".join(lines)


def baseline_results(rev: str, n: int) -> list[Result]:
    """The cases run by revision ``rev``'s wattd, in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = baseline_code(rev, Path(tmp) / "code")
        out = Path(tmp) / "baseline.json"
        subprocess.run(
            [sys.executable, "-P", __file__, "--readings", str(n), "--json", str(out)],
            check=True,
            env={**os.environ, CODE_ENV: str(tree)},
            stdout=subprocess.DEVNULL,
        )
        return [Result(**row) for row in json.loads(out.read_text())]


def ratios(new: list[Result], old: list[Result]) -> str:
    lines = ["| case | CPU µs/reading, new / baseline |", "|---|---|"]
    lines += [
        f"| {n.case} | {n.cpu_us_per_reading / o.cpu_us_per_reading:.2f}x |"
        for n, o in zip(new, old, strict=True)
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=20_000)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--baseline",
        metavar="REV|DIR",
        help="also run the wattd of git revision REV (or the wattd package in DIR)",
    )
    args = parser.parse_args()
    old = baseline_results(args.baseline, args.readings) if args.baseline else []
    results = asyncio.run(main_async(args.readings))
    machine = platform.processor() or platform.machine()
    print(f"{machine}, Python {platform.python_version()}, mosquitto on loopback")
    if old:
        print(f"\nbaseline {args.baseline}:\n")
        print(table(old))
        print("\nworking tree:\n")
    print(table(results))
    if old:
        print(f"\nworking tree / baseline {args.baseline}:\n")
        print(ratios(results, old))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    try:
        main()
    except MissingBinary as exc:
        sys.exit(str(exc))
