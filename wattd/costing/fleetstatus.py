"""Fleet status: one screen of how every node and meter of a fleet is doing.

The central store holds, besides the ``power`` points, each node's health
probe (:data:`NODE_MEASUREMENT`) and one small point per meter as the node
sees it (:data:`METER_MEASUREMENT`), both written beside the clock probe
(:mod:`wattd.costing.clocks`) at most once a minute and stamped by the store
on receipt. This module is the pure part of ``wattd fleet status``: the
field names both ends agree on, and how the rows read back become a status.

* **Nodes.** A node is last seen at its latest power point or probe,
  whichever is later; past ``down_after_s`` it is down. Its readings per
  second, spool backlog and decode errors are those of its latest probe.
* **Meters.** A meter's last point older than ``stale_after_s`` makes it
  stale; a meter named in the config (:func:`~wattd.costing.fleet.configured_identity`)
  without any point in the billing period was never seen.
* **Completeness.** Minutes with at least one point over the whole minutes of
  the window, per customer over its meters: a silent meter, a never-seen one
  included, lowers it. Minutes, not points, so ``aggregate_s`` and the
  meters' send rate do not change it. A meter reported twice (two
  coordinators, :class:`~wattd.costing.fleet.DuplicateFinder`) counts once.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from wattd.costing.fleet import MINUTE_S, FleetMeter, meter_identity

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from wattd.costing.clocks import NodeClock
    from wattd.costing.fleet import Duplicate, SeriesLabels, SeriesPoint

__all__ = [
    "METER_FIELDS",
    "METER_MEASUREMENT",
    "NODE_FIELDS",
    "NODE_MEASUREMENT",
    "Completeness",
    "FleetStatus",
    "MeterMinutes",
    "MeterState",
    "NodeProbe",
    "NodeState",
    "Window",
    "build_status",
    "whole_minutes",
]

NODE_MEASUREMENT: Final = "wattd_node"
"""One point per node and probe; VictoriaMetrics: ``wattd_node_<field>``."""
NODE_FIELDS: Final = (
    "readings_total",
    "readings_per_s",
    "frames_per_s",
    "decode_errors_total",
    "spool_depth",
    "oldest_pending_age_s",
    "sensors",
    "sensors_seen",
    "ports",
    "ports_connected",
    "uptime_s",
)
METER_MEASUREMENT: Final = "wattd_meter"
"""One point per meter the node knows and probe; ``wattd_meter_<field>``."""
METER_FIELDS: Final = (
    "frames_total",
    "readings_total",
    "bad_checksum_total",
    "last_seen_age_s",
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NodeProbe:
    """The latest health probe of one node, as the store holds it."""

    node: str
    stored_s: float
    """The store's time of receipt (epoch seconds)."""
    fields: Mapping[str, float]
    """Of :data:`NODE_FIELDS`, those the probe carried."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MeterMinutes:
    """How many minutes of a window one series had a point in."""

    labels: SeriesLabels
    minutes: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """``[start_s, end_s)`` in whole minutes, with a name for the operator."""

    name: str
    start_s: int
    end_s: int

    @property
    def minutes(self) -> int:
        """Whole minutes in the window."""
        return max(0, (self.end_s - self.start_s) // MINUTE_S)


def whole_minutes(name: str, start: datetime, end: datetime) -> Window:
    """``[start, end)`` cut to the whole minutes inside it."""
    lo = math.ceil(start.timestamp() / MINUTE_S) * MINUTE_S
    hi = math.floor(end.timestamp() / MINUTE_S) * MINUTE_S
    return Window(name=name, start_s=lo, end_s=max(lo, hi))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NodeState:
    """One node's line on the status screen."""

    node: str
    last_seen_s: float | None
    age_s: float | None
    down: bool
    readings_per_s: float | None
    clock_offset_s: float | None
    spool_depth: float | None
    oldest_pending_age_s: float | None
    decode_errors_total: float | None

    def to_json_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "node": self.node,
            "status": "down" if self.down else "up",
            "last_seen": _iso(self.last_seen_s),
            "age_s": _round(self.age_s, 1),
            "readings_per_s": _round(self.readings_per_s, 2),
            "clock_offset_s": _round(self.clock_offset_s, 3),
            "spool_depth": self.spool_depth,
            "oldest_pending_age_s": _round(self.oldest_pending_age_s, 1),
            "decode_errors_total": self.decode_errors_total,
        }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MeterState:
    """A meter that is stale or was never seen."""

    meter: str
    node: str | None
    customer: str | None
    last_seen_s: float | None
    age_s: float | None

    def to_json_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "meter": self.meter,
            "node": self.node,
            "customer": self.customer,
            "last_seen": _iso(self.last_seen_s),
            "age_s": _round(self.age_s, 1),
        }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Completeness:
    """One customer's share of minutes with data in one window."""

    customer: str
    window: str
    meters: int
    minutes_with_data: int
    minutes_expected: int

    @property
    def ratio(self) -> float | None:
        """Minutes with data over minutes expected; None for an empty window."""
        if self.minutes_expected <= 0:
            return None
        return self.minutes_with_data / self.minutes_expected

    def to_json_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "customer": self.customer,
            "window": self.window,
            "meters": self.meters,
            "minutes_with_data": self.minutes_with_data,
            "minutes_expected": self.minutes_expected,
            "completeness": _round(self.ratio, 4),
        }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FleetStatus:
    """Everything ``wattd fleet status`` shows."""

    now_s: float
    nodes: tuple[NodeState, ...]
    stale: tuple[MeterState, ...]
    never_seen: tuple[MeterState, ...]
    duplicates: tuple[Duplicate, ...]
    completeness: tuple[Completeness, ...]
    windows: tuple[Window, ...]

    def to_json_dict(self) -> dict[str, object]:
        """JSON-ready form of the whole screen."""
        return {
            "generated": _iso(self.now_s),
            "windows": [
                {"name": w.name, "start": _iso(w.start_s), "end": _iso(w.end_s)}
                for w in self.windows
            ],
            "nodes": [n.to_json_dict() for n in self.nodes],
            "stale_meters": [m.to_json_dict() for m in self.stale],
            "never_seen": [m.to_json_dict() for m in self.never_seen],
            "duplicates": [d.to_json_dict() for d in self.duplicates],
            "completeness": [c.to_json_dict() for c in self.completeness],
        }


def build_status(
    *,
    now_s: float,
    latest: Iterable[SeriesPoint],
    probes: Iterable[NodeProbe],
    clocks: Iterable[NodeClock],
    configured: Iterable[str],
    duplicates: Sequence[Duplicate],
    minutes: Mapping[str, Iterable[MeterMinutes]],
    windows: Sequence[Window],
    stale_after_s: float,
    down_after_s: float,
) -> FleetStatus:
    """The status from what the store holds.

    ``latest`` is the last power point of every series in the longest window;
    ``minutes`` maps each window's name to its series' minutes with data.
    """
    left_out = {d.duplicate for d in duplicates}
    meters: dict[str, tuple[float, FleetMeter]] = {}
    for point in latest:
        meter = FleetMeter.from_labels(point.labels)
        held = meters.get(meter.key)
        if held is None or point.time_s > held[0]:
            meters[meter.key] = (point.time_s, meter)
    nodes = _nodes(now_s, meters.values(), probes, clocks, down_after_s)
    stale = tuple(
        MeterState(
            meter=key,
            node=meter.node,
            customer=meter.customer,
            last_seen_s=seen,
            age_s=now_s - seen,
        )
        for key, (seen, meter) in sorted(meters.items())
        if key not in left_out and now_s - seen > stale_after_s
    )
    wanted = sorted(set(configured) - set(meters))
    never = tuple(
        MeterState(meter=key, node=None, customer=None, last_seen_s=None, age_s=None)
        for key in wanted
    )
    customers = {
        key: meter.customer or "(unassigned)"
        for key, (_, meter) in meters.items()
        if key not in left_out
    }
    customers |= dict.fromkeys(wanted, "(unassigned)")
    rows = [
        c
        for window in windows
        for c in _completeness(window, customers, minutes.get(window.name, ()))
    ]
    return FleetStatus(
        now_s=now_s,
        nodes=nodes,
        stale=stale,
        never_seen=never,
        duplicates=tuple(duplicates),
        completeness=tuple(sorted(rows, key=lambda c: (c.customer, c.window))),
        windows=tuple(windows),
    )


def _nodes(
    now_s: float,
    meters: Iterable[tuple[float, FleetMeter]],
    probes: Iterable[NodeProbe],
    clocks: Iterable[NodeClock],
    down_after_s: float,
) -> tuple[NodeState, ...]:
    seen: dict[str, float] = {}
    for time_s, meter in meters:
        if meter.node:
            seen[meter.node] = max(seen.get(meter.node, time_s), time_s)
    latest: dict[str, NodeProbe] = {}
    for probe in probes:
        held = latest.get(probe.node)
        if held is None or probe.stored_s > held.stored_s:
            latest[probe.node] = probe
        seen[probe.node] = max(seen.get(probe.node, probe.stored_s), probe.stored_s)
    offsets = {c.node: c.offset_s for c in clocks}
    out = []
    for node in sorted(set(seen) | set(offsets)):
        last = seen.get(node)
        age = None if last is None else now_s - last
        fields = latest[node].fields if node in latest else {}
        out.append(
            NodeState(
                node=node,
                last_seen_s=last,
                age_s=age,
                down=age is None or age > down_after_s,
                readings_per_s=fields.get("readings_per_s"),
                clock_offset_s=offsets.get(node),
                spool_depth=fields.get("spool_depth"),
                oldest_pending_age_s=fields.get("oldest_pending_age_s"),
                decode_errors_total=fields.get("decode_errors_total"),
            )
        )
    return tuple(out)


def _completeness(
    window: Window, customers: Mapping[str, str], rows: Iterable[MeterMinutes]
) -> list[Completeness]:
    per_meter: dict[str, int] = {}
    for row in rows:
        key = meter_identity(dict(row.labels))
        if key in customers:
            # A meter whose tags changed has several series, one after the
            # other: they overlap at most in the minute of the change.
            per_meter[key] = per_meter.get(key, 0) + row.minutes
    by_customer: dict[str, list[str]] = {}
    for key, customer in customers.items():
        by_customer.setdefault(customer, []).append(key)
    return [
        Completeness(
            customer=customer,
            window=window.name,
            meters=len(keys),
            minutes_with_data=sum(
                min(per_meter.get(k, 0), window.minutes) for k in keys
            ),
            minutes_expected=len(keys) * window.minutes,
        )
        for customer, keys in by_customer.items()
    ]


def _iso(epoch_s: float | None) -> str | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC).isoformat()


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
