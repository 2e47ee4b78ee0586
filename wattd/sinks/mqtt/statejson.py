"""The state JSON of a reading, written straight to text instead of through a dict.

:func:`~wattd.sinks.mqtt.hass.state_document` defines the document; the sink
used to build that dict for every reading and run it through
:func:`json.dumps`, which sets up a new encoder on each call. A
:class:`StateEncoder` writes the same bytes with one f-string: the keys are
fixed, the numbers go through the same rounding, and what is the same for
every reading of a meter (its name, labels and identity, already escaped) is
kept per meter. The rounding is most of what remains.

The output is byte for byte what ``json_bytes(state_document(...))`` gives
(compact separators, ``ensure_ascii``); ``tests/sinks/mqtt/test_statejson.py``
compares the two over many readings. Anything the template does not cover
(an identity key that the document already has) takes the dict path.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Final, TypeAlias

from wattd.core.readings import round_finite
from wattd.sinks.mqtt.hass import state_document

if TYPE_CHECKING:
    from collections.abc import Mapping

    from wattd.core.readings import Flag, Reading

__all__ = ["StateEncoder", "json_bytes"]

_DOCUMENT_KEYS: Final = frozenset(
    {
        "time", "sensor", "name", "watts", "va", "vrms", "irms", "pf", "wh_total",
        "rssi_dbm", "flags", "sample_interval_ms", "gap_s", "zero_drift_counts",
        "labels", "price_band", "price_per_kwh", "currency", "cost_per_hour",
        "cost_today", "kwh_total", "frame_errors",
    }
)  # fmt: skip
"""Keys of the state document before its identity fields."""
CACHE_SIZE: Final = 4_096
"""Meters whose fixed parts are kept; the cache starts over beyond that."""
_FLOAT_NAMES: Final = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def json_bytes(doc: object) -> bytes:
    """``doc`` as compact JSON."""
    return json.dumps(doc, separators=(",", ":")).encode()


def _number(value: object) -> str:
    """A JSON number (or null) exactly as :func:`json.dumps` writes it."""
    if value is None:
        return "null"
    if value.__class__ is float:
        text = float.__repr__(value)
        # json.dumps spells the non-finite values its own way.
        return _FLOAT_NAMES.get(text, text)
    if value.__class__ is int:
        return int.__repr__(value)
    return json.dumps(value)


def _string(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


def _same(kept: Mapping[str, str] | None, given: Mapping[str, str] | None) -> bool:
    """The same mapping, or equal in content *and order* (the JSON keeps order)."""
    if kept is given:
        return True
    if kept is None or given is None:
        return False
    return list(kept.items()) == list(given.items())


_MeterParts: TypeAlias = tuple[
    str, "Mapping[str, str]", "Mapping[str, str] | None", str, str, str
]


class StateEncoder:
    """Writes state documents as bytes, keeping each meter's fixed parts."""

    def __init__(self) -> None:
        self._meters: dict[int, _MeterParts] = {}
        """Per meter: the name, labels and identity the parts were built for,
        then ``"sensor":N,"name":"..."``, the labels object (or "") and the
        identity's members."""
        self._flags: dict[frozenset[Flag], str] = {}

    def encode(
        self,
        reading: Reading,
        *,
        frame_errors: int = 0,
        identity: Mapping[str, str] | None = None,
    ) -> bytes:
        """``json_bytes(state_document(reading, ...))``, written directly."""
        parts = self._parts(reading, identity)
        if parts is None:
            return json_bytes(
                state_document(reading, frame_errors=frame_errors, identity=identity)
            )
        head, labels, members = parts
        r = reading
        # Rounded figures are finite or None, and repr() of a float or int is
        # what json.dumps writes, so only None needs spelling out here.
        watts = round_finite(r.watts, 3)
        va = round_finite(r.va, 3)
        vrms = round_finite(r.vrms, 3)
        irms = round_finite(r.irms, 5)
        pf = round_finite(r.power_factor, 4)
        wh = round_finite(r.wh_total, 6)
        kwh = None if wh is None else round(float(wh) / 1000.0, 9)
        rssi = r.rssi_dbm
        optional = ""
        if r.sample_interval_ms is not None:
            interval = round_finite(r.sample_interval_ms, 4)
            optional += f',"sample_interval_ms":{_number(interval)}'
        if r.gap_s is not None:
            optional += f',"gap_s":{_number(round_finite(r.gap_s, 3))}'
        if r.current_zero_drift_counts is not None:
            drift = round_finite(r.current_zero_drift_counts, 3)
            optional += f',"zero_drift_counts":{_number(drift)}'
        if labels:
            optional += f',"labels":{labels}'
        if r.price_per_kwh is not None:
            optional += (
                f',"price_band":{_string(r.price_band)}'
                f',"price_per_kwh":{_number(r.price_per_kwh)}'
                f',"currency":{_string(r.currency)}'
                f',"cost_per_hour":{_number(round_finite(r.cost_per_hour, 6))}'
                f',"cost_today":{_number(round_finite(r.cost_today, 6))}'
            )
        text = (
            f'{{"time":"{r.time.isoformat().replace("+00:00", "Z")}",{head}'
            f',"watts":{"null" if watts is None else repr(watts)}'
            f',"va":{"null" if va is None else repr(va)}'
            f',"vrms":{"null" if vrms is None else repr(vrms)}'
            f',"irms":{"null" if irms is None else repr(irms)}'
            f',"pf":{"null" if pf is None else repr(pf)}'
            f',"wh_total":{"null" if wh is None else repr(wh)}'
            f',"rssi_dbm":{"null" if rssi is None else repr(rssi)}'
            f',"flags":{self._flag_list(r.flags)}{optional}'
            f',"kwh_total":{"null" if kwh is None else repr(kwh)}'
            f',"frame_errors":{frame_errors!r}{members}}}'
        )
        return text.encode()

    def _parts(
        self, reading: Reading, identity: Mapping[str, str] | None
    ) -> tuple[str, str, str] | None:
        """The meter's escaped fixed parts, or None if the template cannot say it."""
        labels = reading.labels
        hit = self._meters.get(reading.sensor)
        # Identity tests first: a meter's readings share one labels mapping and
        # one identity mapping, so a hit allocates and compares nothing.
        if (
            hit is not None
            and hit[0] == reading.name
            and _same(hit[1], labels)
            and _same(hit[2], identity)
        ):
            return hit[3], hit[4], hit[5]
        if identity and not _DOCUMENT_KEYS.isdisjoint(identity):
            return None
        if len(self._meters) >= CACHE_SIZE:
            self._meters.clear()
        head = f'"sensor":{_number(reading.sensor)},"name":{_string(reading.name)}'
        labels_text = json.dumps(dict(labels), separators=(",", ":")) if labels else ""
        members = "".join(
            f",{encode_basestring_ascii(k)}:{json.dumps(v)}"
            for k, v in (identity or {}).items()
        )
        self._meters[reading.sensor] = (
            reading.name,
            labels,
            identity,
            head,
            labels_text,
            members,
        )
        return head, labels_text, members

    def _flag_list(self, flags: frozenset[Flag]) -> str:
        text = self._flags.get(flags)
        if text is None:
            if len(self._flags) >= CACHE_SIZE:
                self._flags.clear()
            text = (
                "[" + ",".join(encode_basestring_ascii(f) for f in sorted(flags)) + "]"
            )
            self._flags[flags] = text
        return text
