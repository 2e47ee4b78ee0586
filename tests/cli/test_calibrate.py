"""``wattd calibrate`` on captures, recordings and a live pty."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.fixtures.daemon import MeterFeed
from tests.fixtures.paths import REPO_ROOT
from wattd.cli import main
from wattd.cli.calibrate.configfile import write_sensor_values
from wattd.cli.calibrate.frames import read_port_frames
from wattd.config import load_config
from wattd.errors import CalibrationError, ConfigError
from wattd.sources.recording import RecordingWriter
from wattd.sources.serial import open_port
from wattd.sources.simulate import IDLE, Load, MeterModel, ResistiveLoad, Simulator

if TYPE_CHECKING:
    from tests.fixtures.pty import Pty

ROOT = REPO_ROOT

CONFIG = """\
# site config, edited by hand
ports:
  - device: /dev/ttyUSB0   # the receiver
    name: rx

sensors:
  - address: 0x0005        # the workshop meter
    name: workshop
    current_zero: 492      # factory guess
    rack: B

  - address: 6
    name: other
    # note about sensor 6
    current_zero: 500.5

# -- energy ------------------------------------------------------------
energy:
  max_gap_s: 10   # seconds
"""


def model(load: Load, address: int = 5, **quirks: Any) -> MeterModel:
    base: dict[str, Any] = {
        "current_zero_counts": 489.62,
        "voltage_zero_counts": 517.3,
        "voltage_amplitude_counts": 330.0,
        "counts_per_amp": 16.1,
        "vrms": 118.0,
        "noise_counts": 0.6,
    }
    base.update(quirks)
    return MeterModel(address=address, load=load, **base)


def write_capture(path: Path, meters: list[MeterModel], frames: int) -> Path:
    sim = Simulator(meters, seed=9)
    path.write_bytes(b"".join(sim.next_frame().data for _ in range(frames)))
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattd", "calibrate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_zero_from_a_raw_capture_is_printed_and_written_keeping_comments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    idle = model(IDLE)
    capture = write_capture(
        tmp_path / "idle.bin", [idle, model(ResistiveLoad(watts=90.0), address=6)], 80
    )
    config = tmp_path / "wattd.yaml"
    config.write_text(CONFIG)
    code = main(
        ["calibrate", "--sensor", "5", "--capture", str(capture), "-c", str(config),
         "--write"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr()
    assert "no-load frames" in out.out
    assert "95 % confidence" in out.out
    assert "config has" in out.out
    assert "sensor 5" in out.err
    assert str(config) in out.err
    written = config.read_text()
    # Only the one value changed; every comment and the hex address survive.
    before = CONFIG.splitlines()
    after = written.splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(changed) == 1
    assert changed[0][0] == "    current_zero: 492      # factory guess"
    value = float(changed[0][1].split(":")[1].split("#")[0])
    assert value == pytest.approx(idle.current_zero_counts, abs=0.1)
    assert changed[0][1].endswith("# factory guess")
    cfg = load_config(config)
    assert cfg.sensor_map()[5].current_zero == value
    assert cfg.sensor_map()[6].current_zero == 500.5


def test_json_output_of_the_real_no_load_capture(captures_dir: Path) -> None:
    summary = json.loads((captures_dir / "Noisy_Zeros3.json").read_text())
    result = run_cli(
        "--sensor", "3", "--capture", str(captures_dir / "Noisy_Zeros3.ap2.bin"),
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["mode"] == "zero"
    assert data["frames"] == summary["frames"]
    mean = summary["per_sensor"]["3"]["ad4_samples_1_18"]["mean"]
    assert data["current_zero"] == pytest.approx(mean, abs=1e-9)
    assert data["config"] == {"current_zero": round(mean, 2)}
    assert data["config_before"] == {"current_zero": 492.0}


def test_reference_load_from_a_recording_writes_all_gains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = model(ResistiveLoad(watts=750.0))
    sim = Simulator([loaded], seed=2)
    rec = tmp_path / "ref.jsonl"
    with RecordingWriter(rec, port="/dev/ttyUSB0", baud=9600, api_mode=1) as writer:
        for _ in range(25):
            frame = sim.next_frame()
            writer.write(
                frame.data,
                monotonic_s=frame.time_s,
                wall_ns=1_700_000_000_000_000_000 + int(frame.time_s * 1e9),
            )
    config = tmp_path / "wattd.yaml"
    config.write_text(CONFIG)
    code = main(
        ["calibrate", "--sensor", "0x5", "--capture", str(rec), "--config",
         str(config), "--reference-watts", "750", "--reference-volts", "118",
         "--write", "--json"]
    )  # fmt: skip
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mode"] == "reference"
    assert data["counts_per_amp"] == pytest.approx(loaded.counts_per_amp, rel=0.003)
    assert data["counts_per_volt"] == pytest.approx(loaded.counts_per_volt, rel=0.002)
    cfg = load_config(config).sensor_map()[5]
    assert cfg.counts_per_amp == data["config"]["counts_per_amp"]
    assert cfg.counts_per_volt == data["config"]["counts_per_volt"]
    assert cfg.voltage_zero == pytest.approx(loaded.voltage_zero_counts, abs=0.6)
    assert cfg.current_zero == 492  # untouched by a gain calibration
    assert "# the workshop meter" in config.read_text()


def test_a_sensor_missing_from_the_config_is_appended(tmp_path: Path) -> None:
    config = tmp_path / "wattd.yaml"
    config.write_text(CONFIG)
    write_sensor_values(config, 9, {"current_zero": 480.25})
    text = config.read_text()
    assert text.startswith(CONFIG.split("# -- energy")[0].rstrip("\n"))
    # The section comment stays above its section, after the new entry.
    assert text.index("address: 9") < text.index("# -- energy")
    assert load_config(config).sensor_map()[9].current_zero == 480.25


def test_an_edit_the_daemon_would_refuse_is_not_written(tmp_path: Path) -> None:
    config = tmp_path / "wattd.yaml"
    config.write_text(CONFIG)
    with pytest.raises(ConfigError, match="current_zero"):
        write_sensor_values(config, 5, {"current_zero": 5000.0})
    assert config.read_text() == CONFIG


def test_wrong_sensor_and_missing_config_are_clear_errors(tmp_path: Path) -> None:
    capture = write_capture(tmp_path / "idle.bin", [model(IDLE)], 5)
    result = run_cli("--sensor", "7", "--capture", str(capture))
    assert result.returncode == 1
    assert "sensor 7" in result.stderr
    assert "no IO frame" in result.stderr
    result = run_cli(
        "--sensor", "5", "--capture", str(capture), "--write",
        "--config", str(tmp_path / "absent.yaml"),
    )  # fmt: skip
    assert result.returncode == 1
    assert "config file not found" in result.stderr
    result = run_cli(
        "--sensor", "5", "--capture", str(capture), "--reference-volts", "120"
    )
    assert result.returncode == 1
    assert "needs --reference-watts" in result.stderr


def test_live_port_zero_from_the_command_line(pty: Pty, tmp_path: Path) -> None:
    idle = model(IDLE)
    sim = Simulator([idle, model(ResistiveLoad(watts=40.0), address=2)], seed=5)
    feed = MeterFeed(sim, pty.master, speed=25.0).start()
    try:
        result = run_cli("--sensor", "5", "--port", pty.path, "--frames", "12",
                         "--json", "--timeout", "30")  # fmt: skip
    finally:
        feed.stop()
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["frames"] == 12
    assert abs(data["current_zero"] - idle.current_zero_counts) <= max(
        data["ci95_counts"], 0.1
    )


async def test_live_port_names_the_sensors_it_did_hear(pty: Pty) -> None:
    sim = Simulator([model(IDLE, address=2)], seed=5)

    async def feed() -> None:
        for _ in range(6):
            pty.write(sim.next_frame().data)
            await asyncio.sleep(0.05)

    task = asyncio.create_task(feed())
    started = time.monotonic()
    with pytest.raises(CalibrationError, match=r"heard from sensor\(s\) 2"):
        await read_port_frames(pty.path, 5, count=3, timeout_s=1.0, opener=open_port)
    await task
    assert time.monotonic() - started < 5
