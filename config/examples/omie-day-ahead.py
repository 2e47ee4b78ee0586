#!/usr/bin/env python3
"""Fetch OMIE's day-ahead prices for tomorrow into a wattd price file.

OMIE (the Iberian power exchange) publishes each day's marginal prices, free
and without a key, as ``marginalpdbc_YYYYMMDD.1``: a line ``MARGINALPDBC;``,
then one line per period ``year;month;day;period;price_PT;price_ES;`` in
EUR/MWh, then ``*``. Period 1 starts at 00:00 Spanish peninsular time
(Europe/Madrid) and the periods follow each other in real time: 24 hourly
periods a day until 30 September 2025 (23 or 25 on DST days), 96 quarter
hours since (92 or 100). So a period lasts the real length of its day
divided by the number of periods, and its price per kWh is EUR/MWh / 1000.

The rows are merged into the price file (rows older than ``--keep-days``
dropped) and the file is replaced in one rename, so the daemon, which looks
for a changed file every ``tariffs.reload_check_s``, never reads half a file.

    # /etc/cron.d/wattd-prices: OMIE publishes by about 13:00 CET
    30 14 * * * wattd python3 /etc/wattd/omie-day-ahead.py /etc/wattd/day-ahead.csv

Only the standard library is used. ``--input FILE`` converts a file already
downloaded instead of fetching it.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

URL = (
    "https://www.omie.es/es/file-download"
    "?parents=marginalpdbc&filename=marginalpdbc_{day:%Y%m%d}.1"
)
MADRID = ZoneInfo("Europe/Madrid")
COLUMNS = {"pt": 4, "es": 5}


def convert(text: str, column: str = "es") -> list[tuple[datetime, float]]:
    """``(start UTC, EUR per kWh)`` for every period of an OMIE marginalpdbc file."""
    periods: list[tuple[date, int, float]] = []
    for line in text.splitlines():
        cells = line.strip().split(";")
        if len(cells) < 6 or not cells[0].isdigit():
            continue  # the MARGINALPDBC; header and the closing *
        day = date(int(cells[0]), int(cells[1]), int(cells[2]))
        eur_mwh = float(cells[COLUMNS[column]].replace(",", "."))
        periods.append((day, int(cells[3]), eur_mwh / 1000.0))
    if not periods:
        sys.exit("no price lines found; is this a marginalpdbc file?")
    day = periods[0][0]
    start = datetime(day.year, day.month, day.day, tzinfo=MADRID).astimezone(UTC)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=MADRID).astimezone(UTC)
    step = (end - start) / len(periods)
    return [(start + step * (n - 1), price) for _, n, price in periods]


def merge(path: Path, rows: list[tuple[datetime, float]], keep_days: int) -> None:
    """Add ``rows`` to the price file at ``path``, replacing it in one rename."""
    table: dict[datetime, str] = {}
    if path.exists():
        for row in csv.DictReader(
            line for line in path.read_text().splitlines() if not line.startswith("#")
        ):
            table[datetime.fromisoformat(row["start"])] = row["price_per_kwh"]
    table.update((start, f"{price:.6f}") for start, price in rows)
    oldest = datetime.now(UTC) - timedelta(days=keep_days)
    out = io.StringIO()
    out.write("start,price_per_kwh\n")
    for start in sorted(t for t in table if t >= oldest):
        out.write(f"{start.isoformat().replace('+00:00', 'Z')},{table[start]}\n")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(out.getvalue())
    Path(tmp).chmod(0o644)
    Path(tmp).replace(path)


def main() -> None:
    """Fetch (or read) one day's prices and merge them into the price file."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("price_file", type=Path)
    p.add_argument("--day", type=date.fromisoformat, help="default: tomorrow")
    p.add_argument("--zone", choices=sorted(COLUMNS), default="es")
    p.add_argument("--keep-days", type=int, default=400)
    p.add_argument("--input", type=Path, help="a downloaded marginalpdbc file")
    args = p.parse_args()
    if args.input is not None:
        text = args.input.read_text(encoding="latin-1")
    else:
        day = args.day or datetime.now(MADRID).date() + timedelta(days=1)
        url = URL.format(day=day)
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 - https
            text = resp.read().decode("latin-1")
    merge(args.price_file, convert(text, args.zone), args.keep_days)


if __name__ == "__main__":
    main()
