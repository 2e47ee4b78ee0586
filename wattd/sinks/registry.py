"""Which sinks a config turns on, and how each is built.

One line per sink in :data:`SINKS`: the config section whose ``enabled`` key
turns the sink on, and the import path of a callable that takes the
:class:`~wattd.config.Config` and returns the sink. The import happens only when
the sink is enabled, so a daemon that only stores locally never imports the
MQTT or InfluxDB client libraries.

Constructors must be cheap and do no IO (open files and connections in
:meth:`~wattd.sinks.base.Sink.start`): on a reload the registry builds the
whole list again and the supervisor keeps the running instance of each sink
that stays enabled, discarding the fresh one unstarted.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Final, cast

from wattd.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from wattd.config import Config
    from wattd.sinks.base import Sink


@dataclasses.dataclass(frozen=True, slots=True)
class SinkEntry:
    """How to make one kind of sink."""

    section: str
    """The config section that configures it; its ``enabled`` key turns it on."""
    factory: str
    """``module:attr`` (``attr`` may be dotted, e.g. ``Cls.from_config``); the
    callable takes the Config and returns a Sink."""
    enabled: Callable[[Config], bool] | None = None
    """Overrides the ``<section>.enabled`` test, for sinks without that key."""

    def is_enabled(self, config: Config) -> bool:
        """Whether the config turns this sink on."""
        if self.enabled is not None:
            return self.enabled(config)
        return bool(getattr(getattr(config, self.section), "enabled", False))


# One line per sink: SinkEntry("<config section>", "<module>:<factory>").
SINKS: Final[tuple[SinkEntry, ...]] = (
    SinkEntry("store", "wattd.sinks.sqlite:SqliteSink"),
    SinkEntry("influxdb", "wattd.sinks.influx:InfluxSink"),
    SinkEntry("mqtt", "wattd.sinks.mqtt:MqttSink"),
    SinkEntry("web", "wattd.sinks.web:WebSink"),
    SinkEntry(
        "summaries",
        "wattd.sinks.summaries:SummarySink",
        enabled=lambda config: bool(config.summaries),
    ),
)


def enabled_entries(config: Config) -> list[SinkEntry]:
    """The registry entries the config enables, in registry order."""
    return [entry for entry in SINKS if entry.is_enabled(config)]


def build_sinks(config: Config) -> list[Sink]:
    """Build every sink the config enables (not started yet).

    Raises:
        ConfigError: a sink is enabled but its code cannot be loaded.
    """
    return [_build(entry, config) for entry in enabled_entries(config)]


def _build(entry: SinkEntry, config: Config) -> Sink:
    module_name, _, attr = entry.factory.partition(":")
    try:
        factory: object = importlib.import_module(module_name)
        for part in attr.split("."):
            factory = getattr(factory, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"the {entry.section} sink is enabled but cannot be loaded ({exc});"
            f" set {entry.section}.enabled: false or reinstall wattd",
            key=f"{entry.section}.enabled",
        ) from None
    return cast("Callable[[Config], Sink]", factory)(config)


__all__ = ["SINKS", "SinkEntry", "build_sinks", "enabled_entries"]
