"""Which sinks a config turns on, and how each is built.

One line per sink in :data:`SINKS`: the config section whose ``enabled`` key
turns the sink on, and a factory that takes the :class:`~wattd.config.Config`
and returns the sink. Each factory imports its sink inside the function, so a
daemon that only stores locally never imports the MQTT or InfluxDB client
libraries, while mypy and the import contracts still see every edge.

Constructors must be cheap and do no IO (open files and connections in
:meth:`~wattd.sinks.base.Sink.start`): on a reload the registry builds the
whole list again and the supervisor keeps the running instance of each sink
that stays enabled, discarding the fresh one unstarted.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Final

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
    factory: Callable[[Config], Sink]
    """Takes the Config and returns a Sink; imports the sink's module itself."""
    enabled: Callable[[Config], bool] | None = None
    """Overrides the ``<section>.enabled`` test, for sinks without that key."""

    def is_enabled(self, config: Config) -> bool:
        """Whether the config turns this sink on."""
        if self.enabled is not None:
            return self.enabled(config)
        return bool(getattr(getattr(config, self.section), "enabled", False))


def _store(config: Config) -> Sink:
    from wattd.sinks.sqlite import SqliteSink

    return SqliteSink(config)


def _influxdb(config: Config) -> Sink:
    from wattd.sinks.influx.sink import InfluxSink

    return InfluxSink(config)


def _mqtt(config: Config) -> Sink:
    from wattd.sinks.mqtt.sink import MqttSink

    return MqttSink(config)


def _web(config: Config) -> Sink:
    from wattd.sinks.web.sink import WebSink

    return WebSink(config)


def _summaries(config: Config) -> Sink:
    from wattd.sinks.summaries.sink import SummarySink

    return SummarySink(config)


SINKS: Final[tuple[SinkEntry, ...]] = (
    SinkEntry("store", _store),
    SinkEntry("influxdb", _influxdb),
    SinkEntry("mqtt", _mqtt),
    SinkEntry("web", _web),
    SinkEntry("summaries", _summaries, enabled=lambda config: bool(config.summaries)),
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
    try:
        return entry.factory(config)
    except ImportError as exc:
        # A library missing from this install (a trimmed venv, a distro package).
        raise ConfigError(
            f"the {entry.section} sink is enabled but cannot be loaded ({exc});"
            f" set {entry.section}.enabled: false or reinstall wattd",
            key=f"{entry.section}.enabled",
        ) from None


__all__ = ["SINKS", "SinkEntry", "build_sinks", "enabled_entries"]
