"""systemd's notify protocol (``Type=notify``), without a dependency.

systemd passes a unix datagram socket in ``NOTIFY_SOCKET``; a service tells it
``READY=1`` once serving, ``STATUS=...`` for ``systemctl status`` and
``WATCHDOG=1`` at least once per ``WatchdogSec=``. Outside systemd the variable is
unset and every call is a cheap no-op, so callers never need to check.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger(__name__)

# A notify datagram is a few short lines; systemd reads at most this much.
MAX_MESSAGE_BYTES: Final = 4096


class SdNotifier:
    """Send state changes to the service manager, if there is one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_s = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when a service manager listens."""
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """The watchdog timeout systemd expects pings within, if one is set."""
        return self._watchdog_s

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines (keys are upper-cased); True if sent.

        Failures are logged once and otherwise ignored: losing a status line
        must never take the daemon down.
        """
        if self._address is None:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value).replace("\n", " ")
            lines.append(f"{key.upper()}={text}")
        data = ("\n".join(lines) + "\n").encode("utf-8")[:MAX_MESSAGE_BYTES]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(data, self._address)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify the service manager: %s", exc.strerror)
                self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Report that start-up is complete."""
        if status is None:
            return self.notify(ready=1)
        return self.notify(ready=1, status=status)

    def reloading(self) -> bool:
        """Report that a configuration reload has started."""
        return self.notify(reloading=1)

    def stopping(self) -> bool:
        """Report that shutdown has begun."""
        return self.notify(stopping=1)

    def status(self, text: str) -> bool:
        """Set the one-line status ``systemctl status`` shows."""
        return self.notify(status=text)

    def watchdog(self) -> bool:
        """Tell the watchdog the main loop is alive."""
        return self.notify(watchdog=1)

    def close(self) -> None:
        """Close the socket (it reopens on the next message)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        # Abstract namespace: a leading NUL instead of the '@'.
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    # systemd sets WATCHDOG_PID to the main process; a child must not ping.
    if pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000


__all__ = ["SdNotifier"]
