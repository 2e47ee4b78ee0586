"""``wattd reprocess`` end to end: config files, the store, the printed summary."""

from __future__ import annotations

import csv
import io
import time
from typing import TYPE_CHECKING

import pytest
import yaml

from tests.fixtures.cli import run_cli
from tests.ops.test_reprocess import compute, meters, record, simulate
from wattd.storage.store import WRITER_HEARTBEAT_KEY, Store

if TYPE_CHECKING:
    from pathlib import Path


def write_config(path: Path, state_dir: Path, *, wrong: bool) -> Path:
    sensors = []
    for m in meters():
        cal = {**m.calibration_values(), "name": f"meter{m.address}"}
        if wrong and m.address == 1:
            cal["counts_per_amp"] = 13.0
        sensors.append(cal)
    doc = {"state_dir": str(state_dir), "sensors": sensors, "energy": {"max_gap_s": 60}}
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """The wrong config's store filled as the daemon would; returns both configs."""
    from wattd.config import load_config

    state = tmp_path / "state"
    wrong = write_config(tmp_path / "wrong.yaml", state, wrong=True)
    right = write_config(tmp_path / "right.yaml", state, wrong=False)
    frames = simulate()
    cfg = load_config(wrong)
    with Store.open(cfg.store_path) as s:
        s.add(compute(cfg, frames, monotonic_base=100.0), record(frames))
    return wrong, right


def watts_of(
    config: Path, capsys: pytest.CaptureFixture[str], since: str, until: str
) -> list[float]:
    rc, out, _ = run_cli(
        [
            "query",
            "-c",
            str(config),
            "-s",
            "meter1",
            "--from",
            since,
            "--to",
            until,
            "--format",
            "csv",
        ],
        capsys,
    )
    assert rc == 0
    return [float(r["watts"]) for r in csv.DictReader(io.StringIO(out))]


def test_reprocess_fixes_the_range_and_prints_a_summary(
    berlin_zone: None, setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _wrong, right = setup
    before = watts_of(right, capsys, "2024-03-01T13:00Z", "2024-03-01T14:00Z")
    assert all(w > 850 for w in before)  # 13 counts/A reads a 800 W heater high
    # Local times: 14:00 CET is 13:00 UTC.
    rc, out, _ = run_cli(
        [
            "reprocess",
            "-c",
            str(right),
            "--from",
            "2024-03-01T14:00",
            "--to",
            "2024-03-01 15:00",
        ],
        capsys,
    )
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == (
        "reprocessed 2024-03-01 14:00 CET to 2024-03-01 15:00 CET"
        " (widened to whole UTC hours)"
    )
    assert lines[1].startswith("frames replayed: ")
    replayed = int(lines[1].split()[2])
    assert 340 <= replayed <= 370  # two meters, one frame each per ~20 s
    header = lines[2].split()
    assert header[:4] == ["sensor", "name", "readings_before", "readings_after"]
    rows = {line.split()[0]: line.split() for line in lines[3:5]}
    assert rows["1"][1] == "meter1"
    assert rows["1"][2] == rows["1"][3]
    assert float(rows["1"][6]) < -10  # less energy than the wrong calibration said
    assert abs(float(rows["2"][6])) < 0.01
    assert any(
        line.startswith("note: the stored totals of sensor(s) 1 went down")
        for line in lines
    )
    after = watts_of(right, capsys, "2024-03-01T13:00Z", "2024-03-01T14:00Z")
    assert len(after) == len(before)
    assert sum(after) / len(after) == pytest.approx(800.0, rel=0.03)
    # Outside the range nothing was recomputed.
    outside = watts_of(right, capsys, "2024-03-01T12:00Z", "2024-03-01T13:00Z")
    assert all(w > 850 for w in outside)


def test_dry_run_prints_but_changes_nothing(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _wrong, right = setup
    before = watts_of(right, capsys, "2024-03-01T12:00Z", "2024-03-01T15:00Z")
    rc, out, _ = run_cli(
        [
            "reprocess",
            "-c",
            str(right),
            "--from",
            "2024-03-01T12:00Z",
            "--to",
            "2024-03-01T15:00Z",
            "-n",
        ],
        capsys,
    )
    assert rc == 0
    assert out.startswith("would reprocess ")
    assert out.rstrip().endswith("dry run: nothing was changed")
    assert watts_of(right, capsys, "2024-03-01T12:00Z", "2024-03-01T15:00Z") == before


def test_a_running_daemon_blocks_reprocess(
    setup: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _wrong, right = setup
    from wattd.config import load_config

    path = load_config(right).store_path
    with Store.open(path) as s:
        s.set_meta(WRITER_HEARTBEAT_KEY, time.time_ns())
    rc, out, _ = run_cli(
        [
            "reprocess",
            "-c",
            str(right),
            "--from",
            "2024-03-01T12:00Z",
            "--to",
            "2024-03-01T13:00Z",
        ],
        capsys,
    )
    assert rc == 1
    assert out == ""
    assert "daemon is writing to this store" in caplog.text
    assert "systemctl stop wattd" in caplog.text


def test_reprocess_needs_the_config(
    tmp_path: Path, setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, _ = run_cli(
        [
            "reprocess",
            "--db",
            str(tmp_path / "state" / "wattd.sqlite"),
            "--from",
            "-1h",
            "--to",
            "now",
        ],
        capsys,
    )
    assert rc == 1


def test_only_selected_sensors_change(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _wrong, right = setup
    from wattd.config import load_config

    path = load_config(right).store_path
    with Store.open(path, readonly=True) as s:
        before = s.readings(0, 1 << 62, [2])
    rc, out, _ = run_cli(
        [
            "reprocess", "-c", str(right), "-s", "meter1",
            "--from", "2024-03-01T12:00Z", "--to", "2024-03-01T15:00Z",
        ],
        capsys,
    )  # fmt: skip
    assert rc == 0
    table = [
        line.split() for line in out.splitlines()[3:] if not line.startswith("note")
    ]
    assert [row[0] for row in table] == ["1"]
    with Store.open(path, readonly=True) as s:
        assert s.readings(0, 1 << 62, [2]) == before
        heater = [r.watts for r in s.readings(0, 1 << 62, [1]) if r.watts is not None]
    assert sum(heater) / len(heater) == pytest.approx(800.0, rel=0.03)
