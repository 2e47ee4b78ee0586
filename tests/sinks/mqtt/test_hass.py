"""Home Assistant discovery payloads checked against HA's documented schema.

The expectations below are written from the Home Assistant docs (MQTT discovery,
MQTT sensor/binary sensor, and the sensor device-class tables), not from
wattd's own code, so a payload that HA would reject or mis-handle fails here.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wattd.clients.topics import Topics
from wattd.config import Config, MqttConfig, parse_config
from wattd.core.readings import Flag, Reading
from wattd.sinks.mqtt import hass

# -- Home Assistant's rules, as documented ------------------------------------

# Units allowed per sensor device class (sensor integration docs).
HA_UNITS: dict[str, set[str | None]] = {
    "power": {"mW", "W", "kW", "MW", "GW", "TW"},
    "apparent_power": {"mVA", "VA"},
    "energy": {
        "J",
        "kJ",
        "MJ",
        "GJ",
        "mWh",
        "Wh",
        "kWh",
        "MWh",
        "GWh",
        "TWh",
        "cal",
        "kcal",
        "Mcal",
        "Gcal",
    },
    "voltage": {"V", "mV", "µV", "kV", "MV"},
    "current": {"A", "mA"},
    "power_factor": {None, "%"},
    "signal_strength": {"dB", "dBm"},
    "timestamp": {None},
}
# State classes allowed per device class (sensor entity developer docs).
HA_STATE_CLASSES: dict[str, set[str | None]] = {
    "power": {"measurement"},
    "apparent_power": {"measurement"},
    "energy": {"total", "total_increasing"},
    "voltage": {"measurement"},
    "current": {"measurement"},
    "power_factor": {"measurement"},
    "signal_strength": {"measurement"},
    "timestamp": {None},
}
HA_STATE_CLASS_VALUES = {"measurement", "total", "total_increasing"}
HA_ID_CHARS = re.compile(r"[a-zA-Z0-9_-]+")
SENSOR_KEYS = {
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "device",
    "device_class",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "expire_after",
    "force_update",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "last_reset_value_template",
    "name",
    "object_id",
    "options",
    "payload_available",
    "payload_not_available",
    "suggested_display_precision",
    "qos",
    "state_class",
    "state_topic",
    "unique_id",
    "unit_of_measurement",
    "value_template",
    "origin",
}
BINARY_SENSOR_KEYS = {
    "availability",
    "availability_mode",
    "availability_topic",
    "device",
    "device_class",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "expire_after",
    "force_update",
    "icon",
    "name",
    "off_delay",
    "payload_off",
    "payload_on",
    "qos",
    "state_topic",
    "unique_id",
    "value_template",
    "origin",
}
DEVICE_KEYS = {
    "configuration_url",
    "connections",
    "hw_version",
    "identifiers",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "serial_number",
    "suggested_area",
    "sw_version",
    "via_device",
}
TEMPLATE = re.compile(r"^\{\{ value_json\.([a-z_]+) \}\}$")

CONFIG_YAML = """
mqtt:
  enabled: true
  node_id: lab
  discovery:
    expire_after_s: 90
sensors:
  - address: 1
    name: Desk lamp
    location: Office
  - address: 0x0002
    name: Fridge
"""


@pytest.fixture
def config() -> Config:
    return parse_config(CONFIG_YAML)


@pytest.fixture
def messages(config: Config) -> dict[str, dict[str, Any]]:
    raw = hass.discovery_messages(config.mqtt, config.sensors, version="1.2.3")
    return {topic: json.loads(payload) for topic, payload in raw.items()}


def reading(**over: Any) -> Reading:
    values: dict[str, Any] = {
        "sensor": 1,
        "name": "Desk lamp",
        "time": datetime(2024, 3, 1, 12, 0, 0, 250000, tzinfo=UTC),
        "monotonic_s": 100.0,
        "watts": 61.234,
        "va": 63.0,
        "vrms": 120.4,
        "irms": 0.523,
        "power_factor": 0.972,
        "wh_total": 1234.5,
        "wh_delta": 0.03,
        "rssi_dbm": -67,
        "flags": frozenset({Flag.CLIPPED}),
    }
    values.update(over)
    return Reading(**values)


def render(template: str, doc: dict[str, Any]) -> str:
    """Render ``{{ value_json.key }}`` the way HA's Jinja does for JSON values."""
    m = TEMPLATE.match(template)
    assert m, f"unexpected template form {template!r}"
    value = doc[m.group(1)]
    return "None" if value is None else str(value)


# -- discovery payloads -------------------------------------------------------


def test_topics_follow_the_discovery_topic_format(messages: dict[str, Any]) -> None:
    for topic, payload in messages.items():
        parts = topic.split("/")
        assert len(parts) == 5, topic
        prefix, component, node_id, object_id, tail = parts
        assert prefix == "homeassistant"
        assert component in {"sensor", "binary_sensor"}
        assert tail == "config"
        assert HA_ID_CHARS.fullmatch(node_id)
        assert HA_ID_CHARS.fullmatch(object_id)
        assert node_id == "lab"
        # Best practice per the docs: object_id equals the unique_id.
        assert object_id == payload["unique_id"]


def test_every_payload_uses_only_documented_keys(messages: dict[str, Any]) -> None:
    for topic, payload in messages.items():
        allowed = BINARY_SENSOR_KEYS if "/binary_sensor/" in topic else SENSOR_KEYS
        assert set(payload) <= allowed, (topic, set(payload) - allowed)
        assert "state_topic" in payload  # required by both platforms
        assert payload["unique_id"]  # needed for the device registry
        assert set(payload["device"]) <= DEVICE_KEYS
        ids = payload["device"]["identifiers"]
        assert isinstance(ids, list)
        assert ids
        assert all(isinstance(i, str) for i in ids)
        assert payload["origin"] == {"name": "wattd", "sw_version": "1.2.3"}


def test_units_and_state_classes_are_valid_for_each_device_class(
    messages: dict[str, Any],
) -> None:
    checked = 0
    for topic, payload in messages.items():
        if "/sensor/" not in topic:
            continue
        state_class = payload.get("state_class")
        assert state_class is None or state_class in HA_STATE_CLASS_VALUES
        device_class = payload.get("device_class")
        if device_class is None:
            continue
        assert payload.get("unit_of_measurement") in HA_UNITS[device_class], topic
        assert state_class in HA_STATE_CLASSES[device_class], topic
        checked += 1
    assert checked == 2 * 8  # eight classed entities per meter, two meters


def test_power_and_energy_are_usable_in_the_energy_dashboard(
    messages: dict[str, Any],
) -> None:
    for address in (1, 2):
        uid = f"wattd_lab_{address:04x}"
        power = messages[f"homeassistant/sensor/lab/{uid}_power/config"]
        assert power["device_class"] == "power"
        assert power["state_class"] == "measurement"
        assert power["unit_of_measurement"] == "W"
        energy = messages[f"homeassistant/sensor/lab/{uid}_energy/config"]
        assert energy["device_class"] == "energy"
        assert energy["state_class"] == "total_increasing"
        assert energy["unit_of_measurement"] == "kWh"
        # Energy must never carry a last_reset template with total_increasing.
        assert "last_reset_value_template" not in energy


def test_diagnostics_are_categorised_and_last_seen_never_expires(
    messages: dict[str, Any],
) -> None:
    meter = {
        p["unique_id"].removeprefix("wattd_lab_0001_"): p
        for t, p in messages.items()
        if p["unique_id"].startswith("wattd_lab_0001_")
    }
    assert set(meter) == {
        "power",
        "energy",
        "apparent_power",
        "voltage",
        "current",
        "power_factor",
        "rssi",
        "last_seen",
        "frame_errors",
    }
    for key in ("rssi", "last_seen", "frame_errors"):
        assert meter[key]["entity_category"] == "diagnostic"
    for key in ("power", "energy", "voltage", "current", "power_factor"):
        assert "entity_category" not in meter[key]
    # Sensors may only use the diagnostic category.
    for p in messages.values():
        assert p.get("entity_category") in {None, "diagnostic"}
    assert meter["rssi"]["device_class"] == "signal_strength"
    assert meter["rssi"]["unit_of_measurement"] == "dBm"
    assert meter["last_seen"]["device_class"] == "timestamp"
    assert "state_class" not in meter["last_seen"]
    assert "expire_after" not in meter["last_seen"]
    assert meter["frame_errors"]["state_class"] == "total_increasing"
    assert meter["power"]["expire_after"] == 90
    assert isinstance(meter["power"]["expire_after"], int)


@pytest.mark.parametrize(
    ("configured", "aggregate_s", "announced"),
    [
        (90, 0, 90),  # every reading: as configured
        (90, 10, 90),  # three intervals fit already
        (90, 60, 180),  # one message a minute: raised to three minutes
        (90, 12.5, 90),
        (20, 12.5, 38),  # rounded up to whole seconds
        (0, 60, 0),  # never expire stays never
    ],
)
def test_expire_after_spans_several_aggregation_intervals(
    config: Config, configured: int, aggregate_s: float, announced: int
) -> None:
    mqtt = config.mqtt.model_copy(
        update={
            "aggregate_s": aggregate_s,
            "discovery": config.mqtt.discovery.model_copy(
                update={"expire_after_s": configured}
            ),
        }
    )
    assert hass.expire_after_s(mqtt) == announced
    raw = hass.discovery_messages(mqtt, config.sensors, version="1.2.3")
    payloads = [json.loads(p) for p in raw.values()]
    power = next(p for p in payloads if p["unique_id"] == "wattd_lab_0001_power")
    assert power.get("expire_after", 0) == announced
    assert isinstance(power.get("expire_after", 0), int)


def test_availability_points_at_the_node_status_topic(messages: dict[str, Any]) -> None:
    for topic, p in messages.items():
        if "/binary_sensor/" in topic:
            # The connectivity sensor must be able to show "offline" itself.
            assert "availability" not in p
            assert p["state_topic"] == "wattd/lab/status"
            assert p["device_class"] == "connectivity"
            assert (p["payload_on"], p["payload_off"]) == ("online", "offline")
            continue
        assert "availability_topic" not in p  # mutually exclusive with the list
        assert p["availability_mode"] in {"all", "any", "latest"}
        assert p["availability"] == [
            {
                "topic": "wattd/lab/status",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ]


def test_meters_are_devices_via_the_node(messages: dict[str, Any]) -> None:
    devices: dict[str, dict[str, Any]] = {}
    for p in messages.values():
        dev = p["device"]
        devices.setdefault(dev["identifiers"][0], dev)
        assert devices[dev["identifiers"][0]] == dev  # one consistent device block
    assert set(devices) == {"wattd_lab", "wattd_lab_0001", "wattd_lab_0002"}
    node = devices["wattd_lab"]
    assert "via_device" not in node
    for ident in ("wattd_lab_0001", "wattd_lab_0002"):
        meter = devices[ident]
        assert meter["via_device"] == "wattd_lab"
        assert meter["manufacturer"]
        assert meter["model"]
        assert meter["sw_version"] == "1.2.3"
    assert devices["wattd_lab_0001"]["name"] == "Desk lamp"
    assert devices["wattd_lab_0001"]["suggested_area"] == "Office"
    assert "suggested_area" not in devices["wattd_lab_0002"]


def test_value_templates_render_numbers_from_the_state_document(
    config: Config, messages: dict[str, Any]
) -> None:
    topics = Topics.from_config(config.mqtt)
    doc = hass.state_document(reading(), frame_errors=3)
    for p in messages.values():
        if p["state_topic"] != topics.state("desk_lamp"):
            continue
        rendered = render(p["value_template"], doc)
        if p.get("device_class") == "timestamp":
            parsed = datetime.fromisoformat(rendered)
            assert parsed.tzinfo is not None  # HA rejects naive timestamps
            assert parsed == reading().time
        else:
            float(rendered)  # numeric sensors must parse
    assert render("{{ value_json.kwh_total }}", doc) == "1.2345"
    assert render("{{ value_json.frame_errors }}", doc) == "3"


def test_missing_values_render_as_none_so_ha_shows_unknown(
    messages: dict[str, Any],
) -> None:
    doc = hass.state_document(reading(power_factor=None, rssi_dbm=None))
    pf = messages["homeassistant/sensor/lab/wattd_lab_0001_power_factor/config"]
    assert render(pf["value_template"], doc) == "None"


def test_unique_ids_are_stable_and_unique(config: Config) -> None:
    first = hass.discovery_messages(config.mqtt, config.sensors, version="1")
    again = hass.discovery_messages(config.mqtt, config.sensors, version="1")
    assert first == again  # byte-identical republish
    ids = [json.loads(p)["unique_id"] for p in first.values()]
    assert len(ids) == len(set(ids))
    # Renaming a meter or reordering the file keeps every unique_id.
    renamed = parse_config(
        CONFIG_YAML.replace("Desk lamp", "Reading lamp").replace(
            "  - address: 1\n    name: Reading lamp\n    location: Office\n"
            "  - address: 0x0002\n    name: Fridge\n",
            "  - address: 0x0002\n    name: Fridge\n"
            "  - address: 1\n    name: Reading lamp\n    location: Office\n",
        )
    )
    assert [s.address for s in renamed.sensors] == [2, 1]
    moved = hass.discovery_messages(renamed.mqtt, renamed.sensors, version="1")
    assert set(moved) == set(first)
    ids_after = {json.loads(p)["unique_id"] for p in moved.values()}
    assert ids_after == set(ids)
    lamp = json.loads(moved["homeassistant/sensor/lab/wattd_lab_0001_power/config"])
    assert lamp["device"]["name"] == "Reading lamp"
    assert lamp["state_topic"] == "wattd/reading_lamp/state"


def test_prefix_and_expiry_are_configurable() -> None:
    cfg = parse_config(
        "mqtt:\n  node_id: n1\n  base_topic: home/power\n  discovery:\n"
        "    prefix: ha\n    expire_after_s: 0\nsensors:\n  - address: 7\n"
    )
    msgs = {
        t: json.loads(p)
        for t, p in hass.discovery_messages(cfg.mqtt, cfg.sensors, version="0").items()
    }
    assert all(t.startswith("ha/") for t in msgs)
    assert all("expire_after" not in p for p in msgs.values())
    power = msgs["ha/sensor/n1/wattd_n1_0007_power/config"]
    assert power["state_topic"] == "home/power/sensor-7/state"
    assert power["availability"][0]["topic"] == "home/power/n1/status"


def test_stale_topics_are_those_no_longer_wanted(config: Config) -> None:
    before = hass.discovery_messages(config.mqtt, config.sensors, version="1")
    after = hass.discovery_messages(config.mqtt, config.sensors[:1], version="1")
    stale = hass.stale_discovery_topics(before, after)
    assert stale
    assert all("wattd_lab_0002_" in t for t in stale)
    assert len(stale) == len(hass.METER_ENTITIES)
    assert hass.stale_discovery_topics(after, before) == []


# -- topics, slugs, state document --------------------------------------------


def test_topics_layout() -> None:
    t = Topics.from_config(MqttConfig(node_id="rack1"))
    assert t.status == "wattd/rack1/status"
    assert t.stats == "wattd/rack1/stats"
    assert t.state("fridge") == "wattd/fridge/state"
    assert t.field("fridge", "watts") == "wattd/fridge/watts"
    assert t.discovery_filter == "homeassistant/+/rack1/+/config"
    assert t.is_own_discovery("homeassistant/sensor/rack1/x/config")
    assert not t.is_own_discovery("homeassistant/sensor/other/x/config")
    assert not t.is_own_discovery("homeassistant/sensor/x/config")
    assert not t.is_own_discovery("homeassistant/sensor/rack1/x/state")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Desk Lamp", "desk_lamp"),
        ("Küche #2", "kuche_2"),
        ("rack-3/pdu+a", "rack-3_pdu_a"),
        ("///", "unnamed"),
        ("  Fridge  ", "fridge"),
    ],
)
def test_slug(name: str, expected: str) -> None:
    assert hass.slug(name) == expected


@given(st.text(max_size=40))
def test_slug_is_always_a_safe_single_level(text: str) -> None:
    out = hass.slug(text)
    assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*|[a-z0-9]", out) or out == "unnamed"
    assert not {"/", "+", "#"} & set(out)


def test_sensor_slugs_disambiguate_collisions() -> None:
    cfg = parse_config(
        "sensors:\n  - {address: 1, name: Desk A}\n  - {address: 2, name: desk.a}\n"
        "  - {address: 3, name: Fridge}\n"
    )
    slugs = hass.sensor_slugs(cfg.sensors)
    assert slugs == {1: "desk_a_0001", 2: "desk_a_0002", 3: "fridge"}
    assert len(set(slugs.values())) == 3


def test_state_document_keeps_the_reading_contract_and_adds_kwh() -> None:
    r = reading()
    doc = hass.state_document(r, frame_errors=2)
    base = r.to_json_dict()
    assert {k: doc[k] for k in base} == base
    assert doc["time"] == "2024-03-01T12:00:00.250000Z"  # the measurement time
    assert doc["kwh_total"] == pytest.approx(r.wh_total / 1000)
    assert doc["frame_errors"] == 2
    for key in ("watts", "va", "vrms", "irms", "pf", "wh_total", "rssi_dbm", "flags"):
        assert key in doc


def test_field_payloads_are_plain_numbers_and_skip_missing() -> None:
    doc = hass.state_document(reading(power_factor=None))
    fields = dict(hass.field_payloads(doc))
    assert "pf" not in fields
    assert set(fields) == set(hass.FIELD_KEYS) - {"pf"}
    assert float(fields["watts"]) == pytest.approx(61.234)
    assert fields["rssi_dbm"] == "-67"
    for text in fields.values():
        float(text)
