"""A process that holds an InfluxSink, for tests that kill it with SIGKILL.

Usage: ``python influx_harness.py CONFIG``. Commands arrive on stdin, one per
line, and each is answered with one line on stdout:

* ``feed START COUNT``: write readings START..START+COUNT-1 (see :func:`reading`)
  through ``InfluxSink.write``; answers ``fed START COUNT`` once they are spooled;
* ``stats``: answers the sink's ``stats()`` as JSON;
* ``quit``: flush, stop and exit.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta

from wattd.config import load_config
from wattd.core.readings import Reading
from wattd.sinks.influx.sink import InfluxSink

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SENSORS = 5
CHUNK = 500


def reading(i: int) -> Reading:
    """Reading number ``i``: a unique millisecond and watts equal to ``i``."""
    sensor = i % SENSORS + 1
    return Reading(
        sensor=sensor,
        name=f"meter-{sensor}",
        time=T0 + timedelta(milliseconds=i),
        monotonic_s=float(i),
        watts=float(i),
        va=float(i) + 0.5,
        vrms=120.0,
        irms=0.25,
        power_factor=0.5,
        wh_total=i / 1000,
        wh_delta=0.001,
        rssi_dbm=-40 - sensor,
    )


async def main(config_path: str) -> None:
    sink = InfluxSink(load_config(config_path))
    await sink.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(sink.run(), name="wattd[sink:influxdb].writer")
        while line := (await reader.readline()).decode().split():
            if line[0] == "feed":
                start, count = int(line[1]), int(line[2])
                for first in range(start, start + count, CHUNK):
                    last = min(first + CHUNK, start + count)
                    await sink.write([reading(i) for i in range(first, last)])
                print(f"fed {start} {count}", flush=True)
            elif line[0] == "stats":
                print(json.dumps(sink.stats()), flush=True)
            elif line[0] == "quit":
                break
        runner.cancel()
    await sink.flush()
    await sink.stop()
    print("bye", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
