"""Tariffs: which price band is in force at an instant, and where bands change.

Strategy: prices follow local wall-clock time (a night band starts at 22:00 in
the tariff's timezone, whatever the UTC offset), but energy is measured between
UTC instants. So every computation walks in UTC and maps an instant to local
time only to look up its band. Between two instants where neither a band edge
(a minute of the day listed by some band, or midnight) nor a UTC-offset change
falls, the band cannot change; :meth:`Tariff.slots` yields exactly those runs.
At a DST change the walk stops at the transition instant and looks again, so a
skipped local hour is never priced and a repeated one is priced twice, as the
clock on the wall says.

Which band: the first band in config order whose hours, days and seasons all
match the local time; the base band otherwise. A date listed as a holiday
matches ``holidays`` (and ``weekends`` unless ``holidays_like_weekends`` is
off) but neither ``weekdays`` nor a weekday name. A band that wraps midnight
(``22:00-06:00``) is judged by the calendar day of each moment.
"""

from __future__ import annotations

import dataclasses
import itertools
from bisect import bisect_right
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Final, TypeAlias
from zoneinfo import ZoneInfo

from wattd.costing.bands import (
    MARKET,
    WEEKDAY_NAMES,
    Band,
    BandRule,
    DemandCharge,
    PriceSource,
    Season,
    parse_hour_range,
)
from wattd.errors import TariffError
from wattd.support.clock import next_offset_change, wall_to_utc

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from wattd.config import Config, TariffConfig
    from wattd.config.prices import PriceSeries

__all__ = [
    "Assignment",
    "Band",
    "BandRule",
    "DemandCharge",
    "MeterKey",
    "Season",
    "Slot",
    "Tariff",
    "TariffBook",
]

MeterKey: TypeAlias = int | str
"""What tells meters apart: the radio address within one host's data, or the
fleet identity (an asset ``id``, else ``node/address``) across hosts."""

DAY_S: Final = 86_400


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Slot:
    """A run of time with one band in force: ``[start, end)`` in UTC."""

    start: datetime
    end: datetime
    band: Band
    peak: bool
    """True if the band is among the most expensive of its season."""
    source: PriceSource = "band"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Tariff:
    """A complete tariff; build it with :meth:`from_config` or :meth:`flat`."""

    name: str
    currency: str
    timezone: ZoneInfo
    base: Band
    rules: tuple[BandRule, ...] = ()
    holidays: frozenset[date] = frozenset()
    yearly_holidays: frozenset[tuple[int, int]] = frozenset()
    seasons: tuple[Season, ...] = ()
    holidays_like_weekends: bool = True
    demand: DemandCharge | None = None
    prices: PriceSeries | None = None
    """Market prices; where they leave time out, the bands apply (fallback)."""
    co2: PriceSeries | None = None
    """Grid carbon of the meter's location; wins over every other CO2 figure."""
    standing_charge_per_day: float = 0.0
    versions: tuple[tuple[datetime, Tariff], ...] = ()
    """Later terms: each applies from its UTC instant (a local midnight) on."""
    _cuts_s: tuple[int, ...] = dataclasses.field(init=False, repr=False, compare=False)
    _peak_price: Mapping[str | None, float | None] = dataclasses.field(
        init=False, repr=False, compare=False
    )
    _cheapest: float = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cuts = {0, DAY_S}
        for rule in self.rules:
            for lo, hi in rule.minutes:
                cuts.update((lo * 60, hi * 60))
        object.__setattr__(self, "_cuts_s", tuple(sorted(cuts)))
        reachable = self._reachable_prices()
        peak = {
            season: (max(prices) if max(prices) > min(prices) else None)
            for season, prices in reachable.items()
        }
        object.__setattr__(self, "_peak_price", peak)
        cheapest = min(min(prices) for prices in reachable.values())
        object.__setattr__(self, "_cheapest", cheapest)

    # -- construction ---------------------------------------------------------

    @classmethod
    def flat(
        cls,
        name: str,
        price_per_kwh: float,
        *,
        currency: str = "USD",
        timezone: str = "UTC",
        co2_g_per_kwh: float | None = None,
    ) -> Tariff:
        """One price around the clock."""
        band = Band(
            name="flat", price_per_kwh=price_per_kwh, co2_g_per_kwh=co2_g_per_kwh
        )
        return cls(name=name, currency=currency, timezone=ZoneInfo(timezone), base=band)

    @classmethod
    def from_config(cls, name: str, cfg: TariffConfig, default_timezone: str) -> Tariff:
        """Build a tariff and its dated versions from its config section."""
        first = cls._terms(name, cfg, default_timezone)
        versions = []
        prices = cfg.prices
        for version in cfg.versions:
            given = version.model_fields_set - {"valid_from"}
            cfg = cfg.model_copy(update={k: getattr(version, k) for k in given})
            if "price_file" in given:
                prices = version.prices
            tariff = dataclasses.replace(
                cls._terms(name, cfg, default_timezone), prices=prices
            )
            day = version.valid_from
            at = wall_to_utc(datetime(day.year, day.month, day.day), first.timezone)
            versions.append((at, tariff))
        return dataclasses.replace(first, versions=tuple(versions))

    @classmethod
    def _terms(cls, name: str, cfg: TariffConfig, default_timezone: str) -> Tariff:
        base = Band(
            name=cfg.band,
            price_per_kwh=cfg.price_per_kwh,
            co2_g_per_kwh=cfg.co2_g_per_kwh,
        )
        rules = []
        for band_cfg in cfg.bands:
            band = Band(
                name=band_cfg.name,
                price_per_kwh=band_cfg.price_per_kwh,
                co2_g_per_kwh=(
                    band_cfg.co2_g_per_kwh
                    if band_cfg.co2_g_per_kwh is not None
                    else cfg.co2_g_per_kwh
                ),
            )
            minutes: list[tuple[int, int]] = []
            for text in band_cfg.hours:
                minutes.extend(parse_hour_range(text))
            rules.append(
                BandRule(
                    band=band,
                    minutes=tuple(minutes),
                    days=frozenset(band_cfg.days),
                    seasons=frozenset(band_cfg.seasons),
                )
            )
        fixed: set[date] = set()
        yearly: set[tuple[int, int]] = set()
        for text in cfg.holidays:
            if len(text) == len("2025-12-25"):
                fixed.add(date.fromisoformat(text))
            else:
                yearly.add((int(text[:2]), int(text[3:])))
        seasons = tuple(
            Season(
                name=season_name,
                start=(int(s.start[:2]), int(s.start[3:])),
                end=(int(s.end[:2]), int(s.end[3:])),
            )
            for season_name, s in cfg.seasons.items()
        )
        demand = (
            DemandCharge(
                price_per_kw=cfg.demand.price_per_kw,
                window_min=cfg.demand.window_min,
                billing_day=cfg.demand.billing_day,
            )
            if cfg.demand is not None
            else None
        )
        return cls(
            name=name,
            currency=cfg.currency,
            timezone=ZoneInfo(cfg.timezone or default_timezone),
            base=base,
            rules=tuple(rules),
            holidays=frozenset(fixed),
            yearly_holidays=frozenset(yearly),
            seasons=seasons,
            holidays_like_weekends=cfg.holidays_like_weekends,
            demand=demand,
            prices=cfg.prices,
            standing_charge_per_day=cfg.standing_charge_per_day,
        )

    def with_carbon(self, co2: PriceSeries, name: str) -> Tariff:
        """The same tariff with a location's carbon series, under a new name."""
        versions = tuple(
            (at, dataclasses.replace(v, name=name, co2=co2)) for at, v in self.versions
        )
        return dataclasses.replace(self, name=name, co2=co2, versions=versions)

    # -- lookups --------------------------------------------------------------

    @property
    def bands(self) -> tuple[Band, ...]:
        """Every distinct band, the base band first."""
        out: dict[str, Band] = {self.base.name: self.base}
        for rule in self.rules:
            out.setdefault(rule.band.name, rule.band)
        return tuple(out.values())

    @property
    def cheapest_price_per_kwh(self) -> float:
        """The lowest price any band actually in force can have."""
        return self._cheapest

    @property
    def time_of_use(self) -> bool:
        """True if the price depends on the time at all."""
        return any(p is not None for p in self._peak_price.values())

    def is_holiday(self, day: date) -> bool:
        """True for a listed date or a yearly holiday."""
        return day in self.holidays or (day.month, day.day) in self.yearly_holidays

    def season_of(self, day: date) -> str | None:
        """The season a calendar day belongs to, if any."""
        for season in self.seasons:
            if season.contains(day):
                return season.name
        return None

    def day_tags(self, day: date) -> frozenset[str]:
        """The ``days:`` words a calendar day matches."""
        if self.is_holiday(day):
            tags = {"all", "holidays"}
            if self.holidays_like_weekends:
                tags.add("weekends")
            return frozenset(tags)
        kind = "weekends" if day.weekday() >= 5 else "weekdays"
        return frozenset(("all", kind, WEEKDAY_NAMES[day.weekday()]))

    def band_at_wall(self, wall: datetime) -> Band:
        """The band in force at a local wall-clock time (naive datetime)."""
        day = wall.date()
        return self._band(
            wall.hour * 60 + wall.minute, self.day_tags(day), self.season_of(day)
        )

    def band_at(self, instant: datetime) -> Band:
        """The band (or market price) in force at an aware instant."""
        terms = self.terms_at(_aware(instant))
        local = instant.astimezone(terms.timezone)
        band = terms.band_at_wall(local.replace(tzinfo=None))
        return terms.priced(band, False, instant.timestamp())[0]

    def terms_at(self, instant: datetime) -> Tariff:
        """The version of this tariff in force at an instant."""
        chosen = self
        for at, version in self.versions:
            if at > instant:
                break
            chosen = version
        return chosen

    def standing_on(self, day: date) -> float:
        """The standing charge of a local calendar day."""
        at = wall_to_utc(datetime(day.year, day.month, day.day), self.timezone)
        return self.terms_at(at).standing_charge_per_day

    @property
    def has_standing_charge(self) -> bool:
        """True if some version charges per day."""
        terms = (self, *(v for _, v in self.versions))
        return any(t.standing_charge_per_day > 0 for t in terms)

    def priced(
        self, band: Band, peak: bool, t_s: float
    ) -> tuple[Band, bool, PriceSource]:
        """The band a price file (and a carbon file) make of ``band`` at ``t_s``."""
        co2 = self.co2.co2_at(t_s) if self.co2 is not None else None
        price = self.prices.price_at(t_s) if self.prices is not None else None
        if price is not None:
            assert self.prices is not None  # noqa: S101 - price came from it
            if co2 is None:
                co2 = self.prices.co2_at(t_s)
            if co2 is None:
                co2 = band.co2_g_per_kwh
            return (
                Band(name=MARKET, price_per_kwh=price, co2_g_per_kwh=co2),
                False,
                "market",
            )
        source: PriceSource = "fallback" if self.prices is not None else "band"
        if co2 is not None:
            band = dataclasses.replace(band, co2_g_per_kwh=co2)
        return band, peak, source

    def is_peak(self, band: Band, day: date) -> bool:
        """True if ``band`` is a most expensive band in the season of ``day``."""
        peak = self._peak_price.get(self.season_of(day))
        return peak is not None and band.price_per_kwh >= peak

    def slots(self, start: datetime, end: datetime) -> Iterator[Slot]:
        """Split ``[start, end)`` into runs with one price each, in UTC order.

        Runs end at band edges, price and carbon file rows and version dates.
        """
        t = _aware(start).astimezone(UTC)
        stop = _aware(end).astimezone(UTC)
        pieces = [(at, v) for at, v in self.versions if t < at < stop]
        bounds = [t, *(at for at, _ in pieces), stop]
        terms = [self.terms_at(t), *(v for _, v in pieces)]
        for a, b, version in zip(bounds, bounds[1:], terms, strict=False):
            yield from version._series_slots(a, b)

    def _series_slots(self, t: datetime, stop: datetime) -> Iterator[Slot]:
        series = [s for s in (self.prices, self.co2) if s is not None]
        for slot in self._band_slots(t, stop):
            if not series:
                yield slot
                continue
            a_s, b_s = slot.start.timestamp(), slot.end.timestamp()
            cuts = sorted({c for s in series for c in s.changes(a_s, b_s)})
            edges = [slot.start, *(datetime.fromtimestamp(c, UTC) for c in cuts)]
            edges.append(slot.end)
            for a, b in itertools.pairwise(edges):
                band, peak, source = self.priced(slot.band, slot.peak, a.timestamp())
                yield Slot(start=a, end=b, band=band, peak=peak, source=source)

    def _band_slots(self, t: datetime, stop: datetime) -> Iterator[Slot]:
        while t < stop:
            local = t.astimezone(self.timezone)
            wall = local.replace(tzinfo=None)
            band = self.band_at_wall(wall)
            nxt = min(self._next_change(t, local), stop)
            yield Slot(
                start=t, end=nxt, band=band, peak=self.is_peak(band, wall.date())
            )
            t = nxt

    # -- internals ------------------------------------------------------------

    def _band(self, minute: int, tags: frozenset[str], season: str | None) -> Band:
        for rule in self.rules:
            if rule.matches(minute, tags, season):
                return rule.band
        return self.base

    def _next_change(self, t: datetime, local: datetime) -> datetime:
        offset = local.utcoffset()
        assert offset is not None  # noqa: S101 - ZoneInfo always has an offset
        second = local.hour * 3600 + local.minute * 60 + local.second
        cut = self._cuts_s[bisect_right(self._cuts_s, second)]
        wall_next = datetime.combine(local.date(), time()) + timedelta(seconds=cut)
        candidate = (wall_next - offset).replace(tzinfo=UTC)
        return next_offset_change(self.timezone, t, candidate) or candidate

    def _reachable_prices(self) -> dict[str | None, set[float]]:
        """Prices that can be in force, per season (``None``: outside all seasons)."""
        tag_sets = [
            frozenset(("all", "weekends" if i >= 5 else "weekdays", name))
            for i, name in enumerate(WEEKDAY_NAMES)
        ]
        if self.holidays or self.yearly_holidays:
            extra = {"weekends"} if self.holidays_like_weekends else set()
            tag_sets.append(frozenset({"all", "holidays", *extra}))
        seasons: list[str | None] = [s.name for s in self.seasons]
        covered = {
            (d.month, d.day)
            for d in (date(2024, 1, 1) + timedelta(days=i) for i in range(366))
            if self.season_of(d) is not None
        }
        if len(covered) < 366:
            seasons.append(None)
        cuts_min = sorted({c // 60 for c in self._cuts_s} - {1440})
        out: dict[str | None, set[float]] = {}
        for season in seasons:
            prices = out.setdefault(season, set())
            for tags in tag_sets:
                for minute in cuts_min:
                    prices.add(self._band(minute, tags, season).price_per_kwh)
        return out


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise TariffError(
            f"time {value.isoformat()} has no timezone; pass aware datetimes (UTC)"
        )
    return value


# -- who pays which tariff ------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Assignment:
    """A meter's identity for costing: its groups, tariff and overhead."""

    sensor: MeterKey
    name: str
    rack: str | None = None
    customer: str | None = None
    location: str | None = None
    node: str | None = None
    """The wattd host whose radio hears the meter."""
    tariff: Tariff | None = None
    tariff_source: str = "none"
    """Which setting chose the tariff: sensor, rack, customer, location, default."""
    pue: float = 1.0
    standing_account: str | None = None
    """Who pays the standing charge: ``sensor:NAME`` or ``customer:NAME``."""
    standing_per_day: float | None = None
    """A fixed daily charge from ``tariffs.standing_charges``; None: the plan's."""


class TariffBook:
    """Tariffs by name and the precedence that assigns one to each sensor.

    Precedence: the sensor's ``tariff``, then ``tariffs.racks[rack]``,
    ``tariffs.customers[customer]``, ``locations[location].tariff``, then
    ``tariffs.default``. A sensor matched by none has no tariff (energy only).
    """

    def __init__(self, config: Config) -> None:
        tz_name = config.tariffs.timezone
        self.timezone = ZoneInfo(tz_name)
        self.currency = config.tariffs.currency
        self.tariffs = {
            name: Tariff.from_config(name, cfg, tz_name)
            for name, cfg in config.tariffs.plans.items()
        }
        self._config = config
        self._sensors = config.sensor_map()
        self._node = config.influxdb.node_id or config.mqtt.node_id
        self._cache: dict[MeterKey, Assignment] = {}
        self._located: dict[tuple[str, str], Tariff] = {}

    def for_sensor(self, address: MeterKey) -> Assignment:
        """The assignment of a meter (unknown ones get the default)."""
        hit = self._cache.get(address)
        if hit is None:
            hit = self._resolve(address)
            self._cache[address] = hit
        return hit

    def addresses(self) -> Sequence[MeterKey]:
        """Keys of every meter the report lists even when it sent nothing."""
        return sorted(self._sensors)

    def assign(
        self,
        key: MeterKey,
        name: str,
        *,
        rack: str | None,
        customer: str | None,
        location: str | None,
        node: str | None,
        tariff: str | None = None,
    ) -> Assignment:
        """The assignment of a meter with these groups, by the precedence above.

        ``tariff`` is the meter's own setting, which wins over all others.
        """
        plans = self._config.tariffs
        site = self._config.locations.get(location or "")
        candidates = (
            ("sensor", tariff),
            ("rack", plans.racks.get(rack or "")),
            ("customer", plans.customers.get(customer or "")),
            ("location", site.tariff if site else None),
            ("default", plans.default),
        )
        source, chosen = next(((s, n) for s, n in candidates if n), ("none", None))
        plan = self.tariffs[chosen] if chosen else None
        if plan is not None and site is not None and site.co2 is not None:
            plan = self.at_location(plan, location or "")
        fixed = plans.standing_charges
        account, per_day = None, None
        if customer is not None and customer in fixed.customers:
            account, per_day = f"customer:{customer}", fixed.customers[customer]
        elif name in fixed.sensors:
            account, per_day = f"sensor:{name}", fixed.sensors[name]
        elif plan is not None and plan.has_standing_charge:
            account = f"sensor:{name}"
        return Assignment(
            sensor=key,
            name=name,
            rack=rack,
            customer=customer,
            location=location,
            node=node,
            tariff=plan,
            tariff_source=source,
            pue=site.pue if site else 1.0,
            standing_account=account,
            standing_per_day=per_day,
        )

    def at_location(self, tariff: Tariff, location: str) -> Tariff:
        """The tariff with the location's carbon file, if it has one."""
        site = self._config.locations.get(location)
        if site is None or site.co2 is None:
            return tariff
        key = (tariff.name, location)
        hit = self._located.get(key)
        if hit is None:
            hit = self._located[key] = tariff.with_carbon(
                site.co2, f"{tariff.name}@{location}"
            )
        return hit

    def _resolve(self, key: MeterKey) -> Assignment:
        sensor = self._sensors.get(key) if isinstance(key, int) else None
        if sensor is None:
            plans = self._config.tariffs
            tariff = self.tariffs.get(plans.default) if plans.default else None
            return Assignment(
                sensor=key,
                name=f"sensor-{key}" if isinstance(key, int) else key,
                node=self._node,
                tariff=tariff,
                tariff_source="default" if tariff else "none",
            )
        return self.assign(
            key,
            sensor.display_name,
            rack=sensor.rack,
            customer=sensor.customer,
            location=sensor.location,
            node=self._node,
            tariff=sensor.tariff,
        )
