from __future__ import annotations

import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wattd.cli import main
from wattd.config import load_config
from wattd.storage.store import Store

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
    # The line noise it injects is on screen, said to be simulated.
    assert "simulated line noise (--noise 0.05), added on purpose:" in last
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


def test_closing_hints_work_as_printed_without_wattd_on_path(tmp_path: Path) -> None:
    # As after the README's setup: wattd started as bin/wattd inside the venv,
    # which is not on PATH.
    venv = Path(sys.executable).parent.parent
    if not (venv / "bin" / "wattd").exists():
        pytest.skip("the wattd console script is not installed in this venv")
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    env.pop("VIRTUAL_ENV", None)
    state = tmp_path / "demo"
    demo = ["bin/wattd", "demo", "--duration", "3", "--meters", "1", "--speed", "4"]
    run = subprocess.run(
        [*demo, "--state-dir", str(state)],
        cwd=venv,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    hints = [
        line.split(": ", 1)[1]
        for line in run.stderr.splitlines()
        if line.startswith(("look back at them with:", "or see their cost with:"))
    ]
    assert [h.split()[:2] for h in hints] == [
        ["bin/wattd", "query"],
        ["bin/wattd", "report"],
    ]
    for hint in hints:
        pasted = subprocess.run(
            shlex.split(hint),
            cwd=venv,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert pasted.returncode == 0, (hint, pasted.stderr)
        assert "fridge" in pasted.stdout
