"""Logging: readable text on a terminal, journald-friendly lines otherwise.

journald adds its own timestamps and reads a ``<N>`` prefix as the syslog
priority, so under systemd lines carry a priority prefix and no time.
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


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``, without timestamps."""

    def format(self, record: logging.LogRecord) -> str:
        """Format one record for journald."""
        prio = _PRIORITY.get(record.levelno, 6)
        text = f"<{prio}>{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def use_journal_format(stream: TextIO) -> bool:
    """True when output goes to journald rather than to a person."""
    if os.environ.get("JOURNAL_STREAM"):
        return True
    return not stream.isatty()


def setup_logging(
    level: str = "info",
    fmt: str = "auto",
    *,
    stream: TextIO | None = None,
    reconfigure: bool = True,
) -> None:
    """Configure the ``wattd`` logger.

    With ``reconfigure=False`` an existing handler is kept (the CLI calls this
    early, the daemon again once it has read the config).
    """
    logger = logging.getLogger("wattd")
    if logger.handlers and not reconfigure:
        return
    out = stream or sys.stderr
    journal = fmt == "journal" or (fmt == "auto" and use_journal_format(out))
    handler = logging.StreamHandler(out)
    if journal:
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        )
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = True
