"""``wattd report --source``: fleet reports from a real VictoriaMetrics and influxd.

Three nodes hear meters of two customers (the same addresses on every node).
Their readings go, as the InfluxDB sink encodes them, into a fresh
VictoriaMetrics and a fresh influxd 1.x with auth. The fleet report from each
store must match the nodes' local reports built from the same readings: per
customer, the energy and energy cost are the sum over the nodes, and the
demand charge is the one of the customer's fleet-wide load.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from tests.fixtures.services import (
    Influxd,
    VictoriaMetrics,
    free_port,
    post,
    running,
)
from wattd.cli import main
from wattd.config import Config, parse_config
from wattd.core.readings import Reading
from wattd.costing.cost import EnergyInterval, intervals_from_totals
from wattd.costing.report.engine import GroupBy, Report, build_report
from wattd.sinks.influx.lineprotocol import PointEncoder

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# 2025-03-30 in Berlin: 02:00 CET jumps to 03:00 CEST at 01:00 UTC. The range
# is local 00:00-05:00, four real hours, with band edges at 01:30 and 03:30.
START = datetime(2025, 3, 29, 23, tzinfo=UTC)
END = datetime(2025, 3, 30, 3, tzinfo=UTC)
FIRST = START - timedelta(minutes=10)
LAST = END + timedelta(minutes=10)
FRAME_S = 2.08

TARIFFS = """\
tariffs:
  timezone: Europe/Berlin
  default: dc
  customers: {globex: flat}
  plans:
    dc:
      currency: EUR
      price_per_kwh: 0.30
      bands:
        - {name: night, price_per_kwh: 0.12, hours: "00:00-01:30"}
        - {name: early, price_per_kwh: 0.55, hours: "03:30-04:00"}
      demand: {price_per_kw: 12.0}
    flat:
      currency: EUR
      price_per_kwh: 0.25
      demand: {price_per_kw: 8.0}
locations:
  hall1: {pue: 1.5}
"""
USER, PASSWORD, DATABASE = "reporter", "s3cret pass", "fleet"
DEMAND_REL = 5e-3


@dataclasses.dataclass(frozen=True)
class Meter:
    address: int
    customer: str | None
    rack: str | None = None
    location: str | None = None
    watts: float = 200.0
    burst: datetime | None = None
    """Start of 20 minutes at 1.5 kW more."""
    first: datetime = FIRST
    phase_ms: int = 0
    """Meters are not in step: each sends its frames at its own moments."""
    silent: tuple[datetime, datetime] | None = None
    """No frames; the count does not move meanwhile."""
    reset: datetime | None = None
    """The daemon restarts here and counts from zero."""


NODES: dict[str, tuple[Meter, ...]] = {
    "hall1-a": (
        Meter(1, "acme", "r1", "hall1", burst=START + timedelta(minutes=25)),
        Meter(2, "globex", "r2", "hall1", watts=350.0, phase_ms=1330),
    ),
    "hall1-b": (
        Meter(
            1,
            "acme",
            "r3",
            "hall1",
            watts=260.0,
            burst=START + timedelta(hours=2),
            phase_ms=710,
        ),
        Meter(
            2,
            "globex",
            "r3",
            "hall1",
            watts=120.0,
            reset=START + timedelta(hours=2, minutes=20, seconds=31),
            burst=START + timedelta(hours=1, minutes=5),
            phase_ms=1870,
        ),
    ),
    "hall2-a": (
        Meter(
            1, "acme", "r7", burst=START + timedelta(hours=3, minutes=10), phase_ms=420
        ),
        Meter(
            3,
            None,
            watts=90.0,
            first=START + timedelta(minutes=17, seconds=13),
            silent=(START + timedelta(minutes=40), START + timedelta(minutes=71)),
        ),
    ),
}


def node_config(node: str) -> Config:
    sensors = "".join(
        f"  - {{address: {m.address}, name: web-{m.address}"
        + "".join(
            f", {key}: {value}"
            for key, value in (
                ("customer", m.customer),
                ("rack", m.rack),
                ("location", m.location),
            )
            if value
        )
        + "}\n"
        for m in NODES[node]
    )
    return parse_config(f"mqtt: {{node_id: {node}}}\nsensors:\n{sensors}{TARIFFS}")


def meter_readings(meter: Meter) -> Iterator[tuple[datetime, float, float]]:
    """``(time, watts, wh_total)`` of one meter's frames, at millisecond times."""
    total = 750.0 + meter.address
    t = meter.first + timedelta(milliseconds=meter.phase_ms)
    previous = t
    restarted = False
    while t < LAST:
        silent = meter.silent is not None and meter.silent[0] <= t < meter.silent[1]
        if meter.reset is not None and not restarted and t >= meter.reset:
            restarted, total = True, 0.0
            t += timedelta(seconds=20)
            previous = t
        if not silent:
            watts = meter.watts * (1 + 0.05 * math.sin(t.timestamp() / 300))
            if meter.burst is not None and meter.burst <= t < meter.burst + timedelta(
                minutes=20
            ):
                watts += 1500.0
            if (t - previous).total_seconds() < 10:
                total += watts * (t - previous).total_seconds() / 3600
            yield t, watts, total
            previous = t
        t += timedelta(milliseconds=round(FRAME_S * 1000))


@dataclasses.dataclass
class Fleet:
    lines: list[bytes]
    points: int
    local: dict[str, list[tuple[int, datetime, float, float | None]]]
    config: Path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    lines: list[bytes] = []
    local: dict[str, list[tuple[int, datetime, float, float | None]]] = {}
    for node, meters in NODES.items():
        encoder = PointEncoder.from_config(node_config(node))
        rows = local.setdefault(node, [])
        for meter in meters:
            for t, watts, total in meter_readings(meter):
                reading = Reading(
                    sensor=meter.address,
                    name=f"web-{meter.address}",
                    time=t,
                    monotonic_s=0.0,
                    watts=watts,
                    va=watts,
                    vrms=230.0,
                    irms=watts / 230,
                    power_factor=1.0,
                    wh_total=total,
                    wh_delta=0.0,
                    rssi_dbm=None,
                )
                line = encoder.encode(reading)
                assert line is not None
                lines.append(line)
                rows.append((meter.address, t, total, watts))
        rows.sort(key=lambda r: r[1])
    config = tmp_path_factory.mktemp("fleet") / "wattd.yaml"
    config.write_text(f"state_dir: {config.parent / 'state'}\n{TARIFFS}")
    return Fleet(lines=lines, points=len(lines), local=local, config=config)


def local_report(config: Config, rows: list[Any], by: GroupBy) -> Report:
    return build_report(config, intervals_from_totals(rows), START, END, by=by)


@pytest.fixture(scope="module")
def local_reports(fleet: Fleet) -> dict[str, dict[GroupBy, Report]]:
    return {
        node: {
            by: local_report(node_config(node), fleet.local[node], by)
            for by in ("customer", "sensor")
        }
        for node in NODES
    }


@pytest.fixture(scope="module")
def whole_fleet(fleet: Fleet) -> Report:
    """One local report of every node's meters under unique addresses.

    The demand charge of a customer is on its load across all nodes, which
    no single node's report sees.
    """
    sensors = []
    intervals: list[EnergyInterval] = []
    for n, node in enumerate(NODES):
        config = node_config(node)
        sensors += [
            s.model_copy(update={"address": 100 * n + s.address})
            for s in config.sensors
        ]
        for interval in intervals_from_totals(fleet.local[node]):
            assert isinstance(interval.sensor, int)
            intervals.append(
                dataclasses.replace(interval, sensor=100 * n + interval.sensor)
            )
    combined = parse_config(TARIFFS).model_copy(update={"sensors": sensors})
    return build_report(combined, intervals, START, END, by="customer")


# -- the stores -----------------------------------------------------------------


def _post(url: str, body: bytes, *, auth: bool = False, ok: int = 204) -> bytes:
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return post(url, body, ok=(ok,), authorization=f"Basic {basic}" if auth else None)


@pytest.fixture(scope="module")
def victoria(
    fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VictoriaMetrics]:
    """A VictoriaMetrics of this module's own, holding the fleet's points."""
    with running(VictoriaMetrics(tmp_path_factory.mktemp("vm"))) as server:
        _post(
            f"{server.url}/api/v2/write?org=o&bucket=wattd&precision=ns",
            b"\n".join(fleet.lines),
        )
        got = server.export_at_least('{__name__="power_wh_total"}', fleet.points)
        assert sum(len(s["timestamps"]) for s in got) == fleet.points
        yield server


@pytest.fixture(scope="module")
def influxd(
    fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Influxd]:
    """An influxd 1.x with auth on, holding the fleet's points in ``fleet``."""
    server = Influxd(tmp_path_factory.mktemp("influxd"))
    conf = server.conf_path.read_text()
    server.conf_path.write_text(
        conf.replace("[http]\n", "[http]\n  auth-enabled = true\n")
    )
    with running(server):
        query = f"{server.url}/query"
        # With no user yet, influxd takes the first admin without credentials.
        create = f"CREATE USER {USER} WITH PASSWORD '{PASSWORD}' WITH ALL PRIVILEGES"
        _post(query, urllib.parse.urlencode({"q": create}).encode(), ok=200)
        body = urllib.parse.urlencode({"q": f"CREATE DATABASE {DATABASE}"}).encode()
        _post(query, body, auth=True, ok=200)
        basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        server.wait_for_database(DATABASE, authorization=f"Basic {basic}")
        _post(
            f"{server.url}/write?db={DATABASE}&precision=ns",
            b"\n".join(fleet.lines),
            auth=True,
        )
        yield server


def store_args(kind: str, request: pytest.FixtureRequest) -> list[str]:
    if kind == "victoriametrics":
        vm: VictoriaMetrics = request.getfixturevalue("victoria")
        return ["--source", f"victoriametrics={vm.url}"]
    ix: Influxd = request.getfixturevalue("influxd")
    return [
        "--source",
        f"influxdb={ix.url}",
        "--database",
        DATABASE,
        "--username",
        USER,
    ]


def fleet_report(
    fleet: Fleet,
    args: list[str],
    by: str,
    capsys: pytest.CaptureFixture[str],
) -> dict[str, Any]:
    command = ["report", "-c", str(fleet.config), *args, "--by", by]
    command += ["--from", "2025-03-30T00:00", "--to", "2025-03-30T05:00"]
    assert main([*command, "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    data: dict[str, Any] = json.loads(out)
    return data


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTD_SOURCE_PASSWORD", PASSWORD)


def close(a: float | None, b: float | None, rel: float = 1e-3) -> bool:
    assert a is not None
    assert b is not None
    return a == pytest.approx(b, rel=rel)


# -- the report -----------------------------------------------------------------


@pytest.mark.usefixtures("password")
@pytest.mark.parametrize("kind", ["victoriametrics", "influxdb"])
def test_fleet_report_is_the_sum_of_the_nodes(
    kind: str,
    fleet: Fleet,
    local_reports: dict[str, dict[GroupBy, Report]],
    whole_fleet: Report,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = fleet_report(fleet, store_args(kind, request), "customer", capsys)
    groups = {g["group"]: g for g in data["groups"]}
    assert list(groups) == ["acme", "globex", "(unassigned)"]
    assert data["start"] == "2025-03-29T23:00:00Z"
    # The spring-forward night: local hours 00, 01, 03 and 04.
    assert len(data["total"]["hours"]) == 4
    for customer, got in groups.items():
        nodes = [
            r["customer"].group(customer)
            for r in local_reports.values()
            if customer in r["customer"].keys()  # noqa: SIM118 - a method, no dict
        ]
        assert close(got["it_kwh"], math.fsum(g.it_kwh for g in nodes))
        assert close(got["facility_kwh"], math.fsum(g.facility_kwh for g in nodes))
        assert close(got["energy_cost"], math.fsum(g.energy_cost or 0.0 for g in nodes))
        # Demand charges and peak W depend on where energy falls within a
        # minute; the store gives whole minutes (see docs/cost.md).
        truth = whole_fleet.group(customer)
        assert close(got["cost"], truth.cost, rel=DEMAND_REL)
        assert close(got["demand_charge"], truth.demand_charge, rel=DEMAND_REL)
        assert close(got["peak_watts"], truth.peak_watts, rel=DEMAND_REL)
        assert got["completeness"] == pytest.approx(truth.completeness, abs=2e-3)
        assert got["sensors"] == sorted(
            f"{node}/{m.address}"
            for node, meters in NODES.items()
            for m in meters
            if (m.customer or "(unassigned)") == customer
        )
    acme = groups["acme"]
    # Bands and the DST night matter: at the base price the energy cost differs.
    assert not close(acme["energy_cost"], acme["facility_kwh"] * 0.30, rel=0.02)
    # One demand charge on acme's fleet-wide load, whose bursts on the three
    # nodes do not overlap; not the sum of three nodes' charges.
    node_charges = [
        r["customer"].group("acme").demand_charge or 0.0 for r in local_reports.values()
    ]
    assert acme["demand_charge"] < 0.6 * sum(node_charges)
    (period,) = acme["demand"]
    # A burst at PUE 1.5 with the other two nodes' base load: about 3.1 kW.
    assert 2.9 < period["peak_kw"] < 3.4


@pytest.mark.usefixtures("password")
@pytest.mark.parametrize("kind", ["victoriametrics", "influxdb"])
def test_equal_addresses_on_other_nodes_stay_apart(
    kind: str,
    fleet: Fleet,
    local_reports: dict[str, dict[GroupBy, Report]],
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = fleet_report(fleet, store_args(kind, request), "sensor", capsys)
    groups = {g["group"]: g for g in data["groups"]}
    assert sorted(groups) == sorted(
        f"{node}/{m.address}" for node, meters in NODES.items() for m in meters
    )
    for key, got in groups.items():
        node, address = key.split("/")
        # Every node names its meters web-1, web-2...: names do not identify.
        local = local_reports[node]["sensor"].group(f"web-{address}")
        assert close(got["it_kwh"], local.it_kwh)
        assert close(got["energy_cost"], local.energy_cost)
        assert close(got["cost"], local.cost, rel=DEMAND_REL)
    by_node = fleet_report(fleet, store_args(kind, request), "node", capsys)
    for g in by_node["groups"]:
        report = local_reports[g["group"]]["customer"]
        assert close(g["it_kwh"], report.total.it_kwh)
        assert close(g["energy_cost"], report.total.energy_cost)


# -- what goes wrong --------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("victoriametrics down", "cannot connect to victoriametrics at"),
        ("influxdb down", "cannot connect to influxdb at"),
        ("no such database", "database not found: nope; check --database"),
        ("wrong password", "refused the credentials (HTTP 401"),
        ("no password", "needs a password"),
    ],
)
def test_store_problems_are_one_line_errors(
    case: str,
    said: str,
    fleet: Fleet,
    influxd: Influxd,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    login = ["--database", DATABASE, "--username", USER]
    monkeypatch.setenv("WATTD_SOURCE_PASSWORD", PASSWORD)
    args = {
        "victoriametrics down": ["--source", f"victoriametrics={nobody}"],
        "influxdb down": ["--source", f"influxdb={nobody}", *login],
        "no such database": [
            "--source",
            f"influxdb={influxd.url}",
            *login[2:],
            "--database",
            "nope",
        ],
        "wrong password": ["--source", f"influxdb={influxd.url}", *login],
        "no password": ["--source", f"influxdb={influxd.url}", *login],
    }[case]
    if case == "wrong password":
        monkeypatch.setenv("WATTD_SOURCE_PASSWORD", "not it")
    if case == "no password":
        monkeypatch.delenv("WATTD_SOURCE_PASSWORD")
    command = ["report", "-c", str(fleet.config), *args, "--period", "day"]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert said in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert "not it" not in err


def test_the_password_comes_from_a_file(
    fleet: Fleet, influxd: Influxd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    command = ["report", "-c", str(fleet.config), "--by", "node", "--format", "csv"]
    command += ["--source", f"influxdb={influxd.url}", "--database", DATABASE]
    command += ["--username", USER, "--password-file", str(secret)]
    command += ["--from", "2025-03-30", "--to", "2025-03-30"]
    assert main(command) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [row.split(",")[1] for row in rows[1:]] == [*NODES, "total"]
    secret.write_text("\n")
    assert main(command) == 1
    assert "should hold just the password" in capsys.readouterr().err


def test_central_store_options_need_a_source(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["report", "-c", str(fleet.config), "--period", "day"]
    assert main([*base, "--database", "x"]) == 2
    assert "--database goes with --source" in capsys.readouterr().err
    vm = ["--source", "victoriametrics=http://127.0.0.1:8428"]
    assert main([*base, *vm, "--database", "x"]) == 2
    assert "is for --source influxdb" in capsys.readouterr().err
    secret = ["--source", "victoriametrics=http://me:pw@127.0.0.1:8428"]
    assert main([*base, *secret]) == 1
    assert "not in the URL" in capsys.readouterr().err
