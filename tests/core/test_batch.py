"""The batch path gives the per-frame path's readings, field for field.

Both paths run on the same bytes: simulated meters of every load kind (with
line noise, lost frames, unknown and configured sensors, drift correction,
a pinned interval, legacy mode and swapped channels) and the real
Tweet-a-Watt captures, in API modes 1 and 2, fed in batches small enough
that frames straddle batch boundaries.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("numpy")

import numpy as np

from wattd.cli.output import reading_to_jsonl
from wattd.config import Config, pipeline_settings
from wattd.core.batch.columns import FLAG_BITS, ReadingColumns
from wattd.core.batch.decode import decode_frames
from wattd.core.batch.frames import FrameBatch
from wattd.core.batch.pipeline import BatchPipeline
from wattd.core.batch.stream import StreamBatcher
from wattd.core.frames import FrameDecoder, encode_frame
from wattd.core.iosample import IoSampleFrame, encode_rx16_io
from wattd.core.pipeline import PipelineSettings, PipelineState, ReadingPipeline
from wattd.core.readings import Flag, Reading
from wattd.sources.recording import load_capture
from wattd.sources.simulate import (
    IdleLoad,
    InductiveLoad,
    Load,
    MeterModel,
    ResistiveLoad,
    Simulator,
    SmpsLoad,
    StepsLoad,
)

if TYPE_CHECKING:
    from pathlib import Path

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0_US = 1_760_000_000_000_000
END_US = T0_US + 10**12
Chunks = list[tuple[int, float, bytes]]


def sim_meters() -> list[MeterModel]:
    steps = StepsLoad(steps=((0.0, IdleLoad()), (200.0, ResistiveLoad(watts=1500.0))))
    loads: list[Load] = [
        ResistiveLoad(watts=800.0),
        SmpsLoad(watts=90.0),
        InductiveLoad(watts=300.0, power_factor=0.6),
        IdleLoad(),
        steps,
        ResistiveLoad(watts=5.0),
        IdleLoad(),
        ResistiveLoad(watts=2400.0),
    ]
    return [MeterModel.with_quirks(a, load, seed=a) for a, load in enumerate(loads, 1)]


def simulated(api_mode: int) -> Chunks:
    sim = Simulator(sim_meters(), seed=4, api_mode=api_mode, noise=0.02, drop_rate=0.02)
    return [
        (T0_US + round(f.time_s * 1e6), f.time_s, f.data)
        for f in sim.advance(600.0)
        if f.data
    ]


def configured(meters: list[MeterModel]) -> Config:
    """Sensors 1-6 configured in different ways; 7 and 8 left unknown."""
    sensors: list[dict[str, Any]] = []
    for m in meters[:6]:
        cal = {k: v for k, v in m.calibration_values().items() if k != "voltage_zero"}
        sensors.append({**cal, "name": f"m{m.address}", "labels": {"rack": "r1"}})
    sensors[0]["correct_zero_drift"] = True
    sensors[3]["correct_zero_drift"] = True
    sensors[1]["sample_interval_ms"] = 1.35
    sensors[2]["mode"] = "legacy"
    del sensors[4]["current_zero"]
    sensors[5] |= {"voltage_channel": 4, "current_channel": 0}
    return Config.model_validate({"sensors": sensors, "energy": {"max_gap_s": 3.0}})


def per_frame(
    settings: PipelineSettings, chunks: Chunks, api_mode: int
) -> tuple[list[Reading], PipelineState]:
    decoder = FrameDecoder(api_mode)
    pipeline = ReadingPipeline(settings)
    out: list[Reading] = []

    def run(events: list[Any], time_us: int, mono: float) -> None:
        for event in events:
            if isinstance(event, IoSampleFrame):
                reading = pipeline.process(
                    event,
                    time=EPOCH + timedelta(microseconds=time_us),
                    monotonic_s=mono,
                    port="p",
                )
                if reading is not None:
                    out.append(reading)

    for time_us, mono, data in chunks:
        run(decoder.feed(data), time_us, mono)
    run(decoder.close(), END_US, 1e6)
    return out, pipeline.state()


def batched(
    settings: PipelineSettings, chunks: Chunks, api_mode: int, size: int
) -> tuple[list[ReadingColumns], PipelineState]:
    batcher = StreamBatcher(api_mode, port="p")
    pipeline = BatchPipeline(settings)
    out = []
    for start in range(0, len(chunks), size):
        part = chunks[start : start + size]
        decoded = batcher.feed(
            [c[2] for c in part], [c[0] for c in part], [c[1] for c in part]
        )
        out.append(pipeline.process(decoded.frames, hashes=True))
    out.append(pipeline.process(batcher.close(END_US, 1e6).frames, hashes=True))
    return out, pipeline.state()


def assert_same(expected: list[Reading], got: list[Reading]) -> None:
    assert len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        for field in dataclasses.fields(Reading):
            a, b = getattr(want, field.name), getattr(have, field.name)
            if isinstance(a, float) and isinstance(b, float):
                same = (math.isnan(a) and math.isnan(b)) or math.isclose(
                    a, b, rel_tol=1e-6, abs_tol=1e-9
                )
                assert same, (field.name, want.sensor, want.time, a, b)
            else:
                assert a == b, (field.name, want.sensor, want.time, a, b)


def check(settings: PipelineSettings, chunks: Chunks, api_mode: int) -> set[Flag]:
    """Both paths agree; returns the flags seen, to show what was covered."""
    want, want_state = per_frame(settings, chunks, api_mode)
    cols, state = batched(settings, chunks, api_mode, size=97)
    got = [r for c in cols for r in c.readings()]
    assert_same(want, got)
    assert state == want_state
    lines = [line for c in cols for line in c.jsonl()]
    assert lines == [reading_to_jsonl(r) + "\n" for r in want]
    return {flag for r in want for flag in r.flags}


@pytest.fixture(scope="module", params=[1, 2])
def sim_chunks(request: pytest.FixtureRequest) -> tuple[int, Chunks]:
    return request.param, simulated(request.param)


def test_simulated_meters_unconfigured(sim_chunks: tuple[int, Chunks]) -> None:
    mode, chunks = sim_chunks
    config = Config.model_validate({"energy": {"max_gap_s": 3.0}})
    flags = check(pipeline_settings(config), chunks, mode)
    assert {Flag.ZERO_ESTIMATED, Flag.UNKNOWN_SENSOR, Flag.ENERGY_GAP} <= flags


def test_simulated_meters_configured(sim_chunks: tuple[int, Chunks]) -> None:
    mode, chunks = sim_chunks
    config = configured(sim_meters())
    flags = check(pipeline_settings(config), chunks, mode)
    assert {Flag.DRIFT_CORRECTED, Flag.LEGACY, Flag.ZERO_ESTIMATED} <= flags


@pytest.mark.parametrize(
    "name",
    [
        "Noisy_Zeros3",
        "tweetawatt_data",
        "tweetawatt3_3bdf353",
        "voltage_output_27bba8f",
    ],
)
@pytest.mark.parametrize("suffix", [".bin", ".ap2.bin"])
def test_real_captures(captures_dir: Path, name: str, suffix: str) -> None:
    path = captures_dir / (name + suffix)
    if not path.exists():
        pytest.skip(f"{path} is not here")
    capture = load_capture(path, start_wall=EPOCH + timedelta(microseconds=T0_US))
    chunks = [
        (T0_US + round(c.offset_s * 1e6), c.offset_s, c.data) for c in capture.chunks
    ]
    for config in (
        Config(),
        Config.model_validate(
            {"sensors": [{"address": a, "correct_zero_drift": True} for a in range(8)]}
        ),
    ):
        check(pipeline_settings(config), chunks, capture.api_mode)


def test_archived_frames_decode_as_the_decoder_does() -> None:
    """Whole frames as the store keeps them, good, corrupt and of other shapes."""
    rng = random.Random(5)
    raws: list[bytes] = []
    modes: list[int] = []
    for n in range(400):
        count = 19 if n % 7 else rng.choice([1, 12, 19])
        data = encode_rx16_io(
            address=rng.randrange(1, 300),
            rssi_dbm=-rng.randrange(30, 90),
            analog={
                0: [rng.randrange(0, 1024) for _ in range(count)],
                4: [rng.randrange(0, 1024) for _ in range(count)],
            },
        )
        mode = 1 + n % 2
        raw = bytearray(encode_frame(data, mode))
        if n % 11 == 0:
            raw[rng.randrange(3, len(raw))] ^= 0x10
        raws.append(bytes(raw))
        modes.append(mode)
    decoded = decode_frames(raws, modes)
    assert len(decoded.index) > 250
    times = np.arange(len(raws), dtype=np.int64) * 2_000_000 + T0_US
    batch = FrameBatch.build(decoded, times, times / 1e6, ["p"] * len(raws))
    expected = [
        (i, e)
        for i, (raw, mode) in enumerate(zip(raws, modes, strict=True))
        for e in FrameDecoder(mode).feed(raw)
        if isinstance(e, IoSampleFrame)
    ]
    assert len(batch) == len(expected)
    for row, (i, frame) in enumerate(expected):
        assert batch.time_us[row] == times[i]
        assert batch.sensor[row] == frame.sensor_id
        if row in batch.odd:
            assert batch.odd[row] == frame
            continue
        assert batch.rssi_dbm[row] == frame.rssi_dbm
        assert batch.samples[row, :, 0].tolist() == list(frame.analog[0])
        assert batch.samples[row, :, 1].tolist() == list(frame.analog[4])


def test_json_lines_match_json_dumps_for_awkward_figures() -> None:
    """Tiny, huge, negative zero and missing figures print as json.dumps does."""
    rng = random.Random(9)
    values = [0.0, -0.0, 5e-5, 4.3e-5, 1e-7, 2.5e16, -1e-3, 0.0005, 0.00049, math.nan]
    values += [rng.uniform(-1e4, 1e4) * 10 ** rng.randrange(-8, 3) for _ in range(400)]
    n = len(values)
    column = np.array(values, np.float64)
    settings = pipeline_settings(
        Config.model_validate(
            {"sensors": [{"address": 1, "name": 'say "hi" 100%', "labels": {"a": "b"}}]}
        )
    )
    for sensor in (1, 2):
        cols = ReadingColumns(
            sensor=np.full(n, sensor, np.int64),
            settings=[settings.for_sensor(sensor)] * n,
            time_us=np.arange(n, dtype=np.int64) * 500_000 + T0_US,
            monotonic_s=np.zeros(n),
            watts=column,
            va=column[::-1].copy(),
            vrms=np.abs(column),
            irms=column,
            power_factor=np.roll(column, 3),
            wh_total=column,
            wh_delta=np.zeros(n),
            rssi_dbm=[None if i % 5 == 0 else -i for i in range(n)],
            flag_bits=np.array([FLAG_BITS[Flag.CLIPPED] * (i % 2) for i in range(n)]),
            sample_interval_ms=np.roll(column, 1),
            cycles=np.zeros(n),
            gap_s=np.roll(column, 2),
            zero_drift_counts=np.roll(column, 5),
            current_zero_counts=np.zeros(n),
            ports=["p"] * n,
        )
        expected = [reading_to_jsonl(r) + "\n" for r in cols.readings()]
        assert cols.jsonl() == expected
        assert cols.jsonl(frozenset({3})) == []


def test_window_weights_for_many_keys_equal_the_cached_ones() -> None:
    from wattd.core.batch.power import _weights
    from wattd.core.windows import CYCLE_STEPS, window_weights

    for count in (18, 11):
        keys = np.arange(CYCLE_STEPS, count * CYCLE_STEPS + 1, 37, dtype=np.int64)
        table = _weights(count, keys)
        for key, row in zip(keys.tolist(), table, strict=True):
            assert row.tolist() == list(window_weights(count, key))


def random_stream(rng: random.Random) -> bytes:
    """Frames of every kind (some corrupt or cut), modem status and line noise."""
    parts: list[bytes] = []
    for _ in range(rng.randrange(0, 30)):
        kind = rng.random()
        if kind < 0.6:
            count = 19 if rng.random() < 0.9 else rng.randrange(1, 25)
            data = encode_rx16_io(
                address=rng.randrange(65536),
                rssi_dbm=-rng.randrange(100),
                analog={
                    ch: [rng.randrange(1024) for _ in range(count)] for ch in (0, 4)
                },
            )
            frame = bytearray(encode_frame(data, 1))
            if rng.random() < 0.1:
                frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
            if rng.random() < 0.05:
                frame = frame[: rng.randrange(len(frame))]
            parts.append(bytes(frame))
        elif kind < 0.7:
            parts.append(encode_frame(bytes((0x8A, rng.randrange(7))), 1))
        elif kind < 0.75:
            parts.append(encode_frame(bytes([0x90, *rng.randbytes(5)]), 1))
        else:
            noise = [
                rng.choice([0x7E, 0, 0x54, 0x83, rng.randrange(256)]) for _ in range(12)
            ]
            parts.append(bytes(noise[: rng.randrange(1, 12)]))
    return b"".join(parts)


def test_random_streams_frame_and_time_as_the_decoder_does() -> None:
    """Any bytes, cut into any chunks and batches: same frames, chunks and counts."""
    rng = random.Random(11)
    for _ in range(150):
        data = random_stream(rng)
        cuts = (
            sorted(rng.sample(range(1, len(data)), min(len(data) - 1, 15)))
            if data
            else []
        )
        edges = [0, *cuts, len(data)] if data else [0]
        chunks = [data[a:b] for a, b in itertools.pairwise(edges)]
        decoder = FrameDecoder(1)
        want = []
        for k, chunk in enumerate(chunks):
            want += [
                (k, e) for e in decoder.feed(chunk) if isinstance(e, IoSampleFrame)
            ]
        want += [(-1, e) for e in decoder.close() if isinstance(e, IoSampleFrame)]
        batcher = StreamBatcher(1)
        got = []
        start = 0
        while start < len(chunks):
            part = chunks[start : start + rng.randrange(1, 6)]
            index = list(range(start, start + len(part)))
            batch = batcher.feed(part, index, [float(i) for i in index]).frames
            got += [(int(batch.time_us[i]), batch, i) for i in range(len(batch))]
            start += len(part)
        tail = batcher.close(-1, -1.0).frames
        got += [(-1, tail, i) for i in range(len(tail))]
        assert [k for k, _ in want] == [k for k, _, _ in got]
        for (_, frame), (_, batch, i) in zip(want, got, strict=True):
            if i in batch.odd:
                assert batch.odd[i] == frame
            else:
                assert batch.sensor[i] == frame.sensor_id
                assert tuple(batch.samples[i, :, 1].tolist()) == frame.analog[4]
        assert batcher.frames_ok == decoder.stats.frames_ok
        assert batcher.garbage_bytes == decoder.stats.garbage_bytes
        assert batcher.rejects.get("bad_checksum", 0) == decoder.stats.bad_checksum
