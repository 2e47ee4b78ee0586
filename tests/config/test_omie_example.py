"""The day-ahead cron script of config/examples converts OMIE's format."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tests.fixtures.paths import REPO_ROOT
from wattd.config.prices import read_series

if TYPE_CHECKING:
    from pathlib import Path

SCRIPT = REPO_ROOT / "config" / "examples" / "omie-day-ahead.py"


def test_a_dst_day_of_quarter_hours_becomes_a_valid_price_file(
    tmp_path: Path,
) -> None:
    # 29 March 2026 in Madrid has 23 hours: 92 quarter-hour periods.
    lines = ["MARGINALPDBC;"]
    lines += [f"2026;03;29;{p};{p},50;{p + 100}.25;" for p in range(1, 93)]
    lines.append("*")
    source = tmp_path / "marginalpdbc_20260329.1"
    source.write_text("\n".join(lines) + "\n", encoding="latin-1")
    target = tmp_path / "day-ahead.csv"
    target.write_text("start,price_per_kwh\n2026-03-28T22:45:00Z,0.5\n")
    args = [str(target), "--input", str(source), "--keep-days", "100000"]
    subprocess.run([sys.executable, str(SCRIPT), *args], check=True)
    series = read_series(target, "prices")
    assert len(series.starts_s) == 93  # the row already there is kept
    first = datetime(2026, 3, 28, 23, tzinfo=UTC).timestamp()  # Madrid midnight
    assert series.price_at(first) == 0.10125  # Spain: (1 + 100.25) / 1000
    # Period 9 starts two real hours later, at 03:00 summer time.
    assert series.starts_s[9] == first + 2 * 3600
    assert series.end_s == datetime(2026, 3, 29, 22, tzinfo=UTC).timestamp()
