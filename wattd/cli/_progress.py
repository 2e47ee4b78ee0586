"""One progress line on stderr for long commands, and stopping them cleanly.

The line is drawn only on a terminal (or when asked with ``--progress``), so
redirected output never gets carriage returns mixed in, and it always goes
to its own stream, never to stdout where JSON lines may be going.
"""

from __future__ import annotations

import contextlib
import signal
import time
from typing import TYPE_CHECKING, Final, TextIO

from wattd.cli._signals import STOP_SIGNALS

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator
    from types import FrameType

__all__ = [
    "EXIT_STOPPED",
    "PROGRESS_EVERY_S",
    "ProgressLine",
    "StopFlag",
    "add_progress_argument",
    "stop_on_signals",
]

PROGRESS_EVERY_S: Final = 0.5
"""The line is redrawn at most this often."""
EXIT_STOPPED: Final = 130
"""Stopped by Ctrl-C or SIGTERM, as a shell reports SIGINT."""
_BAR: Final = 24


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--progress``."""
    parser.add_argument(
        "--progress",
        action="store_true",
        help="draw the progress line on stderr even when it is not a terminal",
    )


class ProgressLine:
    """One line redrawn in place; nothing unless ``out`` is a terminal or forced.

    When forced onto a file or pipe, each redraw is a line of its own, so the
    log stays readable.
    """

    def __init__(self, out: TextIO, label: str, *, force: bool = False) -> None:
        self._out = out
        self._label = label
        self._tty = out.isatty()
        self._on = self._tty or force
        self._drawn_at = 0.0
        self._width = 0

    def show(self, fraction: float | None, text: str, *, now: bool = False) -> None:
        """Redraw with ``fraction`` done (None: unknown) and a short text."""
        if not self._on:
            return
        clock = time.monotonic()
        if not now and clock - self._drawn_at < PROGRESS_EVERY_S:
            return
        self._drawn_at = clock
        line = f"{self._label}: "
        if fraction is not None:
            part = min(1.0, max(0.0, fraction))
            filled = round(part * _BAR)
            line += f"[{'#' * filled}{'.' * (_BAR - filled)}] {part * 100:5.1f} %  "
        line += text
        if self._tty:
            self._out.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self._out.write(line + "\n")
        self._out.flush()

    def clear(self) -> None:
        """Remove the line (on a terminal), before the summary is printed."""
        if self._tty and self._width:
            self._out.write("\r" + " " * self._width + "\r")
            self._out.flush()
            self._width = 0


class StopFlag:
    """Set by SIGINT or SIGTERM while :func:`stop_on_signals` is active."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def set(self, signum: int, _frame: FrameType | None = None) -> None:
        """The signal handler."""
        self.signal = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """A flag the signals set instead of killing a synchronous command.

    The command checks it between batches, finishes what it holds, and exits
    on its own terms. (``_signals.on_stop_signals`` is the same for commands
    that run in an event loop.)
    """
    flag = StopFlag()
    previous = {sig: signal.signal(sig, flag.set) for sig in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
