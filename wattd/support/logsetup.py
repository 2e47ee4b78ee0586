"""Logging: journald-friendly lines on the journal, readable text elsewhere.

journald adds its own timestamps and reads a ``<N>`` prefix as the syslog
priority, so lines written to the journal carry a priority prefix and no time.
systemd says which stream is the journal with ``JOURNAL_STREAM``; a terminal, a
file or a pipe (``wattd replay ... 2> err.log``, CI logs) gets timestamped text.

wattd owns its output: the ``wattd`` logger has its own handler and does not
propagate, so a library that configures the root logger (influxdb-client's
module-level ``logging.debug()`` runs ``basicConfig()``) cannot make it print
a line twice. Other libraries' warnings and errors go through the root logger
to a handler of the same format, and their debug chatter goes nowhere.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Final, TextIO

_PRIORITY: Final = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}

TEXT_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LIBRARY_LEVEL: Final = logging.WARNING
"""The least severe record of another library that is shown."""


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``, without timestamps."""

    def format(self, record: logging.LogRecord) -> str:
        """Format one record for journald."""
        prio = _PRIORITY.get(record.levelno, 6)
        text = f"<{prio}>{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class WattdHandler(logging.StreamHandler[TextIO]):
    """A handler that :func:`setup_logging` installed (and may replace).

    Handlers of any other class on the same loggers are left alone.
    """


def use_journal_format(stream: TextIO) -> bool:
    """True when ``stream`` is connected to the journal.

    systemd sets ``JOURNAL_STREAM`` to ``device:inode`` of the stream it
    connected to journald. Under a unit whose output was redirected, or in a
    child that inherited the variable, the stream differs and text is used.
    """
    device, sep, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (sep and device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        # No file descriptor (a StringIO, a closed or replaced stream).
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def setup_logging(
    level: str = "info",
    fmt: str = "auto",
    *,
    stream: TextIO | None = None,
    reconfigure: bool = True,
) -> None:
    """Configure the ``wattd`` logger, and the root logger for other libraries.

    With ``reconfigure=False`` an existing wattd handler is kept (the CLI calls
    this early, the daemon again once it has read the config).
    """
    logger = logging.getLogger("wattd")
    if not reconfigure and _own_handlers(logger):
        return
    out = stream or sys.stderr
    journal = fmt == "journal" or (fmt == "auto" and use_journal_format(out))
    formatter = JournalFormatter() if journal else logging.Formatter(TEXT_FORMAT)
    _install(logger, WattdHandler(out), formatter)
    logger.setLevel(level.upper())
    logger.propagate = False
    # Any handler on the root logger also keeps basicConfig() from adding one.
    libraries = WattdHandler(out)
    libraries.setLevel(LIBRARY_LEVEL)
    _install(logging.getLogger(), libraries, formatter)


def _own_handlers(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if isinstance(h, WattdHandler)]


def _install(
    logger: logging.Logger, handler: WattdHandler, formatter: logging.Formatter
) -> None:
    """Put ``handler`` on ``logger`` in place of the one installed before."""
    handler.setFormatter(formatter)
    for old in _own_handlers(logger):
        logger.removeHandler(old)
    logger.addHandler(handler)
