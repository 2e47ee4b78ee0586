from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from wattd.config import load_config
from wattd.config.prices import read_series
from wattd.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_rows_apply_until_the_next_and_the_last_for_the_median_interval(
    tmp_path: Path,
) -> None:
    # Two 15-minute rows and one 30-minute row: the median step is 15 minutes.
    path = write(
        tmp_path / "p.csv",
        "start,price_per_kwh,co2_g_per_kwh\n"
        "2025-04-01T00:00Z,0.10,200\n"
        "2025-04-01T00:15Z,0.20,\n"
        "2025-04-01T00:30Z,-0.05,100\n"
        "2025-04-01T01:00Z,0.40,50\n",
    )
    series = read_series(path, "prices")
    assert series.price_at(epoch("2025-04-01T00:14:59+00:00")) == 0.10
    assert series.price_at(epoch("2025-04-01T00:45:00+00:00")) == -0.05
    assert series.co2_at(epoch("2025-04-01T00:20:00+00:00")) is None
    assert series.price_at(epoch("2025-04-01T01:14:59+00:00")) == 0.40
    assert series.price_at(epoch("2025-04-01T01:15:00+00:00")) is None
    assert series.price_at(epoch("2025-03-31T23:59:59+00:00")) is None
    assert series.end_s == epoch("2025-04-01T01:15:00+00:00")


def test_an_unsorted_file_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path / "prices.csv",
        "start,price_per_kwh\n"
        "2025-04-01T00:00+02:00,0.10\n"
        "# a comment line is skipped but still counted\n"
        "2025-04-01T02:00+02:00,0.20\n"
        "2025-04-01T01:00+02:00,0.30\n",
    )
    with pytest.raises(ConfigError) as info:
        read_series(path, "prices")
    err = info.value
    assert (err.path, err.line, err.key) == (path, 5, "start")
    assert str(err).startswith(f"{path}:5: start: ")
    assert "not after 2025-04-01T02:00+02:00 on line 4" in str(err)


@pytest.mark.parametrize(
    ("row", "column", "words"),
    [
        ("2025-04-01T01:00Z,cheap,", "price_per_kwh", "'cheap' is not a number"),
        ("2025-04-01T01:00Z,nan,", "price_per_kwh", "outside"),
        ("2025-04-01T01:00Z,0.1,-3", "co2_g_per_kwh", "outside 0 to 5000"),
        ("2025-04-01T01:00,0.1,", "start", "has no UTC offset"),
        ("tomorrow,0.1,", "start", "is not an ISO 8601 time"),
    ],
)
def test_a_bad_cell_names_its_line_and_column(
    tmp_path: Path, row: str, column: str, words: str
) -> None:
    path = write(
        tmp_path / "p.csv",
        f"start,price_per_kwh,co2_g_per_kwh\n2025-04-01T00:00Z,0.1,1\n{row}\n",
    )
    with pytest.raises(ConfigError) as info:
        read_series(path, "prices")
    assert (info.value.line, info.value.key) == (3, column)
    assert words in str(info.value)


def test_header_problems_and_a_single_row_are_errors(tmp_path: Path) -> None:
    bad = write(tmp_path / "a.csv", "start,price\n2025-04-01T00:00Z,1\n")
    with pytest.raises(ConfigError, match="unknown column 'price'"):
        read_series(bad, "prices")
    co2 = write(tmp_path / "b.csv", "start,price_per_kwh\n2025-04-01T00:00Z,1\n")
    with pytest.raises(ConfigError, match="unknown column 'price_per_kwh'"):
        read_series(co2, "co2")
    one = write(tmp_path / "c.csv", "start,co2_g_per_kwh\n2025-04-01T00:00Z,1\n")
    with pytest.raises(ConfigError, match="at least two rows"):
        read_series(one, "co2")
    with pytest.raises(ConfigError, match="cannot read price file"):
        read_series(tmp_path / "missing.csv", "prices")


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    write(
        folder / "prices.csv",
        "start,price_per_kwh\n2025-04-01T00:00Z,0.1\n2025-04-01T01:00Z,0.2\n",
    )
    write(
        folder / "co2.csv",
        "start,co2_g_per_kwh\n2025-04-01T00:00Z,90\n2025-04-01T01:00Z,80\n",
    )
    config = write(
        folder / "wattd.yaml",
        "tariffs:\n  plans:\n    m: {price_per_kwh: 0.3, price_file: prices.csv}\n"
        "locations:\n  dc: {co2_file: co2.csv}\n",
    )
    monkeypatch.chdir(tmp_path)  # not the config's folder
    loaded = load_config(config)
    prices = loaded.tariffs.plans["m"].prices
    assert prices is not None
    assert prices.path == folder / "prices.csv"
    assert prices.price_at(datetime(2025, 4, 1, 1, 30, tzinfo=UTC).timestamp()) == 0.2
    co2 = loaded.locations["dc"].co2
    assert co2 is not None
    assert co2.co2_at(datetime(2025, 4, 1, 0, 30, tzinfo=UTC).timestamp()) == 90


def test_versions_must_be_in_date_order(tmp_path: Path) -> None:
    config = write(
        tmp_path / "wattd.yaml",
        "tariffs:\n  plans:\n    m:\n      price_per_kwh: 0.3\n      versions:\n"
        "        - {valid_from: 2025-04-01, price_per_kwh: 0.4}\n"
        "        - {valid_from: 2025-03-01, price_per_kwh: 0.5}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.line == 5  # the versions: key
    assert "versions[1] valid_from 2025-03-01 is not after 2025-04-01" in str(
        info.value
    )
