from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from wattd.cli import main
from wattd.core.readings import Reading

CONFIG = """\
state_dir: {state}
sensors:
  - {{address: 1, name: web-1, customer: acme}}
  - {{address: 2, name: web-2, customer: globex}}
tariffs:
  timezone: Europe/Berlin
  default: tou
  plans:
    tou:
      currency: EUR
      price_per_kwh: 0.30
      bands:
        - {{name: night, price_per_kwh: 0.10, hours: "00:00-06:00"}}
"""


def write_readings(path: Path) -> float:
    """Two meters at 100 W and 50 W for 2025-03-05 (Berlin), one reading a minute."""
    start = datetime(2025, 3, 4, 23, tzinfo=UTC)
    lines = []
    for sensor, watts in ((1, 100.0), (2, 50.0)):
        for minute in range(24 * 60 + 1):
            t = start + timedelta(minutes=minute)
            r = Reading(
                sensor=sensor,
                name=f"s{sensor}",
                time=t,
                monotonic_s=0.0,
                watts=watts,
                va=watts,
                vrms=230.0,
                irms=watts / 230,
                power_factor=1.0,
                wh_total=1000.0 + watts * minute / 60,
                wh_delta=0.0,
                rssi_dbm=None,
            )
            lines.append(json.dumps(r.to_json_dict()))
    path.write_text("\n".join(lines) + "\n")
    return (100.0 + 50.0) * 24 / 1000


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, float]:
    config = tmp_path / "wattd.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    readings = tmp_path / "readings.jsonl"
    return config, readings, write_readings(readings)


def test_report_json_from_readings(
    files: tuple[Path, Path, float], capsys: pytest.CaptureFixture[str]
) -> None:
    config, readings, kwh = files
    args = ["report", "-c", str(config), "--readings", str(readings)]
    args += [
        "--from",
        "2025-03-05",
        "--to",
        "2025-03-05",
        "--by",
        "customer",
        "--format",
        "json",
    ]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["start"] == "2025-03-04T23:00:00Z"
    assert data["end"] == "2025-03-05T23:00:00Z"  # --to DATE includes that day
    assert data["total"]["it_kwh"] == pytest.approx(kwh)
    acme = next(g for g in data["groups"] if g["group"] == "acme")
    assert acme["cost"] == pytest.approx(0.6 * 0.10 + 1.8 * 0.30)


def test_report_csv_and_html_to_files(
    files: tuple[Path, Path, float], tmp_path: Path
) -> None:
    config, readings, kwh = files
    base = ["report", "-c", str(config), "--readings", str(readings)]
    base += ["--from", "2025-03-05T00:00", "--to", "2025-03-06T00:00"]
    out = tmp_path / "r.csv"
    assert main([*base, "--format", "csv", "-o", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert float(rows[-1]["it_kwh"]) == pytest.approx(kwh)
    page = tmp_path / "acme.html"
    assert (
        main(
            [
                *base,
                "--by",
                "customer",
                "--only",
                "acme",
                "--format",
                "html",
                "-o",
                str(page),
            ]
        )
        == 0
    )
    assert "<title>Energy report \N{EM DASH} acme</title>" in page.read_text()


def test_report_usage_errors(
    files: tuple[Path, Path, float], capsys: pytest.CaptureFixture[str]
) -> None:
    config, readings, _ = files
    base = ["report", "-c", str(config), "--readings", str(readings)]
    assert main([*base, "--from", "2025-03-05"]) == 2
    assert (
        main([*base, "--period", "day", "--from", "2025-03-05", "--to", "2025-03-06"])
        == 2
    )
    assert main([*base, "--from", "yesterday", "--to", "2025-03-06"]) == 1
    assert "is not a date" in capsys.readouterr().err


def test_report_reads_the_store_and_says_when_it_is_missing(
    files: tuple[Path, Path, float], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _, _ = files
    assert main(["report", "-c", str(config), "--period", "day"]) == 1
    assert "no store here yet" in capsys.readouterr().err


def test_a_local_report_by_node_is_this_host(
    files: tuple[Path, Path, float], capsys: pytest.CaptureFixture[str]
) -> None:
    config, readings, kwh = files
    config.write_text(config.read_text() + "mqtt: {node_id: hall1-a}\n")
    args = ["report", "-c", str(config), "--readings", str(readings), "--by", "node"]
    args += ["--from", "2025-03-05", "--to", "2025-03-05", "--format", "json"]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert [g["group"] for g in data["groups"]] == ["hall1-a"]
    assert data["groups"][0]["it_kwh"] == pytest.approx(kwh)
