"""Fleet reports: the meters of many wattd hosts, read back from a central store.

Each host writes its readings as line protocol (tags ``node``, ``sensor``,
``name`` and the meter's labels; field ``wh_total``) to one time-series store.
A fleet report reads them back at one-minute resolution and prices them with
the engine of the local report. This module is the pure part: who a meter is,
which tariff it pays, and how minute figures of its energy counter become
:class:`~wattd.costing.cost.EnergyInterval` values. The HTTP readers are in
:mod:`wattd.clients.tsdb`.

* **Identity.** A point's ``id`` tag if it has one (a fleet-unique asset tag),
  else ``node/sensor``: address 1 on forty hosts is forty meters.
* **Series and meters.** The store keeps one series per tag set. A meter whose
  tags changed within the range (renamed, moved to another rack or host) has
  several. Each keeps its own counter, and the meter's groups and tariff come
  from the tags of its latest point, as a local report applies today's config.
* **Minutes into intervals.** Per series and clock minute the store gives the
  first, last and highest ``wh_total`` and the number of points. A minute's
  energy is the rise within it, plus the rise from the previous minute's last
  total to its first: that step straddles the edge between two minutes, so
  each gets half of it (the frames' own times are not read). A total that went
  down counts from zero (:func:`~wattd.costing.cost.counter_rise`); a drop
  inside the minute (its highest total above its last) keeps the part before
  the drop too. After a gap the interval runs from the end of the series'
  previous minute with data, and takes the whole step, so the gap is bridged
  as :func:`~wattd.costing.cost.intervals_from_totals` bridges it. The
  series' last point before the range (:data:`BASELINE_S`) is where its first
  minute starts from, so energy that crosses the range's start is shared out
  by time like any other interval's.
* **One meter, two coordinators.** Two coordinators on one channel and PAN ID
  both hear every frame of a meter in range, and both nodes write its energy.
  Points written with ``influxdb.frame_hash`` carry a hash of their frame's
  samples; per series and minute the store gives the last one. Two meters
  whose hashes match (in the same or a neighbouring minute, for clocks a
  little apart) in more than half of either's minutes are one meter
  (:class:`DuplicateFinder`): the one with an ``id``, else the lexically
  first node, keeps its energy, and the other's is left out.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, TypeAlias

from wattd.costing.cost import EnergyInterval, counter_rise
from wattd.costing.tariff import Assignment, MeterKey, TariffBook

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    from wattd.config import Config, SensorConfig

__all__ = [
    "BASELINE_S",
    "DUPLICATE_SHARE",
    "MINUTE_S",
    "Duplicate",
    "DuplicateFinder",
    "FleetBook",
    "FleetMeter",
    "MinuteTotals",
    "SeriesHashes",
    "SeriesLabels",
    "SeriesMinutes",
    "SeriesPoint",
    "configured_identity",
    "fleet_meters",
    "intervals_from_minutes",
    "meter_identity",
    "minute_bounds",
    "minute_spans",
    "series_labels",
    "without_duplicates",
]

MINUTE_S: Final = 60
BASELINE_S: Final = 3600
"""How far before the range the last point of a series is looked for. The
daemon integrates no silence longer than ``energy.max_gap_s`` (an hour at
most), so the counter of a meter silent for longer did not move meanwhile."""
MINUTES_PER_HOUR: Final = 60
MINUTES_PER_DAY: Final = 1440
DUPLICATE_SHARE: Final = 0.5
"""Two meters are one when more than this share of one's minutes with a frame
hash match the other's hashes."""
ROWS_PER_SPAN: Final = 200_000
"""Minute rows read from the store at once (a day of about 140 meters): what
bounds a fleet report's memory, whatever the number of meters."""

SeriesLabels: TypeAlias = tuple[tuple[str, str], ...]
"""A series' tags, sorted and without empty values; hashable, so it keys a series."""


def series_labels(tags: Mapping[str, str]) -> SeriesLabels:
    """The labels of a series from its tags as a store returns them.

    InfluxDB reports a tag the series lacks as ``""``, and VictoriaMetrics
    adds the series name as ``__name__``; neither is a tag of the point.
    """
    return tuple(sorted((k, v) for k, v in tags.items() if v and k != "__name__"))


def meter_identity(tags: Mapping[str, str]) -> str:
    """A meter's fleet identity: its ``id`` tag, else ``node/sensor``.

    Points of a host that sets no node name carry only the address.
    """
    asset = tags.get("id")
    if asset:
        return asset
    address = tags.get("sensor") or "?"
    node = tags.get("node")
    return f"{node}/{address}" if node else address


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MinuteTotals:
    """One series' energy counter over the minute ``[start_s, start_s + 60)``."""

    start_s: int
    """Epoch seconds, a whole minute."""
    first_wh: float
    last_wh: float
    top_wh: float
    """The highest total of the minute; above ``last_wh`` when it dropped."""
    points: int
    max_watts: float | None = None

    @property
    def inside_wh(self) -> float:
        """Energy from the minute's first point to its last."""
        if self.last_wh >= self.top_wh:
            return counter_rise(self.first_wh, self.last_wh)
        return (self.top_wh - self.first_wh) + self.last_wh


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SeriesMinutes:
    """The minutes with data of one series, in time order."""

    labels: SeriesLabels
    minutes: Sequence[MinuteTotals]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SeriesPoint:
    """The last point of one series within some span."""

    labels: SeriesLabels
    time_s: float
    wh_total: float


def minute_bounds(start: datetime, end: datetime) -> tuple[int, int]:
    """``[start, end)`` widened to whole minutes, in epoch seconds.

    The engine cuts the parts of the minutes that stick out.
    """
    lo = math.floor(start.timestamp() / MINUTE_S) * MINUTE_S
    hi = math.ceil(end.timestamp() / MINUTE_S) * MINUTE_S
    return lo, hi


def minute_spans(lo: int, hi: int, meters: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` (whole minutes) cut into the spans a report reads at once.

    A day at a time, or less when so many meters would make a day's minutes
    more than :data:`ROWS_PER_SPAN`, but never under an hour.
    """
    minutes = ROWS_PER_SPAN // max(1, meters)
    step = MINUTE_S * max(MINUTES_PER_HOUR, min(MINUTES_PER_DAY, minutes))
    return [(a, min(a + step, hi)) for a in range(lo, hi, step)]


# -- meters and their tariffs ---------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FleetMeter:
    """What the points of one meter say about it."""

    key: str
    """The fleet identity (:func:`meter_identity`)."""
    asset: str | None = None
    """The ``id`` tag, if the meter has one."""
    node: str | None = None
    address: str | None = None
    name: str | None = None
    rack: str | None = None
    customer: str | None = None
    location: str | None = None

    @classmethod
    def from_labels(cls, labels: SeriesLabels) -> FleetMeter:
        """The meter a series belongs to."""
        tags = dict(labels)
        return cls(
            key=meter_identity(tags),
            asset=tags.get("id") or None,
            node=tags.get("node"),
            address=tags.get("sensor"),
            name=tags.get("name"),
            rack=tags.get("rack"),
            customer=tags.get("customer"),
            location=tags.get("location"),
        )


def fleet_meters(
    latest: Iterable[SeriesPoint],
) -> tuple[dict[str, FleetMeter], list[str]]:
    """Meters by identity, each as its latest point describes it.

    ``latest`` holds the last point of every series in the range. The notes
    name meters whose groups changed within the range, since all their
    energy goes to the groups they have now.
    """
    best: dict[str, tuple[float, FleetMeter]] = {}
    variants: dict[str, set[FleetMeter]] = {}
    for point in latest:
        meter = FleetMeter.from_labels(point.labels)
        variants.setdefault(meter.key, set()).add(meter)
        held = best.get(meter.key)
        if held is None or point.time_s > held[0]:
            best[meter.key] = (point.time_s, meter)
    meters = {key: best[key][1] for key in sorted(best)}
    notes = []
    for key, meter in meters.items():
        groups = {(m.node, m.rack, m.customer, m.location) for m in variants[key]}
        if len(groups) > 1:
            now = ", ".join(
                f"{label}={value}"
                for label, value in (
                    ("node", meter.node),
                    ("rack", meter.rack),
                    ("customer", meter.customer),
                    ("location", meter.location),
                )
                if value
            )
            notes.append(
                f"meter {key} changed node, rack, customer or location within the"
                f" range; all its energy is reported as its latest points say"
                f" ({now or 'no groups'})"
            )
    return meters, notes


def configured_identity(sensor: SensorConfig) -> str | None:
    """The fleet meter a ``sensors:`` entry stands for, if it names one.

    Its ``id`` (the field, or a label of that name: either makes a host tag
    the meter's points with ``id``), else its ``node`` label with its
    address. An entry with neither describes a sensor of this host only.
    """
    asset = sensor.id or sensor.labels.get("id")
    if asset:
        return asset
    node = sensor.labels.get("node")
    return f"{node}/{sensor.address}" if node else None


class FleetBook(TariffBook):
    """Groups and tariffs of fleet meters, keyed by identity.

    Groups come from the meters' tags. Tariffs follow the local precedence
    over the config's ``tariffs:`` and ``locations:``; a ``sensors:`` entry
    that names a meter (:func:`configured_identity`) may set its own tariff.
    """

    def __init__(self, config: Config, meters: Mapping[str, FleetMeter]) -> None:
        super().__init__(config)
        self._meters = dict(meters)
        self._own_tariffs = {
            key: sensor.tariff
            for sensor in config.sensors
            if sensor.tariff and (key := configured_identity(sensor))
        }

    def addresses(self) -> Sequence[MeterKey]:
        """Identities of every meter with points in the range."""
        return sorted(self._meters)

    def _resolve(self, key: MeterKey) -> Assignment:
        meter = self._meters.get(str(key)) or FleetMeter(key=str(key))
        return self.assign(
            meter.key,
            meter.key,
            rack=meter.rack,
            customer=meter.customer,
            location=meter.location,
            node=meter.node,
            tariff=self._own_tariffs.get(meter.key),
        )


# -- minutes into intervals -----------------------------------------------------


def intervals_from_minutes(
    baseline: Iterable[SeriesPoint],
    spans: Iterable[Iterable[SeriesMinutes]],
) -> Iterator[EnergyInterval]:
    """Energy intervals keyed by fleet identity, span after span.

    ``baseline`` is each series' last point before the first span; ``spans``
    yields the series' minutes of one span after another, so only one span
    is held at a time. Within a span a meter's series come in time order.
    """
    last = {p.labels: (p.time_s, p.wh_total) for p in baseline}
    held: dict[SeriesLabels, _Held] = {}
    identities: dict[SeriesLabels, str] = {}
    for span in spans:
        ordered = []
        for series in span:
            if not series.minutes:
                continue
            key = identities.get(series.labels)
            if key is None:
                key = identities[series.labels] = meter_identity(dict(series.labels))
            ordered.append((key, series.minutes[0].start_s, series))
        ordered.sort(key=lambda item: (item[0], item[1]))
        present = {series.labels for _, _, series in ordered}
        for labels in [labels for labels in held if labels not in present]:
            yield held.pop(labels).interval()
        for key, _, series in ordered:
            yield from _series_intervals(key, series, last, held)
    for pending in held.values():
        yield pending.interval()


@dataclasses.dataclass(slots=True, kw_only=True)
class _Held:
    """A series' latest minute, kept until the next shows its share of the step."""

    key: str
    start_s: float
    end_s: float
    wh: float
    points: int
    max_watts: float | None

    def interval(self) -> EnergyInterval:
        return EnergyInterval(
            sensor=self.key,
            start=datetime.fromtimestamp(self.start_s, UTC),
            end=datetime.fromtimestamp(self.end_s, UTC),
            wh=self.wh,
            max_watts=self.max_watts,
            readings=float(self.points),
        )


def _series_intervals(
    key: str,
    series: SeriesMinutes,
    last: dict[SeriesLabels, tuple[float, float]],
    held: dict[SeriesLabels, _Held],
) -> Iterator[EnergyInterval]:
    previous = last.get(series.labels)
    pending = held.pop(series.labels, None)
    for minute in series.minutes:
        start_s = float(minute.start_s)
        wh = minute.inside_wh
        if previous is not None:
            step = counter_rise(previous[1], minute.first_wh)
            if pending is not None and pending.end_s == start_s:
                # The step from one minute's last frame to the next one's first
                # straddles their edge; without the frames' times, half goes
                # to each side.
                pending.wh += step / 2
                wh += step / 2
            else:
                start_s = previous[0]  # a gap, or the point before the range
                wh += step
        if pending is not None:
            yield pending.interval()
        end_s = float(minute.start_s + MINUTE_S)
        pending = _Held(
            key=key,
            start_s=start_s,
            end_s=end_s,
            wh=wh,
            points=minute.points,
            max_watts=minute.max_watts,
        )
        previous = (end_s, minute.last_wh)
    if previous is not None:
        last[series.labels] = previous
    if pending is not None:
        held[series.labels] = pending


# -- one meter heard by two coordinators ------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SeriesHashes:
    """The last frame hash of one series per minute with one."""

    labels: SeriesLabels
    hashes: Mapping[int, int]
    """Minute start (epoch seconds) to the hash of its last frame."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Duplicate:
    """A meter whose frames another fleet identity also reported."""

    meter: str
    """The identity that keeps the energy."""
    duplicate: str
    """The identity whose energy is left out: the same frames."""
    nodes: tuple[str, ...]
    """The nodes of both, sorted."""
    matched_minutes: int
    """Minutes of ``duplicate`` with a hash that ``meter`` also has."""
    minutes: int
    """Minutes of ``duplicate`` with a frame hash."""

    def warning(self) -> str:
        """One line for the operator."""
        share = 100 * self.matched_minutes / max(1, self.minutes)
        return (
            f"meter {self.meter} is also reported as {self.duplicate} (nodes"
            f" {', '.join(self.nodes)}: the same frames in {share:.0f} % of its"
            f" minutes); its energy is counted once, as {self.meter}. Give the"
            " coordinators distinct PAN IDs (wattd radio setup-receiver --pan-id)"
        )

    def to_json_dict(self) -> dict[str, object]:
        """JSON-ready form, for the report's ``duplicates`` list."""
        return {
            "meter": self.meter,
            "duplicate": self.duplicate,
            "nodes": list(self.nodes),
            "matched_minutes": self.matched_minutes,
            "minutes": self.minutes,
        }


class DuplicateFinder:
    """Finds fleet identities that report the same frames, span by span.

    Only counts are kept between spans: per identity, its minutes with a
    hash, and per pair, the minutes of one whose hash the other also has.
    """

    def __init__(self) -> None:
        self._minutes: dict[str, int] = {}
        self._matched: dict[tuple[str, str], int] = {}

    def add(self, span: Iterable[SeriesHashes]) -> None:
        """Take in the hashes of one span of minutes."""
        by_key: dict[str, dict[int, int]] = {}
        for series in span:
            key = meter_identity(dict(series.labels))
            by_key.setdefault(key, {}).update(series.hashes)
        heard: dict[int, set[tuple[str, int]]] = {}
        for key, hashes in by_key.items():
            self._minutes[key] = self._minutes.get(key, 0) + len(hashes)
            for minute, value in hashes.items():
                heard.setdefault(value, set()).add((key, minute))
        for key, hashes in by_key.items():
            for minute, value in hashes.items():
                # A frame near a minute's edge may land on either side of it
                # on two hosts whose clocks differ a little.
                others = {
                    other
                    for other, at in heard[value]
                    if other != key and abs(at - minute) <= MINUTE_S
                }
                for other in others:
                    pair = (key, other)
                    self._matched[pair] = self._matched.get(pair, 0) + 1

    def duplicates(self, meters: Mapping[str, FleetMeter]) -> list[Duplicate]:
        """The identities to leave out, each with the one that keeps the energy."""
        parent: dict[str, str] = {}

        def root(key: str) -> str:
            while parent.get(key, key) != key:
                key = parent[key]
            return key

        for (a, b), matched in sorted(self._matched.items()):
            if matched > DUPLICATE_SHARE * self._minutes.get(a, 0):
                ra, rb = root(a), root(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
        groups: dict[str, list[str]] = {}
        for key in parent:
            groups.setdefault(root(key), []).append(key)
        for top, members in groups.items():
            if top not in members:
                members.append(top)
        out = []
        for members in groups.values():
            ranked = sorted(members, key=lambda k: _keep_rank(k, meters))
            kept = ranked[0]
            for other in ranked[1:]:
                nodes = {
                    node
                    for k in (kept, other)
                    if (node := _node(k, meters)) is not None
                }
                out.append(
                    Duplicate(
                        meter=kept,
                        duplicate=other,
                        nodes=tuple(sorted(nodes)),
                        matched_minutes=self._matched.get((other, kept), 0),
                        minutes=self._minutes.get(other, 0),
                    )
                )
        return sorted(out, key=lambda d: (d.meter, d.duplicate))


def _keep_rank(key: str, meters: Mapping[str, FleetMeter]) -> tuple[bool, str, str]:
    """Meters with an ``id`` first, then by node, then by identity."""
    meter = meters.get(key)
    has_id = meter is not None and meter.asset is not None
    return (not has_id, _node(key, meters) or "", key)


def _node(key: str, meters: Mapping[str, FleetMeter]) -> str | None:
    meter = meters.get(key)
    return meter.node if meter is not None else None


def without_duplicates(
    intervals: Iterable[EnergyInterval], duplicates: Iterable[Duplicate]
) -> Iterator[EnergyInterval]:
    """``intervals`` minus those of the identities left out as duplicates."""
    left_out = {d.duplicate for d in duplicates}
    if not left_out:
        yield from intervals
        return
    for interval in intervals:
        if interval.sensor not in left_out:
            yield interval
