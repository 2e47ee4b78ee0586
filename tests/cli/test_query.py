"""``wattd query``: selections, time parsing, table and CSV output."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.cli import run_cli
from tests.storage.test_store import series
from wattd.cli.query import UsageError, parse_time
from wattd.storage.store import Store, to_ns

if TYPE_CHECKING:
    from pathlib import Path

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
FAR = 1 << 62


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "wattd.yaml"
    path.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "sensors:\n"
        "  - address: 1\n"
        "    name: fridge\n"
        "  - address: 2\n"
        "    name: washer\n"
    )
    return path


@pytest.fixture
def store_path(tmp_path: Path, config_file: Path) -> Path:
    path = tmp_path / "state" / "wattd.sqlite"
    with Store.open(path) as s:
        s.add(series(1, T0, 200, step_s=2.0) + series(2, T0, 100, step_s=4.0, seed=4))
    return path


def test_csv_parses_back_to_the_stored_readings(
    config_file: Path, store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run_cli(
        [
            "query",
            "--config",
            str(config_file),
            "--from",
            "2024-03-01T12:01:00Z",
            "--to",
            "2024-03-01T12:03:00Z",
            "--format",
            "csv",
        ],
        capsys,
    )
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    with Store.open(store_path, readonly=True) as s:
        want = s.readings(
            to_ns(T0 + timedelta(minutes=1)), to_ns(T0 + timedelta(minutes=3))
        )
    assert len(rows) == len(want) > 0
    for row, r in zip(rows, want, strict=True):
        assert row["time"].endswith("Z")
        assert datetime.fromisoformat(row["time"]) == r.time
        assert int(row["sensor"]) == r.sensor
        assert row["name"] == r.name
        assert float(row["watts"]) == r.watts
        assert float(row["wh_total"]) == r.wh_total
        assert float(row["pf"]) == r.power_factor
        assert int(row["rssi_dbm"]) == r.rssi_dbm
        assert row["flags"] == ""


def test_table_shows_local_time_with_zone_and_groups_sensors(
    berlin_zone: None,
    config_file: Path,
    store_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, _ = run_cli(["query", "--config", str(config_file), "--last", "3"], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "time",
        "sensor",
        "name",
        "watts",
        "va",
        "vrms",
        "irms",
        "pf",
        "wh_total",
        "wh_delta",
        "rssi_dbm",
        "flags",
    ]
    blocks = "\n".join(lines[1:]).split("\n\n")
    assert [len(b.splitlines()) for b in blocks] == [3, 3]
    with Store.open(store_path, readonly=True) as s:
        last = s.recent_readings([1], limit_per_sensor=1)[0]
    first_block = blocks[0].splitlines()
    cells = first_block[-1].split()
    # 12:06:4x UTC is 13:06:4x CET.
    local = last.time.astimezone()
    assert cells[:3] == [local.strftime("%Y-%m-%d"), local.strftime("%H:%M:%S"), "CET"]
    assert cells[2] == "CET"
    assert cells[0] == "2024-03-01"
    assert cells[1].startswith("13:")
    assert cells[3:5] == ["1", "sensor-1"]
    assert float(cells[5]) == pytest.approx(last.watts, abs=0.05)
    assert blocks[1].splitlines()[0].split()[3] == "2"


def test_rollups_as_csv_add_up_to_the_readings(
    config_file: Path, store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "query",
        "-c",
        str(config_file),
        "--from",
        "2024-03-01T11:00Z",
        "--to",
        "2024-03-01T13:00Z",
    ]
    rc, out, _ = run_cli([*args, "--rollup", "1m", "--format", "csv"], capsys)
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["name"] for r in rows} == {"fridge", "washer"}
    with Store.open(store_path, readonly=True) as s:
        for sensor in (1, 2):
            mine = [r for r in rows if int(r["sensor"]) == sensor]
            readings = s.readings(0, FAR, [sensor])
            assert sum(int(r["readings"]) for r in mine) == len(readings)
            assert sum(float(r["wh"]) for r in mine) == pytest.approx(
                sum(r.wh_delta for r in readings)
            )
            starts = [datetime.fromisoformat(r["start"]) for r in mine]
            assert all(t.second == 0 and t.tzinfo is not None for t in starts)
    rc, out, _ = run_cli(
        [*args, "--rollup", "1h", "--format", "csv", "-s", "washer"], capsys
    )
    (hour,) = list(csv.DictReader(io.StringIO(out)))
    assert datetime.fromisoformat(hour["start"]) == T0
    assert int(hour["readings"]) == 100


def test_relative_times_select_the_recent_past(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "recent.sqlite"
    now = datetime.now(UTC)
    with Store.open(db) as s:
        s.add(series(5, now - timedelta(hours=3), 180, step_s=60.0))
    rc, out, _ = run_cli(
        ["query", "--db", str(db), "--from", "-1h", "--format", "csv"], capsys
    )
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    times = [datetime.fromisoformat(r["time"]) for r in rows]
    assert 59 <= len(times) <= 61
    assert min(times) >= now - timedelta(hours=1, seconds=5)
    rc, out, _ = run_cli(
        [
            "query",
            "--db",
            str(db),
            "--from",
            "-3h",
            "--to",
            "-2h30m",
            "--format",
            "csv",
        ],
        capsys,
    )
    times = [
        datetime.fromisoformat(r["time"]) for r in csv.DictReader(io.StringIO(out))
    ]
    assert 28 <= len(times) <= 31
    assert max(times) < now - timedelta(minutes=149)


def test_sensor_selection_by_name_or_address(
    config_file: Path, store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["query", "-c", str(config_file), "--format", "csv", "-n", "2"]
    for selector, want in (
        ("fridge", {"1"}),
        ("0x2", {"2"}),
        ("WASHER", {"2"}),
        ("1", {"1"}),
    ):
        rc, out, _ = run_cli([*base, "-s", selector], capsys)
        assert rc == 0
        assert {r["sensor"] for r in csv.DictReader(io.StringIO(out))} == want
    rc, out, _ = run_cli([*base, "-s", "fridge", "-s", "2"], capsys)
    assert {r["sensor"] for r in csv.DictReader(io.StringIO(out))} == {"1", "2"}
    rc, _, err = run_cli([*base, "-s", "kettle"], capsys)
    assert rc == 2
    assert "no sensor is named 'kettle'" in err
    assert "1 (sensor-1)" in err


def test_query_works_while_a_writer_holds_the_store(
    config_file: Path, store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.open(store_path) as writer, writer.transaction():
        writer.insert_readings(series(1, T0 + timedelta(hours=1), 50, seed=8))
        rc, out, _ = run_cli(
            ["query", "-c", str(config_file), "--format", "csv", "-n", "1000"], capsys
        )
        assert rc == 0
        assert len(list(csv.DictReader(io.StringIO(out)))) == 300  # the committed ones


def test_bad_arguments_are_usage_errors(
    config_file: Path, store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run_cli(["query", "-c", str(config_file), "--to", "now"], capsys)
    assert rc == 2
    assert "--to needs --from" in err
    rc, _, err = run_cli(
        ["query", "-c", str(config_file), "--from", "last tuesday"], capsys
    )
    assert rc == 2
    assert "cannot read the time 'last tuesday'" in err
    rc, _, err = run_cli(
        ["query", "-c", str(config_file), "--from", "-1h", "--to", "-2h"], capsys
    )
    assert rc == 2
    assert "later than --from" in err


def test_missing_store_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, _ = run_cli(["query", "--db", str(tmp_path / "none.sqlite")], capsys)
    assert rc == 1
    assert "no store here yet" in caplog.text


def test_parse_time_forms(berlin_zone: None) -> None:
    now = datetime(2024, 3, 10, 15, 45, 30, tzinfo=UTC)
    assert parse_time("now", now=now) == now
    assert parse_time("-1h30m", now=now) == now - timedelta(minutes=90)
    assert parse_time("-2d", now=now) == now - timedelta(days=2)
    assert parse_time("-1.5h", now=now) == now - timedelta(minutes=90)
    assert parse_time("2024-03-01T12:30Z", now=now) == datetime(
        2024, 3, 1, 12, 30, tzinfo=UTC
    )
    assert parse_time("2024-03-01T12:30+02:00", now=now) == datetime(
        2024, 3, 1, 10, 30, tzinfo=UTC
    )
    # No zone: local time (CET is UTC+1 in March, CEST from the 31st).
    assert parse_time("2024-03-01T12:30", now=now) == datetime(
        2024, 3, 1, 11, 30, tzinfo=UTC
    )
    assert parse_time("2024-04-01", now=now) == datetime(2024, 3, 31, 22, 0, tzinfo=UTC)
    assert parse_time("today", now=now) == datetime(2024, 3, 9, 23, 0, tzinfo=UTC)
    assert parse_time("yesterday", now=now) == datetime(2024, 3, 8, 23, 0, tzinfo=UTC)
    for bad in ("", "-", "-2x", "2h", "yesterday noon", "2024-13-01"):
        with pytest.raises(UsageError, match="cannot read the time"):
            parse_time(bad, now=now)
