"""Decode speed: wattd against digi-xbee and python-xbee on Tweet-a-Watt frames.

Run by hand from the repository root::

    .venv/bin/python benchmarks/bench_decode.py [--frames 20000] [--repeat 5]

Every decoder gets the same deterministic 19-sample frames (API mode 1, mask
0x2200). What each one does per frame:

* wattd: ``FrameDecoder.feed`` on the byte stream in 4 KiB reads, as from a
  serial port: find the frame, check length and checksum, decode all 19 sample
  sets of both channels.
* digi-xbee: ``build_frame`` on a frame already cut out of the stream, then
  ``io_sample`` AD0/AD4, which holds the first sample set only.
* python-xbee: ``_split_response`` on frame data already cut out and checked
  (all sample sets); and its own reader path, ``APIFrame.fill`` byte by byte,
  ``parse`` (checksum) and ``_split_response``.

The best of ``--repeat`` runs is reported, in microseconds per frame.
"""

from __future__ import annotations

import argparse
import gc
import math
import platform
import random
import sys
import time
from typing import TYPE_CHECKING

import xbee
from digi.xbee.io import IOLine
from digi.xbee.packets.factory import build_frame
from xbee.frame import APIFrame

from wattd.core import power
from wattd.core.calibration import Calibration
from wattd.core.frames import ApiMode, FrameDecoder, encode_frame
from wattd.core.iosample import IoSampleFrame, encode_rx16_io

if TYPE_CHECKING:
    from collections.abc import Callable

READ_SIZE = 4096


def make_frames(n: int, seed: int = 2009) -> list[bytes]:
    """``n`` frame-data blocks: 4 meters, mains-like voltage, loads of 0-8 A."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        spc = rng.uniform(11.5, 14.0)
        phase = rng.uniform(0, 2 * math.pi)
        amps = rng.uniform(0, 8)
        lag = rng.uniform(0, 0.6)
        v_amp, v_mid, i_mid = rng.uniform(260, 390), rng.uniform(505, 525), 492
        volts, currents = [], []
        for k in range(19):
            angle = 2 * math.pi * k / spc + phase
            volts.append(round(v_mid + v_amp * math.sin(angle)))
            amp = i_mid + amps * 15.5 * math.sqrt(2) * math.sin(angle - lag)
            currents.append(min(1023, max(0, round(amp + rng.gauss(0, 0.5)))))
        out.append(
            encode_rx16_io(
                address=1 + i % 4,
                rssi_dbm=-rng.randrange(40, 85),
                analog={0: volts, 4: currents},
            )
        )
    return out


def measure(
    repeat: int, n: int, runs: dict[str, Callable[[], int]]
) -> dict[str, float]:
    """Best wall time per frame in microseconds for each run.

    The runs take turns, round after round, so a busy machine slows them alike;
    each must report every frame it was given.
    """
    best = dict.fromkeys(runs, math.inf)
    for _ in range(repeat):
        for name, run in runs.items():
            gc.collect()
            t0 = time.perf_counter()
            seen = run()
            elapsed = time.perf_counter() - t0
            if seen != n:
                raise SystemExit(f"{name} saw {seen} frames, expected {n}")
            best[name] = min(best[name], elapsed)
    return {name: t / n * 1e6 for name, t in best.items()}


def wattd_run(stream: bytes, mode: ApiMode) -> Callable[[], int]:
    def run() -> int:
        decoder = FrameDecoder(mode)
        seen = 0
        for i in range(0, len(stream), READ_SIZE):
            for event in decoder.feed(stream[i : i + READ_SIZE]):
                if isinstance(event, IoSampleFrame):
                    seen += 1
        return seen

    return run


def wattd_power_run(stream: bytes) -> Callable[[], int]:
    cal = Calibration()

    def run() -> int:
        decoder = FrameDecoder(ApiMode.UNESCAPED)
        seen = 0
        for i in range(0, len(stream), READ_SIZE):
            for event in decoder.feed(stream[i : i + READ_SIZE]):
                if isinstance(event, IoSampleFrame):
                    power.compute_power(event.analog[0], event.analog[4], cal)
                    seen += 1
        return seen

    return run


def digi_run(wires: list[bytes]) -> Callable[[], int]:
    ad0, ad4 = IOLine.DIO0_AD0, IOLine.DIO4_AD4

    def run() -> int:
        seen = 0
        for wire in wires:
            sample = build_frame(bytearray(wire)).io_sample
            sample.get_analog_value(ad0)
            sample.get_analog_value(ad4)
            seen += 1
        return seen

    return run


def pyxbee_split_run(datas: list[bytes]) -> Callable[[], int]:
    parser = xbee.XBee(None)

    def run() -> int:
        seen = 0
        for data in datas:
            if len(parser._split_response(data)["samples"]) == 19:
                seen += 1
        return seen

    return run


def pyxbee_reader_run(wires: list[bytes]) -> Callable[[], int]:
    parser = xbee.XBee(None)

    def run() -> int:
        seen = 0
        for wire in wires:
            frame = APIFrame(escaped=False)
            for b in wire:
                frame.fill(bytes((b,)))
            frame.parse()
            if len(parser._split_response(frame.data)["samples"]) == 19:
                seen += 1
        return seen

    return run


def power_available() -> bool:
    try:
        power.compute_power([512] * 19, [492] * 19, Calibration())
    except NotImplementedError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.frames

    datas = make_frames(n)
    wires = [encode_frame(d) for d in datas]
    stream = b"".join(wires)
    stream2 = b"".join(encode_frame(d, ApiMode.ESCAPED) for d in datas)

    rows = {
        "wattd AP=1": ("wattd", "framing, checksum, all 19 sets (AP=1)"),
        "wattd AP=2": ("wattd", "framing, checksum, all 19 sets (AP=2)"),
        "digi": ("digi-xbee 1.5", "build_frame + io_sample (first set only)"),
        "split": ("python-xbee 2.3.2", "_split_response, all 19 sets, no framing"),
        "reader": ("python-xbee 2.3.2", "APIFrame.fill + parse + _split_response"),
        "power": ("wattd", "AP=1 decode + compute_power"),
    }
    runs = {
        "wattd AP=1": wattd_run(stream, ApiMode.UNESCAPED),
        "wattd AP=2": wattd_run(stream2, ApiMode.ESCAPED),
        "digi": digi_run(wires),
        "split": pyxbee_split_run(datas),
        "reader": pyxbee_reader_run(wires),
    }
    has_power = power_available()
    if has_power:
        runs["power"] = wattd_power_run(stream)
    times = measure(args.repeat, n, runs)

    base = times["wattd AP=1"]
    print(
        f"{n} Tweet-a-Watt frames (19 samples x AD0+AD4), best of {args.repeat};"
        f" Python {platform.python_version()} on {platform.machine()}"
    )
    print()
    print("| decoder | work per frame | µs/frame | time vs wattd AP=1 |")
    print("| --- | --- | ---: | ---: |")
    for key, (name, what) in rows.items():
        if key not in times:
            print(f"| {name} | {what} | power maths not available | |")
            continue
        print(f"| {name} | {what} | {times[key]:.1f} | {times[key] / base:.2f}x |")
    print()
    speedup = times["digi"] / base
    verdict = "met" if speedup >= 3 else "NOT met"
    print(
        "wattd full decode vs digi-xbee first set only:"
        f" {speedup:.1f}x faster (target 3x: {verdict})"
    )
    if not has_power:
        print(
            "power maths not available:"
            " wattd.core.power.compute_power is not implemented"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
