"""The energy cost sections: tariffs, locations and scheduled summaries."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from wattd.config.base import (
    CredentialName,
    Secret,
    _known,
    _load_secret_pairs,
    _Model,
    _require_secrets,
)
from wattd.config.prices import PriceSeries, read_series, resolve_path
from wattd.config.redact import shown
from wattd.config.templates import check_template
from wattd.support.cron import CronSchedule

DaySpec = Literal[
    "all",
    "weekdays",
    "weekends",
    "holidays",
    "mon",
    "tue",
    "wed",
    "thu",
    "fri",
    "sat",
    "sun",
]
_HOUR_RANGE = re.compile(r"([01]\d|2[0-4]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)")
_MONTH_DAY = re.compile(r"(\d\d)-(\d\d)")
_ISO_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _as_list(value: Any) -> Any:
    """Let a single value stand for a one-item list (``days: weekdays``)."""
    return [value] if isinstance(value, str | int | date) else value


def _check_hour_range(value: Any) -> Any:
    if isinstance(value, int):
        # YAML 1.1 reads an unquoted 22:00 as the integer 1320.
        msg = 'an hour range must be a string like "07:00-09:30"'
        raise ValueError(msg)
    if not isinstance(value, str):
        return value
    m = _HOUR_RANGE.fullmatch(value.strip())
    if m is None:
        msg = f"hour range {shown(value)} is not HH:MM-HH:MM (24:00 may end a range)"
        raise ValueError(msg)
    start = int(m.group(1)) * 60 + int(m.group(2))
    end = int(m.group(3)) * 60 + int(m.group(4))
    if start >= 1440 or end > 1440:
        msg = f"hour range {value!r} is outside 00:00-24:00"
        raise ValueError(msg)
    if start == end:
        msg = f'hour range {value!r} is empty; use "00:00-24:00" for the whole day'
        raise ValueError(msg)
    return value.strip()


def _check_month_day(value: Any) -> Any:
    m = _MONTH_DAY.fullmatch(value.strip()) if isinstance(value, str) else None
    month, day = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if not (1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]):
        msg = f'{shown(value)} is not a month and day like "06-01"'
        raise ValueError(msg)
    return value.strip()


def _check_holiday(value: Any) -> Any:
    """A fixed date (2025-12-25, YAML may hand it over as a date) or a yearly MM-DD."""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and _ISO_DATE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            msg = f"holiday {shown(value)} is not a valid date"
            raise ValueError(msg) from None
    return _check_month_day(value)


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a name too long to be a file name in the zone database.
        msg = f"unknown timezone {shown(value)}; use an IANA name like Europe/Berlin"
        raise ValueError(msg) from None
    return value


HourRange = Annotated[str, BeforeValidator(_check_hour_range)]
MonthDay = Annotated[str, BeforeValidator(_check_month_day)]
Holiday = Annotated[str, BeforeValidator(_check_holiday)]
TimeZoneName = Annotated[str, AfterValidator(_check_timezone)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class TariffBandConfig(_Model):
    """A priced band of a time-of-use tariff and the local times it is in force."""

    name: str = Field(min_length=1, max_length=32)
    price_per_kwh: float = Field(ge=0, le=1000)
    co2_g_per_kwh: float | None = Field(default=None, ge=0, le=5000)
    hours: Annotated[list[HourRange], BeforeValidator(_as_list)] = Field(
        default_factory=lambda: ["00:00-24:00"], min_length=1
    )
    days: Annotated[list[DaySpec], BeforeValidator(_as_list)] = Field(
        default_factory=lambda: list[DaySpec](["all"]), min_length=1
    )
    seasons: Annotated[list[str], BeforeValidator(_as_list)] = Field(
        default_factory=list
    )


class SeasonConfig(_Model):
    """A yearly date range, both ends included; it may wrap over new year."""

    start: MonthDay
    end: MonthDay


class DemandChargeConfig(_Model):
    """A charge on the highest average power of a billing period."""

    price_per_kw: float = Field(gt=0, le=10_000)
    window_min: Literal[5, 10, 15, 30, 60] = 15
    billing_day: int = Field(default=1, ge=1, le=28)


def _series(
    path: Path | None, info: ValidationInfo, kind: Literal["prices", "co2"]
) -> PriceSeries | None:
    """Read a price or carbon file named in the config (relative to its folder)."""
    if path is None:
        return None
    base = (info.context or {}).get("config_dir")
    return read_series(resolve_path(path, base), kind)


class TariffVersionConfig(_Model):
    """A tariff's terms from ``valid_from`` (local midnight of the plan's zone) on.

    Keys left out keep the previous terms. The demand charge and the timezone
    are the plan's throughout, so billing periods stay the same.
    """

    valid_from: date
    price_per_kwh: float | None = Field(default=None, ge=0, le=1000)
    co2_g_per_kwh: float | None = Field(default=None, ge=0, le=5000)
    bands: list[TariffBandConfig] | None = None
    price_file: Path | None = None
    standing_charge_per_day: float | None = Field(default=None, ge=0, le=100_000)
    _prices: PriceSeries | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _read_prices(self, info: ValidationInfo) -> Self:
        self._prices = _series(self.price_file, info, "prices")
        return self

    @property
    def prices(self) -> PriceSeries | None:
        """The parsed ``price_file``."""
        return self._prices


class TariffConfig(_Model):
    """One tariff: a base price, optional time-of-use bands, demand charge and CO2."""

    currency: Currency = "USD"
    price_per_kwh: float = Field(ge=0, le=1000)
    """Price of the base band, in force whenever no band below matches."""
    band: str = Field(default="standard", min_length=1, max_length=32)
    """Name of the base band."""
    co2_g_per_kwh: float | None = Field(default=None, ge=0, le=5000)
    timezone: TimeZoneName | None = None
    seasons: dict[str, SeasonConfig] = Field(default_factory=dict)
    holidays: list[Holiday] = Field(default_factory=list)
    holidays_like_weekends: bool = True
    bands: list[TariffBandConfig] = Field(default_factory=list)
    """Checked in order; the first band matching a moment applies."""
    demand: DemandChargeConfig | None = None
    price_file: Path | None = None
    """CSV of market prices (docs/cost.md); bands price the time it leaves out."""
    standing_charge_per_day: float = Field(default=0.0, ge=0, le=100_000)
    """Charged for each local calendar day of a report, per billed meter."""
    versions: list[TariffVersionConfig] = Field(default_factory=list)
    """Later terms of the same plan, in date order."""
    _prices: PriceSeries | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _read_prices(self, info: ValidationInfo) -> Self:
        self._prices = _series(self.price_file, info, "prices")
        return self

    @property
    def prices(self) -> PriceSeries | None:
        """The parsed ``price_file``."""
        return self._prices

    @field_validator("versions")
    @classmethod
    def _check_versions(
        cls, versions: list[TariffVersionConfig]
    ) -> list[TariffVersionConfig]:
        for i, (a, b) in enumerate(itertools.pairwise(versions)):
            if b.valid_from <= a.valid_from:
                msg = (
                    f"versions[{i + 1}] valid_from {b.valid_from} is not after"
                    f" {a.valid_from}; list versions in date order, one per date"
                )
                raise ValueError(msg)
        return versions

    @field_validator("seasons")
    @classmethod
    def _check_seasons(
        cls, seasons: dict[str, SeasonConfig]
    ) -> dict[str, SeasonConfig]:
        owner: dict[tuple[int, int], str] = {}
        for name, season in seasons.items():
            for day in _season_days(season.start, season.end):
                if day in owner:
                    msg = (
                        f"seasons {shown(owner[day])} and {shown(name)} overlap on"
                        f" {day[0]:02d}-{day[1]:02d}"
                    )
                    raise ValueError(msg)
                owner[day] = name
        return seasons

    @field_validator("bands")
    @classmethod
    def _check_bands(
        cls, bands: list[TariffBandConfig], info: ValidationInfo
    ) -> list[TariffBandConfig]:
        seasons = info.data.get("seasons") or {}
        names: dict[str, float] = {}
        if "band" in info.data and "price_per_kwh" in info.data:
            names[info.data["band"]] = info.data["price_per_kwh"]
        for i, band in enumerate(bands):
            known = names.get(band.name)
            if known is not None and known != band.price_per_kwh:
                msg = (
                    f"bands[{i}] {band.name!r} has price {band.price_per_kwh} but the"
                    f" band of that name costs {known}; one name, one price"
                )
                raise ValueError(msg)
            names[band.name] = band.price_per_kwh
            unknown = sorted(set(band.seasons) - set(seasons))
            if unknown:
                msg = (
                    f"bands[{i}] uses season(s) {', '.join(unknown)} not defined under"
                    f" seasons (defined: {', '.join(sorted(seasons)) or 'none'})"
                )
                raise ValueError(msg)
        return bands


def _season_days(start: str, end: str) -> list[tuple[int, int]]:
    """Every (month, day) of a leap year from start to end, wrapping at new year."""
    days = [(m + 1, d + 1) for m in range(12) for d in range(_DAYS_IN_MONTH[m])]
    i = days.index((int(start[:2]), int(start[3:])))
    j = days.index((int(end[:2]), int(end[3:])))
    return days[i : j + 1] if i <= j else days[i:] + days[: j + 1]


class StandingChargesConfig(_Model):
    """Daily charges that replace the plans' ``standing_charge_per_day``.

    A customer's charge is one per customer and day, however many meters it
    has; a sensor's (by name) replaces its plan's charge for that meter.
    """

    customers: dict[str, float] = Field(default_factory=dict)
    sensors: dict[str, float] = Field(default_factory=dict)

    @field_validator("customers", "sensors")
    @classmethod
    def _non_negative(cls, charges: dict[str, float]) -> dict[str, float]:
        for name, value in charges.items():
            if not 0 <= value <= 100_000:
                msg = f"standing charge of {shown(name)} is {value}; give 0 to 100000"
                raise ValueError(msg)
        return charges


class TariffsConfig(_Model):
    """All tariffs and who pays which.

    Precedence for a sensor: its own ``tariff``, then ``racks``, ``customers``,
    its location's ``tariff``, then ``default``.
    """

    timezone: TimeZoneName = "UTC"
    """Calendar of reports and summaries, and of tariffs that name no timezone."""
    plans: dict[str, TariffConfig] = Field(default_factory=dict)
    default: str | None = None
    racks: dict[str, str] = Field(default_factory=dict)
    customers: dict[str, str] = Field(default_factory=dict)
    standing_charges: StandingChargesConfig = Field(
        default_factory=lambda: StandingChargesConfig()
    )
    flexible_share: float = Field(default=0.0, ge=0, le=1)
    """Share of the load that could run at any hour of its day (comparisons)."""
    flexible_shares: dict[str, float] = Field(default_factory=dict)
    """Per customer, overriding ``flexible_share``."""
    reload_check_s: float = Field(default=30.0, ge=0, le=86_400)
    """How often the daemon looks for changed price and carbon files; 0: never."""

    @field_validator("flexible_shares")
    @classmethod
    def _check_shares(cls, shares: dict[str, float]) -> dict[str, float]:
        for name, share in shares.items():
            if not 0 <= share <= 1:
                msg = f"flexible share of {shown(name)} is {share}; give 0 to 1"
                raise ValueError(msg)
        return shares

    def flexible_share_of(self, customer: str | None) -> float:
        """The flexible share for a customer (or the global one)."""
        return self.flexible_shares.get(customer or "", self.flexible_share)

    @field_validator("plans")
    @classmethod
    def _one_currency(cls, plans: dict[str, TariffConfig]) -> dict[str, TariffConfig]:
        if len({plan.currency for plan in plans.values()}) > 1:
            msg = (
                "all tariffs must use one currency so costs can be added up; found "
                + ", ".join(f"{n}: {p.currency}" for n, p in sorted(plans.items()))
            )
            raise ValueError(msg)
        return plans

    @field_validator("default", "racks", "customers")
    @classmethod
    def _check_references(cls, value: Any, info: ValidationInfo) -> Any:
        plans = info.data.get("plans")
        if plans is None:
            return value  # plans itself is invalid; that error is reported
        refs = value.items() if isinstance(value, dict) else [(None, value)]
        for key, name in refs:
            if name is not None and name not in plans:
                where = f"{key} names tariff" if key else "tariff"
                msg = f"{where} {shown(name)} is not under plans ({_known(plans)})"
                raise ValueError(msg)
        return value

    @property
    def currency(self) -> str | None:
        """The one currency of all plans, if any plan exists."""
        return next((p.currency for p in self.plans.values()), None)


class LocationConfig(_Model):
    """A site: its facility overhead (PUE) and tariff."""

    pue: float = Field(default=1.0, ge=1.0, le=5.0)
    """Facility energy per unit of IT energy (cooling, power losses...)."""
    tariff: str | None = None
    description: str | None = None
    co2_file: Path | None = None
    """CSV of grid carbon by time (``start,co2_g_per_kwh``); wins over the plan's."""
    _co2: PriceSeries | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _read_co2(self, info: ValidationInfo) -> Self:
        self._co2 = _series(self.co2_file, info, "co2")
        return self

    @property
    def co2(self) -> PriceSeries | None:
        """The parsed ``co2_file``."""
        return self._co2


def series_files(
    tariffs: TariffsConfig, locations: Mapping[str, LocationConfig]
) -> list[Path]:
    """Every price and carbon file the config reads (a change should reload it)."""
    found: list[PriceSeries | None] = []
    for plan in tariffs.plans.values():
        found.append(plan.prices)
        found.extend(v.prices for v in plan.versions)
    found.extend(site.co2 for site in locations.values())
    return sorted({s.path for s in found if s is not None})


class XDestinationConfig(_Model):
    """Posting to X (API v2, OAuth 1.0a user context)."""

    enabled: bool = False
    consumer_key: Secret | None = None
    consumer_key_file: Path | None = None
    consumer_key_credential: CredentialName | None = None
    consumer_secret: Secret | None = None
    consumer_secret_file: Path | None = None
    consumer_secret_credential: CredentialName | None = None
    access_token: Secret | None = None
    access_token_file: Path | None = None
    access_token_credential: CredentialName | None = None
    access_token_secret: Secret | None = None
    access_token_secret_file: Path | None = None
    access_token_secret_credential: CredentialName | None = None
    api_base_url: str = "https://api.twitter.com"
    max_chars: int = Field(default=280, ge=20, le=25_000)
    timeout_s: float = Field(default=30.0, gt=0, le=300)

    @model_validator(mode="after")
    def _load_secrets(self) -> Self:
        keys = ["consumer_key", "consumer_secret"]
        keys += ["access_token", "access_token_secret"]
        _load_secret_pairs(self, keys)
        _require_secrets(self, keys, "x")
        return self


class MastodonDestinationConfig(_Model):
    """Posting to a Mastodon server."""

    enabled: bool = False
    api_base_url: str | None = None
    access_token: Secret | None = None
    access_token_file: Path | None = None
    access_token_credential: CredentialName | None = None
    visibility: Literal["public", "unlisted", "private", "direct"] = "unlisted"
    max_chars: int = Field(default=500, ge=20, le=100_000)
    timeout_s: float = Field(default=30.0, gt=0, le=300)

    @model_validator(mode="after")
    def _load_secrets(self) -> Self:
        _load_secret_pairs(self, ("access_token",))
        _require_secrets(self, ("access_token", "api_base_url"), "mastodon")
        return self


class WebhookDestinationConfig(_Model):
    """A JSON POST to any URL, optionally signed with HMAC-SHA256."""

    enabled: bool = False
    url: str | None = None
    token: Secret | None = None
    token_file: Path | None = None
    token_credential: CredentialName | None = None
    secret: Secret | None = None
    secret_file: Path | None = None
    secret_credential: CredentialName | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    """Sent with every post; shown masked, as they often carry credentials."""
    timeout_s: float = Field(default=30.0, gt=0, le=300)

    @field_validator("headers")
    @classmethod
    def _no_blank_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not value.strip():
                msg = f"header {shown(name)} is empty; give its value or remove it"
                raise ValueError(msg)
        return headers

    @model_validator(mode="after")
    def _load_secrets(self) -> Self:
        _load_secret_pairs(self, ("token", "secret"))
        _require_secrets(self, ("url",), "webhook")
        return self


class MqttDestinationConfig(_Model):
    """Publishing to an MQTT topic, through the broker of the ``mqtt`` section."""

    enabled: bool = False
    topic: str | None = None
    """Default: ``<mqtt.base_topic>/summary/<summary name>``."""
    retain: bool = True
    qos: Literal[0, 1, 2] = 1


class SummaryDestinationsConfig(_Model):
    """Where a summary goes. Nothing enabled means dry run: it is only logged."""

    x: XDestinationConfig = Field(default_factory=XDestinationConfig)
    mastodon: MastodonDestinationConfig = Field(
        default_factory=MastodonDestinationConfig
    )
    webhook: WebhookDestinationConfig = Field(default_factory=WebhookDestinationConfig)
    mqtt: MqttDestinationConfig = Field(default_factory=MqttDestinationConfig)

    @property
    def enabled(self) -> list[str]:
        """Names of the enabled destinations."""
        names = ("x", "mastodon", "webhook", "mqtt")
        return [n for n in names if getattr(self, n).enabled]


class SummaryConfig(_Model):
    """A scheduled energy summary (see docs/cost.md for template fields)."""

    period: Literal["day", "week", "month"] = "week"
    schedule: str | None = None
    """Cron line ``minute hour day month weekday`` in local time; default
    ``0 8 * * *`` (day), ``0 8 * * mon`` (week), ``0 8 1 * *`` (month)."""
    timezone: TimeZoneName | None = None
    by: Literal["all", "sensor", "rack", "customer", "location"] = "all"
    only: list[str] = Field(default_factory=list)
    """Post only for these groups (default: every group)."""
    template: str | None = None
    destinations: SummaryDestinationsConfig = Field(
        default_factory=SummaryDestinationsConfig
    )
    min_interval_s: float = Field(default=10.0, ge=0, le=3600)
    max_posts_per_day: int = Field(default=20, ge=1, le=1000)
    max_attempts: int = Field(default=5, ge=1, le=20)
    retry_base_s: float = Field(default=10.0, gt=0, le=3600)

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: str | None) -> str | None:
        if value is not None:
            CronSchedule.parse(value)
        return value

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is not None:
            check_template(value)
        return value


SummaryName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
