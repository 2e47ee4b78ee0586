"""The whole file: the top-level ``Config`` and its cross-section checks."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, Self

from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from wattd.config.base import _known, _Model, _slug
from wattd.config.core import (
    EnergyConfig,
    LoggingConfig,
    MainsConfig,
    PortConfig,
    SensorConfig,
    StoreConfig,
    check_fleet_name,
)
from wattd.config.cost import LocationConfig, SummaryConfig, SummaryName, TariffsConfig
from wattd.config.redact import shown
from wattd.config.sinks import InfluxConfig, MqttConfig, SpoolConfig, WebConfig
from wattd.config.web import customer_access_errors

MAX_PORTS: Final = 64
MAX_SENSORS: Final = 10_000


def _at_most(limit: int, what: str) -> BeforeValidator:
    """Refuse a list longer than ``limit`` before validating any entry."""

    def check(value: Any) -> Any:
        if isinstance(value, list) and len(value) > limit:
            msg = (
                f"{len(value):,} {what} is more than the {limit:,} one wattd can"
                " handle; split them over several wattd instances"
            )
            raise ValueError(msg)
        return value

    return BeforeValidator(check)


def _default_state_dir() -> Path:
    # systemd's StateDirectory= exports this; otherwise follow XDG for users.
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "wattd"


SensorMeta = tuple[str, Mapping[str, str]]
"""A sensor's display name and its labels (see :meth:`Config.sensor_meta`)."""


def _host_node() -> str:
    # The same slug mqtt.node_id has always defaulted to.
    return _slug(socket.gethostname())


class Config(_Model):
    """Everything wattd reads from its YAML file."""

    node: str = Field(default_factory=_host_node)
    """This host in the fleet; default ``mqtt.node_id`` if set, else the host name."""
    site: str | None = None
    """The site (hall, building) this host belongs to; tags every reading."""
    mains: MainsConfig = Field(default_factory=MainsConfig)
    ports: Annotated[list[PortConfig], _at_most(MAX_PORTS, "ports")] = Field(
        default_factory=list
    )
    sensors: Annotated[list[SensorConfig], _at_most(MAX_SENSORS, "sensors")] = Field(
        default_factory=list
    )
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

    @field_validator("node")
    @classmethod
    def _valid_node(cls, value: str) -> str:
        # It becomes mqtt.node_id, where Home Assistant allows only these.
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
            msg = f"node {shown(value)} must be 1-64 letters, digits, '_' or '-'"
            raise ValueError(msg)
        return value

    @field_validator("site")
    @classmethod
    def _valid_site(cls, value: str | None) -> str | None:
        return None if value is None else check_fleet_name(value, "site")

    @model_validator(mode="after")
    def _fill_node_ids(self) -> Self:
        # The sections are frozen and validated already; the values given to
        # them here passed the node check above, which is stricter.
        if "node" not in self.model_fields_set and "node_id" in (
            self.mqtt.model_fields_set
        ):
            # A file from before `node:` existed named its host this way.
            object.__setattr__(self, "node", self.mqtt.node_id)
        if "node_id" not in self.mqtt.model_fields_set:
            mqtt = self.mqtt.model_copy(update={"node_id": self.node})
            object.__setattr__(self, "mqtt", mqtt)
        if self.influxdb.node_id is None:
            influx = self.influxdb.model_copy(update={"node_id": self.node})
            object.__setattr__(self, "influxdb", influx)
        return self

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

    @model_validator(mode="after")
    def _check_web_customers(self) -> Self:
        named: dict[str, int] = {}
        for i, sensor in enumerate(self.sensors):
            if sensor.customer:
                named.setdefault(sensor.customer, i)
        errors = customer_access_errors(self.web, named)
        if errors:
            raise ValidationError.from_exception_data("Config", errors)
        return self

    @property
    def fleet_identity(self) -> bool:
        """Whether the file names any fleet identity.

        True once it sets ``node``, ``site``, a sensor ``id`` or
        ``mqtt.topic_layout: node``; only then do MQTT state documents carry
        the identity, so an unchanged single-host config publishes what it
        always has.
        """
        return (
            "node" in self.model_fields_set
            or self.site is not None
            or self.mqtt.topic_layout == "node"
            or any(s.id for s in self.sensors)
        )

    def meter_identity(self, address: int) -> str:
        """A meter's fleet identity: its ``id``, else ``<node>/<address>``."""
        for sensor in self.sensors:
            if sensor.address == address and sensor.id:
                return sensor.id
        return f"{self.node}/{address}"

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


def _duplicate_errors(config: Config) -> list[InitErrorDetails]:
    """Repeated sensor addresses/names/ids and port devices, located at the repeat."""
    out: list[InitErrorDetails] = []

    def dup(loc: tuple[str | int, ...], what: str, first: int, value: object) -> None:
        section = loc[0]
        msg = f"{what} repeats {section}[{first}]; each must be unique"
        error = PydanticCustomError("value_error", msg)
        out.append(InitErrorDetails(type=error, loc=loc, input=value))

    addresses: dict[int, int] = {}
    names: dict[str, int] = {}
    ids: dict[str, int] = {}
    for i, sensor in enumerate(config.sensors):
        if sensor.id:
            # Home Assistant ids spell '.' as '_', so those must differ too.
            key = sensor.id.replace(".", "_")
            first_id = ids.get(key)
            if first_id is not None:
                what = f"id {sensor.id!r}"
                if config.sensors[first_id].id != sensor.id:
                    what += " ('.' and '_' are one in Home Assistant ids)"
                dup(("sensors", i, "id"), what, first_id, sensor.id)
            ids.setdefault(key, i)
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
