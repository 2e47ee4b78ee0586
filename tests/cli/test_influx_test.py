"""``wattd influx-test`` against servers without the InfluxDB 2.x write API.

The 1.x database form on 1.x's own ``/write`` is tested in
``tests/sinks/influx/test_v1.py``.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from tests.fixtures.influx import influx_error
from wattd.cli import main as cli_main
from wattd.cli.influx import lacks_v2_api

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fixtures.influx import FakeInflux, Recorded
    from tests.fixtures.services import Influxd

PASSWORD = "s3cret-pass"
TOKEN = "tok-not-for-output"
V2_FORM = {"org": "home", "bucket": "energy", "token": TOKEN}
V1_ON_V2_API = {
    "database": "energy",
    "username": "wattd",
    "password": PASSWORD,
    "api": "v2",
}


def write_config(tmp_path: Path, url: str, form: dict[str, str]) -> Path:
    path = tmp_path / "wattd.yaml"
    influxdb: dict[str, Any] = {"enabled": True, "url": url, **form}
    path.write_text(
        f"state_dir: {json.dumps(str(tmp_path))}\ninfluxdb: {json.dumps(influxdb)}\n"
    )
    return path


@pytest.mark.parametrize(
    ("version", "lacks"),
    [
        ("1.6.7~rc0", True),
        ("v1.7.11", True),
        ("1.8.10", False),
        ("1.11.8", False),
        ("v2.7.10", False),
        ("3.0.1-abc", False),
        ("", False),
        ("fake-2.7", False),
    ],
)
def test_which_versions_lack_the_v2_api(version: str, lacks: bool) -> None:
    assert lacks_v2_api(version) is lacks


@pytest.mark.parametrize(
    ("form", "fix"),
    [
        (V2_FORM, "Set influxdb.database instead of bucket (with username and"),
        (V1_ON_V2_API, "Set influxdb.api to v1 (or auto) to write through"),
    ],
    ids=["bucket", "database-on-v2"],
)
def test_influxdb_1_6_is_named_for_what_it_is(
    tmp_path: Path,
    influxd: Influxd,
    form: dict[str, str],
    fix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert lacks_v2_api(influxd.version), influxd.version
    config = write_config(tmp_path, influxd.url, form)
    assert cli_main(["influx-test", "--config", str(config)]) == 1
    ok, fail = capsys.readouterr().out.splitlines()
    assert ok == f"ok: {influxd.url} answers (version {influxd.version})"
    assert fail.startswith(
        f"FAIL: {influxd.url} is InfluxDB {influxd.version}, a 1.x server without"
        " the v2 API that wattd writes through"
    )
    assert "InfluxDB 1.8 and later have it" in fail
    assert fix in fail
    assert "to write through its native /write API" in fail
    assert "bucket or org does not exist" not in fail
    assert TOKEN not in fail
    assert PASSWORD not in fail


def test_ping_only_notes_that_influxdb_1_6_cannot_take_writes(
    tmp_path: Path, influxd: Influxd, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, influxd.url, V2_FORM)
    assert cli_main(["influx-test", "--config", str(config), "--ping-only"]) == 0
    ok, note = capsys.readouterr().out.splitlines()
    assert ok.startswith(f"ok: {influxd.url} answers")
    assert note.startswith(f"note: {influxd.url} is InfluxDB {influxd.version}, a 1.x")


async def test_a_bare_404_page_means_no_write_api_and_a_json_404_a_missing_bucket(
    tmp_path: Path, fake: FakeInflux, capsys: pytest.CaptureFixture[str]
) -> None:
    # The fake's ping gives no 1.x version, so only the answer's body can tell.
    config = str(write_config(tmp_path, fake.url, V2_FORM))

    async def no_route(_request: Recorded) -> web.Response:
        return web.Response(status=404, text="404 page not found\n")

    fake.rule = no_route
    assert await asyncio.to_thread(cli_main, ["influx-test", "--config", config]) == 1
    fail = capsys.readouterr().out.splitlines()[-1]
    assert fail.startswith(f"FAIL: write to {fake.url} bucket 'energy' answered HTTP")
    assert "404: 404 page not found; nothing at url takes InfluxDB 2.x writes" in fail
    assert "InfluxDB 1.x before 1.8 has no such API" in fail

    async def no_bucket(_request: Recorded) -> web.Response:
        return influx_error(404, 'bucket "energy" not found')

    fake.rule = no_bucket
    assert await asyncio.to_thread(cli_main, ["influx-test", "--config", config]) == 1
    fail = capsys.readouterr().out.splitlines()[-1]
    assert 'HTTP 404: bucket "energy" not found; the bucket or org does not' in fail
    assert "1.8" not in fail
