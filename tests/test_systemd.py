from __future__ import annotations

import configparser
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.daemon import (
    UNIT_FILE,
    DaemonProcess,
    MeterFeed,
    meter_sensors,
    unit_environment,
    write_config,
)
from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.pty import Pty
from wattd.cli._args import EXIT_CONFIG
from wattd.config import WebConfig
from wattd.daemon.sdnotify import SdNotifier
from wattd.sinks.web.guard import BACKLOG, FD_RESERVE
from wattd.sources.simulate import MeterModel, ResistiveLoad, Simulator

UNIT = REPO_ROOT / "systemd" / "wattd.service"


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed")
    return path


def unit_settings() -> dict[str, list[str]]:
    """Every Key=value of the unit, repeated keys kept in order."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def test_security_exposure_is_at_most_2() -> None:
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    text = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for wattd\.service: (\d+\.\d+)", text)
    assert match, text[-2000:]
    assert float(match.group(1)) <= 2.0


def test_unit_verifies(tmp_path: Path) -> None:
    # verify checks that ExecStart exists, so point it at this checkout's wattd.
    wattd = Path(sys.executable).with_name("wattd")
    if not wattd.exists():
        pytest.skip("the wattd console script is not installed")
    unit = tmp_path / "wattd.service"
    unit.write_text(UNIT.read_text().replace("/opt/wattd/bin/wattd", str(wattd)))
    result = subprocess.run(
        [systemd_analyze(), "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_unit_environment_is_what_test_daemons_run_with() -> None:
    env = unit_environment()
    # Docstrings stay out of the daemon's memory; the subprocess daemons of the
    # tests and benchmarks run with this too, so the mode is what is tested.
    assert env.get("PYTHONOPTIMIZE") == "2"
    daemon = DaemonProcess(UNIT_FILE)
    assert daemon.env["PYTHONOPTIMIZE"] == "2"


def test_unit_has_the_service_contract() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(UNIT)
    assert set(parser.sections()) == {"Unit", "Service", "Install"}
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["Restart"] == ["on-failure"]
    assert int(s["WatchdogSec"][0]) >= 10
    assert s["SupplementaryGroups"] == ["dialout"]
    assert s["StateDirectory"] == ["wattd"]
    assert s["ConfigurationDirectory"] == ["wattd"]
    assert s["RestartPreventExitStatus"] == [str(EXIT_CONFIG)]
    assert "run --config /etc/wattd/wattd.yaml" in s["ExecStart"][0]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert {"char-ttyUSB rw", "char-ttyACM rw"} <= set(s["DeviceAllow"])
    # Stopping must outlast the daemon's flush timeout (10 s) plus a save.
    assert int(s["TimeoutStopSec"][0]) > 10


def test_unit_open_file_limit_fits_the_web_servers_share() -> None:
    # The web server holds up to max_connections, plus a backlog being
    # accepted, and leaves FD_RESERVE for ports, SQLite and sinks; systemd's
    # own default (1024) is left to chance no longer.
    (limit,) = unit_settings()["LimitNOFILE"]
    soft = int(limit.partition(":")[0])
    assert soft >= WebConfig().max_connections + BACKLOG + FD_RESERVE + 100


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(5)
    yield server, str(path)
    server.close()


def test_notifier_sends_datagrams(notify_socket: tuple[socket.socket, str]) -> None:
    server, path = notify_socket
    n = SdNotifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("starting up")
    assert server.recv(4096) == b"READY=1\nSTATUS=starting up\n"
    assert n.status("3.2 frames/s\nsecond line")
    assert server.recv(4096) == b"STATUS=3.2 frames/s second line\n"
    assert n.watchdog()
    assert server.recv(4096) == b"WATCHDOG=1\n"
    assert n.stopping()
    assert server.recv(4096) == b"STOPPING=1\n"
    n.close()


def test_notifier_abstract_socket() -> None:
    name = f"wattd-test-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(5)
    n = SdNotifier({"NOTIFY_SOCKET": "@" + name})
    try:
        assert n.ready()
        assert server.recv(4096) == b"READY=1\n"
    finally:
        n.close()
        server.close()


def test_notifier_without_systemd_is_a_no_op() -> None:
    n = SdNotifier({})
    assert not n.enabled
    assert not n.ready()
    assert n.watchdog_interval_s is None


def test_watchdog_interval_only_for_the_main_process() -> None:
    mine = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert SdNotifier(mine).watchdog_interval_s == 30.0
    assert SdNotifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval_s == 30.0
    other = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert SdNotifier(other).watchdog_interval_s is None
    assert SdNotifier({"WATCHDOG_USEC": "0"}).watchdog_interval_s is None


def test_notify_failure_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = SdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.WARNING, logger="wattd.daemon.sdnotify"):
        assert not n.watchdog()
        assert not n.watchdog()
    n.close()
    assert len(caplog.records) == 1


@pytest.mark.slow
def test_wattd_run_talks_to_systemd(
    tmp_path: Path, pty: Pty, notify_socket: tuple[socket.socket, str]
) -> None:
    server, path = notify_socket
    meters = [MeterModel.with_quirks(1, ResistiveLoad(watts=100.0), seed=1)]
    config = write_config(
        tmp_path / "wattd.yaml",
        {
            "ports": [{"device": pty.path}],
            "sensors": meter_sensors(meters),
            "state_dir": str(tmp_path / "state"),
        },
    )
    daemon = DaemonProcess(
        config,
        env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000"},
        journal=True,
    ).start()
    feed = MeterFeed(Simulator(meters, seed=1), pty.master, speed=4).start()
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                messages.append(server.recv(4096).decode())
            except TimeoutError:
                break
            status = [m for m in messages if "STATUS=" in m]
            if sum("WATCHDOG=1" in m for m in messages) >= 3 and any(
                "1 of 1 sensors" in m for m in status
            ):
                break
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    finally:
        feed.stop()
        daemon.stop()
    assert messages[0].startswith("READY=1\n"), messages[:3]
    assert any("frames/s" in m and "1 of 1 sensors" in m for m in messages), messages
    assert sum("WATCHDOG=1" in m for m in messages) >= 3
    # Journal format under systemd: priority prefixes, no timestamps.
    assert re.search(r"^<6>wattd", daemon.log, re.MULTILINE), daemon.log[-2000:]
