from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wattd.cli import main
from wattd.config import load_config
from wattd.store import Store

pytestmark = pytest.mark.slow


def test_demo_runs_the_real_daemon_into_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "demo"
    args = ["demo", "--duration", "5", "--meters", "3", "--speed", "4"]
    args += ["--noise", "0.05", "--state-dir", str(state), "--refresh", "1"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    # The live table: one row per meter, with measured and true watts.
    last = out.rstrip().split("wattd demo:")[-1]
    for name in ("fridge", "desk-lamp", "laptop"):
        assert name in last
    assert "true W" in last
    assert "bad crc" in last
    assert "sink store:" in last
    assert "wattd query --config" in err
    # The daemon stored readings; the lamp's (a 60 W resistive load) are right.
    config = load_config(state / "demo.yaml")
    with Store.open(config.store_path, readonly=True) as store:
        lamp = store.recent_readings([2], limit_per_sensor=1000)
        totals = store.last_wh_totals()
    assert len(lamp) >= 5
    assert statistics.fmean(r.watts or 0.0 for r in lamp) == pytest.approx(
        60.0, rel=0.03
    )
    assert set(totals) == {1, 2, 3}
    assert (state / "state.json").exists()


def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wattd",
            "demo",
            "--temp",
            "--meters",
            "2",
            "--refresh",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        seen = b""
        while b"sink store" not in seen:
            assert time.monotonic() < deadline, seen
            seen += proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert b"stopped; the temporary store was removed" in err
    assert b"Traceback" not in err
