"""The InfluxDB sink on 1.x's native ``/write`` API, against a real influxd 1.6."""

from __future__ import annotations

import base64
import json
import logging
import signal
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import wattd.sinks.influx.sink as influx_module
from tests.fixtures.daemon import DaemonProcess, MeterFeed, meter_sensors
from tests.fixtures.daemon import write_config as write_daemon_config
from tests.fixtures.services import Influxd, MissingBinary, free_port
from tests.fixtures.sinks import running_sink
from tests.fixtures.waiting import block_until, wait_until
from wattd.cli import main as cli_main
from wattd.clients.influx import InfluxNotFound, InfluxTarget, InfluxWriter
from wattd.config import Config, parse_config
from wattd.core.readings import Reading
from wattd.errors import ConfigError, SinkAuthError
from wattd.sinks.influx.lineprotocol import PointEncoder
from wattd.sinks.influx.sink import STREAM, InfluxSink
from wattd.sources.simulate import MeterModel, ResistiveLoad, Simulator
from wattd.storage.spool import AsyncSpool

if TYPE_CHECKING:
    from tests.fixtures.pty import Pty

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ADMIN, ADMIN_PASSWORD = "admin", "adm1n-pass"
WRITER, WRITER_PASSWORD = "writer", "wr1ter-pass"


def reading(i: int, *, time: datetime = T0) -> Reading:
    return Reading(
        sensor=1 + i % 2,
        name=f"meter-{1 + i % 2}",
        time=time + timedelta(milliseconds=10 * i),
        monotonic_s=float(i),
        watts=100.0 + i,
        va=110.5,
        vrms=120.25,
        irms=0.875,
        power_factor=0.9,
        wh_total=1000.0 + i / 8,
        wh_delta=0.125,
        rssi_dbm=-42,
    )


def make_config(tmp_path: Path, url: str, **influx: Any) -> Config:
    settings = {"enabled": True, "url": url, "flush_interval_s": 0.05, **influx}
    return parse_config(
        f"state_dir: {json.dumps(str(tmp_path))}\n"
        "mqtt: {node_id: node-a}\n"
        f"influxdb: {json.dumps(settings)}\n"
        "sensors:\n"
        "  - {address: 1, name: meter-1}\n"
        "  - {address: 2, name: meter-2}\n"
    )


def influxql(server: Influxd, q: str, db: str | None = None) -> list[dict[str, Any]]:
    """InfluxQL as the admin user (the fixture's ``query`` sends no credentials)."""
    params = {"q": q, **({"db": db} if db else {})}
    request = urllib.request.Request(
        f"{server.url}/query", data=urllib.parse.urlencode(params).encode()
    )
    login = base64.b64encode(f"{ADMIN}:{ADMIN_PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {login}")
    with urllib.request.urlopen(request, timeout=10) as resp:
        results: list[dict[str, Any]] = json.load(resp)["results"]
    assert not [r for r in results if "error" in r], results
    return results


def count(results: list[dict[str, Any]]) -> int:
    """The value of a ``SELECT COUNT(x)`` answer (0 when there is no series)."""
    series = results[0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


def new_database(server: Influxd, query: Any = None) -> str:
    name = f"w{uuid.uuid4().hex[:10]}"
    (query or server.query)(f'CREATE DATABASE "{name}"')
    if query is None:
        server.wait_for_database(name)
    return name


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """A private influxd with auth on: an admin, and a user without grants."""
    try:
        server = Influxd(tmp_path_factory.mktemp("influxd-auth"))
    except MissingBinary as exc:
        pytest.skip(str(exc))
    conf = server.conf_path.read_text()
    server.conf_path.write_text(
        conf.replace("[http]\n", "[http]\n  auth-enabled = true\n")
    )
    server.start()
    try:
        # With no users yet, 1.x lets the first admin be created without a login.
        server.query(
            f"CREATE USER {ADMIN} WITH PASSWORD '{ADMIN_PASSWORD}' WITH ALL PRIVILEGES"
        )
        influxql(server, f"CREATE USER {WRITER} WITH PASSWORD '{WRITER_PASSWORD}'")
        yield server
    finally:
        server.stop()


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(influx_module, "BASE_BACKOFF_S", 0.01)


# -- which API ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "api"),
    [
        ({"database": "d"}, "v1"),
        ({"database": "d", "username": "u", "password": "p"}, "v1"),
        ({"database": "d", "org": "o"}, "v2"),
        ({"database": "d", "api": "v2"}, "v2"),
        ({"bucket": "b", "org": "o", "token": "t"}, "v2"),
        ({"database": "d", "org": "o", "api": "v1"}, "v1"),
    ],
)
def test_auto_picks_v1_for_a_database_without_bucket_or_org(
    tmp_path: Path, form: dict[str, str], api: str
) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:8086", **form)
    assert config.influxdb.write_api == api
    assert InfluxTarget.from_config(config.influxdb).api == api


def test_v1_target_has_database_policy_and_login_but_shows_no_password(
    tmp_path: Path,
) -> None:
    config = make_config(
        tmp_path,
        "http://127.0.0.1:8086",
        database="tele",
        retention_policy="week",
        username="u",
        password="pw-secret",
    )
    target = InfluxTarget.from_config(config.influxdb)
    assert (target.database, target.retention_policy) == ("tele", "week")
    assert (target.username, target.password) == ("u", "pw-secret")
    assert "pw-secret" not in repr(target)
    assert target.describe() == (
        "http://127.0.0.1:8086 database 'tele' retention policy 'week'"
    )


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"api": "v1", "bucket": "b"}, "set database instead of bucket"),
        ({"api": "v1", "database": "d", "token": "t"}, "not token"),
    ],
)
def test_v1_settings_that_cannot_work_are_refused(
    tmp_path: Path, form: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(tmp_path, "http://127.0.0.1:8086", **form)


# -- delivery -------------------------------------------------------------------


async def test_every_point_arrives_through_write_with_rp_and_gzip(
    tmp_path: Path, influxd: Influxd
) -> None:
    db = new_database(influxd)
    influxd.query(
        f'CREATE RETENTION POLICY "week" ON "{db}" DURATION 1000w REPLICATION 1'
    )
    config = make_config(
        tmp_path, influxd.url, database=db, retention_policy="week", batch_size=64
    )
    readings = [reading(i) for i in range(300)]
    async with running_sink(InfluxSink(config)) as sink:
        await sink.write(readings)
        await wait_until(lambda: sink.stats()["points_written"] == 300)
    week = influxd.query('SELECT COUNT("watts") FROM "week"."power"', db)
    assert count(week) == 300
    # Nothing went to the database's default policy.
    assert count(influxd.query('SELECT COUNT("watts") FROM "autogen"."power"', db)) == 0
    (row,) = influxd.query(
        'SELECT "watts", "sensor", "node" FROM "week"."power" ORDER BY time LIMIT 1',
        db,
    )[0]["series"][0]["values"]
    assert row == ["2026-03-02T12:00:00Z", 100.0, "1", "node-a"]


async def test_a_field_type_conflict_is_dead_lettered_and_the_rest_arrives(
    tmp_path: Path, influxd: Influxd
) -> None:
    db = new_database(influxd)
    # A string "watts" in the shard of early January makes 1.x refuse a float
    # there, while the readings of March (another shard) are taken.
    early = datetime(2026, 1, 7, tzinfo=UTC)
    seed = f'power,sensor=9 watts="text" {int(early.timestamp() * 1e9)}'
    request = urllib.request.Request(
        f"{influxd.url}/write?db={db}&precision=ns", data=seed.encode(), method="POST"
    )
    urllib.request.urlopen(request, timeout=10).close()
    config = make_config(tmp_path, influxd.url, database=db, batch_size=40)
    readings = [reading(i) for i in range(40)]
    readings[17] = reading(17, time=early)
    async with running_sink(InfluxSink(config)) as sink:
        await sink.write(readings)
        await wait_until(lambda: sink.stats()["dead_letters"] == 1)
        await wait_until(lambda: sink.stats()["spool_depth"] == 0)
        spool = AsyncSpool.for_config(config)
        (letter,) = await spool.dead_letters(STREAM)
        await spool.close()
    assert letter.payload == PointEncoder.from_config(config).encode(readings[17])
    assert letter.reason.startswith("HTTP 400: partial write: field type conflict:")
    assert 'input field \\"watts\\"' not in letter.reason
    assert 'input field "watts" on measurement "power" is type float' in letter.reason
    march = "time >= '2026-03-01T00:00:00Z'"
    assert (
        count(influxd.query(f'SELECT COUNT("watts") FROM power WHERE {march}', db))  # noqa: S608
        == 39
    )


async def test_a_missing_database_names_create_database(
    tmp_path: Path, influxd: Influxd
) -> None:
    writer = InfluxWriter(
        InfluxTarget.from_config(
            make_config(tmp_path, influxd.url, database="nodb").influxdb
        )
    )
    try:
        with pytest.raises(InfluxNotFound) as info:
            await writer.write(b"m f=1 1")
    finally:
        await writer.close()
    assert str(info.value) == (
        f"influxdb: write to {influxd.url} database 'nodb' answered HTTP 404:"
        ' database not found: "nodb"; create it with InfluxQL CREATE DATABASE'
        ' "nodb" (e.g. influx -execute), or fix database'
    )


async def test_wrong_password_is_one_clear_line_and_points_wait(
    tmp_path: Path,
    secured: Influxd,
    fast_backoff: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = new_database(secured, lambda q: influxql(secured, q))
    influxql(secured, f'GRANT WRITE ON "{db}" TO {WRITER}')
    bad = make_config(
        tmp_path, secured.url, database=db, username=WRITER, password="wrong-pass"
    )
    with caplog.at_level(logging.DEBUG, logger="wattd"):
        async with running_sink(InfluxSink(bad)) as sink:
            await sink.write([reading(i) for i in range(5)])
            await wait_until(lambda: sink.stats()["retries"] >= 2)
            assert sink.stats()["spool_depth"] == 5
            assert sink.last_error == (
                f"influxdb: {secured.url} refused the credentials (HTTP 401:"
                " authorization failed); check username and password (or"
                f" password_file) and that the user may write to database {db!r}"
            )
            # The right password (a reload) is used at once; nothing was lost.
            sink.reconfigure(
                make_config(
                    tmp_path,
                    secured.url,
                    database=db,
                    username=WRITER,
                    password=WRITER_PASSWORD,
                )
            )
            await wait_until(lambda: sink.stats()["points_written"] == 5)
    assert count(influxql(secured, 'SELECT COUNT("watts") FROM "power"', db)) == 5
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().count("\n") for r in warnings] == [0]
    assert "wrong-pass" not in caplog.text
    assert WRITER_PASSWORD not in caplog.text


async def test_a_user_without_write_permission_gets_403_named(
    tmp_path: Path, secured: Influxd
) -> None:
    db = new_database(secured, lambda q: influxql(secured, q))
    config = make_config(
        tmp_path, secured.url, database=db, username=WRITER, password=WRITER_PASSWORD
    )
    writer = InfluxWriter(InfluxTarget.from_config(config.influxdb))
    try:
        with pytest.raises(SinkAuthError, match=r"HTTP 403: \"writer\" user is not"):
            await writer.write(b"m f=1 1")
    finally:
        await writer.close()


# -- wattd run ------------------------------------------------------------------


@pytest.mark.slow
def test_wattd_run_on_a_pty_delivers_every_reading_across_an_outage(
    tmp_path: Path, pty: Pty, secured: Influxd
) -> None:
    db = new_database(secured, lambda q: influxql(secured, q))
    influxql(secured, f'GRANT WRITE ON "{db}" TO {WRITER}')
    meters = [
        MeterModel.with_quirks(a, ResistiveLoad(watts=40.0 * a), seed=a)
        for a in range(1, 6)
    ]
    password_file = tmp_path / "influx-password"
    password_file.write_text(WRITER_PASSWORD + "\n")
    config = {
        "ports": [{"device": pty.path, "name": "sim"}],
        "sensors": meter_sensors(meters),
        "state_dir": str(tmp_path / "state"),
        "store": {"enabled": False},
        "influxdb": {
            "enabled": True,
            "api": "v1",
            "url": secured.url,
            "database": db,
            "username": WRITER,
            "password_file": str(password_file),
            "flush_interval_s": 0.1,
            "max_backoff_s": 1,
        },
    }
    path = write_daemon_config(tmp_path / "wattd.yaml", config)
    feed = MeterFeed(Simulator(meters, seed=5), pty.master, speed=100)
    daemon = DaemonProcess(path).start()

    def points() -> int:
        return count(influxql(secured, 'SELECT COUNT("watts") FROM "power"', db))

    try:
        daemon.wait_for_log("running")
        feed.start()
        block_until(lambda: points() >= 100, timeout_s=30, what="points before")
        secured.stop()
        daemon.wait_for_log("cannot connect to", timeout=30)
        feed.pause()
        secured.start()
        sent = len(feed.frames_sent())
        block_until(
            lambda: points() == sent,
            timeout_s=30,
            what=lambda: f"{points()} of {sent} points; log:\n{daemon.log[-3000:]}",
        )
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    finally:
        feed.stop()
        daemon.stop()
    assert points() == sent
    assert WRITER_PASSWORD not in daemon.log
    assert "accepts writes again" in daemon.log


# -- influx-test ----------------------------------------------------------------


def write_config(tmp_path: Path, url: str, **influx: str) -> Path:
    path = tmp_path / "wattd.yaml"
    settings = {"enabled": True, "url": url, **influx}
    path.write_text(
        f"state_dir: {json.dumps(str(tmp_path))}\ninfluxdb: {json.dumps(settings)}\n"
    )
    return path


def test_influx_test_writes_the_check_point_to_a_1x_database(
    tmp_path: Path, influxd: Influxd, capsys: pytest.CaptureFixture[str]
) -> None:
    db = new_database(influxd)
    config = write_config(tmp_path, influxd.url, database=db, api="v1")
    assert cli_main(["influx-test", "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"ok: {influxd.url} answers (version {influxd.version})",
        f"ok: wrote a test point to {influxd.url} database {db!r}",
    ]
    assert count(influxd.query('SELECT COUNT("ok") FROM "wattd_check"', db)) == 1


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"database": "absent"}, 'CREATE DATABASE "absent"'),
        (
            {"username": WRITER, "password": "not-it-9"},
            "refused the credentials (HTTP 401: authorization failed)",
        ),
    ],
    ids=["no-database", "wrong-password"],
)
def test_influx_test_fails_with_one_clear_line(
    tmp_path: Path,
    secured: Influxd,
    settings: dict[str, str],
    says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = new_database(secured, lambda q: influxql(secured, q))
    form = {"database": db, "username": ADMIN, "password": ADMIN_PASSWORD, **settings}
    config = write_config(tmp_path, secured.url, **form)
    assert cli_main(["influx-test", "--config", str(config)]) == 1
    ok, fail = capsys.readouterr().out.splitlines()
    assert ok.startswith(f"ok: {secured.url} answers")
    assert fail.startswith("FAIL: ")
    assert says in fail
    assert form["password"] not in fail


def test_influx_test_names_a_closed_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    config = write_config(tmp_path, url, database="d")
    assert cli_main(["influx-test", "--config", str(config)]) == 1
    (fail,) = capsys.readouterr().out.splitlines()
    assert fail.startswith(f"FAIL: cannot connect to {url} (connection refused)")
