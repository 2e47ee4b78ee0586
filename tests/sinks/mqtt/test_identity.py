"""Fleet identity over MQTT: state JSON fields, Home Assistant ids, topic layout."""

from __future__ import annotations

import json
import re
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from tests.fixtures.readings import configured_reading
from tests.fixtures.waiting import wait_until
from tests.sinks.mqtt.test_sink import collecting, make_config, reading, running
from wattd.config import Config, parse_config
from wattd.sinks.mqtt import hass
from wattd.sinks.mqtt.session import json_bytes

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fixtures.services import Mosquitto

SENSORS = """
sensors:
  - {address: 1, name: Desk lamp, rack: r1, customer: acme, labels: {pdu: a1}}
"""

GOLDEN_STATE = (
    b'{"time":"2024-05-01T08:00:00Z","sensor":1,"name":"Desk lamp","watts":60.5,'
    b'"va":62.0,"vrms":120.1,"irms":0.51,"pf":0.97,"wh_total":1234.5,'
    b'"rssi_dbm":-61,"flags":[],"labels":{"rack":"r1","customer":"acme",'
    b'"pdu":"a1"},"kwh_total":1.2345,"frame_errors":2}'
)
"""The state JSON a config without node, site, ids or topic_layout has always sent."""


def state(config: Config, sensor: int = 1) -> bytes:
    own, shared = hass.meter_identities(config)
    doc = hass.state_document(
        configured_reading(config, sensor),
        frame_errors=2,
        identity=own.get(sensor, shared),
    )
    return json_bytes(doc)


def discovery(config: Config) -> dict[str, dict[str, Any]]:
    messages = hass.discovery_messages(config.mqtt, config.sensors, version="1.0")
    return {topic: json.loads(payload) for topic, payload in messages.items()}


def test_an_unchanged_config_publishes_byte_identical_state() -> None:
    config = parse_config("mqtt: {node_id: pi4}\n" + SENSORS)
    assert state(config) == GOLDEN_STATE


def test_an_unchanged_config_keeps_its_topics_and_unique_ids() -> None:
    config = parse_config("mqtt: {node_id: pi4}\n" + SENSORS)
    meters = {
        p["unique_id"]: p["state_topic"]
        for p in discovery(config).values()
        if p["device"]["identifiers"] == ["wattd_pi4_0001"]
    }
    assert meters["wattd_pi4_0001_power"] == "wattd/desk_lamp/state"
    assert len(meters) == len(hass.METER_ENTITIES)


def test_state_json_carries_node_site_and_id_once_named() -> None:
    config = parse_config(
        "node: n1\nsite: hall-2\nsensors:\n"
        "  - {address: 1, name: Desk lamp, id: SRV-42}\n"
        "  - {address: 2, name: Fan}\n"
    )
    with_id = json.loads(state(config, 1))
    assert (with_id["node"], with_id["site"], with_id["id"]) == (
        "n1",
        "hall-2",
        "SRV-42",
    )
    without = json.loads(state(config, 2))
    assert (without["node"], without["site"]) == ("n1", "hall-2")
    assert "id" not in without
    unknown = json.loads(state(config, 9))
    assert unknown["node"] == "n1"
    assert "id" not in unknown


def test_node_alone_adds_only_the_node_field() -> None:
    doc = json.loads(state(parse_config("node: n1\n" + SENSORS)))
    assert doc["node"] == "n1"
    assert "site" not in doc
    assert "id" not in doc


def test_home_assistant_ids_follow_the_id_across_coordinators() -> None:
    sensors = "sensors: [{address: 3, name: Web 1, id: SRV-42.psu1}]\n"
    first = discovery(parse_config("node: edge-a\n" + sensors))
    moved = discovery(
        parse_config(
            "node: edge-b\nsensors: [{address: 9, name: Web 1, id: SRV-42.psu1}]\n"
        )
    )

    def meter_ids(found: dict[str, dict[str, Any]]) -> set[str]:
        return {
            p["unique_id"]
            for p in found.values()
            if p["device"].get("via_device") is not None
        }

    ids = meter_ids(first)
    assert "wattd-SRV-42_psu1_power" in ids
    assert ids == meter_ids(moved)
    device = next(p["device"] for p in first.values() if p["unique_id"] in ids)
    assert device["identifiers"] == ["wattd-SRV-42_psu1"]
    assert device["via_device"] == "wattd_edge-a"
    # Each unique id is a discovery topic level, where HA allows no '.'.
    for topic in first:
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", topic.split("/")[-2]), topic


def test_node_layout_puts_the_node_in_state_topics_and_discovery() -> None:
    config = parse_config("node: n1\nmqtt: {topic_layout: node}\n" + SENSORS)
    topics = {p["state_topic"] for p in discovery(config).values()}
    assert "wattd/n1/desk_lamp/state" in topics
    assert "wattd/desk_lamp/state" not in topics


@pytest.mark.services
async def test_two_nodes_share_a_broker_without_colliding(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A subscriber sees each node's desk lamp on ``<base>/<node>/<meter>/state``."""
    # Names of the test's own, so tests sharing the broker never meet.
    node = f"t{uuid.uuid4().hex[:8]}"
    other = f"{node}b"
    base = f"wattd-{node}"
    configs = [
        make_config(
            tmp_path / name,
            mosquitto,
            node=name,
            base_topic=base,
            topic_layout="node",
        )
        for name in (node, other)
    ]
    wanted = [f"{base}/{name}/desk_lamp/state" for name in (node, other)]
    async with (
        collecting(mosquitto, [f"{base}/+/desk_lamp/state"]) as live,
        running(configs[0]) as first,
        running(configs[1]) as second,
    ):
        await first.write([reading(1)])
        await second.write([reading(2)])
        await wait_until(lambda: all(live.on(t) for t in wanted), what="both states")
    docs = {t: json.loads(live.on(t)[-1].payload) for t in wanted}
    assert docs[wanted[0]]["node"] == node
    assert docs[wanted[1]]["node"] == other
    assert docs[wanted[0]]["watts"] == 11.0
    assert docs[wanted[1]]["watts"] == 12.0
    assert not live.on(f"{base}/desk_lamp/state")
