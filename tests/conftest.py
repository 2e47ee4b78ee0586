"""Shared fixtures. Services are session-scoped: one broker and one TSDB per run."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.influx import FakeInflux
from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.pty import Pty, SocatLink
from tests.fixtures.services import Influxd, MissingBinary, Mosquitto, VictoriaMetrics
from wattd.support.logsetup import WattdHandler

CAPTURES = REPO_ROOT.parent / "shared" / "data" / "tweetawatt-captures"


@contextlib.contextmanager
def skip_on_missing_binary() -> Iterator[None]:
    """Turn :class:`MissingBinary` into a skip (CI installs them via .ci/test)."""
    try:
        yield
    except MissingBinary as exc:
        pytest.skip(str(exc))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """A fixture that needs a binary that is not installed skips the test."""
    with skip_on_missing_binary():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A test that needs a binary that is not installed skips."""
    with skip_on_missing_binary():
        return (yield)


@pytest.fixture(autouse=True)
def fresh_wattd_logger(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts without wattd's log handlers and leaves none.

    The CLI binds its handlers to the stderr of the moment; kept across tests,
    they would write into an earlier test's capture. The ``wattd`` logger does
    not propagate once the CLI has set it up, so a test that uses ``caplog``
    gets the capture handler on that logger itself (and exactly once).
    """
    logger = logging.getLogger("wattd")
    root = logging.getLogger()
    saved = (logger.level, logger.propagate, list(logger.handlers))
    logger.handlers.clear()
    if "caplog" in request.fixturenames:
        caplog: pytest.LogCaptureFixture = request.getfixturevalue("caplog")
        logger.addHandler(caplog.handler)
        logger.propagate = False
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if isinstance(handler, WattdHandler):
                root.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers[:] = saved[2]


@pytest.fixture
def berlin_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is Europe/Berlin (CET in March) for the test, then as it was."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(scope="session")
def captures_dir() -> Path:
    """The real Tweet-a-Watt captures, read in place; skips when absent."""
    if not CAPTURES.is_dir():
        pytest.skip(f"real captures not present at {CAPTURES}")
    return CAPTURES


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A private mosquitto broker for the whole session."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def fresh_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of the test's own, for tests that stop or kill it."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Brokers of the test's own (not started), all stopped at teardown."""
    made: list[Mosquitto] = []

    def make(name: str = "broker", **kw: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path / name, **kw)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.stop()


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """A private VictoriaMetrics server for the whole session."""
    server = VictoriaMetrics(tmp_path_factory.mktemp("victoria"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """A private InfluxDB 1.x server for the whole session."""
    server = Influxd(tmp_path_factory.mktemp("influxd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A TSDB of the test's own, for tests that stop it."""
    server = VictoriaMetrics(tmp_path / "victoria")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pty() -> Iterator[Pty]:
    """A raw pseudo-terminal pair."""
    p = Pty()
    yield p
    p.close()


@pytest.fixture
def socat_link(tmp_path: Path) -> Iterator[SocatLink]:
    """A pty pair with stable paths that can be unplugged and replugged."""
    link = SocatLink(tmp_path)
    link.replug()
    yield link
    link.unplug()


@pytest.fixture
async def fake() -> AsyncIterator[FakeInflux]:
    """A recording InfluxDB write endpoint on a free loopback port."""
    server = FakeInflux()
    await server.start()
    yield server
    await server.stop()
