"""Fleet identity in the config: ``node``, ``site`` and a sensor's ``id``."""

from __future__ import annotations

import socket
import textwrap
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.configs import load_error
from wattd.config import load_config, parse_config
from wattd.config.base import _slug

if TYPE_CHECKING:
    from pathlib import Path


def message(tmp_path: Path, text: str) -> str:
    """The one-line error loading ``text`` gives, its file named as ``wattd.yaml``."""
    error = str(load_error(write(tmp_path, text)))
    assert "\n" not in error
    return error.removeprefix(f"{tmp_path}/")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wattd.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_node_defaults_to_the_host_name_and_names_every_sink() -> None:
    config = parse_config("ports: []\n")
    host = _slug(socket.gethostname())
    assert (config.node, config.mqtt.node_id, config.influxdb.node_id) == (
        host,
        host,
        host,
    )
    assert config.site is None
    assert not config.fleet_identity


def test_a_file_from_before_node_keeps_its_mqtt_node_id_everywhere() -> None:
    config = parse_config("mqtt: {node_id: pi4}\n")
    assert (config.node, config.mqtt.node_id, config.influxdb.node_id) == (
        "pi4",
        "pi4",
        "pi4",
    )
    assert not config.fleet_identity


def test_node_is_the_default_and_explicit_node_ids_still_win() -> None:
    config = parse_config("node: rack7\n")
    assert (config.mqtt.node_id, config.influxdb.node_id) == ("rack7", "rack7")
    config = parse_config(
        "node: rack7\nmqtt: {node_id: pi4}\ninfluxdb: {node_id: influx-a}\n"
    )
    assert (config.node, config.mqtt.node_id, config.influxdb.node_id) == (
        "rack7",
        "pi4",
        "influx-a",
    )
    assert config.fleet_identity


def test_meter_identity_is_the_id_else_node_and_address() -> None:
    config = parse_config(
        "node: n1\nsite: hall-2\nsensors:\n"
        "  - {address: 1, id: SRV-0042.psu1}\n"
        "  - {address: 2}\n"
    )
    assert config.meter_identity(1) == "SRV-0042.psu1"
    assert config.meter_identity(2) == "n1/2"
    assert config.meter_identity(9) == "n1/9"
    assert config.site == "hall-2"
    # The id travels in the labels every reading of the sensor shares.
    assert config.sensor_meta()[1][1] == {"id": "SRV-0042.psu1"}
    assert "id" not in config.sensor_meta()[2][1]


def test_a_sensor_id_wins_over_a_free_label_of_that_name() -> None:
    config = parse_config(
        "sensors: [{address: 1, id: asset-1, labels: {id: old, pdu: a}}]\n"
    )
    assert config.sensors[0].metadata() == {"id": "asset-1", "pdu": "a"}


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "sensors:\n  - address: 1\n    id: 'srv 42'\n",
            "wattd.yaml:3: sensors[0].id: id 'srv 42' must be 1-64 letters,"
            " digits, '_', '.' or '-'",
        ),
        (
            "sensors:\n  - address: 1\n    id: a/b\n",
            "wattd.yaml:3: sensors[0].id: id 'a/b' must be 1-64 letters,"
            " digits, '_', '.' or '-'",
        ),
        (
            f"sensors:\n  - address: 1\n    id: {'x' * 65}\n",
            "wattd.yaml:3: sensors[0].id: id",
        ),
        (
            "site: 'hall 2'\n",
            "wattd.yaml:1: site: site 'hall 2' must be 1-64 letters, digits,"
            " '_', '.' or '-'",
        ),
        (
            "node: a.b\n",
            "wattd.yaml:1: node: node 'a.b' must be 1-64 letters, digits, '_' or '-'",
        ),
    ],
)
def test_bad_identity_values_name_file_line_and_key(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    assert message(tmp_path, yaml_text).startswith(expected)


def test_duplicate_ids_are_refused_at_the_repeat(tmp_path: Path) -> None:
    text = """
        sensors:
          - address: 1
            id: srv-1
          - address: 2
            id: srv-2
          - address: 3
            id: srv-1
        """
    assert message(tmp_path, text) == (
        "wattd.yaml:7: sensors[2].id: id 'srv-1' repeats sensors[0]; each must be"
        " unique"
    )


def test_ids_that_differ_only_in_dot_and_underscore_collide(tmp_path: Path) -> None:
    text = """
        sensors:
          - {address: 1, id: srv.1}
          - {address: 2, id: srv_1}
        """
    got = message(tmp_path, text)
    assert got.startswith("wattd.yaml:3: sensors[1].id: id 'srv_1'")
    assert "'.' and '_' are one in Home Assistant ids" in got


def test_node_and_site_load_from_a_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "node: edge-1\nsite: dc.north\n"))
    assert (config.node, config.site) == ("edge-1", "dc.north")
