from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from wattd.config import parse_config
from wattd.costing.cost import intervals_from_totals
from wattd.costing.fleet import (
    FleetBook,
    FleetMeter,
    MinuteTotals,
    SeriesLabels,
    SeriesMinutes,
    SeriesPoint,
    fleet_meters,
    intervals_from_minutes,
    meter_identity,
    minute_bounds,
    minute_spans,
    series_labels,
)
from wattd.costing.report.engine import GroupBy, build_report

T0 = datetime(2025, 3, 5, 10, tzinfo=UTC)

BOOK = """\
sensors:
  - {address: 4, labels: {node: hall1-b}, tariff: special}
  - {address: 9, labels: {id: A-17}, tariff: special}
  - {address: 11, id: B-2, tariff: special}
  - {address: 60001, labels: {id: hall2-a/7}, tariff: special}
  - {address: 5, name: local-only, tariff: special}
tariffs:
  default: flat
  racks: {r1: rack}
  customers: {acme: acme}
  plans:
    flat: {currency: EUR, price_per_kwh: 0.30}
    rack: {currency: EUR, price_per_kwh: 0.20}
    acme: {currency: EUR, price_per_kwh: 0.25}
    site: {currency: EUR, price_per_kwh: 0.15}
    special: {currency: EUR, price_per_kwh: 0.05}
locations:
  hall1: {pue: 1.5, tariff: site}
"""


def labels(**tags: str) -> SeriesLabels:
    return series_labels(tags)


def minutes_of(
    points: list[tuple[float, float]], *, watts: float | None = None
) -> list[MinuteTotals]:
    """Minute figures of raw ``(time_s, wh_total)`` points, as a store makes them."""
    by_minute: dict[int, list[float]] = {}
    for t, total in points:
        by_minute.setdefault(int(t // 60 * 60), []).append(total)
    return [
        MinuteTotals(
            start_s=m,
            first_wh=v[0],
            last_wh=v[-1],
            top_wh=max(v),
            points=len(v),
            max_watts=watts,
        )
        for m, v in sorted(by_minute.items())
    ]


def test_identity_is_the_id_tag_else_node_and_address() -> None:
    assert meter_identity({"id": "A-17", "node": "n1", "sensor": "3"}) == "A-17"
    assert meter_identity({"node": "hall1-a", "sensor": "1"}) == "hall1-a/1"
    assert meter_identity({"sensor": "1"}) == "1"
    assert series_labels({"__name__": "power_wh_total", "rack": "", "node": "n"}) == (
        ("node", "n"),
    )


def test_spans_are_whole_minutes_a_day_or_less_with_many_meters() -> None:
    start = T0 + timedelta(seconds=30)
    lo, hi = minute_bounds(start, start + timedelta(days=1, minutes=1))
    assert (lo, hi) == (int(T0.timestamp()), int(T0.timestamp()) + 86_400 + 120)
    assert minute_spans(lo, hi, 40) == [(lo, lo + 86_400), (lo + 86_400, hi)]
    assert len(minute_spans(lo, hi, 1_000)) == 8  # 200 minutes each
    assert len(minute_spans(lo, hi, 50_000)) == 25  # an hour each


def test_minutes_give_the_energy_of_the_raw_points() -> None:
    """Resets between and inside minutes, a gap and a missing baseline."""
    t0 = T0.timestamp()
    points: list[tuple[float, float]] = []
    total = 500.0
    for i in range(400):
        t = t0 + i * 2.08
        if 150 <= i < 250:
            continue  # silent for 3.5 minutes
        if i in {80, 301}:
            total = 0.0  # the daemon lost its count: once between, once in a minute
        total += 0.04 + (i % 7) * 0.01
        points.append((t, total))
    rows = minutes_of(points, watts=120.0)
    assert any(m.top_wh > m.last_wh for m in rows)  # a drop inside a minute
    series = labels(node="n1", sensor="1")
    got = list(
        intervals_from_minutes([], [[SeriesMinutes(labels=series, minutes=rows)]])
    )
    exact = list(
        intervals_from_totals(
            ("n1/1", datetime.fromtimestamp(t, UTC), w, None) for t, w in points
        )
    )
    assert {i.sensor for i in got} == {"n1/1"}
    # Without a point before the range only the first minute's own rise counts,
    # as the first reading of intervals_from_totals counts nothing.
    assert math.fsum(i.wh for i in got) == pytest.approx(math.fsum(i.wh for i in exact))
    assert sum(i.readings for i in got) == len(points)
    assert got[0].start == datetime.fromtimestamp(rows[0].start_s, UTC)
    after_gap = next(i for i in got if i.duration_s > 60)
    # Last point before the gap at 5:09.92, first after it at 8:40: bridged
    # from the end of minute 5 to the end of minute 8, as totals bridge it.
    assert after_gap.duration_s == 180
    assert all(i.max_watts == 120.0 for i in got)


def test_the_point_before_the_range_starts_the_first_minute() -> None:
    series = labels(node="n1", sensor="1")
    m0 = int(T0.timestamp())
    rows = [
        MinuteTotals(start_s=m0, first_wh=10.5, last_wh=11.0, top_wh=11.0, points=3)
    ]
    before = SeriesPoint(labels=series, time_s=m0 - 2.0, wh_total=10.0)
    (interval,) = intervals_from_minutes(
        [before], [[SeriesMinutes(labels=series, minutes=rows)]]
    )
    assert interval.start == T0 - timedelta(seconds=2)
    assert interval.end == T0 + timedelta(minutes=1)
    assert interval.wh == pytest.approx(1.0)


def test_spans_carry_the_counter_and_keep_meters_apart() -> None:
    m0 = int(T0.timestamp())
    a, b = labels(node="n1", sensor="1"), labels(node="n2", sensor="1")

    def span(start: int, total: float) -> list[SeriesMinutes]:
        row = MinuteTotals(
            start_s=start, first_wh=total, last_wh=total + 1, top_wh=total + 1, points=2
        )
        return [SeriesMinutes(labels=s, minutes=[row]) for s in (b, a)]

    got = list(intervals_from_minutes([], [span(m0, 0.0), span(m0 + 60, 5.0)]))
    assert [i.sensor for i in got] == ["n1/1", "n2/1", "n1/1", "n2/1"]
    first, second = got[0], got[2]
    assert second.start == T0 + timedelta(minutes=1)
    # The 4 Wh between the minutes' frames: half to each minute.
    assert (first.wh, second.wh) == pytest.approx((1.0 + 2.0, 2.0 + 1.0))


def test_latest_tags_describe_a_meter_and_changes_are_named() -> None:
    old = labels(id="A-17", node="n1", sensor="9", customer="acme")
    new = labels(id="A-17", node="n2", sensor="4", customer="acme")
    other = labels(node="n1", sensor="1", name="web-1")
    meters, notes = fleet_meters(
        [
            SeriesPoint(labels=new, time_s=200.0, wh_total=1.0),
            SeriesPoint(labels=old, time_s=100.0, wh_total=9.0),
            SeriesPoint(labels=other, time_s=150.0, wh_total=3.0),
        ]
    )
    assert list(meters) == ["A-17", "n1/1"]
    assert meters["A-17"].node == "n2"
    assert meters["n1/1"] == FleetMeter(
        key="n1/1", node="n1", address="1", name="web-1"
    )
    (note,) = notes
    assert "A-17" in note
    assert "node=n2" in note


def test_fleet_tariffs_follow_the_local_precedence() -> None:
    config = parse_config(BOOK)
    meters = {
        m.key: m
        for m in (
            FleetMeter(key="hall1-a/1", node="hall1-a", address="1", rack="r1"),
            FleetMeter(key="hall1-a/2", node="hall1-a", customer="acme", rack="r5"),
            FleetMeter(key="hall1-a/3", node="hall1-a", location="hall1"),
            FleetMeter(key="hall1-b/4", node="hall1-b", address="4", rack="r1"),
            FleetMeter(key="A-17", node="hall2-a", address="2"),
            FleetMeter(key="B-2", node="hall2-b", address="3"),
            FleetMeter(key="hall2-a/7", node="hall2-a", address="7"),
            FleetMeter(key="hall2-a/5", node="hall2-a", address="5"),
        )
    }
    book = FleetBook(config, meters)
    got = {k: book.for_sensor(k) for k in meters}
    assert {
        k: (a.tariff_source, getattr(a.tariff, "name", None)) for k, a in got.items()
    } == {
        "hall1-a/1": ("rack", "rack"),
        "hall1-a/2": ("customer", "acme"),
        "hall1-a/3": ("location", "site"),
        "hall1-b/4": ("sensor", "special"),
        "A-17": ("sensor", "special"),
        "B-2": ("sensor", "special"),  # the id field, not a label
        "hall2-a/7": ("sensor", "special"),
        "hall2-a/5": ("default", "flat"),  # the entry without node is this host's
    }
    assert got["hall1-a/3"].pue == 1.5
    assert got["hall1-a/1"].node == "hall1-a"
    assert got["hall1-a/1"].name == "hall1-a/1"
    assert list(book.addresses()) == sorted(meters)
    assert book.for_sensor("never-seen").tariff_source == "default"


def test_a_fleet_report_keeps_equal_addresses_of_two_nodes_apart() -> None:
    config = parse_config(BOOK)
    m0 = int(T0.timestamp())
    spans = []
    for node, watts in (("n1", 100.0), ("n2", 300.0)):
        rows = [
            MinuteTotals(
                start_s=m0 + 60 * i,
                first_wh=watts * i / 60,
                last_wh=watts * (i + 1) / 60,
                top_wh=watts * (i + 1) / 60,
                points=29,
            )
            for i in range(60)
        ]
        spans.append(
            SeriesMinutes(
                labels=labels(node=node, sensor="1", customer="acme"), minutes=rows
            )
        )
    meters = {
        f"{n}/1": FleetMeter(key=f"{n}/1", node=n, customer="acme")
        for n in ("n1", "n2")
    }
    end = T0 + timedelta(hours=1)
    by = {}
    groupings: tuple[GroupBy, ...] = ("sensor", "node", "customer")
    for grouping in groupings:
        report = build_report(
            config,
            intervals_from_minutes([], [spans]),
            T0,
            end,
            by=grouping,
            book=FleetBook(config, meters),
        )
        by[grouping] = {g.key: g.it_kwh for g in report.groups}
    assert by["sensor"] == pytest.approx({"n1/1": 0.1, "n2/1": 0.3})
    assert by["node"] == pytest.approx({"n1": 0.1, "n2": 0.3})
    assert by["customer"] == pytest.approx({"acme": 0.4})


def test_a_meter_with_an_id_keeps_the_energy_of_its_copy() -> None:
    from wattd.costing.fleet import DuplicateFinder, FleetMeter, SeriesHashes

    tagged = (("id", "asset-9"), ("node", "z-node"), ("sensor", "4"))
    plain = (("node", "a-node"), ("sensor", "4"))
    other = (("node", "a-node"), ("sensor", "5"))
    finder = DuplicateFinder()
    finder.add(
        [
            SeriesHashes(labels=tagged, hashes={0: 11, 60: 12, 120: 13}),
            # One minute later on a clock a little behind: still the same frames.
            SeriesHashes(labels=plain, hashes={0: 11, 120: 12, 180: 99}),
            SeriesHashes(labels=other, hashes={0: 21, 60: 22, 120: 23}),
        ]
    )
    meters = {
        m.key: m for m in (FleetMeter.from_labels(x) for x in (tagged, plain, other))
    }
    (dup,) = finder.duplicates(meters)
    assert (dup.meter, dup.duplicate) == ("asset-9", "a-node/4")
    assert dup.nodes == ("a-node", "z-node")
    assert (dup.matched_minutes, dup.minutes) == (2, 3)
    assert "asset-9" in dup.warning()
    assert "a-node, z-node" in dup.warning()
