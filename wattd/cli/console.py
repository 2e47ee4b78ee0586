"""A live text table of the daemon's meters (``wattd demo``).

Rendering is a pure function of a :class:`~wattd.core.snapshot.DaemonSnapshot`, so
it is tested without a terminal. :class:`LiveConsole` redraws in place on a
terminal and prints plain successive tables elsewhere (logs, pipes, tests).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from wattd.core.snapshot import DaemonSnapshot, SensorSnapshot

# Move home and clear to the end of the screen: redraw without scrolling.
_REDRAW = "\x1b[H\x1b[J"


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _kwh(wh: float | None) -> str:
    if wh is None:
        return "-"
    # Six decimals while small, so a fresh demo shows energy growing at once.
    return f"{wh / 1000:.6f}" if wh < 1000 else f"{wh / 1000:.3f}"


def render(
    snapshot: DaemonSnapshot,
    *,
    title: str = "wattd",
    true_watts: Mapping[int, float] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The whole screen as text: a header, one row per sensor, the sinks.

    ``true_watts`` (simulated meters) adds a column with the load's real power,
    to compare against what the daemon measured. ``notes`` are lines shown
    under the header, such as what the demo simulates on purpose.
    """
    lines = [
        f"{title} - up {snapshot.uptime_s:.0f} s - {snapshot.frames_per_s:.1f}"
        f" frames/s - {snapshot.readings_total} readings",
        *notes,
    ]
    for port in snapshot.ports:
        state = "connected" if port.connected else f"DOWN ({port.last_error})"
        lines.append(
            f"port {port.name}: {state}; {port.frames_ok} frames ok,"
            f" {port.bad_checksum} bad checksums, {port.garbage_bytes} garbage bytes"
        )
    lines.append("")
    headers = ["sensor", "name", "watts"]
    if true_watts is not None:
        headers.append("true W")
    headers += ["kWh", "Vrms", "RSSI", "frames", "bad crc", "last seen", "flags"]
    rows = [headers, *(_row(s, true_watts) for s in snapshot.sensors)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    numeric = {h for h in headers if h not in {"name", "last seen", "flags"}}
    for k, row in enumerate(rows):
        cells = [
            cell.rjust(w) if headers[i] in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    if not snapshot.sensors:
        lines.append("(no meters heard yet)")
    lines.append("")
    lines.extend(
        f"sink {sink.name}: {sink.written} readings written, {sink.queue_depth}"
        f" queued, {sink.dropped} dropped, {sink.errors} errors"
        for sink in snapshot.sinks
    )
    return "\n".join(lines) + "\n"


def _row(s: SensorSnapshot, true_watts: Mapping[int, float] | None) -> list[str]:
    row = [str(s.sensor), s.name, _fmt(s.watts, ".1f")]
    if true_watts is not None:
        row.append(_fmt(true_watts.get(s.sensor), ".1f"))
    row += [
        _kwh(s.wh_total),
        _fmt(s.vrms, ".1f"),
        _fmt(s.rssi_dbm, "d"),
        str(s.frames),
        str(s.bad_checksum),
        _age(s.last_seen_age_s),
        ",".join(sorted(s.flags)),
    ]
    return row


class LiveConsole:
    """Shows successive renders: in place on a terminal, appended elsewhere."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty()

    def show(self, text: str) -> None:
        """Draw one frame of the display."""
        if self.interactive:
            self.stream.write(_REDRAW + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


__all__ = ["LiveConsole", "render"]
