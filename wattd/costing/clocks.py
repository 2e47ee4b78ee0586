"""Node clocks in a fleet, seen against the central store's receive time.

Readings are stamped with each host's wall clock at arrival, so a fleet bill
depends on the hosts' clocks. After a delivered batch (at most once a minute)
each host's InfluxDB sink writes one :data:`CLOCK_MEASUREMENT` point WITHOUT a
timestamp, whose field :data:`CLOCK_FIELD` is the host's wall clock in epoch
milliseconds taken just before the request. VictoriaMetrics and InfluxDB stamp
such a point with their own receive time, so ``sent_ms`` minus that time is
the host's offset, less the request's transit time (milliseconds on a LAN).
This module is the pure part; :mod:`wattd.clients.tsdb` reads the probes.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "CLOCK_FIELD",
    "CLOCK_MEASUREMENT",
    "CLOCK_TOLERANCE_S",
    "ClockProbe",
    "NodeClock",
    "clock_warning",
    "node_clocks",
]

CLOCK_MEASUREMENT: Final = "wattd_clock"
"""Tag ``node`` (and ``site`` when set); ``wattd_clock_sent_ms`` in VictoriaMetrics."""
CLOCK_FIELD: Final = "sent_ms"
CLOCK_TOLERANCE_S: Final = 1.0
"""A node whose clock is further off than this is named in a warning."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ClockProbe:
    """A node's clock probe: the node's time at sending, the store's at receipt."""

    node: str
    sent_ms: float
    stored_s: float


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NodeClock:
    """A node's clock offset (positive: ahead) against the store's; None: unseen."""

    node: str
    offset_s: float | None = None
    measured_at_s: float | None = None

    def to_json_dict(self) -> dict[str, object]:
        """JSON-ready form, for the report's ``clocks`` list."""
        if self.offset_s is None or self.measured_at_s is None:
            at, offset, status = None, None, "clock not measured"
        else:
            at = datetime.fromtimestamp(self.measured_at_s, UTC).isoformat()
            offset = round(self.offset_s, 3)
            status = "off" if abs(self.offset_s) > CLOCK_TOLERANCE_S else "ok"
        return {
            "node": self.node,
            "offset_s": offset,
            "measured_at": at,
            "status": status,
        }


def node_clocks(probes: Iterable[ClockProbe], nodes: Iterable[str]) -> list[NodeClock]:
    """Every node's offset by its latest probe, with ``nodes`` that have none."""
    clocks = {node: NodeClock(node=node) for node in nodes}
    for p in sorted(probes, key=lambda probe: probe.stored_s):
        offset_s = p.sent_ms / 1000 - p.stored_s
        clocks[p.node] = NodeClock(
            node=p.node, offset_s=offset_s, measured_at_s=p.stored_s
        )
    return [clocks[node] for node in sorted(clocks)]


def clock_warning(clocks: Iterable[NodeClock]) -> str | None:
    """One line naming every node more than a second off, or None."""
    off = [
        f"{c.node} ({c.offset_s:+.1f} s)"
        for c in clocks
        if c.offset_s is not None and abs(c.offset_s) > CLOCK_TOLERANCE_S
    ]
    if not off:
        return None
    return (
        f"clock of node(s) {', '.join(off)} is more than {CLOCK_TOLERANCE_S:g} s off"
        " the central store's; readings carry their host's time: run chrony there"
    )
