"""``wattd record`` on real pseudo-terminals."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import tty
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.pty import Pty
from wattd.cli.record import record_port
from wattd.core.frames import FrameDecoder
from wattd.core.iosample import IoSampleFrame
from wattd.errors import CaptureError, SerialPortGone
from wattd.sources.recording import RecordingWriter, load_capture
from wattd.sources.serial import open_port
from wattd.sources.simulate import Simulator, varied_meters

ROOT = REPO_ROOT


def sim_frames(n: int, *, mode: int = 1, seed: int = 3) -> list[bytes]:
    sim = Simulator(varied_meters(4, seed=seed), seed=seed, api_mode=mode)
    return [sim.next_frame().data for _ in range(n)]


class OpenSignal:
    """Opens the port like the command does, and tells the test when it is open."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()

    async def __call__(
        self, device: str, baud: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        pair = await open_port(device, baud)
        self.opened.set()
        return pair


async def test_recording_round_trips_exactly_with_arrival_times(
    pty: Pty, tmp_path: Path
) -> None:
    out = tmp_path / "rec.jsonl"
    frames = sim_frames(12)
    first, second = b"".join(frames[:6]), b"".join(frames[6:])
    opener = OpenSignal()
    stop = asyncio.Event()
    marks: dict[str, datetime] = {}

    async def feed() -> None:
        await opener.opened.wait()
        marks["before"] = datetime.now(UTC)
        pty.write(first)
        await asyncio.sleep(0.4)
        pty.write(second[:50])  # a frame split across writes
        await asyncio.sleep(0.05)
        pty.write(second[50:])
        await asyncio.sleep(0.3)
        marks["after"] = datetime.now(UTC)
        stop.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(feed())
        stats = await record_port(
            pty.path, out, baud=9600, api_mode=1, stop_event=stop, opener=opener
        )
    capture = load_capture(out)
    assert capture.data == first + second
    assert stats.bytes == len(first + second)
    assert stats.chunks == len(capture.chunks)
    assert capture.header is not None
    assert capture.header.port == pty.path
    assert capture.header.baud == 9600
    assert capture.api_mode == 1
    offsets = [c.offset_s for c in capture.chunks]
    assert offsets == sorted(offsets)
    # The pause between the bursts shows in the offsets.
    cut = next(
        i
        for i, c in enumerate(capture.chunks)
        if len(b"".join(x.data for x in capture.chunks[: i + 1])) > len(first)
    )
    assert offsets[cut] - offsets[cut - 1] >= 0.3
    for chunk in capture.chunks:
        assert marks["before"] <= chunk.wall_time <= marks["after"]
    dec = FrameDecoder(1)
    decoded = [
        e
        for c in capture.chunks
        for e in dec.feed(c.data)
        if isinstance(e, IoSampleFrame)
    ]
    assert len(decoded) == 12


async def test_duration_ends_the_recording(pty: Pty, tmp_path: Path) -> None:
    out = tmp_path / "rec.jsonl"
    started = time.monotonic()
    stats = await record_port(pty.path, out, duration_s=0.3)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2.0
    assert stats.chunks == 0
    assert 0.3 <= stats.duration_s < 1.0
    assert load_capture(out).chunks == ()


async def test_missing_port_is_serial_port_gone(tmp_path: Path) -> None:
    out = tmp_path / "rec.jsonl"
    with pytest.raises(SerialPortGone, match="does not exist") as info:
        await record_port(str(tmp_path / "ttyNONE"), out, duration_s=1)
    assert str(tmp_path / "ttyNONE") in str(info.value)
    assert not out.exists()


async def test_unplug_keeps_what_was_recorded(tmp_path: Path) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    out = tmp_path / "rec.jsonl"
    data = b"".join(sim_frames(5))
    opener = OpenSignal()

    async def unplug() -> None:
        await opener.opened.wait()
        os.write(master, data)
        await asyncio.sleep(0.3)
        os.close(slave)
        os.close(master)

    recording = asyncio.create_task(
        record_port(path, out, duration_s=10, opener=opener)
    )
    await unplug()
    with pytest.raises(SerialPortGone, match="saved in"):
        await recording
    assert load_capture(out).data == data


async def test_existing_output_needs_append_or_overwrite(
    pty: Pty, tmp_path: Path
) -> None:
    out = tmp_path / "rec.jsonl"
    RecordingWriter(out, port=pty.path).close()
    with pytest.raises(CaptureError, match="exists") as info:
        await record_port(pty.path, out, duration_s=0.1)
    # The refusal names the flags that get past it.
    assert "--append" in str(info.value)
    assert "--force" in str(info.value)
    await record_port(pty.path, out, duration_s=0.1, append=True)
    await record_port(pty.path, out, duration_s=0.1, overwrite=True)
    assert out.read_text().count('"format":"wattd-recording"') == 1


def test_command_line(pty: Pty, tmp_path: Path) -> None:
    out = tmp_path / "rec.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattd", "record", pty.path, "--output", str(out),
         "--duration", "1.5", "--api-mode", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )  # fmt: skip
    try:
        # The port flushes its input when it opens, so keep sending while the
        # command starts; what it records must be a clean run of whole frames.
        frames = sim_frames(600, mode=2)
        for frame in frames:  # until the command ends (at most ~18 s)
            if proc.poll() is not None:
                break
            pty.write(frame)
            time.sleep(0.03)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert b"recorded" in err
    capture = load_capture(out)
    assert capture.api_mode == 2
    dec = FrameDecoder(2)
    events = [e for c in capture.chunks for e in dec.feed(c.data)]
    io = [e.raw for e in events if isinstance(e, IoSampleFrame)]
    assert len(io) >= 10
    start = frames.index(io[0])
    assert io == frames[start : start + len(io)]


def test_command_line_refuses_an_existing_file_naming_the_flags(
    tmp_path: Path,
) -> None:
    out = tmp_path / "rec.jsonl"
    out.write_text("keep me\n")
    run = subprocess.run(
        [sys.executable, "-m", "wattd", "record", "/dev/ttyNOPE0", "-o", str(out)],
        capture_output=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert run.returncode == 1
    err = run.stderr.decode()
    # Refused before the (missing) port is even tried.
    assert f"{out}: file exists; add --append to record onto its end" in err
    assert "--force to replace it" in err
    assert "ttyNOPE0" not in err
    assert out.read_text() == "keep me\n"


def test_command_line_missing_port(tmp_path: Path) -> None:
    out = tmp_path / "rec.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "wattd", "record", "/dev/ttyNOPE0", "-o", str(out)],
        capture_output=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert run.returncode == 1
    assert b"/dev/ttyNOPE0: does not exist" in run.stderr
    assert not out.exists()
