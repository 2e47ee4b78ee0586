"""Batch path speed: decode and power over arrays against the per-frame path.

Run by hand from the repository root (numpy installed: ``pip install -e .[batch]``)::

    .venv/bin/python benchmarks/bench_batch.py [--frames 50000] [--repeat 5]
        [--meters 50] [--hours 1] [--rounds 3] [--skip-jobs]

Part 1, in process, on bench_decode's deterministic frames (API mode 1):

* batch decode (:func:`wattd.core.batch.decode.decode_stream` on the whole
  stream) against ``FrameDecoder.feed`` in 4 KiB reads and against
  digi-xbee's ``build_frame`` + ``io_sample`` (first sample set only);
* batch decode + power maths against ``FrameDecoder.feed`` +
  ``compute_power`` per frame, with the same calibration and results.

Part 2, the commands in subprocesses, on one recording made with the
simulator (``--meters`` meters for ``--hours``): ``wattd replay --speed 0`` to
JSON lines, and ``wattd reprocess`` of the whole range from a store that
holds the recording's frames. The per-frame path is the same command with
numpy blocked (a ``sitecustomize`` that makes ``import numpy`` fail).

The machine may be shared, so every round runs both sides back to back and
the median of the rounds' ratios is reported, with each side's median time.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import yaml
from bench_decode import digi_run, make_frames, wattd_power_run, wattd_run

from wattd.config import Config, pipeline_settings
from wattd.core.batch.decode import decode_stream
from wattd.core.batch.power import (
    Scales,
    extremes_and_interval,
    figures,
    window_moments,
)
from wattd.core.calibration import Calibration
from wattd.core.frames import ApiMode, FrameDecoder, encode_frame
from wattd.core.iosample import IoSampleFrame
from wattd.core.pipeline import ReadingPipeline
from wattd.core.power import compute_power
from wattd.core.readings import FrameRecord
from wattd.sources.recording import RecordingWriter
from wattd.sources.simulate import (
    InductiveLoad,
    Load,
    MeterModel,
    ResistiveLoad,
    Simulator,
    SmpsLoad,
)
from wattd.storage.store import Store

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import NDArray

FRAME_PERIOD_S: Final = 2.08
HALL_FRAMES: Final = 14 * 86_400 / FRAME_PERIOD_S * 200
"""Frames of 14 days of a 200-meter hall."""
START: Final = datetime(2026, 1, 5, tzinfo=UTC)


def batch_decode_run(stream: bytes) -> Callable[[], int]:
    def run() -> int:
        return len(decode_stream(stream).frames.index)

    return run


def batch_power_run(stream: bytes) -> Callable[[], int]:
    """Decode + the power maths over arrays, as ``compute_power(v, i, cal)`` does."""
    cal = Calibration()

    def run() -> int:
        found = decode_stream(stream).frames
        samples = found.samples
        volts, amps = samples[:, :, 0], samples[:, :, 1]
        n = len(volts)
        mains = np.full(n, cal.mains_hz)
        ext = extremes_and_interval(volts, amps, mains, np.ones(n, np.bool_))
        good = np.flatnonzero(~ext.odd & ~np.isnan(ext.interval_ms))
        m = window_moments(volts[good], amps[good], ext.interval_ms[good], mains[good])
        scales = _scales(cal, len(good))
        figures(
            m,
            scales,
            np.full(len(good), cal.current_zero),
            ext.ymax[good],
            ext.ymin[good],
        )
        odd = set(range(n)) - set(good[~m.odd].tolist())
        for i in odd:
            compute_power(volts[i].tolist(), amps[i].tolist(), cal)
        return n

    return run


def _scales(cal: Calibration, n: int) -> Scales:
    def col(value: float | None) -> NDArray[np.float64]:
        return np.full(n, math.nan if value is None else value)

    return Scales(
        nominal_vrms=col(cal.nominal_vrms),
        counts_per_volt=col(cal.counts_per_volt),
        voltage_zero=col(cal.voltage_zero),
        counts_per_amp=col(cal.counts_per_amp),
        max_amps=col(cal.max_amps),
    )


def rounds(
    repeat: int, n: int, runs: dict[str, Callable[[], int]], inner: int = 3
) -> list[dict[str, float]]:
    """Best-of-``inner`` µs/frame of each run, round by round (runs take turns)."""
    out = []
    for _ in range(repeat):
        got: dict[str, float] = {}
        for name, run in runs.items():
            best = math.inf
            for _ in range(inner):
                gc.collect()
                t0 = time.perf_counter()
                seen = run()
                best = min(best, time.perf_counter() - t0)
                if seen != n:
                    raise SystemExit(f"{name} saw {seen} frames, expected {n}")
            got[name] = best / n * 1e6
        out.append(got)
    return out


def median_ratio(table: list[dict[str, float]], slow: str, fast: str) -> float:
    return statistics.median(r[slow] / r[fast] for r in table)


def part_one(n: int, repeat: int) -> None:
    datas = make_frames(n)
    wires = [encode_frame(d) for d in datas]
    stream = b"".join(wires)
    runs = {
        "digi": digi_run(wires),
        "feed": wattd_run(stream, ApiMode.UNESCAPED),
        "batch": batch_decode_run(stream),
        "feed+power": wattd_power_run(stream),
        "batch+power": batch_power_run(stream),
    }
    table = rounds(repeat, n, runs)
    med = {k: statistics.median(r[k] for r in table) for k in runs}
    print(
        f"Part 1: {n} frames in memory, {repeat} rounds (each path's best of 3"
        " per round); median µs/frame"
    )
    print()
    print("| path | work per frame | µs/frame | batch speedup (median ratio) |")
    print("| --- | --- | ---: | ---: |")
    print(
        f"| digi-xbee | build_frame + io_sample, first set only | {med['digi']:.2f} |"
        f" {median_ratio(table, 'digi', 'batch'):.1f}x |"
    )
    print(
        f"| FrameDecoder.feed | framing, checksum, 19 sets | {med['feed']:.2f} |"
        f" {median_ratio(table, 'feed', 'batch'):.1f}x |"
    )
    print(f"| batch decode | the same, over arrays | {med['batch']:.2f} | 1.0x |")
    print(
        f"| feed + compute_power | decode and power per frame |"
        f" {med['feed+power']:.2f} |"
        f" {median_ratio(table, 'feed+power', 'batch+power'):.1f}x |"
    )
    print(
        f"| batch decode + power | the same, over arrays | {med['batch+power']:.2f}"
        " | 1.0x |"
    )
    print()
    checks = [
        ("batch decode <= 1 µs/frame", med["batch"] <= 1.0),
        ("batch decode >= 12x digi-xbee", median_ratio(table, "digi", "batch") >= 12),
        (
            "batch decode + power >= 10x per frame",
            median_ratio(table, "feed+power", "batch+power") >= 10,
        ),
    ]
    for what, ok in checks:
        print(f"target {what}: {'met' if ok else 'NOT met'}")
    print()


# -- part 2: the commands -------------------------------------------------------


def make_recording(path: Path, meters: int, hours: float) -> int:
    models = [MeterModel.with_quirks(a, _load(a), seed=a) for a in range(1, meters + 1)]
    sim = Simulator(models, seed=1)
    start_ns = int(START.timestamp()) * 1_000_000_000
    count = 0
    with RecordingWriter(
        path,
        port="simulator",
        baud=9600,
        api_mode=1,
        start_monotonic_s=0.0,
        start_wall_ns=start_ns,
    ) as writer:
        for frame in sim.advance(hours * 3600.0):
            writer.write(
                frame.data,
                monotonic_s=frame.time_s,
                wall_ns=start_ns + round(frame.time_s * 1e9),
            )
            count += 1
    return count


def _load(address: int) -> Load:
    kinds: tuple[Load, ...] = (
        ResistiveLoad(watts=60.0 * address),
        SmpsLoad(watts=20.0 + address),
        InductiveLoad(watts=100.0 + address, power_factor=0.7),
    )
    return kinds[address % 3]


def make_store(directory: Path, recording: Path) -> tuple[Path, Path]:
    """A store with the recording's frames and readings, and a config for it."""
    from wattd.sources.recording import RecordingReader

    config = Config.model_validate({"state_dir": str(directory)})
    pipeline = ReadingPipeline(pipeline_settings(config))
    decoder = FrameDecoder(1)
    readings, records = [], []
    with RecordingReader(recording) as reader:
        for chunk in reader:
            for event in decoder.feed(chunk.data):
                if not isinstance(event, IoSampleFrame):
                    continue
                reading = pipeline.process(
                    event, time=chunk.wall_time, monotonic_s=chunk.offset_s, port="p"
                )
                if reading is not None:
                    readings.append(reading)
                records.append(
                    FrameRecord(
                        time=chunk.wall_time,
                        port="p",
                        api_mode=1,
                        kind="io",
                        raw=event.raw,
                        sensor=event.sensor_id,
                    )
                )
    with Store.open(config.store_path) as store:
        for i in range(0, len(readings), 5000):
            store.add(readings[i : i + 5000], frames=records[i : i + 5000])
    cfg = directory / "wattd.yaml"
    body = {
        "state_dir": str(directory),
        "sensors": [{"address": 1, "counts_per_amp": 15.0}],
    }
    cfg.write_text(yaml.safe_dump(body))
    return config.store_path, cfg


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "wattd", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def part_two(meters: int, hours: float, rounds_n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="wattd-bench-batch-") as tmp:
        root = Path(tmp)
        blocker = root / "no-numpy"
        blocker.mkdir()
        (blocker / "sitecustomize.py").write_text(
            "import sys\nsys.modules['numpy'] = None\n"
        )
        fast_env = dict(os.environ)
        slow_env = {**fast_env, "PYTHONPATH": str(blocker)}
        recording = root / "hall.wattrec"
        frames = make_recording(recording, meters, hours)
        store, cfg = make_store(root / "state", recording)
        span = [
            "--from",
            START.isoformat(),
            "--to",
            (START + timedelta(hours=math.ceil(hours))).isoformat(),
        ]
        replay = ["replay", str(recording), "--speed", "0"]
        results: dict[str, list[tuple[tuple[float, float], ...]]] = {
            "replay": [],
            "reprocess": [],
        }
        for _ in range(rounds_n):
            results["replay"].append((timed(replay, slow_env), timed(replay, fast_env)))
            pair = []
            for env in (slow_env, fast_env):
                copy = root / "copy" / "wattd.db"
                shutil.rmtree(copy.parent, ignore_errors=True)
                copy.parent.mkdir()
                shutil.copy(store, copy)
                reprocess = ["reprocess", "--config", str(cfg), "--db", str(copy)]
                pair.append(timed([*reprocess, *span], env))
            results["reprocess"].append(tuple(pair))
    print(
        f"Part 2: one recording of {meters} meters over {hours:g} h ({frames} frames),"
        f" {rounds_n} rounds; median seconds, wall clock and CPU (user + system)."
        " Ratios and projections use CPU time, which a shared machine disturbs less."
    )
    print()
    print(
        "| command | per-frame path | batch path | speedup, CPU (wall) |"
        " 14 days x 200 meters, per-frame | batch |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, pairs in results.items():
        slow_wall = statistics.median(p[0][0] for p in pairs)
        fast_wall = statistics.median(p[1][0] for p in pairs)
        slow = statistics.median(p[0][1] for p in pairs)
        fast = statistics.median(p[1][1] for p in pairs)
        ratio = statistics.median(p[0][1] / p[1][1] for p in pairs)
        wall_ratio = statistics.median(p[0][0] / p[1][0] for p in pairs)
        print(
            f"| wattd {name} | {slow:.1f} s CPU, {slow_wall:.1f} s wall"
            f" ({frames / slow:,.0f} frames/s) | {fast:.1f} s CPU, {fast_wall:.1f} s"
            f" wall ({frames / fast:,.0f} frames/s) | {ratio:.1f}x ({wall_ratio:.1f}x)"
            f" | {_hours(HALL_FRAMES * slow / frames)} |"
            f" {_hours(HALL_FRAMES * fast / frames)} |"
        )
    print()
    for name, pairs in results.items():
        ratio = statistics.median(p[0][1] / p[1][1] for p in pairs)
        print(f"target wattd {name} >= 5x: {'met' if ratio >= 5 else 'NOT met'}")
    print()


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--meters", type=int, default=50)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-jobs", action="store_true")
    args = parser.parse_args(argv)
    print(
        f"Python {platform.python_version()} on {platform.machine()},"
        f" numpy {np.__version__}"
    )
    print()
    part_one(args.frames, args.repeat)
    if not args.skip_jobs:
        part_two(args.meters, args.hours, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
