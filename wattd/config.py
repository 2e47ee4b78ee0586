"""The YAML config: schema, loading, validation with file:line errors, secrets.

One file describes the whole daemon. Every section is a frozen pydantic model
that forbids unknown keys, so a typo is an error that names the file, the line
and the key, not a silently ignored setting. Strings may reference environment
variables as ``${NAME}``; secrets are ``SecretStr`` (masked when printed) and may
instead come from a ``*_file`` path.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from wattd.errors import ConfigError, ConfigErrors
from wattd.power import DEFAULT_COUNTS_PER_AMP, DEFAULT_CURRENT_ZERO, Calibration


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _parse_address(value: Any) -> Any:
    """Accept 5, "5", "0x0005" or a 16-hex-digit 64-bit address."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if re.fullmatch(r"0x[0-9a-f]{1,16}", text):
        return int(text, 16)
    if re.fullmatch(r"[0-9]{1,5}", text):
        return int(text)
    if re.fullmatch(r"[0-9a-f]{16}", text):
        return int(text, 16)
    msg = (
        f"address {value!r} is not a number, a hex string like 0x0001, or a"
        " 16-digit 64-bit address"
    )
    raise ValueError(msg)


Address = Annotated[int, BeforeValidator(_parse_address), Field(ge=0, lt=1 << 64)]
AdcChannel = Annotated[int, Field(ge=0, le=5)]


def _secret_from_file(path: Path | None, field: str) -> SecretStr | None:
    if path is None:
        return None
    # The error type carries the field name, so the message can point at the
    # *_file key's own line rather than at the section holding it.
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        msg = "cannot read {path}: {reason}; check the path and that wattd may read it"
        raise PydanticCustomError(
            "secret_file",
            msg,
            {"field": field, "path": str(path), "reason": exc.strerror},
        ) from None
    if not text:
        raise PydanticCustomError(
            "secret_file", "{path} is empty", {"field": field, "path": str(path)}
        )
    return SecretStr(text)


def _load_secret_pairs(model: BaseModel, fields: Sequence[str]) -> None:
    """Fill each ``<field>`` from ``<field>_file``; both at once is an error.

    A section switched off (``enabled: false``) reads no files, so a config can
    keep a disabled section whose secret files do not exist on this host.
    """
    if getattr(model, "enabled", True) is False:
        return
    for value_field in fields:
        file_field = f"{value_field}_file"
        path = getattr(model, file_field)
        if path is not None:
            if getattr(model, value_field) is not None:
                msg = f"give either {value_field} or {file_field}, not both"
                raise ValueError(msg)
            object.__setattr__(model, value_field, _secret_from_file(path, file_field))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_") or "wattd"


# -- core --------------------------------------------------------------------


class MainsConfig(_Model):
    """Site-wide mains settings; sensors may override them."""

    nominal_vrms: float = Field(default=120.0, gt=0, le=480)
    frequency_hz: Literal[50, 60] = 60


class SensorConfig(_Model):
    """One meter: its radio address, calibration and metadata."""

    address: Address
    name: str | None = Field(default=None, min_length=1, max_length=64)
    current_zero: float = Field(default=DEFAULT_CURRENT_ZERO, ge=0, le=1023)
    counts_per_amp: float = Field(default=DEFAULT_COUNTS_PER_AMP, gt=0, le=1023)
    nominal_vrms: float | None = Field(default=None, gt=0, le=480)
    counts_per_volt: float | None = Field(default=None, gt=0, le=100)
    voltage_zero: float | None = Field(default=None, ge=0, le=1023)
    mains_hz: Literal[50, 60] | None = None
    voltage_channel: AdcChannel = 0
    current_channel: AdcChannel = 4
    sample_interval_ms: float | None = Field(default=None, ge=0.2, le=5.0)
    max_amps: float = Field(default=20.0, gt=0, le=100)
    mode: Literal["standard", "legacy"] = "standard"
    correct_zero_drift: bool = False
    energy_offset_wh: float = Field(default=0.0, ge=0)
    rack: str | None = None
    customer: str | None = None
    location: str | None = None
    tariff: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_channels(self) -> Self:
        if self.voltage_channel == self.current_channel:
            msg = (
                "voltage_channel and current_channel are both"
                f" AD{self.current_channel};"
                " they must differ (Tweet-a-Watt: voltage 0, current 4)"
            )
            raise ValueError(msg)
        if self.voltage_zero is not None and self.counts_per_volt is None:
            msg = "voltage_zero needs counts_per_volt as well (or remove both)"
            raise ValueError(msg)
        return self

    @property
    def display_name(self) -> str:
        """The configured name, or ``sensor-<address>``."""
        return self.name or f"sensor-{self.address}"

    def calibration(self, mains: MainsConfig) -> Calibration:
        """Turn this sensor's settings into the power maths' calibration."""
        return Calibration(
            current_zero=self.current_zero,
            counts_per_amp=self.counts_per_amp,
            nominal_vrms=self.nominal_vrms or mains.nominal_vrms,
            counts_per_volt=self.counts_per_volt,
            voltage_zero=self.voltage_zero,
            mains_hz=float(self.mains_hz or mains.frequency_hz),
            sample_interval_ms=self.sample_interval_ms,
            voltage_channel=self.voltage_channel,
            current_channel=self.current_channel,
            max_amps=self.max_amps,
            legacy=self.mode == "legacy",
        )

    def metadata(self) -> dict[str, str]:
        """Labels for sinks: rack, customer, location and free-form labels."""
        out = {
            k: v
            for k, v in (
                ("rack", self.rack),
                ("customer", self.customer),
                ("location", self.location),
            )
            if v
        }
        out.update(self.labels)
        return out


class PortConfig(_Model):
    """One serial port with a receiving XBee on it."""

    device: str = Field(min_length=1)
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400] = 9600
    api_mode: Literal[1, 2] = 1
    name: str | None = None

    @property
    def display_name(self) -> str:
        """The configured name, or the device path."""
        return self.name or self.device


class EnergyConfig(_Model):
    """Energy integration."""

    max_gap_s: float = Field(default=10.0, gt=0, le=3600)
    """Longer silences are reported as gaps instead of being integrated."""


class StoreConfig(_Model):
    """The embedded SQLite store (the default sink)."""

    enabled: bool = True
    path: Path | None = None
    readings_retention_days: float = Field(default=7.0, ge=0)
    rollup_1m_retention_days: float = Field(default=90.0, ge=0)
    rollup_1h_retention_days: float = Field(default=0.0, ge=0)
    frames_retention_days: float = Field(default=14.0, ge=0)
    batch_size: int = Field(default=500, ge=1, le=100_000)
    flush_interval_s: float = Field(default=1.0, gt=0, le=60)


class LoggingConfig(_Model):
    """Log level and format (``auto`` picks text on a terminal, journal otherwise)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "text", "journal"] = "auto"


# -- sinks -------------------------------------------------------------------


class SpoolConfig(_Model):
    """The durable on-disk spool shared by the MQTT and InfluxDB sinks."""

    path: Path | None = None
    max_items: int = Field(default=2_000_000, ge=100)
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)
    when_full: Literal["drop_oldest"] = "drop_oldest"


class TlsConfig(_Model):
    """TLS settings for a client connection.

    ``ca_file`` unset means the system trust store; ``insecure`` skips both the
    certificate and the host name check (for testing only).
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False

    @model_validator(mode="after")
    def _check_client_cert(self) -> Self:
        if self.key_file is not None and self.cert_file is None:
            msg = "key_file needs cert_file (the client certificate) as well"
            raise ValueError(msg)
        return self


def _check_topic(value: str, what: str) -> str:
    """Reject topic names that would publish somewhere unexpected."""
    if not value or value.startswith("/") or value.endswith("/") or "//" in value:
        msg = f"{what} {value!r} must be non-empty, with no leading, trailing or //"
        raise ValueError(msg)
    if any(c in value for c in "+#\0"):
        msg = f"{what} {value!r} must not contain the MQTT wildcards + or #"
        raise ValueError(msg)
    return value


class DiscoveryConfig(_Model):
    """Home Assistant MQTT discovery."""

    enabled: bool = True
    prefix: str = "homeassistant"
    status_topic: str = "homeassistant/status"
    expire_after_s: int = Field(default=120, ge=0)
    """A meter silent this long shows as unavailable (0: never)."""

    @field_validator("prefix", "status_topic")
    @classmethod
    def _valid_topic(cls, value: str) -> str:
        return _check_topic(value, "topic")


class MqttConfig(_Model):
    """MQTT publishing (and Home Assistant discovery)."""

    enabled: bool = False
    host: str = "localhost"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    tls: TlsConfig | None = None
    client_id: str | None = None
    base_topic: str = "wattd"
    node_id: str = Field(default_factory=lambda: _slug(socket.gethostname()))
    qos: Literal[0, 1, 2] = 1
    retain: bool = True
    per_field_topics: bool = False
    aggregate_s: float = Field(default=0.0, ge=0, le=3600)
    """Publish one mean reading per meter per this many seconds (0: every one)."""
    keepalive_s: int = Field(default=60, ge=5, le=3600)
    reconnect_min_s: float = Field(default=1.0, gt=0, le=60)
    """First wait after a lost connection; doubles per failure (with jitter)."""
    reconnect_max_s: float = Field(default=60.0, gt=0, le=3600)
    """Longest wait between attempts; also the wait after an auth/TLS refusal."""
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)

    @field_validator("base_topic")
    @classmethod
    def _valid_base(cls, value: str) -> str:
        return _check_topic(value, "base_topic")

    @field_validator("node_id")
    @classmethod
    def _valid_node(cls, value: str) -> str:
        # Home Assistant allows only these characters in a discovery node_id.
        if not re.fullmatch(r"[A-Za-z0-9_-]+", value):
            msg = f"node_id {value!r} may contain only letters, digits, '_' and '-'"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _load_password(self) -> Self:
        _load_secret_pairs(self, ("password",))
        if self.password is not None and self.username is None:
            msg = "a password needs a username as well"
            raise ValueError(msg)
        if self.reconnect_min_s > self.reconnect_max_s:
            msg = "reconnect_min_s must not exceed reconnect_max_s"
            raise ValueError(msg)
        return self


class InfluxConfig(_Model):
    """InfluxDB writes (2.x/3.x token form or 1.8+ compatibility form)."""

    enabled: bool = False
    url: str = "http://localhost:8086"
    org: str | None = None
    bucket: str | None = None
    token: SecretStr | None = None
    token_file: Path | None = None
    database: str | None = None
    retention_policy: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    measurement: str = Field(default="power", min_length=1, max_length=200)
    node_id: str | None = Field(default=None, min_length=1)
    """Value of the ``node`` tag; default: ``mqtt.node_id`` (the host name)."""
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    flush_interval_s: float = Field(default=1.0, gt=0, le=300)
    aggregate_s: float = Field(default=0.0, ge=0, le=3600)
    """Write one mean point per meter per this many seconds (0: every reading)."""
    max_backoff_s: float = Field(default=60.0, ge=1, le=3600)
    """Longest wait between retries while the server is down."""
    gzip: bool = True
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    verify_ssl: bool = True
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _load_secrets(self) -> Self:
        _load_secret_pairs(self, ("token", "password"))
        if self.enabled and self.bucket is None and self.database is None:
            msg = "set bucket (InfluxDB 2.x/3.x) or database (InfluxDB 1.8+)"
            raise ValueError(msg)
        if self.bucket is not None and self.database is not None:
            msg = (
                "give either bucket (InfluxDB 2.x/3.x) or database (InfluxDB 1.8+),"
                " not both"
            )
            raise ValueError(msg)
        if self.token is not None and (self.username or self.password):
            msg = "give either token (2.x/3.x) or username/password (1.8+), not both"
            raise ValueError(msg)
        if not self.url.startswith(("http://", "https://")):
            msg = f"url {self.url!r} must start with http:// or https://"
            raise ValueError(msg)
        return self


class WebConfig(_Model):
    """The built-in web dashboard and /metrics endpoint.

    Bound to loopback by default. Any other address needs credentials: a
    bearer ``token`` (or ``token_file``), or ``username`` plus ``password``
    (or ``password_file``) for HTTP basic auth; both may be set. When
    credentials are set they are required on every bind.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    token: SecretStr | None = None
    token_file: Path | None = None
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = None
    password_file: Path | None = None
    metrics: bool = True
    stale_after_s: float = Field(default=30.0, gt=0)
    push_interval_s: float = Field(default=1.0, ge=0.1, le=60)
    """How often live values are pushed to open dashboards."""

    @model_validator(mode="after")
    def _load_secrets(self) -> Self:
        _load_secret_pairs(self, ("token", "password"))
        if (self.username is None) != (self.password is None):
            msg = "username and password go together; set both or neither"
            raise ValueError(msg)
        if self.enabled and not self.has_auth and not is_loopback_host(self.host):
            msg = (
                f"host {self.host!r} is reachable from other machines, so the"
                " dashboard needs credentials: set token (or token_file), or"
                " username and password (or password_file); or bind to 127.0.0.1"
            )
            raise ValueError(msg)
        return self

    @property
    def has_auth(self) -> bool:
        """True if requests must carry credentials."""
        return self.token is not None or self.username is not None


def is_loopback_host(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# -- energy cost, locations and summaries -------------------------------------

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
        msg = f"hour range {value!r} is not HH:MM-HH:MM (24:00 may end a range)"
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
        msg = f'{value!r} is not a month and day like "06-01"'
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
            msg = f"holiday {value!r} is not a valid date"
            raise ValueError(msg) from None
    return _check_month_day(value)


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        msg = f"unknown timezone {value!r}; use an IANA name like Europe/Berlin"
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
                        f"seasons {owner[day]!r} and {name!r} overlap on"
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
                msg = f"{where} {name!r} is not under plans ({_known(plans)})"
                raise ValueError(msg)
        return value

    @property
    def currency(self) -> str | None:
        """The one currency of all plans, if any plan exists."""
        return next((p.currency for p in self.plans.values()), None)


def _known(names: Mapping[str, object]) -> str:
    return "defined: " + ", ".join(sorted(names)) if names else "none defined"


class LocationConfig(_Model):
    """A site: its facility overhead (PUE) and tariff."""

    pue: float = Field(default=1.0, ge=1.0, le=5.0)
    """Facility energy per unit of IT energy (cooling, power losses...)."""
    tariff: str | None = None
    description: str | None = None


def _require_secrets(model: BaseModel, fields: Sequence[str], what: str) -> None:
    if getattr(model, "enabled", False):
        missing = [f for f in fields if getattr(model, f) is None]
        if missing:
            msg = f"{what} is enabled but {', '.join(missing)} is not set"
            raise ValueError(msg)


class XDestinationConfig(_Model):
    """Posting to X (API v2, OAuth 1.0a user context)."""

    enabled: bool = False
    consumer_key: SecretStr | None = None
    consumer_key_file: Path | None = None
    consumer_secret: SecretStr | None = None
    consumer_secret_file: Path | None = None
    access_token: SecretStr | None = None
    access_token_file: Path | None = None
    access_token_secret: SecretStr | None = None
    access_token_secret_file: Path | None = None
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
    access_token: SecretStr | None = None
    access_token_file: Path | None = None
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
    token: SecretStr | None = None
    token_file: Path | None = None
    secret: SecretStr | None = None
    secret_file: Path | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=30.0, gt=0, le=300)

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
            from wattd.schedule import CronSchedule  # here: avoids an import cycle

            CronSchedule.parse(value)
        return value

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is not None:
            from wattd.summary import check_template  # here: avoids an import cycle

            check_template(value)
        return value


def _cost_reference_errors(config: Config) -> list[InitErrorDetails]:
    """Tariff names used by sensors and locations must exist under tariffs.plans."""
    plans = config.tariffs.plans
    out: list[InitErrorDetails] = []

    def bad(loc: tuple[str | int, ...], name: str) -> None:
        msg = f"tariff {name!r} is not defined under tariffs.plans ({_known(plans)})"
        error = PydanticCustomError("value_error", msg)
        out.append(InitErrorDetails(type=error, loc=loc, input=name))

    for i, sensor in enumerate(config.sensors):
        if sensor.tariff is not None and sensor.tariff not in plans:
            bad(("sensors", i, "tariff"), sensor.tariff)
    for key, location in config.locations.items():
        if location.tariff is not None and location.tariff not in plans:
            bad(("locations", key, "tariff"), location.tariff)
    return out


SummaryName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


def _duplicate_errors(config: Config) -> list[InitErrorDetails]:
    """Repeated sensor addresses/names and port devices, located at the repeat."""
    out: list[InitErrorDetails] = []

    def dup(loc: tuple[str | int, ...], what: str, first: int, value: object) -> None:
        section = loc[0]
        msg = f"{what} repeats {section}[{first}]; each must be unique"
        error = PydanticCustomError("value_error", msg)
        out.append(InitErrorDetails(type=error, loc=loc, input=value))

    addresses: dict[int, int] = {}
    names: dict[str, int] = {}
    for i, sensor in enumerate(config.sensors):
        if sensor.address in addresses:
            first = addresses[sensor.address]
            what = f"address {sensor.address}"
            dup(("sensors", i, "address"), what, first, sensor.address)
        addresses.setdefault(sensor.address, i)
        name = sensor.display_name
        if name in names and sensor.address != config.sensors[names[name]].address:
            dup(("sensors", i, "name"), f"name {name!r}", names[name], name)
        names.setdefault(name, i)
    devices: dict[str, int] = {}
    for i, port in enumerate(config.ports):
        if port.device in devices:
            first = devices[port.device]
            dup(("ports", i, "device"), f"device {port.device}", first, port.device)
        devices.setdefault(port.device, i)
    return out


# -- the whole file ----------------------------------------------------------


def _default_state_dir() -> Path:
    # systemd's StateDirectory= exports this; otherwise follow XDG for users.
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "wattd"


SensorMeta = tuple[str, Mapping[str, str]]
"""A sensor's display name and its labels (see :meth:`Config.sensor_meta`)."""


class Config(_Model):
    """Everything wattd reads from its YAML file."""

    mains: MainsConfig = Field(default_factory=MainsConfig)
    ports: list[PortConfig] = Field(default_factory=list)
    sensors: list[SensorConfig] = Field(default_factory=list)
    state_dir: Path = Field(default_factory=_default_state_dir)
    save_interval_s: float = Field(default=30.0, ge=1, le=3600)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    influxdb: InfluxConfig = Field(default_factory=InfluxConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    tariffs: TariffsConfig = Field(default_factory=TariffsConfig)
    locations: dict[str, LocationConfig] = Field(default_factory=dict)
    summaries: dict[SummaryName, SummaryConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_unique(self) -> Self:
        errors = _duplicate_errors(self)
        if errors:
            raise ValidationError.from_exception_data("Config", errors)
        return self

    @model_validator(mode="after")
    def _check_cost_references(self) -> Self:
        errors = _cost_reference_errors(self)
        if errors:
            raise ValidationError.from_exception_data("Config", errors)
        return self

    def sensor_map(self) -> dict[int, SensorConfig]:
        """Sensors keyed by address."""
        return {s.address: s for s in self.sensors}

    def sensor_meta(self) -> Mapping[int, SensorMeta]:
        """Display name and labels (read-only) of each configured sensor.

        Built once per config and shared: the pipeline, the daemon status, the
        dashboard and the InfluxDB encoder all look them up, and a copy each
        came to most of a megabyte at a thousand sensors.
        """
        global _sensor_meta  # a one-entry cache, see its definition
        cached = _sensor_meta
        if cached is not None and cached[0] is self:
            return cached[1]
        meta = MappingProxyType(
            {
                s.address: (s.display_name, MappingProxyType(s.metadata()))
                for s in self.sensors
            }
        )
        _sensor_meta = (self, meta)
        return meta

    @property
    def store_path(self) -> Path:
        """Where the SQLite store lives."""
        return self.store.path or self.state_dir / "wattd.sqlite"

    @property
    def spool_path(self) -> Path:
        """Where the durable spool lives."""
        return self.spool.path or self.state_dir / "spool.sqlite"

    @property
    def state_path(self) -> Path:
        """Where energy totals and calibration state are saved."""
        return self.state_dir / "state.json"


# Config.sensor_meta() of the config asked last. A config never changes, so the
# entry stays right until a reload brings a new one; the components of a running
# daemon all ask about the same config, and so share one copy.
_sensor_meta: tuple[Config, Mapping[int, SensorMeta]] | None = None


# -- loading -----------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that also keeps the composed node tree for error lines."""


# libyaml builds the same data with a fraction of the pure-Python parser's
# garbage: for a 1,000-sensor file ~7 MB instead of ~22 MB at peak, and much
# of that stayed resident in the daemon as fragmented heap. The pure-Python
# loader still runs when a problem needs its line numbers or its wording.
_FAST_LOADER: Final[type[yaml.SafeLoader]] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)


def _load_yaml(text: str) -> Any:
    """The document's data; a syntax error is raised by the pure-Python parser."""
    try:
        return yaml.load(text, Loader=_FAST_LOADER)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError:
        # Same error, but with the messages and marks the reports are built on.
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader


def _compose(text: str) -> yaml.Node | None:
    """The node tree, for error lines (only built when there is an error)."""
    try:
        return yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError:
        return None


def _expand_env(
    value: Any,
    path: tuple[str | int, ...],
    errors: list[tuple[tuple[str | int, ...], str]],
) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            env = os.environ.get(name)
            if env is None:
                errors.append(
                    (
                        path,
                        f"environment variable {name} is not set; export it or"
                        " use a *_file setting",
                    )
                )
                return ""
            return env

        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, (*path, k), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*path, i), errors) for i, v in enumerate(value)]
    return value


def _node_at(
    root: yaml.Node | None, loc: Sequence[str | int]
) -> tuple[yaml.Node | None, bool]:
    """Walk the YAML node tree along a pydantic error location.

    Returns the deepest node reached and whether the location resolved fully
    (when it did not, the key is missing and the parent's line is the best hint).
    """
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    node = value_node
                    break
            else:
                return node, False
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                node = node.value[part]
            else:
                return node, False
        else:
            return node, False
    return node, True


def _key_line(root: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """Line of the key named by ``loc`` (1-based), or of its closest parent."""
    if not loc:
        return None
    parent, _ = _node_at(root, loc[:-1])
    last = loc[-1]
    if isinstance(parent, yaml.MappingNode):
        for key_node, _value in parent.value:
            if key_node.value == str(last):
                return int(key_node.start_mark.line) + 1
    node, _ = _node_at(root, loc)
    return int(node.start_mark.line) + 1 if node is not None else None


def _loc_text(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_for(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that owns the last key of ``loc`` (for suggestions)."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _unwrap_model(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap_model(annotation: Any) -> Any:
    for arg in _iter_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def _iter_args(annotation: Any) -> Iterator[Any]:
    yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _iter_args(arg)


def _render_validation_errors(
    exc: ValidationError, root: yaml.Node | None, path: Path | None
) -> list[ConfigError]:
    out: list[ConfigError] = []
    for err in exc.errors(include_url=False):
        loc = tuple(
            p
            for p in err["loc"]
            if not (isinstance(p, str) and p.startswith("function-"))
        )
        key = _loc_text(loc)
        line = _key_line(root, loc)
        kind = err["type"]
        if kind == "secret_file":
            loc = (*loc, str(err.get("ctx", {}).get("field", "")))
            key = _loc_text(loc)
            line = _key_line(root, loc)
        if kind == "extra_forbidden":
            owner = _model_for(loc)
            hint = ""
            if owner is not None:
                fields = list(owner.model_fields)
                close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
                if close:
                    hint = f"; did you mean {close[0]!r}?"
                else:
                    hint = "; allowed keys: " + ", ".join(sorted(owner.model_fields))
            message = f"unknown key {str(loc[-1])!r}{hint}"
        elif kind == "missing":
            message = "required key is missing"
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
            given = err.get("input")
            scalar = given is not None and not isinstance(given, dict | list)
            if scalar and kind != "value_error":
                shown = given if not isinstance(given, str) else repr(given)
                message += f" (got {shown})"
            if _is_secret_key(loc):
                message = str(err["msg"]).removeprefix("Value error, ")
        out.append(ConfigError(message, path=path, line=line, key=key or None))
    return out


def _is_secret_name(name: str) -> bool:
    return name in {"password", "token", "secret"} or name.endswith(
        ("_secret", "_token", "_password", "consumer_key")
    )


def _is_secret_key(loc: Sequence[str | int]) -> bool:
    """True for keys whose values must never be echoed (SecretStr fields)."""
    if not loc:
        return False
    name = str(loc[-1])
    if _is_secret_name(name):
        return True
    owner = _model_for(loc)
    field = owner.model_fields.get(name) if owner is not None else None
    if field is None:
        return False
    return any(a is SecretStr for a in _iter_args(field.annotation))


def parse_config(text: str, path: Path | str | None = None) -> Config:
    """Validate YAML text as a wattd config.

    Raises:
        ConfigError: with file, line and key of every problem found.
    """
    where = Path(path) if path is not None else None
    try:
        data = _load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        started = ""
        if exc.context and exc.context_mark is not None:
            ctx_line = exc.context_mark.line + 1
            if ctx_line != line:
                started = f" ({exc.context} that starts on line {ctx_line})"
        raise ConfigError(
            f"not valid YAML: {exc.problem}{started}; check indentation and quoting",
            path=where,
            line=line,
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=where) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            "the top level must be a mapping of sections (ports:, sensors:, ...)",
            path=where,
            line=1,
        )
    env_errors: list[tuple[tuple[str | int, ...], str]] = []
    data = _expand_env(data, (), env_errors)
    if env_errors:
        root = _compose(text)
        found = [
            ConfigError(msg, path=where, line=_key_line(root, loc), key=_loc_text(loc))
            for loc, msg in env_errors
        ]
        if len(found) == 1:
            raise found[0]
        raise ConfigErrors(found)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        errors = _render_validation_errors(exc, _compose(text), where)
        if len(errors) == 1:
            raise errors[0] from None
        raise ConfigErrors(errors) from None


def load_config(path: Path | str) -> Config:
    """Read and validate a config file.

    Raises:
        ConfigError: if the file is missing, unreadable or invalid.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "config file not found; pass --config PATH or copy"
            " config/wattd.example.yaml",
            path=p,
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", path=p) from None
    return parse_config(text, p)


def dump_effective(config: Config) -> str:
    """The effective config as YAML, with every secret masked."""
    data = config.model_dump(mode="json")
    return yaml.safe_dump(_mask(data), sort_keys=False, default_flow_style=False)


def _mask(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: ("**********" if v and _is_secret_name(str(k)) else _mask(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value
