"""The one exception tree of wattd.

Remote garbage (a corrupt radio frame) is not an exception: the decoder returns it
as a counted rejection event. Exceptions are for local problems a caller must act
on: a bad config, a device that is gone, a sink that refuses data.
"""

from __future__ import annotations

from pathlib import Path


class WattdError(Exception):
    """Base class of every error wattd raises on purpose."""


class FrameError(WattdError):
    """A frame could not be built or encoded (local misuse, not radio noise)."""


class ConfigError(WattdError):
    """The configuration is invalid.

    Carries where the problem is, so the message can name file, line and key.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.line = line
        self.key = key
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.path is not None:
            where = str(self.path)
            if self.line is not None:
                where += f":{self.line}"
        if self.key:
            where = f"{where}: {self.key}" if where else self.key
        return f"{where}: {self.message}" if where else self.message

    def one_line(self) -> str:
        """The report on a single line, for a log that keeps one line per event."""
        return str(self)


class ConfigErrors(ConfigError):
    """Several config problems found in one pass, reported together."""

    SHOWN_ON_ONE_LINE = 5

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(
            "\n".join(str(e) for e in errors), path=None, line=first.line, key=None
        )

    def one_line(self) -> str:
        """``N problems: first; second; ...`` (the first few, then a count)."""
        shown = self.errors[: self.SHOWN_ON_ONE_LINE]
        text = f"{len(self.errors)} problems: " + "; ".join(str(e) for e in shown)
        more = len(self.errors) - len(shown)
        return text + (f"; and {more} more" if more > 0 else "")


class SourceError(WattdError):
    """A byte source (serial port, capture file) failed."""

    def __init__(self, message: str, *, source: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


class SerialPortGone(SourceError):
    """The serial device is missing or was unplugged; retrying may help."""


class CaptureError(SourceError):
    """A capture or recording file is unreadable or malformed."""


class SinkError(WattdError):
    """A sink could not accept data."""

    def __init__(self, message: str, *, sink: str) -> None:
        self.sink = sink
        super().__init__(f"{sink}: {message}")


class SinkUnavailable(SinkError):
    """The sink's server is unreachable right now; retry later."""


class SinkRejected(SinkError):
    """The sink refused the data itself; retrying the same data will not help."""


class SinkAuthError(SinkError):
    """The sink refused our credentials; fix the config, retrying will not help."""


class SinkTlsError(SinkError):
    """The TLS handshake or certificate check failed; fix certificates or config."""


class SpoolError(WattdError):
    """The durable spool is full, corrupt or unwritable."""


class StoreError(WattdError):
    """The local SQLite store could not be read or written."""


class StoreLocked(StoreError):
    """Another process kept the store locked past the busy timeout; retry later."""


class StoreCorrupt(StoreError):
    """The store file is not a usable SQLite database; retrying will not help."""


class StateError(WattdError):
    """The saved daemon state could not be read or written."""


class CalibrationError(WattdError):
    """Calibration could not be computed from the given data."""

    def __init__(self, message: str, *, sensor: int | None = None) -> None:
        self.sensor = sensor
        prefix = f"sensor {sensor}: " if sensor is not None else ""
        super().__init__(prefix + message)


class RadioError(WattdError):
    """An XBee radio did not answer or refused a setting."""


class TariffError(WattdError):
    """A tariff or cost computation is impossible with the given data."""


class TsdbError(WattdError):
    """A central time-series store could not be queried for a fleet report.

    Unreachable, credentials refused, no such database, or an answer that is
    not the store's; the message names the store and what to check.
    """


class SummaryError(WattdError):
    """A scheduled summary could not be composed or its ledger kept."""


class ScheduleError(SummaryError, ValueError):
    """A summary schedule (cron line) is malformed; also a ValueError for config."""


class TemplateError(SummaryError, ValueError):
    """A summary template names an unknown field or is malformed."""


class PublishError(SummaryError):
    """Posting a summary failed in a way that may pass; it is retried with backoff."""

    def __init__(self, message: str, *, destination: str) -> None:
        self.destination = destination
        super().__init__(f"{destination}: {message}")


class PublishRejected(PublishError):
    """The destination refused the post (credentials, content); no retry."""
