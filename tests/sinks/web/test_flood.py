"""A connection flood on the dashboard must not starve the rest of the daemon.

A real ``wattd run`` with a 256 open-file limit reads simulated meters from a
pty that is unplugged and plugged back in, while a thread keeps 400 idle
connections open to its web port (more than the limit allows; loopback only,
all closed at the end).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import selectors
import socket
import sqlite3
import threading
import time
import urllib.request
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.daemon import DaemonProcess, MeterFeed, meter_sensors, write_config
from tests.fixtures.services import free_port
from tests.fixtures.waiting import block_until
from wattd.config import Config
from wattd.sinks.web.guard import FD_RESERVE
from wattd.sources.simulate import MeterModel, ResistiveLoad, Simulator

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fixtures.pty import SocatLink

TOKEN = "flood-test-token"
NOFILE = 256
FLOOD = 400


class Flood:
    """Keeps ``count`` idle connections open from a thread, reopening closed ones.

    Every other connection sends half a request head and then nothing. At most
    ``rate`` connections are opened per second.
    """

    def __init__(self, port: int, count: int, rate: float = 300.0) -> None:
        self.address = ("127.0.0.1", port)
        self.count = count
        self.rate = rate
        self.attempts = 0
        self.opened = 0
        self.closed_by_server = 0
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)

    def start(self) -> Flood:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for key in list(self._selector.get_map().values()):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            self._selector.unregister(sock)
            sock.close()
        self._selector.close()

    def _open_one(self) -> None:
        self.attempts += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(0.1)
        try:
            sock.connect(self.address)
            if self.opened % 2:
                sock.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        except OSError:
            sock.close()  # the backlog is full for now; try again later
            return
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ)
        self.opened += 1

    def _run(self) -> None:
        allowance = 0.0
        last = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            allowance = min(self.rate, allowance + (now - last) * self.rate)
            last = now
            while (
                len(self._selector.get_map()) < self.count
                and allowance >= 1
                and not self._stop.is_set()
            ):
                allowance -= 1
                self._open_one()
            for key, _events in self._selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._selector.unregister(sock)
                    sock.close()
                    self.closed_by_server += 1


class OpenFiles:
    """The most descriptors a process has had open, sampled from a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fds", daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.most

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(OSError):
                self.most = max(self.most, len(os.listdir(f"/proc/{self.pid}/fd")))


def readings_in(store: Path) -> int:
    if not store.exists():
        return 0
    with contextlib.closing(
        sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
    ) as db:
        try:
            (count,) = db.execute("SELECT count(*) FROM readings").fetchone()
        except sqlite3.OperationalError:  # created, schema not written yet
            return 0
    return int(count)


def get_state(port: int) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/state",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200
        data: dict[str, object] = json.load(resp)
    return data


@pytest.mark.slow
def test_a_connection_flood_leaves_ports_store_and_dashboard_working(
    tmp_path: Path, socat_link: SocatLink
) -> None:
    meters = [
        MeterModel.with_quirks(a, ResistiveLoad(watts=100.0 * a), seed=a)
        for a in (1, 2)
    ]
    port = free_port()
    raw = {
        "ports": [{"device": str(socat_link.device), "name": "usb"}],
        "sensors": meter_sensors(meters),
        "state_dir": str(tmp_path / "state"),
        "web": {"enabled": True, "port": port, "token": TOKEN},
    }
    store = Config.model_validate(raw).store_path
    daemon = DaemonProcess(write_config(tmp_path / "wattd.yaml", raw)).start()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    # Lowered before the daemon gets past its imports, let alone opens a port.
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    sim = Simulator(meters, seed=3)
    fd = socat_link.open_peer()
    feed = MeterFeed(sim, fd, speed=4).start()
    flood: Flood | None = None
    files = OpenFiles(pid)
    try:
        daemon.wait_for_log("web dashboard", timeout=30)
        block_until(
            lambda: readings_in(store) > 0,
            timeout_s=20,
            interval_s=0.1,
            what="readings",
        )
        flood = Flood(port, FLOOD).start()
        # More connections than the daemon may open files.
        block_until(
            lambda: flood is not None and flood.attempts > FLOOD,
            timeout_s=30,
            interval_s=0.1,
            what="a flood past the open-file limit",
        )

        before = readings_in(store)
        for _ in range(3):
            state = get_state(port)
            assert len(state["sensors"]) == 2  # type: ignore[arg-type]
        block_until(
            lambda: readings_in(store) >= before + 4,
            timeout_s=15,
            interval_s=0.1,
            what="readings in flood",
        )

        # Unplug the adapter and plug it back in, still under the flood.
        feed.stop()
        os.close(fd)
        socat_link.unplug()
        daemon.wait_for_log("retrying every", timeout=10)
        socat_link.replug()
        fd = socat_link.open_peer()
        feed = MeterFeed(sim, fd, speed=4).start()
        daemon.wait_for_log("reading resumed", timeout=10)
        after_replug = readings_in(store)
        block_until(
            lambda: readings_in(store) >= after_replug + 4,
            timeout_s=15,
            interval_s=0.1,
            what="resumed",
        )
        get_state(port)
        with open(f"/proc/{pid}/limits", encoding="ascii") as limits:
            assert any(
                line.startswith("Max open files") and f" {NOFILE} " in line
                for line in limits
            )
        # The daemon closed idle connections to stay within its limits.
        assert flood.closed_by_server > FLOOD
    finally:
        feed.stop()
        with contextlib.suppress(OSError):
            os.close(fd)
        if flood is not None:
            flood.stop()
        code = daemon.stop()
        most_files = files.stop()
    log = daemon.log
    assert code == 0, log[-3000:]
    assert "state saved" in log
    # Descriptors to spare all along, for whatever else needs one.
    assert most_files <= NOFILE - FD_RESERVE
    assert "Traceback" not in log, log[-3000:]
    assert os.strerror(errno.EMFILE) not in log
    assert f"[Errno {errno.EMFILE}]" not in log
    about_web = [line for line in log.splitlines() if "web" in line]
    assert len(about_web) < 50, about_web[-20:]
    assert len(log.splitlines()) < 100, log[-3000:]
