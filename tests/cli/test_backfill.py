"""``wattd backfill`` from the command line, against a real VictoriaMetrics."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from tests.fixtures.cli import run_cli
from tests.fixtures.services import VictoriaMetrics
from tests.ops.test_backfill import (
    assert_each_reading_once,
    dedup_victoria,
    fill_store,
)
from wattd.config import load_config
from wattd.sinks.influx.sink import InfluxSink

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from wattd.core.readings import Reading

__all__ = ["dedup_victoria"]


def write_config(tmp_path: Path, url: str, measurement: str = "power") -> Path:
    path = tmp_path / "wattd.yaml"
    path.write_text(
        f"state_dir: {json.dumps(str(tmp_path))}\n"
        "mqtt: {node_id: node-a}\n"
        f"influxdb: {{enabled: true, url: {json.dumps(url)}, org: home,"
        f" bucket: energy, token: s3cret-t0ken, measurement: {measurement}}}\n"
        "sensors:\n"
        "  - {address: 1, name: meter-1, rack: r1, customer: acme}\n"
    )
    return path


def test_backfill_sends_then_has_nothing_left(
    tmp_path: Path, dedup_victoria: VictoriaMetrics, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, dedup_victoria.url, "bf_cli")
    readings = fill_store(tmp_path / "wattd.sqlite")
    args = ["backfill", "--to", "influxdb", "-c", str(config), "--batch-size", "500"]
    rc, out, err = run_cli([*args, "--max-batches", "2"], capsys)
    assert rc == 0
    assert out == ""
    assert "sent 1,000 points in 2 batches" in err
    assert "run the same command again to continue" in err
    rc, _, err = run_cli(args, capsys)
    assert rc == 0
    assert f"sent {len(readings) - 1000:,} points" in err
    assert "continuing from the saved progress" in err
    assert_each_reading_once(dedup_victoria, "bf_cli", readings)
    rc, _, err = run_cli(args, capsys)
    assert rc == 0
    assert "nothing left to send" in err


def test_a_wrong_url_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    fill_store(tmp_path / "wattd.sqlite")
    rc, out, err = run_cli(["backfill", "--to", "influxdb", "-c", str(config)], capsys)
    assert rc == 1
    assert out == ""
    (line,) = err.strip().splitlines()
    assert "cannot connect to http://127.0.0.1:9" in line
    assert "s3cret" not in err
    # Nothing was acknowledged, so nothing is marked as sent.
    saved = tmp_path / "backfill.json"
    assert not saved.exists()


def test_bad_arguments_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    fill_store(tmp_path / "wattd.sqlite")
    base = ["backfill", "--to", "influxdb", "-c", str(config)]
    rc, _, err = run_cli(
        [*base, "--from", "2025-03-02", "--until", "2025-03-01"], capsys
    )
    assert rc == 2
    assert err.strip() == "wattd backfill: --from must be before --until"
    rc, _, err = run_cli([*base, "--from", "last tuesday"], capsys)
    assert rc == 2
    assert "cannot read the time 'last tuesday'" in err
    rc, _, err = run_cli([*base, "--sensor", "nosuch"], capsys)
    assert rc == 2
    assert "no sensor is named 'nosuch'" in err


def test_a_missing_store_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    rc, _, err = run_cli(["backfill", "--to", "influxdb", "-c", str(config)], capsys)
    assert rc == 1
    (line,) = err.strip().splitlines()
    assert "no store here yet" in line


def test_points_a_full_spool_dropped_are_closed_by_backfill_gaps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = VictoriaMetrics(
        tmp_path / "vm", extra_args=["-dedup.minScrapeInterval=1ms"]
    )
    path = write_config(tmp_path, server.url, "bf_gaps")
    with path.open("a") as f:
        f.write("spool: {max_items: 500}\n")
    config = load_config(path)
    readings = fill_store(config.store_path)

    async def send(readings: list[Reading]) -> None:
        sink = InfluxSink(config)
        await sink.start()
        for at in range(0, len(readings), 300):
            await sink.write(readings[at : at + 300])
        await sink.flush()
        await sink.stop()

    # The server is not running: the spool fills and drops the oldest points.
    asyncio.run(send(readings))
    rc, out, _ = run_cli(["spool", "status", "-c", str(path)], capsys)
    assert rc == 0
    assert "3 open gap(s)" in out
    rc, out, _ = run_cli(
        ["spool", "status", "-c", str(path), "--format", "json"], capsys
    )
    gaps = json.loads(out)["open_gaps"]
    assert {g["meter"] for g in gaps} == {1, 2, 3}
    assert sum(g["points"] for g in gaps) == len(readings) - 500
    server.start()
    try:
        asyncio.run(send([]))  # the 500 still spooled go out
        args = ["backfill", "--to", "influxdb", "--gaps", "-c", str(path)]
        rc, _, err = run_cli(args, capsys)
        assert rc == 0, err
        assert "closed 3 of 3 gap(s)" in err
        assert_each_reading_once(server, "bf_gaps", readings)
        rc, out, _ = run_cli(["spool", "status", "-c", str(path)], capsys)
        assert "open gap" not in out
        rc, out, _ = run_cli(args, capsys)
        assert rc == 0
        assert "no open gaps" in out
    finally:
        server.stop()
