"""Logging: wattd's lines appear once, in the journal's format only on the journal."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.daemon import DaemonProcess, MeterFeed, meter_sensors, write_config
from tests.sinks.summaries.publishers.recorder import Answer, RecordingServer
from wattd.sources.simulate import MeterModel, ResistiveLoad, Simulator
from wattd.support.logsetup import WattdHandler, setup_logging, use_journal_format

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fixtures.pty import Pty

TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) +\S+: "
)
# What logging.basicConfig() prints: a second copy of a line in another format.
ROOT_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):", re.MULTILINE)
# What InfluxDB 1.x (and Go's default mux) answers on a path it does not serve.
PLAIN_404 = Answer(status=404, body=b"404 page not found\n")


def journal_stream_of(path: Path) -> str:
    """The ``JOURNAL_STREAM`` value systemd would set for a stream on ``path``."""
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


def test_wattd_lines_appear_once_whatever_a_library_does_to_the_root_logger() -> None:
    out = io.StringIO()
    setup_logging("info", "text", stream=out)
    root = logging.getLogger()
    # What logging.basicConfig() does when a library calls logging.debug().
    foreign = io.StringIO()
    intruder = logging.StreamHandler(foreign)
    root.addHandler(intruder)
    try:
        # The module-level call itself, as influxdb-client makes it.
        logging.debug("Cannot parse error response to JSON")  # noqa: LOG015
        logging.getLogger("wattd.sinks.influx.sink").warning("write failed")
        logging.getLogger("wattd.daemon.supervisor").info("stopped")
        logging.getLogger("somelib").warning("its certificate expires soon")
        logging.getLogger("somelib").info("connection pool size 10")
    finally:
        root.removeHandler(intruder)
    lines = out.getvalue().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "write failed",
        "stopped",
        "its certificate expires soon",
    ]
    assert all(TEXT_LINE.match(line) for line in lines), lines
    assert "wattd.sinks.influx.sink: write failed" in lines[0]
    assert "somelib: its certificate expires soon" in lines[2]
    # The library's own handler sees only library records, never wattd's.
    assert "write failed" not in foreign.getvalue()
    assert "stopped" not in foreign.getvalue()


def test_setting_up_again_replaces_wattd_handlers_and_keeps_others() -> None:
    first, second = io.StringIO(), io.StringIO()
    wattd = logging.getLogger("wattd")
    other = logging.NullHandler()
    wattd.addHandler(other)
    setup_logging("info", "text", stream=first)
    setup_logging("debug", "journal", stream=second)
    setup_logging("error", "text", stream=first, reconfigure=False)
    own = [h for h in wattd.handlers if isinstance(h, WattdHandler)]
    root_own = [h for h in logging.getLogger().handlers if isinstance(h, WattdHandler)]
    assert len(own) == len(root_own) == 1
    assert other in wattd.handlers
    assert wattd.level == logging.DEBUG
    assert not wattd.propagate
    logging.getLogger("wattd.x").debug("now")
    assert first.getvalue() == ""
    assert second.getvalue() == "<7>wattd.x: now\n"


def test_auto_format_is_journal_only_on_the_stream_journal_stream_names(
    tmp_path: Path, pty: Pty, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_file = tmp_path / "err.log"
    other_file = tmp_path / "other.log"
    other_file.touch()
    read_fd, write_fd = os.pipe()
    with (
        log_file.open("w") as stream,
        open(pty.path, "w") as tty,
        os.fdopen(write_fd, "w") as pipe,
    ):
        os.close(read_fd)
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        assert not use_journal_format(stream)
        assert not use_journal_format(tty)
        assert not use_journal_format(pipe)
        # Inherited from a unit whose stderr this is not, or not a device:inode.
        for value in (journal_stream_of(other_file), "", "8:", "x:y", "1:2:3"):
            monkeypatch.setenv("JOURNAL_STREAM", value)
            assert not use_journal_format(stream), value
        monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of(log_file))
        assert use_journal_format(stream)
        assert not use_journal_format(tty)
        assert not use_journal_format(io.StringIO())
        setup_logging("info", stream=stream)
        logging.getLogger("wattd.replay").warning("sensor 1 is not in the config")
        monkeypatch.delenv("JOURNAL_STREAM")
        setup_logging("info", stream=stream)
        logging.getLogger("wattd.replay").warning("sensor 2 is not in the config")
    journal, text = log_file.read_text().splitlines()
    assert journal == "<4>wattd.replay: sensor 1 is not in the config"
    assert TEXT_LINE.match(text), text
    assert text.endswith("WARNING wattd.replay: sensor 2 is not in the config")


@pytest.mark.parametrize("journal", [False, True])
def test_wattd_replay_to_a_file_uses_the_journal_format_only_for_the_journal(
    tmp_path: Path, journal: bool
) -> None:
    capture = tmp_path / "sim.jsonl"
    wattd = [sys.executable, "-m", "wattd"]
    subprocess.run(
        [*wattd, "simulate", "--meters", "1", "--duration", "3", "-o", str(capture)],
        check=True,
        capture_output=True,
    )
    err_log = tmp_path / "err.log"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with err_log.open("w") as err:
        if journal:
            env["JOURNAL_STREAM"] = journal_stream_of(err_log)
        subprocess.run(
            [*wattd, "replay", str(capture), "--speed", "0"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    warning = next(
        line
        for line in err_log.read_text().splitlines()
        if "sensor 1 is not in the config" in line
    )
    if journal:
        assert warning.startswith("<4>wattd.replay: sensor 1 is not in the config")
    else:
        assert TEXT_LINE.match(warning), warning
        assert "<4>" not in err_log.read_text()


def test_wattd_run_prints_each_line_once_after_a_plain_text_404(
    tmp_path: Path, pty: Pty
) -> None:
    # influxdb-client logs a body that is not JSON with the module-level
    # logging.debug(), which gives the root logger a handler of its own.
    meters = [MeterModel.with_quirks(1, ResistiveLoad(watts=60.0), seed=1)]
    with RecordingServer(default=PLAIN_404) as server:
        config = write_config(
            tmp_path / "wattd.yaml",
            {
                "ports": [{"device": pty.path}],
                "sensors": meter_sensors(meters),
                "state_dir": str(tmp_path / "state"),
                "store": {"enabled": False},
                "influxdb": {
                    "enabled": True,
                    "url": server.url,
                    "org": "home",
                    "bucket": "wattd",
                    "token": "secret-token",
                    "flush_interval_s": 0.1,
                },
            },
        )
        daemon = DaemonProcess(config).start()
        feed = MeterFeed(Simulator(meters, seed=1), pty.master, speed=20)
        try:
            daemon.wait_for_log("running")
            feed.start()
            daemon.wait_for_log("answered HTTP 404: 404 page not found")
            daemon.signal(signal.SIGTERM)
            assert daemon.wait() == 0
        finally:
            feed.stop()
            daemon.stop()
        assert any(r.path.startswith("/api/v2/write") for r in server.requests)
    log = daemon.log
    assert not ROOT_LINE.search(log), log[-3000:]
    for message in (
        "point(s) wait in the spool and are retried with backoff",
        "wattd.daemon.supervisor: stopping: closing ports, flushing sinks",
        "wattd.daemon.supervisor: stopped",
    ):
        assert log.count(message) == 1, (message, log[-3000:])
    assert all(TEXT_LINE.match(line) for line in log.splitlines() if "wattd." in line)
    assert "secret-token" not in log
