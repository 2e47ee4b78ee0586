"""``wattd simulate`` end to end, as a user runs it."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import tty
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO_ROOT
from wattd.cli import build_parser
from wattd.cli.simulate import build_meters, handle
from wattd.core.frames import FrameDecoder
from wattd.core.iosample import IoSampleFrame
from wattd.errors import ConfigError
from wattd.sources.recording import load_capture
from wattd.sources.simulate import Simulator, parse_meter_spec

ROOT = REPO_ROOT


def wattd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "wattd", "simulate", *args],
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def expected_sim(
    specs: list[str], *, seed: int, mode: int = 1, count: int | None = None, **kw: float
) -> Simulator:
    meters = build_meters(
        [parse_meter_spec(s) for s in specs],
        count=count,
        seed=seed,
        mains_hz=60.0,
        nominal_vrms=120.0,
    )
    return Simulator(meters, seed=seed, api_mode=mode, **kw)


def test_stdout_gets_the_exact_simulated_bytes() -> None:
    specs = ["1:resistive:100", "2:steps:60@0,120@10", "0x30:smps:40"]
    args = [a for s in specs for a in ("--meter", s)]
    run = wattd(
        *args, "--frames", "40", "--output", "-", "--seed", "3", "--drop", "0.1"
    )
    assert run.returncode == 0, run.stderr
    sim = expected_sim(specs, seed=3, drop_rate=0.1)
    frames = [sim.next_frame() for _ in range(40)]
    assert run.stdout == b"".join(f.data for f in frames)
    decoded = [
        e for e in FrameDecoder(1).feed(run.stdout) if isinstance(e, IoSampleFrame)
    ]
    assert {e.address16 for e in decoded} == {1, 2, 0x30}
    assert len(decoded) == sum(not f.dropped for f in frames)
    assert b"40 frames" in run.stderr


def test_recording_file_with_truth(tmp_path: Path) -> None:
    out = tmp_path / "sim.jsonl"
    truth = tmp_path / "truth.jsonl"
    run = wattd(
        "--meters", "4", "--api-mode", "2", "--duration", "30", "--seed", "9",
        "--noise", "0.05", "--output", str(out), "--truth", str(truth),
        "--start-time", "2024-01-02T03:04:05Z",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    capture = load_capture(out)
    assert capture.kind == "recording"
    assert capture.api_mode == 2
    assert capture.header is not None
    assert capture.header.start_time.isoformat() == "2024-01-02T03:04:05+00:00"
    rows = [json.loads(line) for line in truth.read_text().splitlines()]
    assert {r["address"] for r in rows} == {1, 2, 3, 4}
    assert all(r["t"] <= 30 for r in rows)
    # One chunk per frame on the wire, stamped with the simulated time.
    assert [c.offset_s for c in capture.chunks] == pytest.approx([r["t"] for r in rows])
    sim = expected_sim([], seed=9, mode=2, count=4, noise=0.05)
    frames = sim.advance(30.0)
    assert capture.data == b"".join(f.data for f in frames)
    assert [r["watts"] for r in rows] == [f.true_watts for f in frames]


def test_raw_file_by_suffix(tmp_path: Path) -> None:
    out = tmp_path / "sim.bin"
    run = wattd("--meters", "2", "--frames", "10", "--output", str(out))
    assert run.returncode == 0, run.stderr
    events = FrameDecoder(1).feed(out.read_bytes())
    assert sum(isinstance(e, IoSampleFrame) for e in events) == 10
    assert load_capture(out).kind == "raw"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--meter", "1:heater:5", "-o", "-"], "unknown load 'heater'"),
        (["--meters", "2", "--frames", "3"], "one of the arguments --output/-o --pty"),
        (["--drop", "2", "-o", "-"], "probability 0..1"),
        (["--speed", "-1", "-o", "-"], "must be >= 0"),
        (["--meters", "0", "-o", "-"], "must be 1..65000"),
        (["-o", "-", "--frames", "1", "--duration", "2"], "not allowed with"),
    ],
)
def test_argument_errors(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["simulate", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--meters", "2", "-o", "-"], "give --duration or --frames"),
        (["-o", "-", "--frames", "1", "--link", "/tmp/x"], "--link only applies"),
    ],
)
def test_usage_errors_from_the_handler(
    caplog: pytest.LogCaptureFixture, args: list[str], message: str
) -> None:
    parsed = build_parser().parse_args(["simulate", *args])
    assert handle(parsed) == 2
    assert message in caplog.text


def test_duplicate_addresses_are_refused() -> None:
    args = ["--meter", "1:idle", "--meter", "1:smps:5", "-o", "-", "--frames", "1"]
    parsed = build_parser().parse_args(["simulate", *args])
    with pytest.raises(ConfigError, match="two --meter specs use address 1"):
        handle(parsed)


def test_help_documents_the_spec_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["simulate", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for text in ("resistive:W", "inductive:W:PF", "smps:W", "steps:", "period=S"):
        assert text in out


def test_pty_mode_streams_frames_until_interrupted(tmp_path: Path) -> None:
    link = tmp_path / "ttySIM"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "wattd", "simulate", "--pty", "--link", str(link),
            "--meters", "3", "--speed", "40", "--seed", "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().decode().strip()
        assert path.startswith("/dev/pts/")
        assert os.readlink(link) == path
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        try:
            tty.setraw(fd)
            dec = FrameDecoder(1)
            got: list[IoSampleFrame] = []
            deadline = time.monotonic() + 20
            while len(got) < 8 and time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 0.5)
                if ready:
                    events = dec.feed(os.read(fd, 4096))
                    got += [e for e in events if isinstance(e, IoSampleFrame)]
        finally:
            os.close(fd)
        assert len(got) >= 8
        assert {e.address16 for e in got} <= {1, 2, 3}
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert not link.is_symlink()
    assert b"frames" in err
