"""``wattd run`` as a real subprocess: signals, reload, crash recovery."""

from __future__ import annotations

import json
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import DaemonProcess, MeterFeed, meter_sensors, write_config
from tests.fixtures.pty import Pty
from tests.fixtures.waiting import block_until
from wattd.cli._args import EXIT_CONFIG
from wattd.errors import StoreError
from wattd.sources.simulate import MeterModel, ResistiveLoad, Simulator
from wattd.storage.store import Store, StoredReading

pytestmark = pytest.mark.slow


def base_config(
    tmp_path: Path, pty: Pty, meters: list[MeterModel], **extra: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "ports": [{"device": pty.path, "name": "sim"}],
        "sensors": meter_sensors(meters),
        "state_dir": str(tmp_path / "state"),
        "save_interval_s": 1,
        "store": {"flush_interval_s": 0.2},
    }
    config.update(extra)
    return config


def stored(config: dict[str, Any], sensor: int) -> list[StoredReading]:
    path = Path(config["state_dir"]) / "wattd.sqlite"
    try:
        with Store.open(path, readonly=True) as store:
            return store.recent_readings([sensor], limit_per_sensor=100_000)
    except StoreError:  # not created yet, or the daemon is still creating it
        return []


def wait_stored(
    config: dict[str, Any], sensor: int, n: int, timeout: float = 20
) -> list[StoredReading]:
    rows: list[StoredReading] = []

    def enough() -> bool:
        rows[:] = stored(config, sensor)
        return len(rows) >= n

    block_until(
        enough,
        timeout_s=timeout,
        interval_s=0.1,
        what=lambda: f"{n} readings stored; only {len(rows)}",
    )
    return rows


def test_minimal_config_of_just_a_port_runs(tmp_path: Path, pty: Pty) -> None:
    config = tmp_path / "wattd.yaml"
    config.write_text(f"ports: [{{device: {pty.path}}}]\n")
    state_home = tmp_path / "xdg"
    daemon = DaemonProcess(config, env={"XDG_STATE_HOME": str(state_home)}).start()
    try:
        daemon.wait_for_log("running")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    finally:
        daemon.stop()
    assert (state_home / "wattd" / "state.json").exists()
    assert (state_home / "wattd" / "wattd.sqlite").exists()
    assert "stopped" in daemon.log


def test_invalid_config_exits_78_with_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "wattd.yaml"
    config.write_text("ports:\n  - device: /dev/ttyUSB0\n    parity: even\n")
    daemon = DaemonProcess(config).start()
    assert daemon.wait() == EXIT_CONFIG
    assert f"{config}:3: ports[0].parity: unknown key 'parity'" in daemon.log


def test_sigterm_flushes_every_sink_and_saves_state(tmp_path: Path, pty: Pty) -> None:
    meters = [MeterModel.with_quirks(1, ResistiveLoad(watts=500.0), seed=5)]
    # The store would only write after 60 s or 100000 readings: anything in it
    # after SIGTERM was flushed by the shutdown.
    cfg = base_config(
        tmp_path, pty, meters, store={"flush_interval_s": 60, "batch_size": 100_000}
    )
    daemon = DaemonProcess(write_config(tmp_path / "wattd.yaml", cfg)).start()
    feed = MeterFeed(Simulator(meters, seed=5), pty.master, speed=8)
    try:
        daemon.wait_for_log("running")
        feed.start()
        time.sleep(4)
        feed.stop()
        time.sleep(1)  # let the daemon read what was sent
        assert stored(cfg, 1) == []
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    finally:
        feed.stop()
        daemon.stop()
    sent = feed.frames_sent(1)
    rows = stored(cfg, 1)
    assert len(sent) >= 10
    assert len(rows) == len(sent)
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    saved_total = state["pipeline"]["sensors"]["1"]["energy"]["wh_total"]
    assert saved_total == pytest.approx(rows[-1].wh_total)
    assert "stopping" in daemon.log


def test_sighup_applies_a_good_config_without_reopening_the_port(
    tmp_path: Path, pty: Pty
) -> None:
    meters = [MeterModel.with_quirks(1, ResistiveLoad(watts=600.0), seed=6)]
    cfg = base_config(tmp_path, pty, meters)
    path = write_config(tmp_path / "wattd.yaml", cfg)
    daemon = DaemonProcess(path).start()
    feed = MeterFeed(Simulator(meters, seed=6), pty.master, speed=8)
    try:
        daemon.wait_for_log("running")
        feed.start()
        before = wait_stored(cfg, 1, 8)
        cfg["sensors"][0]["counts_per_amp"] *= 2
        cfg["sensors"][0]["name"] = "renamed"
        write_config(path, cfg)
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("config reloaded")
        rows = wait_stored(cfg, 1, len(before) + 10)
    finally:
        feed.stop()
        daemon.stop()
    renamed = [r for r in rows if r.name == "renamed"]
    old = [r for r in rows if r.name != "renamed"]
    assert len(renamed) >= 5
    assert statistics.fmean(r.watts or 0 for r in renamed) == pytest.approx(
        statistics.fmean(r.watts or 0 for r in old) / 2, rel=0.05
    )
    # Energy kept rising through the reload; the port stayed open.
    totals = [r.wh_total or 0.0 for r in rows]
    assert totals == sorted(totals)
    assert daemon.log.count("reading " + pty.path) == 1


def test_sighup_with_a_bad_config_keeps_the_old_one_running(
    tmp_path: Path, pty: Pty
) -> None:
    meters = [MeterModel.with_quirks(1, ResistiveLoad(watts=300.0), seed=7)]
    cfg = base_config(tmp_path, pty, meters)
    path = write_config(tmp_path / "wattd.yaml", cfg)
    daemon = DaemonProcess(path).start()
    feed = MeterFeed(Simulator(meters, seed=7), pty.master, speed=8)
    try:
        daemon.wait_for_log("running")
        feed.start()
        before = wait_stored(cfg, 1, 5)
        path.write_text(
            path.read_text().replace("save_interval_s: 1", "save_interval_s: soon")
        )
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("reload rejected")
        rows = wait_stored(cfg, 1, len(before) + 8)
        assert daemon.proc is not None
        assert daemon.proc.poll() is None
    finally:
        feed.stop()
        daemon.stop()
    assert f"{path}:" in daemon.log
    assert "save_interval_s" in daemon.log
    assert {r.name for r in rows} == {"meter-1"}
    watts = [r.watts or 0 for r in rows]
    assert statistics.fmean(watts) == pytest.approx(300.0, rel=0.03)


def test_kill_9_loses_at_most_one_save_interval_and_never_double_counts(
    tmp_path: Path, pty: Pty
) -> None:
    watts = 3000.0
    meters = [MeterModel.with_quirks(1, ResistiveLoad(watts=watts), seed=8)]
    cfg = base_config(tmp_path, pty, meters, save_interval_s=1)
    path = write_config(tmp_path / "wattd.yaml", cfg)
    sim = Simulator(meters, seed=8)
    state_file = tmp_path / "state" / "state.json"

    daemon = DaemonProcess(path).start()
    feed = MeterFeed(sim, pty.master, speed=8)
    try:
        daemon.wait_for_log("running")
        feed.start()
        wait_stored(cfg, 1, 12)
        block_until(state_file.exists, timeout_s=30, what="the saved state file")
        daemon.kill9()
    finally:
        feed.stop()
        daemon.stop()
    before_kill = stored(cfg, 1)
    store_total = before_kill[-1].wh_total or 0.0
    saved = json.loads(state_file.read_text())["pipeline"]["sensors"]["1"]["energy"]
    # The state file lags the store by at most one save interval of energy
    # (plus one frame interval for timing slack).
    frame_s = 2.08 / 8
    assert saved["wh_total"] <= store_total + 1e-9
    assert store_total - saved["wh_total"] <= watts * (1.0 + 2 * frame_s) / 3600

    restarted = DaemonProcess(path).start()
    feed2 = MeterFeed(sim, pty.master, speed=8)
    try:
        restarted.wait_for_log("running")
        feed2.start()
        after = wait_stored(cfg, 1, len(before_kill) + 10)
    finally:
        feed2.stop()
        restarted.stop()
    new = after[len(before_kill) :]
    # Never backwards: the first reading after the restart continues from the
    # store's total; no double count: nothing is added for the downtime.
    assert new[0].wh_total == pytest.approx(store_total, abs=1e-6)
    totals = [r.wh_total or 0.0 for r in after]
    assert totals == sorted(totals)
    span_h = (new[-1].time_ns - new[0].time_ns) / 3.6e12
    gained = (new[-1].wh_total or 0.0) - (new[0].wh_total or 0.0)
    assert gained == pytest.approx(watts * span_h, rel=0.04)
