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
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

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
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        msg = f"cannot read {field} {path}: {exc.strerror}; check the path and mode"
        raise ValueError(msg) from None
    if not text:
        msg = f"{field} {path} is empty"
        raise ValueError(msg)
    return SecretStr(text)


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
                f"voltage_channel and current_channel are both AD{self.current_channel};"
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
    """TLS settings for a client connection."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


class DiscoveryConfig(_Model):
    """Home Assistant MQTT discovery."""

    enabled: bool = True
    prefix: str = "homeassistant"
    status_topic: str = "homeassistant/status"
    expire_after_s: int = Field(default=120, ge=0)


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
    keepalive_s: int = Field(default=60, ge=5, le=3600)
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)

    @model_validator(mode="after")
    def _load_password(self) -> Self:
        if self.password_file is not None:
            if self.password is not None:
                msg = "give either password or password_file, not both"
                raise ValueError(msg)
            object.__setattr__(
                self, "password", _secret_from_file(self.password_file, "password_file")
            )
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
    measurement: str = "power"
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    flush_interval_s: float = Field(default=1.0, gt=0, le=300)
    gzip: bool = True
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    verify_ssl: bool = True
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _load_secrets(self) -> Self:
        for value_field, file_field in (("token", "token_file"), ("password", "password_file")):
            path = getattr(self, file_field)
            if path is not None:
                if getattr(self, value_field) is not None:
                    msg = f"give either {value_field} or {file_field}, not both"
                    raise ValueError(msg)
                object.__setattr__(self, value_field, _secret_from_file(path, file_field))
        if self.enabled and self.bucket is None and self.database is None:
            msg = "set bucket (InfluxDB 2.x/3.x) or database (InfluxDB 1.8+)"
            raise ValueError(msg)
        return self


class WebConfig(_Model):
    """The built-in web dashboard and /metrics endpoint."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    token: SecretStr | None = None
    token_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    metrics: bool = True
    stale_after_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _load_secrets(self) -> Self:
        for value_field, file_field in (("token", "token_file"), ("password", "password_file")):
            path = getattr(self, file_field)
            if path is not None:
                if getattr(self, value_field) is not None:
                    msg = f"give either {value_field} or {file_field}, not both"
                    raise ValueError(msg)
                object.__setattr__(self, value_field, _secret_from_file(path, file_field))
        return self


# -- the whole file ----------------------------------------------------------


def _default_state_dir() -> Path:
    # systemd's StateDirectory= exports this; otherwise follow XDG for users.
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "wattd"


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

    @field_validator("sensors")
    @classmethod
    def _unique_sensors(cls, sensors: list[SensorConfig]) -> list[SensorConfig]:
        seen: dict[int, int] = {}
        names: dict[str, int] = {}
        for i, s in enumerate(sensors):
            if s.address in seen:
                msg = f"sensors[{i}] repeats address {s.address} of sensors[{seen[s.address]}]"
                raise ValueError(msg)
            seen[s.address] = i
            if s.display_name in names:
                msg = f"sensors[{i}] repeats name {s.display_name!r} of sensors[{names[s.display_name]}]"
                raise ValueError(msg)
            names[s.display_name] = i
        return sensors

    @field_validator("ports")
    @classmethod
    def _unique_ports(cls, ports: list[PortConfig]) -> list[PortConfig]:
        seen: set[str] = set()
        for i, p in enumerate(ports):
            if p.device in seen:
                msg = f"ports[{i}] repeats device {p.device}"
                raise ValueError(msg)
            seen.add(p.device)
        return ports

    def sensor_map(self) -> dict[int, SensorConfig]:
        """Sensors keyed by address."""
        return {s.address: s for s in self.sensors}

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


# -- loading -----------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that also keeps the composed node tree for error lines."""


def _expand_env(
    value: Any, path: tuple[str | int, ...], errors: list[tuple[tuple[str | int, ...], str]]
) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            env = os.environ.get(name)
            if env is None:
                errors.append(
                    (path, f"environment variable {name} is not set; export it or"
                     " use a *_file setting")
                )
                return ""
            return env

        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, (*path, k), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*path, i), errors) for i, v in enumerate(value)]
    return value


def _node_at(root: yaml.Node | None, loc: Sequence[str | int]) -> tuple[yaml.Node | None, bool]:
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
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = _loc_text(loc)
        line = _key_line(root, loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            owner = _model_for(loc)
            hint = ""
            if owner is not None:
                close = difflib.get_close_matches(str(loc[-1]), list(owner.model_fields), n=1)
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
            if given is not None and not isinstance(given, dict | list) and kind != "value_error":
                shown = given if not isinstance(given, str) else repr(given)
                message += f" (got {shown})"
            if _is_secret_key(loc):
                message = str(err["msg"]).removeprefix("Value error, ")
        out.append(ConfigError(message, path=path, line=line, key=key or None))
    return out


def _is_secret_key(loc: Sequence[str | int]) -> bool:
    return bool(loc) and str(loc[-1]) in {"password", "token"}


def parse_config(text: str, path: Path | str | None = None) -> Config:
    """Validate YAML text as a wattd config.

    Raises:
        ConfigError: with file, line and key of every problem found.
    """
    where = Path(path) if path is not None else None
    try:
        root = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            f"not valid YAML: {exc.problem}; check indentation and quoting",
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
        raise ConfigErrors(
            [
                ConfigError(msg, path=where, line=_key_line(root, loc), key=_loc_text(loc))
                for loc, msg in env_errors
            ]
        )
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        errors = _render_validation_errors(exc, root, where)
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
        return {k: ("**********" if k in {"password", "token"} and v else _mask(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value
