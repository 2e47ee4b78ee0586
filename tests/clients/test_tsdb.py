"""The central-store readers against a real VictoriaMetrics and influxd."""

from __future__ import annotations

import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from wattd.clients import tsdb
from wattd.costing.fleet import MinuteTotals, SeriesMinutes, SeriesPoint
from wattd.errors import TsdbError

if TYPE_CHECKING:
    from tests.fixtures.services import Influxd, VictoriaMetrics

MEASUREMENT = "tsdb_reader"
DATABASE = "tsdb_reader"
M0 = int(datetime(2025, 6, 2, 12, tzinfo=UTC).timestamp())
# (seconds after M0, wh_total): the minute's edges are [m, m + 60 s) to the ms.
POINTS = [(-30.0, 9.0), (0.0, 10.0), (30.0, 10.5), (59.999, 11.0), (60.0, 11.25)]
POINTS += [(90.0, 0.5), (100.0, 1.0), (185.0, 2.0)]
TAGS = "customer=acme,name=web-1,node=hall1-a,sensor=1"
LABELS = (("customer", "acme"), ("name", "web-1"), ("node", "hall1-a"), ("sensor", "1"))
MINUTES = [
    MinuteTotals(
        start_s=M0, first_wh=10.0, last_wh=11.0, top_wh=11.0, points=3, max_watts=50.0
    ),
    MinuteTotals(
        start_s=M0 + 60,
        first_wh=11.25,
        last_wh=1.0,
        top_wh=11.25,
        points=3,
        max_watts=50.0,
    ),
    MinuteTotals(
        start_s=M0 + 180,
        first_wh=2.0,
        last_wh=2.0,
        top_wh=2.0,
        points=1,
        max_watts=50.0,
    ),
]


def lines() -> bytes:
    return "\n".join(
        f"{MEASUREMENT},{TAGS} watts=50.0,wh_total={wh!r} {round((M0 + s) * 1000)}"
        for s, wh in POINTS
    ).encode()


def post(url: str, params: dict[str, str], body: bytes | None = None) -> None:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}?{query}", data=body or b"", timeout=10):
        pass


@pytest.fixture(scope="module")
def vm_reader(victoria: VictoriaMetrics) -> tsdb.TsdbReader:
    post(f"{victoria.url}/write", {"precision": "ms"}, lines())
    victoria.export_at_least(f'{{__name__="{MEASUREMENT}_wh_total"}}', len(POINTS))
    return tsdb.open_reader("victoriametrics", victoria.url, measurement=MEASUREMENT)


@pytest.fixture(scope="module")
def influx_reader(influxd: Influxd) -> tsdb.TsdbReader:
    influxd.create_database(DATABASE)
    post(f"{influxd.url}/write", {"db": DATABASE, "precision": "ms"}, lines())
    return tsdb.open_reader(
        "influxdb", influxd.url, measurement=MEASUREMENT, database=DATABASE
    )


@pytest.fixture(params=["vm_reader", "influx_reader"])
def reader(request: pytest.FixtureRequest) -> tsdb.TsdbReader:
    got: tsdb.TsdbReader = request.getfixturevalue(request.param)
    return got


def test_minutes_are_whole_clock_minutes(reader: tsdb.TsdbReader) -> None:
    assert reader.minutes(M0, M0 + 240) == [
        SeriesMinutes(labels=LABELS, minutes=MINUTES)
    ]
    assert reader.minutes(M0 + 60, M0 + 180)[0].minutes == MINUTES[1:2]
    assert reader.minutes(M0 + 240, M0 + 300) == []


def test_last_points_are_the_points_themselves(reader: tsdb.TsdbReader) -> None:
    assert reader.last_points(M0 - 3600, M0) == [
        SeriesPoint(labels=LABELS, time_s=M0 - 30.0, wh_total=9.0)
    ]
    assert reader.last_points(M0, M0 + 60) == [
        SeriesPoint(labels=LABELS, time_s=M0 + 59.999, wh_total=11.0)
    ]


def test_influx_answers_in_chunks_join_up(
    influx_reader: tsdb.TsdbReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tsdb, "_CHUNK_ROWS", 1)
    assert influx_reader.minutes(M0, M0 + 240)[0].minutes == MINUTES


def test_a_wrong_retention_policy_is_named(influxd: Influxd) -> None:
    reader = tsdb.open_reader(
        "influxdb",
        influxd.url,
        measurement=MEASUREMENT,
        database=DATABASE,
        retention_policy="nope",
    )
    with pytest.raises(TsdbError, match="retention policy not found: nope"):
        reader.minutes(M0, M0 + 60)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("ftp://host", "must start with http:// or https://"),
        ("http://u:p@host:8428", "not in the URL"),
    ],
)
def test_urls_are_checked_before_any_query(url: str, said: str) -> None:
    with pytest.raises(TsdbError, match=said):
        tsdb.open_reader("victoriametrics", url, measurement=MEASUREMENT)
