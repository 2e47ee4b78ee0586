"""Price and carbon files: CSV rows ``start,price_per_kwh[,co2_g_per_kwh]``.

Each row applies from its ``start`` (ISO 8601 with an offset or ``Z``) to the
next row's ``start``, so a file may hold hourly, 15-minute or irregular
intervals. The last row applies for the file's median interval: a day-ahead
file of 24 hourly rows then covers its whole day, and time after it falls back
to the plan's bands rather than repeating the last price forever. A row with
an empty price marks time with no known price (a gap), which also falls back.

Every problem is a :class:`~wattd.errors.ConfigError` naming the file, the
line and the column, so a bad download is found before it prices anything.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import itertools
import math
import statistics
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

from wattd.errors import ConfigError

__all__ = ["MAX_FILE_BYTES", "PriceSeries", "read_series", "resolve_path"]

MAX_FILE_BYTES: Final = 32 * 1024 * 1024
"""Ten years of 15-minute rows fit; anything larger is not a price file."""
MAX_PRICE: Final = 1000.0
"""Per kWh, like a band's price; market prices may also go negative."""
MAX_CO2: Final = 5000.0
"""g/kWh; coal is about 1000."""

SeriesKind = Literal["prices", "co2"]
_COLUMNS: Final = {
    "prices": ("start", "price_per_kwh", "co2_g_per_kwh"),
    "co2": ("start", "co2_g_per_kwh"),
}
_REQUIRED: Final = {"prices": ("start", "price_per_kwh"), "co2": _COLUMNS["co2"]}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PriceSeries:
    """Values that change at given instants, read from one file.

    Times are epoch seconds; ``None`` is a gap (no price or no carbon there).
    """

    path: Path
    starts_s: tuple[float, ...]
    prices_per_kwh: tuple[float | None, ...]
    co2_g_per_kwh: tuple[float | None, ...]
    end_s: float
    """Where the last row stops applying."""

    def index_at(self, t_s: float) -> int | None:
        """The row in force at ``t_s``, or None before the first and after the end."""
        if t_s < self.starts_s[0] or t_s >= self.end_s:
            return None
        return bisect.bisect_right(self.starts_s, t_s) - 1

    def price_at(self, t_s: float) -> float | None:
        """The price in force at ``t_s``, if the file gives one."""
        i = self.index_at(t_s)
        return None if i is None else self.prices_per_kwh[i]

    def co2_at(self, t_s: float) -> float | None:
        """The carbon intensity in force at ``t_s``, if the file gives one."""
        i = self.index_at(t_s)
        return None if i is None else self.co2_g_per_kwh[i]

    def changes(self, a_s: float, b_s: float) -> list[float]:
        """Instants strictly inside ``(a_s, b_s)`` where a row starts or ends."""
        lo = bisect.bisect_right(self.starts_s, a_s)
        hi = bisect.bisect_left(self.starts_s, b_s)
        out = list(self.starts_s[lo:hi])
        if a_s < self.end_s < b_s:
            out.append(self.end_s)
        return out


def resolve_path(path: Path, base_dir: Path | None) -> Path:
    """A relative path is taken from the config file's folder."""
    if path.is_absolute() or base_dir is None:
        return path
    return base_dir / path


def read_series(path: Path, kind: SeriesKind) -> PriceSeries:
    """Read and check a price (``prices``) or carbon (``co2``) file.

    Raises:
        ConfigError: unreadable, too large, or a row that is malformed or out
            of order (with the file, line and column).
    """
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        what = "price" if kind == "prices" else "carbon"
        msg = f"cannot read {what} file: {reason}; check the path in the config"
        raise ConfigError(msg, path=path) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError("file is larger than 32 MiB", path=path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("file is not UTF-8 text", path=path) from None
    return _parse(text, path, kind)


def _parse(text: str, path: Path, kind: SeriesKind) -> PriceSeries:
    lines = [
        (n, line)
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise ConfigError(f"file is empty; {_header_hint(kind)}", path=path, line=1)
    header_line, header_text = lines[0]
    header = [c.strip() for c in next(csv.reader([header_text]))]
    for name in header:
        if name not in _COLUMNS[kind]:
            msg = f"unknown column {name!r}; {_header_hint(kind)}"
            raise ConfigError(msg, path=path, line=header_line, key=name or "?")
    for name in _REQUIRED[kind]:
        if name not in header:
            msg = f"column {name!r} is missing; {_header_hint(kind)}"
            raise ConfigError(msg, path=path, line=header_line)
    starts: list[float] = []
    prices: list[float | None] = []
    co2s: list[float | None] = []
    previous: tuple[int, str] | None = None
    for n, row_text in lines[1:]:
        cells = [c.strip() for c in next(csv.reader([row_text]))]
        if len(cells) != len(header):
            msg = f"row has {len(cells)} cells but the header names {len(header)}"
            raise ConfigError(msg, path=path, line=n)
        row = dict(zip(header, cells, strict=True))
        start = _start(row["start"], path, n)
        if starts and start <= starts[-1]:
            assert previous is not None  # noqa: S101 - set with the first row
            msg = (
                f"{row['start']} is not after {previous[1]} on line {previous[0]};"
                " rows must be in time order, each start once"
            )
            raise ConfigError(msg, path=path, line=n, key="start")
        previous = (n, row["start"])
        starts.append(start)
        price = row.get("price_per_kwh")
        prices.append(_number(price, path, n, "price_per_kwh", -MAX_PRICE, MAX_PRICE))
        co2 = row.get("co2_g_per_kwh")
        co2s.append(_number(co2, path, n, "co2_g_per_kwh", 0.0, MAX_CO2))
        if kind == "co2" and co2s[-1] is None:
            msg = "co2_g_per_kwh is empty; a carbon file needs a value on every row"
            raise ConfigError(msg, path=path, line=n, key="co2_g_per_kwh")
    if len(starts) < 2:
        msg = "needs at least two rows, so the length of the last one is known"
        raise ConfigError(msg, path=path, line=lines[-1][0])
    step = statistics.median(b - a for a, b in itertools.pairwise(starts))
    return PriceSeries(
        path=path,
        starts_s=tuple(starts),
        prices_per_kwh=tuple(prices),
        co2_g_per_kwh=tuple(co2s),
        end_s=starts[-1] + step,
    )


def _header_hint(kind: SeriesKind) -> str:
    if kind == "co2":
        return "the header must be start,co2_g_per_kwh"
    return "the header must be start,price_per_kwh (and optionally co2_g_per_kwh)"


def _start(text: str, path: Path, line: int) -> float:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        msg = f"{text!r} is not an ISO 8601 time like 2025-04-01T00:00+02:00"
        raise ConfigError(msg, path=path, line=line, key="start") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        msg = f"{text!r} has no UTC offset; add one (+02:00) or Z"
        raise ConfigError(msg, path=path, line=line, key="start")
    return moment.timestamp()


def _number(
    text: str | None, path: Path, line: int, column: str, lo: float, hi: float
) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        msg = f"{text!r} is not a number"
        raise ConfigError(msg, path=path, line=line, key=column) from None
    if not math.isfinite(value) or not lo <= value <= hi:
        msg = f"{text} is outside {lo:g} to {hi:g}"
        raise ConfigError(msg, path=path, line=line, key=column)
    return value
