"""The Grafana dashboards' queries, run on real engines fed by running nodes.

Two nodes write line protocol to a VictoriaMetrics that also scrapes their
/metrics; a third writes to an InfluxDB 1.x database. Every panel query of
``docs/grafana/wattd-promql.json`` must answer with data from VictoriaMetrics,
every one of ``wattd-influxql.json`` from influxd, and the fleet power panels
must equal the sum of the latest readings in the nodes' local stores.
"""

from __future__ import annotations

import copy
import json
import math
import time
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.fixtures import dashboards
from tests.fixtures.fleetnodes import (
    FleetNode,
    MeterPlan,
    influx_settings,
    latest_watts,
    past_points,
    spool_empty,
    start_node,
)
from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.services import (
    LOOPBACK,
    Influxd,
    VictoriaMetrics,
    free_port,
    post,
)
from tests.fixtures.waiting import block_until

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]

GRAFANA = REPO_ROOT / "docs" / "grafana"
PROMQL = GRAFANA / "wattd-promql.json"
INFLUXQL = GRAFANA / "wattd-influxql.json"
DATABASE = "fleet"
METERS = {
    "node-a": [
        MeterPlan(1, 400.0, "acme", "r1"),
        MeterPlan(2, 150.0, "globex", "r2"),
    ],
    "node-b": [MeterPlan(1, 900.0, "globex", "r3")],
    "node-c": [
        MeterPlan(1, 250.0, "acme", "r1"),
        MeterPlan(2, 600.0, "globex", "r2"),
    ],
}
TO_VICTORIA = ("node-a", "node-b")
HISTORY_TAGS = "customer=acme,location=hall1,name=meter-9,node=node-a,rack=r1,sensor=9"
"""A meter of node-a that last sent three minutes before the test."""


@dataclass
class Central:
    victoria: VictoriaMetrics
    influxd: Influxd
    nodes: dict[str, FleetNode]


def scrape_config(ports: dict[str, int]) -> str:
    """VictoriaMetrics scrapes each node's /metrics, labelled with its node."""
    return yaml.safe_dump(
        {
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "wattd",
                    "static_configs": [
                        {"targets": [f"{LOOPBACK}:{port}"], "labels": {"node": node}}
                        for node, port in ports.items()
                    ],
                }
            ],
        }
    )


def vm_value(victoria: VictoriaMetrics, query: str) -> list[dict[str, Any]]:
    target = dashboards.Target("check", "A", query, instant=True, interval=None)
    return dashboards.run_promql(victoria.url, target)


def vm_has(victoria: VictoriaMetrics, query: str, series: int) -> bool:
    try:
        return len(vm_value(victoria, query)) >= series
    except dashboards.QueryFailed:
        return False


def influx_has(influxd: Influxd, query: str) -> bool:
    target = dashboards.Target("check", "A", query, instant=True, interval=None)
    try:
        return bool(dashboards.run_influxql(influxd.url, DATABASE, target))
    except dashboards.QueryFailed:
        return False


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Central]:
    tmp = tmp_path_factory.mktemp("dashboards")
    ports = {name: free_port() for name in TO_VICTORIA}
    scrape = tmp / "scrape.yml"
    scrape.write_text(scrape_config(ports), encoding="utf-8")
    victoria = VictoriaMetrics(
        tmp / "victoria",
        extra_args=[f"-promscrape.config={scrape}", "-dedup.minScrapeInterval=1ms"],
    )
    influxd = Influxd(tmp / "influxd")
    nodes: dict[str, FleetNode] = {}
    try:
        victoria.start()
        influxd.start()
        influxd.create_database(DATABASE)
        # Per-minute panels (completeness) count whole clock minutes, which the
        # live points may not fill yet: node-a also has a meter with a past.
        history, _ = past_points(
            time.time(), HISTORY_TAGS, minutes=20, outage=range(5, 8), ended_min=3
        )
        post(f"{victoria.url}/write?precision=ns", history)
        for name, meters in METERS.items():
            influx = (
                influx_settings(victoria.url)
                if name in TO_VICTORIA
                else influx_settings(influxd.url, DATABASE)
            )
            nodes[name] = start_node(
                name, tmp / name, meters, influx, web_port=ports.get(name)
            )
        for node in nodes.values():
            node.daemon.wait_for_log("running:")
        for node in nodes.values():
            node.start_feeds()
        block_until(
            lambda: (
                vm_has(victoria, "last_over_time(wattd_node_uptime_s[5m])", 2)
                and vm_has(victoria, "last_over_time(power_watts[5m])", 3)
                and vm_has(victoria, "rate(wattd_frames_total[5m])", 2)
                and influx_has(influxd, 'SELECT last("uptime_s") FROM "wattd_node"')
            ),
            timeout_s=60,
            interval_s=0.5,
            what="probes, points and scrapes of every node in the central stores",
        )
        for node in nodes.values():
            node.stop_feeds()
        for node in nodes.values():
            block_until(
                lambda: spool_empty(node),  # noqa: B023
                timeout_s=30,
                what=f"{node.name}'s spool drained",
            )
        with urllib.request.urlopen(f"{victoria.url}/internal/force_flush", timeout=10):
            pass
        yield Central(victoria, influxd, nodes)
    finally:
        for node in nodes.values():
            node.stop()
        victoria.stop()
        influxd.stop()


def expected_power(central: Central, names: tuple[str, ...]) -> float:
    return math.fsum(
        watts for name in names for watts in latest_watts(central.nodes[name]).values()
    )


def all_targets(path: Any) -> list[dashboards.Target]:
    dashboard = dashboards.load(path)
    return dashboards.targets(dashboard) + dashboards.variable_queries(dashboard)


# -- every query answers ------------------------------------------------------


def test_every_promql_query_answers_with_data(central: Central) -> None:
    targets = all_targets(PROMQL)
    assert len(targets) > 25
    failed = []
    for target in targets:
        try:
            dashboards.run_promql(central.victoria.url, target)
        except dashboards.QueryFailed as exc:
            failed.append(str(exc))
    assert failed == []


def test_every_influxql_query_answers_with_data(central: Central) -> None:
    targets = all_targets(INFLUXQL)
    assert len(targets) > 20
    failed = []
    for target in targets:
        try:
            dashboards.run_influxql(central.influxd.url, DATABASE, target)
        except dashboards.QueryFailed as exc:
            failed.append(str(exc))
    assert failed == []


# -- chosen panels give the right numbers -------------------------------------


def panel_targets(path: Any, title: str) -> list[dashboards.Target]:
    found = [t for t in dashboards.targets(dashboards.load(path)) if t.panel == title]
    assert found, title
    return found


def test_promql_fleet_power_is_the_sum_of_the_latest_readings(central: Central) -> None:
    want = expected_power(central, TO_VICTORIA)
    (target,) = panel_targets(PROMQL, "Fleet power now")
    ((series,),) = [dashboards.run_promql(central.victoria.url, target)]
    assert float(series["value"][1]) == pytest.approx(want, rel=0.01)
    # Nothing is stale or down, and both nodes' probes are there.
    for title in ("Stale meters", "Nodes down", "Scrape targets down"):
        (target,) = panel_targets(PROMQL, title)
        ((series,),) = [dashboards.run_promql(central.victoria.url, target)]
        assert float(series["value"][1]) == 0, title
    (target,) = panel_targets(PROMQL, "Seconds since each node's last probe")
    nodes = dashboards.run_promql(central.victoria.url, target)
    assert sorted(s["metric"]["node"] for s in nodes) == sorted(TO_VICTORIA)


def test_promql_power_per_node_matches_each_store(central: Central) -> None:
    (target,) = panel_targets(PROMQL, "Power per node")
    series = dashboards.run_promql(central.victoria.url, target)
    got = {s["metric"]["node"]: float(s["values"][-1][1]) for s in series}
    assert sorted(got) == sorted(TO_VICTORIA)
    for name in TO_VICTORIA:
        assert got[name] == pytest.approx(expected_power(central, (name,)), rel=0.01)


def test_influxql_fleet_power_is_the_sum_of_the_latest_readings(
    central: Central,
) -> None:
    want = expected_power(central, ("node-c",))
    (target,) = panel_targets(INFLUXQL, "Fleet power now")
    (series,) = dashboards.run_influxql(central.influxd.url, DATABASE, target)
    ((_, value),) = series["values"]
    assert value == pytest.approx(want, rel=0.01)
    (target,) = panel_targets(INFLUXQL, "Meters per node")
    (series,) = dashboards.run_influxql(central.influxd.url, DATABASE, target)
    assert series["tags"] == {"node": "node-c"}
    ((_, sensors, seen),) = series["values"]
    # The first probe may go before the second meter's first frame.
    assert sensors == 2
    assert seen in {1, 2}


# -- the checker catches a broken query ------------------------------------------


def mutated(path: Any, old: str, new: str) -> dict[str, Any]:
    """A copy of the dashboard with the first query holding ``old`` changed."""
    dashboard = copy.deepcopy(dashboards.load(path))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            key = "expr" if "expr" in target else "query"
            if old in target[key]:
                target[key] = target[key].replace(old, new, 1)
                return dashboard
    raise AssertionError(f"no query holds {old!r}")


@pytest.mark.parametrize(
    ("old", "new"),
    [("power_watts", "power_wats"), ("avg_over_time(", "avg_ovr_time(")],
    ids=["misspelt-series", "misspelt-function"],
)
def test_the_promql_checker_fails_a_mutated_query(
    central: Central, old: str, new: str
) -> None:
    broken = dashboards.targets(mutated(PROMQL, old, new))
    failures = []
    for target in broken:
        try:
            dashboards.run_promql(central.victoria.url, target)
        except dashboards.QueryFailed as exc:
            failures.append(exc)
    assert len(failures) == 1


@pytest.mark.parametrize(
    ("old", "new"),
    [('"watts"', '"wats"'), ("SELECT", "SELEC")],
    ids=["misspelt-field", "syntax"],
)
def test_the_influxql_checker_fails_a_mutated_query(
    central: Central, old: str, new: str
) -> None:
    broken = dashboards.targets(mutated(INFLUXQL, old, new))
    failures = []
    for target in broken:
        try:
            dashboards.run_influxql(central.influxd.url, DATABASE, target)
        except dashboards.QueryFailed as exc:
            failures.append(exc)
    assert len(failures) == 1


# -- the files themselves -------------------------------------------------------------


@pytest.mark.parametrize("path", [PROMQL, INFLUXQL], ids=lambda p: p.name)
def test_dashboards_have_the_variables_and_say_where_each_panel_reads(
    path: Any,
) -> None:
    dashboard = dashboards.load(path)
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"site", "node", "customer", "rack", "price_per_kwh"} <= names
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert "Feed:" in panel["description"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


def test_the_flux_dashboard_is_gone_and_provisioning_points_at_the_new_ones() -> None:
    assert not (REPO_ROOT / "docs" / "grafana-dashboard.json").exists()
    provisioning = GRAFANA / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources.yml").read_text())
    kinds = {s["type"] for s in sources["datasources"]}
    assert kinds == {"prometheus", "influxdb"}
    for source in sources["datasources"]:
        if source["type"] == "influxdb":
            assert source["jsonData"]["version"] == "InfluxQL"
    boards = yaml.safe_load((provisioning / "dashboards.yml").read_text())
    (provider,) = boards["providers"]
    assert provider["type"] == "file"
    assert (
        json.loads(PROMQL.read_text())["uid"] != json.loads(INFLUXQL.read_text())["uid"]
    )


def test_the_central_alert_rules_run_on_victoriametrics(central: Central) -> None:
    """vmalert sends these to the central store: each parses, none fires here."""
    rules = yaml.safe_load((REPO_ROOT / "docs" / "alerts" / "wattd.yml").read_text())
    (group,) = [g for g in rules["groups"] if g["name"] == "wattd-central"]
    for rule in group["rules"]:
        target = dashboards.Target(rule["alert"], "A", rule["expr"], True, None)
        with pytest.raises(dashboards.QueryFailed, match="no data"):
            dashboards.run_promql(central.victoria.url, target)
    # The clock rule's offset itself, without the threshold: about zero.
    clock = group["rules"][-1]["expr"].rsplit(">", 1)[0]
    target = dashboards.Target("clock", "A", clock, True, None)
    offsets = dashboards.run_promql(central.victoria.url, target)
    assert sorted(s["metric"]["node"] for s in offsets) == sorted(TO_VICTORIA)
    assert all(float(s["value"][1]) < 1 for s in offsets)
