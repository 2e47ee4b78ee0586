"""The recording format: round trips, crash safety, raw captures, mode detection."""

from __future__ import annotations

import gzip
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from wattd.core.frames import FrameDecoder
from wattd.core.iosample import IoSampleFrame
from wattd.errors import CaptureError
from wattd.sources.recording import (
    FORMAT_NAME,
    RAW_FRAME_INTERVAL_S,
    Chunk,
    RecordingReader,
    RecordingWriter,
    detect_api_mode,
    load_capture,
    split_raw_capture,
    wall_from_ns,
    wall_to_ns,
)
from wattd.sources.simulate import IDLE, MeterModel, Simulator, SmpsLoad, varied_meters

if TYPE_CHECKING:
    from pathlib import Path

START_NS = 1_700_000_000_123_456_789
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def sim_bytes(
    mode: int, *, meters: int = 3, until: float = 30.0, seed: int = 1
) -> bytes:
    sim = Simulator(varied_meters(meters, seed=seed), seed=seed, api_mode=mode)
    return b"".join(f.data for f in sim.advance(until))


def write_recording(
    path: Path, chunks: list[tuple[float, int, bytes]], **kw: Any
) -> None:
    with RecordingWriter(
        path,
        port="/dev/ttyUSB0",
        baud=9600,
        api_mode=kw.pop("api_mode", 1),
        start_wall_ns=kw.pop("start_wall_ns", START_NS),
        start_monotonic_s=1000.0,
        **kw,
    ) as rec:
        for mono, wall, data in chunks:
            rec.write(data, monotonic_s=mono, wall_ns=wall)


SAMPLE_CHUNKS = [
    (1000.0125, START_NS + 12_500_000, b"\x7e\x00\x54\x83"),
    (1000.0125, START_NS + 12_600_000, bytes(range(256))),
    (1002.5, START_NS + 2_500_000_000, b"\x00"),
    (1004.25, START_NS + 4_249_000_000, b"\x7d\x33\x11\x13\xff"),
]


def test_round_trip_keeps_bytes_offsets_and_wall_times(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_recording(path, SAMPLE_CHUNKS)
    with RecordingReader(path) as reader:
        assert reader.header.port == "/dev/ttyUSB0"
        assert reader.header.baud == 9600
        assert reader.header.api_mode == 1
        assert reader.header.start_wall_ns == START_NS
        assert reader.header.version == 1
        chunks = list(reader)
        assert not reader.truncated
    assert [c.data for c in chunks] == [d for _, _, d in SAMPLE_CHUNKS]
    assert [c.offset_s for c in chunks] == pytest.approx([0.0125, 0.0125, 2.5, 4.25])
    assert [c.wall_time for c in chunks] == [
        wall_from_ns(w) for _, w, _ in SAMPLE_CHUNKS
    ]
    offset, wall, data = chunks[1]  # chunks unpack as (offset_s, wall_time, bytes)
    assert (offset, wall, data) == (
        chunks[1].offset_s,
        chunks[1].wall_time,
        chunks[1].data,
    )


def test_file_is_self_describing_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_recording(path, SAMPLE_CHUNKS)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == FORMAT_NAME
    assert header["version"] == 1
    assert header["start_time"] == "2023-11-14T22:13:20.123456Z"
    assert header["api_mode"] == 1
    first = json.loads(lines[1])
    assert set(first) == {"t", "wall_ns", "hex"}
    assert first["hex"] == "7e005483"
    assert len(lines) == 1 + len(SAMPLE_CHUNKS)


def test_offsets_never_decrease_even_if_the_caller_clock_does(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_recording(path, [(1001.0, START_NS, b"a"), (1000.5, START_NS, b"b")])
    chunks = list(RecordingReader(path))
    assert [c.offset_s for c in chunks] == [1.0, 1.0]


@pytest.mark.parametrize("cut", [1, 5, 17, 40])
def test_crash_truncated_last_line_is_skipped(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "r.jsonl"
    write_recording(path, SAMPLE_CHUNKS)
    raw = path.read_bytes()
    last_start = raw.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(raw[: last_start + cut])
    capture = load_capture(path)
    assert capture.truncated
    assert [c.data for c in capture.chunks] == [d for _, _, d in SAMPLE_CHUNKS[:-1]]


def test_missing_final_newline_on_a_complete_line_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_recording(path, SAMPLE_CHUNKS)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    capture = load_capture(path)
    assert not capture.truncated
    assert len(capture.chunks) == len(SAMPLE_CHUNKS)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"t": 1.0, "wall_ns": 5, "hex": "7e0"}', "even-length hex"),
        (b'{"t": 1.0, "wall_ns": 5, "hex": "zz"}', "even-length hex"),
        (b'{"t": -1, "wall_ns": 5, "hex": "7e"}', "'t' must be"),
        (b'{"t": "1", "wall_ns": 5, "hex": "7e"}', "'t' must be"),
        (b'{"t": 1.0, "wall_ns": 5.5, "hex": "7e"}', "'wall_ns'"),
        (b'{"t": 1.0, "wall_ns": 5}', "'hex'"),
        (b'{"t": 0.001, "wall_ns": 5, "hex": "7e"}', "goes back"),
    ],
)
def test_malformed_lines_name_file_and_line(
    tmp_path: Path, bad_line: bytes, message: str
) -> None:
    path = tmp_path / "r.jsonl"
    write_recording(path, SAMPLE_CHUNKS[:2])
    with path.open("ab") as fh:
        fh.write(bad_line + b"\n")
        fh.write(b'{"t": 9.0, "wall_ns": 5, "hex": "00"}\n')
    with pytest.raises(CaptureError, match=message) as info:
        load_capture(path)
    assert f"{path}:4" in str(info.value)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ('{"format": "wattd-recording", "version": 2, "start_wall_ns": 1}', "newer"),
        ('{"format": "wattd-recording", "start_wall_ns": 1}', "version"),
        ('{"format": "wattd-recording", "version": 1}', "start_wall_ns"),
        (
            '{"format": "wattd-recording", "version": 1, "start_wall_ns": 1,'
            ' "api_mode": 3}',
            "api_mode",
        ),
        ('{"format": "wattd-recording", "vers', "header is incomplete"),
    ],
)
def test_bad_headers(tmp_path: Path, header: str, message: str) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(header + "\n")
    with pytest.raises(CaptureError, match=message) as info:
        load_capture(path)
    assert str(path) in str(info.value)


def test_header_without_api_mode_gets_it_detected(tmp_path: Path) -> None:
    data = sim_bytes(2)
    path = tmp_path / "r.jsonl"
    with RecordingWriter(path, port="p", start_monotonic_s=0.0) as rec:
        for k in range(0, len(data), 100):
            rec.write(data[k : k + 100], monotonic_s=k / 1000)
    capture = load_capture(path)
    assert capture.header is not None
    assert capture.header.api_mode is None
    assert capture.api_mode == 2
    assert capture.api_mode_detected
    assert capture.data == data


def test_recording_of_a_noisy_port_without_mode_still_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "r.jsonl"
    with RecordingWriter(path, port="p", start_monotonic_s=0.0) as rec:
        rec.write(bytes(range(1, 100)), monotonic_s=1.0)
    capture = load_capture(path)
    assert capture.api_mode == 1
    assert capture.data == bytes(range(1, 100))
    assert "assuming API mode 1" in caplog.text


def test_existing_file_is_not_overwritten_by_default(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text("precious")
    with pytest.raises(CaptureError, match="exists"):
        RecordingWriter(path, port="p")
    assert path.read_text() == "precious"
    RecordingWriter(path, port="p", overwrite=True).close()
    assert load_capture(path).chunks == ()


def test_append_adds_a_segment_on_one_timeline(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_recording(path, SAMPLE_CHUNKS)
    # A crash left half a line behind; appending must repair it.
    with path.open("ab") as fh:
        fh.write(b'{"t": 5.0, "wall_ns": 17000')
    later = START_NS + 60 * 1_000_000_000  # 60 s after the first start
    write_recording(
        path,
        [(1000.5, later + 500_000_000, b"second"), (1001.0, later + 10**9, b"third")],
        start_wall_ns=later,
        append=True,
    )
    with RecordingReader(path) as reader:
        chunks = list(reader)
        assert reader.segments == 2
        assert not reader.truncated
    assert [c.data for c in chunks][-2:] == [b"second", b"third"]
    # The second segment starts where the wall clock says, after the first.
    gap = (later - (START_NS + 4_249_000_000)) / 1e9
    assert chunks[-2].offset_s == pytest.approx(4.25 + gap + 0.5)
    assert chunks[-1].offset_s == pytest.approx(4.25 + gap + 1.0)
    offsets = [c.offset_s for c in chunks]
    assert offsets == sorted(offsets)


def test_append_refuses_other_files_and_other_modes(tmp_path: Path) -> None:
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"\x7e\x00\x02\x8a\x00\x75")
    with pytest.raises(CaptureError, match="not a wattd recording"):
        RecordingWriter(raw, port="p", append=True)
    assert raw.read_bytes() == b"\x7e\x00\x02\x8a\x00\x75"
    rec = tmp_path / "r.jsonl"
    write_recording(rec, SAMPLE_CHUNKS, api_mode=1)
    with pytest.raises(CaptureError, match="API mode 1"):
        RecordingWriter(rec, port="p", api_mode=2, append=True)


def test_gzip_recordings_are_read(tmp_path: Path) -> None:
    data = sim_bytes(1, meters=20, until=200)
    path = tmp_path / "r.jsonl"
    chunks = [
        (1000 + k / 100, START_NS + k, data[k : k + 50])
        for k in range(0, len(data), 50)
    ]
    write_recording(path, chunks)
    gz = tmp_path / "r.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    whole = load_capture(gz)
    assert whole.chunks == load_capture(path).chunks
    assert whole.data == data
    # A gzip stream cut short keeps what was decompressed.
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    capture = load_capture(cut)
    assert capture.truncated
    assert 0 < len(capture.chunks) < len(chunks)
    assert data.startswith(capture.data)
    tiny = tmp_path / "tiny.bin.gz"
    tiny.write_bytes(gzip.compress(b"\x7e\x00\x02\x8a\x00\x75")[:-12])
    with pytest.raises(CaptureError, match="cut off before any data"):
        load_capture(tiny)


def test_wall_ns_conversions() -> None:
    wall = wall_from_ns(START_NS)
    assert wall.tzinfo is UTC
    assert wall_to_ns(wall) == START_NS // 1000 * 1000
    assert wall_to_ns(T0) == int(T0.timestamp()) * 10**9


# -- raw captures ------------------------------------------------------------


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    with pytest.raises(CaptureError, match="empty"):
        load_capture(path)
    with pytest.raises(CaptureError, match="cannot open"):
        load_capture(tmp_path / "missing.bin")


@pytest.mark.parametrize("mode", [1, 2])
def test_raw_capture_gets_per_frame_chunks_and_a_synthetic_clock(
    tmp_path: Path, mode: int
) -> None:
    sim = Simulator(
        [MeterModel.with_quirks(4, SmpsLoad(watts=50), seed=2)],
        seed=2,
        api_mode=mode,
        noise=0.2,
    )
    frames = sim.advance(60.0)
    data = b"".join(f.data for f in frames)
    path = tmp_path / "raw.bin"
    path.write_bytes(data + b"\x7e\x00")  # plus a cut-off tail
    capture = load_capture(path, start_wall=T0)
    assert capture.kind == "raw"
    assert not capture.timed
    assert capture.api_mode == mode
    assert capture.data == data + b"\x7e\x00"
    good = [f for f in frames if not f.corrupted]
    clean_chunks = capture.chunks[: len(good)]
    for k, (chunk, frame) in enumerate(zip(clean_chunks, good, strict=True)):
        assert chunk.data.endswith(frame.data[frame.garbage :]) or frame.corrupted
        assert chunk.offset_s == pytest.approx(k * RAW_FRAME_INTERVAL_S)
        assert chunk.wall_time == T0 + timedelta(seconds=chunk.offset_s)
    assert capture.chunks[-1].data.endswith(b"\x7e\x00")


def test_raw_clock_interleaves_several_sensors() -> None:
    sim = Simulator(
        [MeterModel.with_quirks(a, IDLE, seed=1) for a in (1, 2, 3)], seed=1
    )
    frames = sim.advance(40.0)
    data = b"".join(f.data for f in frames)
    chunks = split_raw_capture(data, 1, start_wall=T0)
    assert len(chunks) == len(frames)
    dec = FrameDecoder(1)
    per_sensor: dict[int, list[float]] = {}
    for chunk in chunks:
        (io,) = [e for e in dec.feed(chunk.data) if isinstance(e, IoSampleFrame)]
        per_sensor.setdefault(io.sensor_id, []).append(chunk.offset_s)
    for offsets in per_sensor.values():
        gaps = {round(b - a, 9) for a, b in itertools.pairwise(offsets)}
        assert gaps == {RAW_FRAME_INTERVAL_S}
    all_offsets = [c.offset_s for c in chunks]
    assert all_offsets == sorted(all_offsets)
    assert max(all_offsets) < 20 * RAW_FRAME_INTERVAL_S


def test_raw_bytes_without_frames(tmp_path: Path) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(bytes(range(1, 120)) * 3)
    with pytest.raises(CaptureError, match="no valid XBee API frame") as info:
        load_capture(path)
    assert str(path) in str(info.value)


def test_json_looking_raw_capture_is_still_raw(tmp_path: Path) -> None:
    data = b'{"hello": 1}\n' + sim_bytes(1, meters=1, until=10)
    path = tmp_path / "odd.bin"
    path.write_bytes(data)
    capture = load_capture(path, start_wall=T0)
    assert capture.kind == "raw"
    assert capture.data == data


# -- API mode detection ------------------------------------------------------


@pytest.mark.parametrize("mode", [1, 2])
def test_detects_simulated_modes(mode: int) -> None:
    assert detect_api_mode(sim_bytes(mode, meters=10)) == mode


@pytest.mark.parametrize("mode", [1, 2])
def test_detects_mode_from_a_single_frame(mode: int) -> None:
    sim = Simulator([MeterModel.with_quirks(1, IDLE, seed=3)], seed=3, api_mode=mode)
    frame = sim.advance(3.0)[0].frame
    assert detect_api_mode(frame) == mode
    assert detect_api_mode(frame[:-1] + frame) == mode  # tail-to-head noise


def test_tie_without_special_bytes_is_mode_one() -> None:
    # A modem status frame has no byte that mode 2 escapes: both modes read it.
    frame = b"\x7e\x00\x02\x8a\x00\x75"
    assert detect_api_mode(frame * 3) == 1


def test_escaped_frame_is_mode_two() -> None:
    # Modem status 0x11 sent escaped (7D 31): valid only when unescaped.
    frame = b"\x7e\x00\x02\x8a\x7d\x31\x64"
    assert detect_api_mode(frame) == 2
    assert detect_api_mode(b"\x7e\x00\x02\x8a\x11\x64") == 1


def test_real_captures_are_detected(captures_dir: Path) -> None:
    files = sorted(captures_dir.glob("*.bin"))
    assert len(files) >= 12
    for path in files:
        expected = 2 if path.name.endswith(".ap2.bin") else 1
        assert detect_api_mode(path.read_bytes(), source=str(path)) == expected, path


def test_real_captures_load_with_every_frame(captures_dir: Path) -> None:
    for meta_path in sorted(captures_dir.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        stem = meta_path.with_suffix("")
        for suffix, mode in ((".bin", 1), (".ap2.bin", 2)):
            path = stem.with_name(stem.name + suffix)
            capture = load_capture(path, start_wall=T0)
            assert capture.kind == "raw"
            assert capture.api_mode == mode
            assert capture.data == path.read_bytes()
            frames = _frame_count(meta)
            assert len(capture.chunks) == frames, path
            assert capture.chunks[-1].offset_s == pytest.approx(
                (frames - 1) * RAW_FRAME_INTERVAL_S
            )


def _frame_count(meta: dict[str, object]) -> int:
    for key in ("frames", "frame_count", "n_frames"):
        value = meta.get(key)
        if isinstance(value, int):
            return value
    raise AssertionError(f"no frame count in {sorted(meta)}")


def test_chunk_is_a_plain_tuple() -> None:
    chunk = Chunk(1.5, T0, b"x")
    offset, wall, data = chunk
    assert (offset, wall, data) == (1.5, T0, b"x")
