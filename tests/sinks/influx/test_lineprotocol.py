"""Line protocol tags of the fleet identity: ``id`` and ``site`` only when set;
the ``frame_hash`` field only when ``influxdb.frame_hash`` asks for it."""

from __future__ import annotations

import dataclasses

from tests.fixtures.readings import configured_reading
from wattd.config import Config, parse_config
from wattd.sinks.influx.lineprotocol import PointEncoder

SENSORS = """
sensors:
  - {address: 1, name: Desk lamp, rack: r1, customer: acme, labels: {pdu: a1}}
"""

GOLDEN_LINE = (
    b"power,customer=acme,name=Desk\\ lamp,node=pi4,pdu=a1,rack=r1,sensor=1"
    b" watts=60.5,va=62.0,vrms=120.1,irms=0.51,pf=0.97,wh_total=1234.5,"
    b"rssi_dbm=-61.0 1714550400000000000"
)
"""What a config without node, site or ids has always written."""


def tags(config: Config, sensor: int = 1) -> dict[str, str]:
    return dict(
        PointEncoder.from_config(config).tags(configured_reading(config, sensor))
    )


def test_an_unchanged_config_writes_byte_identical_lines() -> None:
    config = parse_config("mqtt: {node_id: pi4}\n" + SENSORS)
    assert (
        PointEncoder.from_config(config).encode(configured_reading(config))
        == GOLDEN_LINE
    )


def test_an_unchanged_config_writes_no_frame_hash_even_when_known() -> None:
    config = parse_config("mqtt: {node_id: pi4}\n" + SENSORS)
    hashed = dataclasses.replace(configured_reading(config), frame_hash=12345)
    assert PointEncoder.from_config(config).encode(hashed) == GOLDEN_LINE


def test_frame_hash_is_an_integer_field_when_asked_for() -> None:
    config = parse_config(
        "mqtt: {node_id: pi4}\ninfluxdb: {frame_hash: true}\n" + SENSORS
    )
    encoder = PointEncoder.from_config(config)
    hashed = dataclasses.replace(configured_reading(config), frame_hash=2**53 - 1)
    series, fields, stamp = GOLDEN_LINE.rsplit(b" ", 2)
    assert encoder.encode(hashed) == b" ".join(
        (series, fields + b",frame_hash=9007199254740991i", stamp)
    )
    # A reading without a hash (one read back from the store) has no such field.
    assert encoder.encode(configured_reading(config)) == GOLDEN_LINE


def test_no_id_or_site_tag_without_them() -> None:
    found = tags(parse_config("node: n1\n" + SENSORS))
    assert found["node"] == "n1"
    assert "id" not in found
    assert "site" not in found


def test_a_sensor_id_and_the_site_become_tags() -> None:
    config = parse_config(
        "node: n1\nsite: hall-2\nsensors:\n"
        "  - {address: 1, name: Desk lamp, id: SRV-0042.psu1, rack: r1}\n"
    )
    line = PointEncoder.from_config(config).encode(configured_reading(config))
    assert line is not None
    assert line.startswith(
        b"power,id=SRV-0042.psu1,name=Desk\\ lamp,node=n1,rack=r1,sensor=1,"
        b"site=hall-2 watts=60.5,"
    )


def test_an_unconfigured_sensor_gets_the_site_but_no_id() -> None:
    found = tags(parse_config("node: n1\nsite: hall-2\n" + SENSORS), sensor=7)
    assert found == {"name": "sensor-7", "node": "n1", "sensor": "7", "site": "hall-2"}


def test_the_site_wins_over_a_site_label_only_when_set() -> None:
    labelled = "sensors: [{address: 1, name: a, labels: {site: old}}]\n"
    assert tags(parse_config(labelled))["site"] == "old"
    assert tags(parse_config("site: new\n" + labelled))["site"] == "new"


def test_node_tag_follows_node_unless_influxdb_node_id_is_set() -> None:
    assert tags(parse_config("node: n1\nmqtt: {node_id: m1}\n"))["node"] == "n1"
    explicit = parse_config("node: n1\ninfluxdb: {node_id: i1}\n")
    assert tags(explicit)["node"] == "i1"
