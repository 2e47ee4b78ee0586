"""The YAML config: schema, loading, validation with file:line errors, secrets.

One file describes the whole daemon. Every section is a frozen pydantic model
that forbids unknown keys, so a typo is an error that names the file, the line
and the key, not a silently ignored setting. Strings may reference environment
variables as ``${NAME}``; secrets are ``SecretStr`` (masked when printed, never
blank) and may instead come from a ``*_file`` path or a systemd credential
(``*_credential``).

The sections live in ``base`` (shared model and helpers), ``core``, ``sinks``
and ``cost``; ``model`` holds the whole-file ``Config``. ``yamlread`` turns a
file into data within bounds (size, encoding, aliases, repeated keys),
``loading`` validates and dumps it, and ``redact`` masks and shortens what
either shows.
"""

from __future__ import annotations

from wattd.config.base import is_loopback_host
from wattd.config.core import (
    EnergyConfig,
    LoggingConfig,
    MainsConfig,
    PortConfig,
    SensorConfig,
    StoreConfig,
)
from wattd.config.cost import (
    DemandChargeConfig,
    LocationConfig,
    MastodonDestinationConfig,
    MqttDestinationConfig,
    SeasonConfig,
    SummaryConfig,
    SummaryDestinationsConfig,
    TariffBandConfig,
    TariffConfig,
    TariffsConfig,
    WebhookDestinationConfig,
    XDestinationConfig,
)
from wattd.config.loading import dump_effective, load_config, parse_config
from wattd.config.model import Config, SensorMeta
from wattd.config.pipeline import pipeline_settings
from wattd.config.sinks import (
    DiscoveryConfig,
    InfluxConfig,
    MqttConfig,
    SpoolConfig,
    TlsConfig,
    WebConfig,
)

__all__ = [
    "Config",
    "DemandChargeConfig",
    "DiscoveryConfig",
    "EnergyConfig",
    "InfluxConfig",
    "LocationConfig",
    "LoggingConfig",
    "MainsConfig",
    "MastodonDestinationConfig",
    "MqttConfig",
    "MqttDestinationConfig",
    "PortConfig",
    "SeasonConfig",
    "SensorConfig",
    "SensorMeta",
    "SpoolConfig",
    "StoreConfig",
    "SummaryConfig",
    "SummaryDestinationsConfig",
    "TariffBandConfig",
    "TariffConfig",
    "TariffsConfig",
    "TlsConfig",
    "WebConfig",
    "WebhookDestinationConfig",
    "XDestinationConfig",
    "dump_effective",
    "is_loopback_host",
    "load_config",
    "parse_config",
    "pipeline_settings",
]
