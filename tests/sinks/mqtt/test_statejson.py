"""The state JSON written by template is byte for byte what json.dumps writes."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from wattd.core.readings import Flag, Reading
from wattd.sinks.mqtt.hass import state_document
from wattd.sinks.mqtt.session import _routed_sensor
from wattd.sinks.mqtt.statejson import StateEncoder, json_bytes

T0 = datetime(2026, 1, 1, tzinfo=UTC)

AWKWARD_TEXT = (
    "Desk lamp",
    'say "hi"',
    "back\\slash",
    "Küche ☕ 電気",
    "tab\there\nnewline\x00nul\x7f",
    "emoji 🔌",
    "",
)
AWKWARD_FLOATS = (
    0.0,
    -0.0,
    1e-9,
    123456789.123456789,
    1e22,
    -3.5,
    math.nan,
    math.inf,
    -math.inf,
    2.675,
    0.1 + 0.2,
)


def random_reading(rng: random.Random, i: int) -> Reading:
    def number() -> float:
        if rng.random() < 0.3:
            return rng.choice(AWKWARD_FLOATS)
        return rng.uniform(-5000, 5000)

    def maybe() -> float | None:
        return None if rng.random() < 0.2 else number()

    labels = (
        {}
        if rng.random() < 0.4
        else {rng.choice(AWKWARD_TEXT) or "k": rng.choice(AWKWARD_TEXT) for _ in "ab"}
    )
    priced = rng.random() < 0.5
    return Reading(
        sensor=rng.randrange(1, 70_000),
        name=rng.choice(AWKWARD_TEXT),
        time=T0 + timedelta(microseconds=rng.randrange(10**13)),
        monotonic_s=float(i),
        watts=number(),
        va=number(),
        vrms=number(),
        irms=number(),
        power_factor=maybe(),
        wh_total=number(),
        wh_delta=0.0,
        rssi_dbm=None if rng.random() < 0.2 else rng.randrange(-100, 0),
        flags=frozenset(rng.sample(list(Flag), rng.randrange(4))),
        sample_interval_ms=maybe(),
        gap_s=maybe(),
        current_zero_drift_counts=maybe(),
        labels=labels,
        price_band=rng.choice(("peak", "nuit ☾", None)) if priced else None,
        price_per_kwh=number() if priced else None,
        currency=rng.choice(("EUR", "$", None)) if priced else None,
        cost_per_hour=maybe() if priced else None,
        cost_today=maybe() if priced else None,
    )


def test_the_template_writes_what_json_dumps_writes_for_many_readings() -> None:
    rng = random.Random(20261202)
    encoder = StateEncoder()
    identities: list[dict[str, str] | None] = [
        None,
        {},
        {"node": "pi4"},
        {"node": "pi ☃", "site": 'dc "1"', "id": "rack-1.a"},
    ]
    for i in range(3_000):
        r = random_reading(rng, i)
        identity = rng.choice(identities)
        errors = rng.randrange(0, 10**6)
        expected = json_bytes(state_document(r, frame_errors=errors, identity=identity))
        assert encoder.encode(r, frame_errors=errors, identity=identity) == expected


def test_a_meter_seen_again_with_new_name_labels_or_identity_is_rewritten() -> None:
    encoder = StateEncoder()
    base: dict[str, Any] = {
        "sensor": 7,
        "time": T0,
        "monotonic_s": 0.0,
        "watts": 1.0,
        "va": 1.0,
        "vrms": 230.0,
        "irms": 0.01,
        "power_factor": 1.0,
        "wh_total": 5.0,
        "wh_delta": 0.0,
        "rssi_dbm": -40,
    }
    cases = [
        (Reading(**base, name="a", labels={"x": "1", "y": "2"}), None),
        (Reading(**base, name="b", labels={"x": "1", "y": "2"}), None),
        # Equal labels in another order: JSON keeps the order, so must the cache.
        (Reading(**base, name="b", labels={"y": "2", "x": "1"}), None),
        (Reading(**base, name="b", labels={"y": "2", "x": "1"}), {"node": "n1"}),
        (Reading(**base, name="b", labels={"y": "2", "x": "1"}), {"node": "n2"}),
    ]
    for r, identity in cases:
        expected = json_bytes(state_document(r, identity=identity))
        assert encoder.encode(r, identity=identity) == expected


@pytest.mark.parametrize("key", ["name", "frame_errors", "labels"])
def test_an_identity_key_the_document_has_takes_the_dict_path(key: str) -> None:
    r = random_reading(random.Random(1), 0)
    identity = {key: "override"}
    expected = json_bytes(state_document(r, identity=identity))
    assert StateEncoder().encode(r, identity=identity) == expected


def test_the_session_routes_a_state_document_by_its_start_or_not_at_all() -> None:
    rng = random.Random(7)
    encoder = StateEncoder()
    for i in range(500):
        r = random_reading(rng, i)
        payload = encoder.encode(r)
        assert _routed_sensor(payload) == r.sensor
        # A row cut short is left to the full parse, which refuses it.
        assert _routed_sensor(payload[:-1]) is None
    assert _routed_sensor(b'{"sensor":1,"time":"x","name":"a"}') is None
    assert _routed_sensor(b"not json") is None
