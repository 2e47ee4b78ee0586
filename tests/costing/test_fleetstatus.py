"""The pure part of ``wattd fleet status``: nodes, stale meters, completeness."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from wattd.costing.clocks import NodeClock
from wattd.costing.fleet import Duplicate, SeriesPoint, series_labels
from wattd.costing.fleetstatus import (
    MeterMinutes,
    NodeProbe,
    Window,
    build_status,
    whole_minutes,
)

NOW = 1_800_000_000.0
TODAY = Window(name="today", start_s=int(NOW) - 600, end_s=int(NOW) - 600 + 600)


def point(node: str, sensor: int, age_s: float, **tags: str) -> SeriesPoint:
    labels = series_labels({"node": node, "sensor": str(sensor), **tags})
    return SeriesPoint(labels=labels, time_s=NOW - age_s, wh_total=1.0)


def minutes(node: str, sensor: int, count: int, **tags: str) -> MeterMinutes:
    labels = series_labels({"node": node, "sensor": str(sensor), **tags})
    return MeterMinutes(labels=labels, minutes=count)


def status(**changes: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "now_s": NOW,
        "latest": [
            point("a", 1, 2, customer="acme"),
            point("a", 2, 900, customer="acme"),
            point("b", 1, 1, customer="globex"),
            point("b", 2, 1, customer="acme"),
            point("c", 1, 400, customer="globex"),
        ],
        "probes": [
            NodeProbe(node="a", stored_s=NOW - 30, fields={"spool_depth": 4.0}),
            NodeProbe(node="a", stored_s=NOW - 90, fields={"spool_depth": 9.0}),
            NodeProbe(node="c", stored_s=NOW - 350, fields={}),
        ],
        "clocks": [NodeClock(node="a", offset_s=0.25, measured_at_s=NOW - 30)],
        "configured": ["a/1", "a/9"],
        "duplicates": [
            Duplicate(
                meter="a/1",
                duplicate="b/2",
                nodes=("a", "b"),
                matched_minutes=9,
                minutes=10,
            )
        ],
        "minutes": {
            "today": [
                minutes("a", 1, 10, customer="acme"),
                minutes("a", 2, 4, customer="acme"),
                minutes("b", 1, 10, customer="globex"),
                minutes("b", 2, 10, customer="acme"),
                minutes("c", 1, 3, customer="globex"),
            ]
        },
        "windows": [TODAY],
        "stale_after_s": 600,
        "down_after_s": 180,
    }
    inputs.update(changes)
    return build_status(**inputs).to_json_dict()


def test_nodes_are_down_past_the_threshold_with_their_latest_probe() -> None:
    nodes = {n["node"]: n for n in status()["nodes"]}
    assert {k: n["status"] for k, n in nodes.items()} == {
        "a": "up",
        "b": "up",
        "c": "down",
    }
    assert nodes["a"]["spool_depth"] == 4.0
    assert nodes["a"]["clock_offset_s"] == 0.25
    # Last seen: the later of its latest point (2 s) and probe (30 s).
    assert nodes["a"]["age_s"] == 2.0
    assert nodes["c"]["age_s"] == 350.0
    assert nodes["b"]["spool_depth"] is None


def test_stale_and_never_seen_meters() -> None:
    doc = status()
    assert [m["meter"] for m in doc["stale_meters"]] == ["a/2"]
    assert [m["meter"] for m in doc["never_seen"]] == ["a/9"]
    # The copy of a double-heard meter is never stale: it is the same meter.
    doc = status(latest=[point("a", 1, 2), point("b", 2, 900)])
    assert doc["stale_meters"] == []


def test_completeness_per_customer_counts_never_seen_and_not_the_copy() -> None:
    rows = {c["customer"]: c for c in status()["completeness"]}
    # acme: a/1 (10) and a/2 (4); b/2 is a/1's copy.
    assert rows["acme"]["minutes_with_data"] == 14
    assert rows["acme"]["minutes_expected"] == 20
    assert rows["acme"]["completeness"] == pytest.approx(0.7)
    assert rows["globex"]["minutes_with_data"] == 13
    # a/9 is configured and never seen: no minutes.
    assert rows["(unassigned)"]["meters"] == 1
    assert rows["(unassigned)"]["completeness"] == 0.0


def test_a_meter_whose_tags_changed_adds_its_series_up_to_the_window() -> None:
    doc = status(
        minutes={
            "today": [
                minutes("a", 1, 6, customer="acme"),
                minutes("a", 1, 7, customer="acme", rack="r2"),
            ]
        }
    )
    rows = {c["customer"]: c for c in doc["completeness"]}
    assert rows["acme"]["minutes_with_data"] == 10


def test_whole_minutes_cut_the_partial_ones() -> None:
    start = datetime(2026, 3, 1, 0, 0, 30, tzinfo=UTC)
    end = datetime(2026, 3, 1, 0, 10, 59, tzinfo=UTC)
    window = whole_minutes("today", start, end)
    assert window.minutes == 9
    assert window.start_s % 60 == window.end_s % 60 == 0
    empty = whole_minutes("today", end, end)
    assert empty.minutes == 0
