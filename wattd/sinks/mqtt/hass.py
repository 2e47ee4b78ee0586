"""MQTT topic layout and Home Assistant discovery payloads (pure functions).

The state JSON on ``<base>[/<node>]/<sensor>/state`` is the contract between the MQTT
sink and the ``value_template`` of every discovered entity, so both are built
here. Each meter becomes one Home Assistant device routed ``via_device`` the
wattd node; every entity gets its own retained config topic
``<prefix>/<component>/<node_id>/<unique_id>/config``. The ``<node_id>`` level
lets the sink find (and clear) everything this node announced earlier with a
single wildcard subscription.

Schema source: the Home Assistant MQTT discovery and MQTT sensor documentation,
and the sensor device-class/state-class/unit tables (power W ``measurement``,
energy kWh ``total_increasing``, timestamp without a state class).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import unicodedata
from typing import TYPE_CHECKING, Any, Final

from wattd.clients.topics import PAYLOAD_OFFLINE, PAYLOAD_ONLINE, Topics

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from wattd.config import Config, MqttConfig, SensorConfig
    from wattd.core.readings import Reading

__all__ = [
    "EXPIRE_INTERVALS",
    "FIELD_KEYS",
    "METER_ENTITIES",
    "NODE_ENTITIES",
    "EntitySpec",
    "discovery_messages",
    "expire_after_s",
    "field_payloads",
    "meter_device_id",
    "meter_identities",
    "node_device_id",
    "sensor_slugs",
    "slug",
    "stale_discovery_topics",
    "state_document",
]


METER_MANUFACTURER: Final = "P3 International"
METER_MODEL: Final = "Kill A Watt with Tweet-a-Watt XBee radio"
NODE_MANUFACTURER: Final = "wattd"
NODE_MODEL: Final = "Tweet-a-Watt receiver"

FIELD_KEYS: Final = (
    "watts",
    "va",
    "vrms",
    "irms",
    "pf",
    "wh_total",
    "kwh_total",
    "rssi_dbm",
)
"""State-document keys that also get a plain-number topic when enabled."""

EXPIRE_INTERVALS: Final = 3
"""With aggregation, ``expire_after`` spans at least this many intervals: one
interval without any reading (a few lost frames at the wrong moment) must not
turn a meter unavailable."""

_SLUG_BAD = re.compile(r"[^a-z0-9_-]+")


def slug(text: str) -> str:
    """A topic- and Home-Assistant-safe id: ``[a-z0-9_-]``, never empty.

    Accents are folded to ASCII first so "Küche" becomes ``kuche`` rather than
    losing the letter.
    """
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    out = _SLUG_BAD.sub("_", folded.strip().lower()).strip("_-")
    return out or "unnamed"


def sensor_slugs(sensors: Sequence[SensorConfig]) -> dict[int, str]:
    """Topic slug per sensor address, unique even when two names fold alike.

    Names are unique in the config but their slugs need not be ("Desk A" and
    "desk.a"); every sensor of a colliding group gets its address appended, so
    the result does not depend on the order of the sensors in the file.
    """
    plain = {s.address: slug(s.display_name) for s in sensors}
    counts: dict[str, int] = {}
    for value in plain.values():
        counts[value] = counts.get(value, 0) + 1
    return {
        address: value if counts[value] == 1 else f"{value}_{address:04x}"
        for address, value in plain.items()
    }


def node_device_id(node_id: str) -> str:
    """Device identifier of the wattd node (the receiver) itself."""
    return f"wattd_{node_id}"


def meter_device_id(node_id: str, address: int, asset_id: str | None = None) -> str:
    """Device identifier of one meter: its ``id``, else node plus radio address.

    Never the name, so renaming a meter keeps its Home Assistant device and
    history; with an ``id`` so does moving it to another coordinator. The
    ``wattd-`` prefix cannot meet a node-based ``wattd_<node>_...`` id, and
    ``.`` (allowed in an ``id``, not in a discovery topic) becomes ``_``.
    """
    if asset_id:
        return f"wattd-{asset_id.replace('.', '_')}"
    return f"wattd_{node_id}_{address:04x}"


def meter_identities(
    config: Config,
) -> tuple[dict[int, Mapping[str, str]], Mapping[str, str]]:
    """The identity fields of each configured meter's state JSON, and the rest's.

    ``node``, plus ``site`` and the meter's ``id`` when set; nothing at all
    unless the config names a fleet identity (:attr:`Config.fleet_identity`),
    so an unchanged config publishes the documents it always has.
    """
    if not config.fleet_identity:
        return {}, {}
    shared = {"node": config.mqtt.node_id}
    if config.site:
        shared["site"] = config.site
    own: dict[int, Mapping[str, str]] = {
        s.address: {**shared, "id": s.id} for s in config.sensors if s.id
    }
    return own, shared


# -- the state document ------------------------------------------------------


def state_document(
    reading: Reading,
    *,
    frame_errors: int = 0,
    identity: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON published on a meter's state topic.

    ``Reading.to_json_dict()`` plus ``kwh_total`` (Home Assistant's Energy
    dashboard wants kWh), ``frame_errors`` (corrupt frames attributed to this
    meter since wattd started) and the ``identity`` fields (``node``, ``id``,
    ``site``; see :func:`meter_identities`). ``time`` is the frame's arrival
    time, so a backlog published after an outage still carries when it was
    measured.
    """
    doc = reading.to_json_dict()
    wh = doc.get("wh_total")
    doc["kwh_total"] = None if wh is None else round(float(wh) / 1000.0, 9)
    doc["frame_errors"] = frame_errors
    if identity:
        doc.update(identity)
    return doc


def field_payloads(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, plain number)`` for each per-field topic; absent values are skipped.

    An empty retained payload would delete the topic's retained value, so a
    missing figure publishes nothing rather than an empty string.
    """
    out: list[tuple[str, str]] = []
    for key in FIELD_KEYS:
        value = doc.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out.append((key, json.dumps(value)))
    return out


# -- entities ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EntitySpec:
    """One Home Assistant entity of a device."""

    key: str
    """Stable suffix of the unique id; never change it once released."""
    name: str
    value_key: str
    """Key in the state JSON the value template reads."""
    component: str = "sensor"
    device_class: str | None = None
    state_class: str | None = None
    unit: str | None = None
    diagnostic: bool = False
    expires: bool = True
    """Whether ``expire_after`` applies (a silent meter turns unavailable)."""
    precision: int | None = None
    icon: str | None = None


_FRAME_ERRORS: Final = EntitySpec(
    key="frame_errors",
    name="Frame errors",
    value_key="frame_errors",
    state_class="total_increasing",
    diagnostic=True,
    expires=False,
    icon="mdi:alert-circle-outline",
)
"""A meter's own count and the receiver's total share one definition."""

METER_ENTITIES: Final[tuple[EntitySpec, ...]] = (
    EntitySpec(
        key="power",
        name="Power",
        value_key="watts",
        device_class="power",
        state_class="measurement",
        unit="W",
        precision=1,
    ),
    EntitySpec(
        key="energy",
        name="Energy",
        value_key="kwh_total",
        device_class="energy",
        state_class="total_increasing",
        unit="kWh",
        precision=3,
    ),
    EntitySpec(
        key="apparent_power",
        name="Apparent power",
        value_key="va",
        device_class="apparent_power",
        state_class="measurement",
        unit="VA",
        precision=1,
    ),
    EntitySpec(
        key="voltage",
        name="Voltage",
        value_key="vrms",
        device_class="voltage",
        state_class="measurement",
        unit="V",
        precision=1,
    ),
    EntitySpec(
        key="current",
        name="Current",
        value_key="irms",
        device_class="current",
        state_class="measurement",
        unit="A",
        precision=3,
    ),
    EntitySpec(
        key="power_factor",
        name="Power factor",
        value_key="pf",
        device_class="power_factor",
        state_class="measurement",
        precision=2,
    ),
    EntitySpec(
        key="rssi",
        name="Signal strength",
        value_key="rssi_dbm",
        device_class="signal_strength",
        state_class="measurement",
        unit="dBm",
        diagnostic=True,
        precision=0,
    ),
    # "Last seen" must stay readable while the meter is silent: that is when
    # it matters, so it never expires.
    EntitySpec(
        key="last_seen",
        name="Last seen",
        value_key="time",
        device_class="timestamp",
        diagnostic=True,
        expires=False,
    ),
    _FRAME_ERRORS,
)
"""Entities of every meter, all read from the meter's state JSON."""

NODE_ENTITIES: Final[tuple[EntitySpec, ...]] = (
    _FRAME_ERRORS,
    EntitySpec(
        key="mqtt_backlog",
        name="MQTT backlog",
        value_key="backlog",
        state_class="measurement",
        unit="readings",
        diagnostic=True,
        expires=False,
        icon="mdi:tray-full",
    ),
)
"""Entities of the wattd node, read from ``<base>/<node>/stats``."""


def discovery_messages(
    mqtt: MqttConfig, sensors: Sequence[SensorConfig], *, version: str
) -> dict[str, str]:
    """Every config topic this node should have, with its JSON payload.

    Payloads are serialised with sorted keys so that announcing the same config
    twice publishes identical bytes.
    """
    topics = Topics.from_config(mqtt)
    node_dev = node_device_id(mqtt.node_id)
    origin = {"name": "wattd", "sw_version": version}
    availability = [
        {
            "topic": topics.status,
            "payload_available": PAYLOAD_ONLINE,
            "payload_not_available": PAYLOAD_OFFLINE,
        }
    ]
    expire_s = expire_after_s(mqtt)
    out: dict[str, str] = {}

    node_device = {
        "identifiers": [node_dev],
        "name": f"wattd {mqtt.node_id}",
        "manufacturer": NODE_MANUFACTURER,
        "model": NODE_MODEL,
        "sw_version": version,
    }
    # The node's own connectivity: no availability block, since "offline" is
    # exactly what it must be able to show.
    status_uid = f"{node_dev}_status"
    out[topics.discovery("binary_sensor", status_uid)] = _dump(
        {
            "name": "Status",
            "unique_id": status_uid,
            "state_topic": topics.status,
            "payload_on": PAYLOAD_ONLINE,
            "payload_off": PAYLOAD_OFFLINE,
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "qos": mqtt.qos,
            "device": node_device,
            "origin": origin,
        }
    )
    for spec in NODE_ENTITIES:
        uid = f"{node_dev}_{spec.key}"
        payload = _entity(
            spec, uid, topics.stats, availability, 0, mqtt.qos, node_device, origin
        )
        out[topics.discovery(spec.component, uid)] = _dump(payload)

    slugs = sensor_slugs(sensors)
    for sensor in sensors:
        dev_id = meter_device_id(mqtt.node_id, sensor.address, sensor.id)
        device: dict[str, Any] = {
            "identifiers": [dev_id],
            "name": sensor.display_name,
            "manufacturer": METER_MANUFACTURER,
            "model": METER_MODEL,
            "sw_version": version,
            "via_device": node_dev,
        }
        if sensor.location:
            device["suggested_area"] = sensor.location
        state_topic = topics.state(slugs[sensor.address])
        for spec in METER_ENTITIES:
            uid = f"{dev_id}_{spec.key}"
            payload = _entity(
                spec, uid, state_topic, availability, expire_s, mqtt.qos, device, origin
            )
            out[topics.discovery(spec.component, uid)] = _dump(payload)
    return out


def expire_after_s(mqtt: MqttConfig) -> int:
    """The ``expire_after`` announced for meter entities (0: never expire).

    ``discovery.expire_after_s``, raised to :data:`EXPIRE_INTERVALS` aggregation
    intervals when ``aggregate_s`` is set: a meter's state then arrives only
    once per interval, and a shorter expiry would flap it to unavailable.
    """
    configured = mqtt.discovery.expire_after_s
    if configured == 0 or mqtt.aggregate_s == 0:
        return configured
    return max(configured, math.ceil(EXPIRE_INTERVALS * mqtt.aggregate_s))


def stale_discovery_topics(
    announced: Iterable[str], wanted: Iterable[str]
) -> list[str]:
    """Config topics announced before but no longer wanted, to be cleared."""
    return sorted(set(announced) - set(wanted))


def _entity(
    spec: EntitySpec,
    unique_id: str,
    state_topic: str,
    availability: list[dict[str, str]],
    expire_after_s: int,
    qos: int,
    device: Mapping[str, Any],
    origin: Mapping[str, str],
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": spec.name,
        "unique_id": unique_id,
        "state_topic": state_topic,
        # A JSON null renders as "None", which Home Assistant reads as
        # "unknown" rather than as a parse error.
        "value_template": f"{{{{ value_json.{spec.value_key} }}}}",
        "availability": availability,
        "availability_mode": "latest",
        "qos": qos,
        "device": dict(device),
        "origin": dict(origin),
    }
    if spec.device_class is not None:
        payload["device_class"] = spec.device_class
    if spec.state_class is not None:
        payload["state_class"] = spec.state_class
    if spec.unit is not None:
        payload["unit_of_measurement"] = spec.unit
    if spec.diagnostic:
        payload["entity_category"] = "diagnostic"
    if spec.expires and expire_after_s > 0:
        payload["expire_after"] = expire_after_s
    if spec.precision is not None:
        payload["suggested_display_precision"] = spec.precision
    if spec.icon is not None:
        payload["icon"] = spec.icon
    return payload


def _dump(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))
