"""``wattd replay`` flat out: the batch path prints what the per-frame path prints.

The per-frame path is what runs when numpy cannot be imported; a
sitecustomize on the path blocks it in the child process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

pytest.importorskip("numpy")

from wattd.sources.recording import RecordingWriter
from wattd.sources.simulate import MeterModel, ResistiveLoad, Simulator, SmpsLoad

if TYPE_CHECKING:
    from pathlib import Path

START_NS = 1_760_000_000_000_000_000


def wattd(
    *args: str, block_numpy: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if block_numpy is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(block_numpy), env.get("PYTHONPATH", "")) if p
        )
    return subprocess.run(
        [sys.executable, "-m", "wattd", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module")
def no_numpy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("no-numpy")
    (where / "sitecustomize.py").write_text(
        "import sys\nsys.modules['numpy'] = None  # import numpy now fails\n"
    )
    return where


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    meters = [
        MeterModel.with_quirks(1, ResistiveLoad(watts=240), seed=11),
        MeterModel.with_quirks(2, SmpsLoad(watts=90), seed=11),
        MeterModel.with_quirks(3, ResistiveLoad(watts=1200), seed=11),
    ]
    sim = Simulator(meters, seed=3, api_mode=1, noise=0.03, drop_rate=0.02)
    path = tmp_path_factory.mktemp("rec") / "sim.wattrec"
    with RecordingWriter(
        path,
        port="simulator",
        baud=9600,
        api_mode=1,
        start_monotonic_s=0.0,
        start_wall_ns=START_NS,
    ) as w:
        for f in sim.advance(600.0):
            w.write(
                f.data, monotonic_s=f.time_s, wall_ns=START_NS + int(f.time_s * 1e9)
            )
    return path


def test_recording_prints_the_same_with_and_without_numpy(
    recording: Path, no_numpy: Path
) -> None:
    fast = wattd("replay", str(recording), "--speed", "0")
    slow = wattd("replay", str(recording), "--speed", "0", block_numpy=no_numpy)
    assert fast.returncode == slow.returncode == 0, fast.stderr + slow.stderr
    assert fast.stdout == slow.stdout
    assert len(fast.stdout.splitlines()) > 700
    assert "install wattd[batch]" in slow.stderr
    assert "install wattd[batch]" not in fast.stderr
    # The summaries agree on what counts (garbage runs are counted by chunk).
    assert (
        fast.stderr.splitlines()[-1].split(", ")[:3]
        == (slow.stderr.splitlines()[-1].split(", ")[:3])
    )


def test_raw_capture_and_sensor_filter(captures_dir: Path, no_numpy: Path) -> None:
    capture = str(captures_dir / "tweetawatt_data.ap2.bin")
    args = ("replay", capture, "--sensor", "1", "--format", "table")
    fast = wattd(*args)
    slow = wattd(*args, block_numpy=no_numpy)
    assert fast.returncode == 0, fast.stderr
    # A raw capture's clock starts at "now", so the time column differs.
    rows = [line[24:] for line in fast.stdout.splitlines()]
    assert rows == [line[24:] for line in slow.stdout.splitlines()]
    assert len(rows) > 10
    assert all(row.split()[0] == "1" for row in rows[1:])


def test_progress_goes_to_stderr_only(recording: Path) -> None:
    out = wattd("replay", str(recording), "--speed", "0", "--progress")
    assert out.returncode == 0, out.stderr
    assert "wattd replay: [" in out.stderr
    for line in out.stdout.splitlines():
        assert json.loads(line)["sensor"] in {1, 2, 3}
