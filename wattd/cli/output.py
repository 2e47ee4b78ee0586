"""Reading output for the command line: JSON Lines for programs, a table for people."""

from __future__ import annotations

import json
from typing import Final, TextIO

from wattd.core.readings import Reading

_COLUMNS: Final = (
    ("time", 23),
    ("sensor", 6),
    ("name", 14),
    ("W", 8),
    ("VA", 8),
    ("V", 6),
    ("A", 6),
    ("PF", 5),
    ("Wh", 10),
    ("dBm", 4),
    ("flags", 0),
)


def reading_to_jsonl(reading: Reading) -> str:
    """One reading as one compact JSON line (no newline)."""
    return json.dumps(reading.to_json_dict(), separators=(",", ":"))


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class ReadingWriter:
    """Writes readings to a stream as ``jsonl`` or an aligned ``table``."""

    def __init__(self, stream: TextIO, fmt: str = "jsonl") -> None:
        if fmt not in {"jsonl", "table"}:
            msg = f"unknown output format {fmt!r}; use jsonl or table"
            raise ValueError(msg)
        self._stream = stream
        self._fmt = fmt
        self._header_done = False

    def write(self, reading: Reading) -> None:
        """Write one reading."""
        if self._fmt == "jsonl":
            self._stream.write(reading_to_jsonl(reading) + "\n")
            return
        if not self._header_done:
            self._stream.write(self._row([c for c, _ in _COLUMNS]) + "\n")
            self._header_done = True
        local = reading.time.astimezone()
        cells = [
            local.strftime("%Y-%m-%d %H:%M:%S.%f")[:23],
            str(reading.sensor),
            reading.name[:14],
            _fmt(reading.watts, 1),
            _fmt(reading.va, 1),
            _fmt(reading.vrms, 1),
            _fmt(reading.irms, 3),
            _fmt(reading.power_factor, 2),
            _fmt(reading.wh_total, 3),
            "-" if reading.rssi_dbm is None else str(reading.rssi_dbm),
            ",".join(sorted(reading.flags)),
        ]
        self._stream.write(self._row(cells) + "\n")

    @staticmethod
    def _row(cells: list[str]) -> str:
        parts = []
        for (name, width), cell in zip(_COLUMNS, cells, strict=True):
            if not width:
                parts.append(cell)
            elif name in {"time", "name", "flags"}:
                parts.append(cell.ljust(width))
            else:
                parts.append(cell.rjust(width))
        return " ".join(parts).rstrip()
