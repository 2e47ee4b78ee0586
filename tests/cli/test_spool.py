"""``wattd spool``: status, listing, requeueing and dropping dead letters."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

from tests.fixtures.cli import run_cli
from tests.fixtures.influx import FakeInflux, Recorded, forward, influx_error
from tests.fixtures.sinks import running_sink
from tests.fixtures.waiting import wait_until
from tests.sinks.influx.test_sink import (
    export,
    reading,
    unique_measurement,
)
from wattd.cli import main
from wattd.config import load_config
from wattd.sinks.influx.lineprotocol import PointEncoder
from wattd.sinks.influx.sink import STREAM, InfluxSink
from wattd.storage.spool import ROW_OVERHEAD_BYTES, AsyncSpool, Spool, StreamStats

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fixtures.services import VictoriaMetrics

T_NS = 1_772_366_400_000_000_000  # 2026-03-01T12:00:00Z
REASON = 'HTTP 400: field type conflict: input field "watts" is type float'


def line(i: int) -> bytes:
    return f"power,sensor={i} watts={i}.5 {T_NS + i}".encode()


def points(start: int, count: int) -> list[tuple[int, bytes]]:
    return [(T_NS + i, line(i)) for i in range(start, start + count)]


def balanced(stats: StreamStats) -> bool:
    return stats.appended == (
        stats.depth + stats.acked + stats.dropped + stats.dead_lettered
    )


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "wattd.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\nspool: {{max_items: 100}}\n")
    return path


@pytest.fixture
def spool_path(tmp_path: Path, config_file: Path) -> Path:
    """10 influx points, 3 of them refused, and one mqtt item."""
    path = tmp_path / "state" / "spool.sqlite"
    with Spool(path, max_items=100) as s:
        s.append("influx", points(0, 10))
        queued = s.peek("influx", 10)
        s.dead_letter("influx", queued[2:3], REASON)
        s.dead_letter("influx", queued[5:6], REASON)
        s.dead_letter("influx", queued[7:8], "HTTP 413: request entity too large")
        s.append("mqtt", [(T_NS, b'{"watts": 1}')])
    return path


def letter_ids(path: Path) -> list[int]:
    with Spool(path) as s:
        return [d.id for d in s.list_dead_letters()]


# -- status --------------------------------------------------------------------------


def test_status_table_has_a_row_per_stream(
    config_file: Path, spool_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run_cli(["spool", "status", "--config", str(config_file)], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == (
        f"spool {spool_path}: 8 of 100 items,"
        f" {7 * (len(line(0)) + ROW_OVERHEAD_BYTES) + 12 + ROW_OVERHEAD_BYTES:,}"
        " of 536,870,912 bytes"
    )
    header = lines[2].split()
    assert header == [
        "stream",
        "depth",
        "bytes",
        "oldest_age",
        "appended",
        "acked",
        "dropped",
        "dead_lettered",
        "dead_letters",
    ]
    influx = dict(zip(header, lines[3].split(), strict=True))
    assert influx["stream"] == "influx"
    assert (influx["depth"], influx["appended"], influx["acked"]) == ("7", "10", "0")
    assert (influx["dead_lettered"], influx["dead_letters"]) == ("3", "3")
    assert influx["oldest_age"].endswith(("d", "h", "m", "s"))
    assert lines[4].split()[:2] == ["mqtt", "1"]


def test_status_json(
    config_file: Path, spool_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run_cli(
        ["spool", "status", "-c", str(config_file), "--format", "json"], capsys
    )
    assert rc == 0
    doc = json.loads(out)
    assert doc["path"] == str(spool_path)
    assert (doc["max_items"], doc["max_bytes"]) == (100, 512 << 20)
    influx = doc["streams"]["influx"]
    assert influx["depth"] == 7
    assert influx["bytes"] == 7 * (len(line(0)) + ROW_OVERHEAD_BYTES)
    assert influx["oldest_time"] == "2026-03-01T12:00:00.000000000Z"
    assert influx["oldest_pending_age_s"] == pytest.approx(
        (time.time_ns() - T_NS) / 1e9, abs=60
    )
    assert (influx["dead_lettered"], influx["dead_letters"]) == (3, 3)
    assert doc["streams"]["mqtt"]["dead_letters"] == 0


def test_status_of_a_spool_without_streams(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Spool(tmp_path / "state" / "spool.sqlite").close()
    rc, out, _ = run_cli(["spool", "status", "-c", str(config_file)], capsys)
    assert rc == 0
    assert "no streams yet" in out


# -- dead-letters --------------------------------------------------------------------


def test_dead_letters_table_is_newest_first_with_reason_and_payload(
    config_file: Path, spool_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run_cli(["spool", "dead-letters", "-c", str(config_file)], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["id", "stream", "time", "failed_at", "reason"]
    ids = letter_ids(spool_path)
    assert len(lines) == 1 + 2 * 3
    assert lines[1].split()[:2] == [str(ids[0]), "influx"]
    assert lines[1].endswith("HTTP 413: request entity too large")
    assert lines[2] == "    " + line(7).decode()
    assert lines[3].endswith(REASON)
    assert lines[4] == "    " + line(5).decode()
    assert lines[6] == "    " + line(2).decode()


def test_dead_letters_jsonl_escapes_bytes_that_are_not_text(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = b"power,sensor=9 watts=\xff\x1b[2J 1"
    with Spool(tmp_path / "state" / "spool.sqlite") as s:
        s.append("influx", [(T_NS + 9, raw)])
        s.dead_letter("influx", s.peek("influx", 1), "HTTP 400: unable to parse")
    rc, out, _ = run_cli(
        ["spool", "dead-letters", "-c", str(config_file), "--format", "jsonl"], capsys
    )
    assert rc == 0
    (doc,) = [json.loads(text) for text in out.splitlines()]
    assert doc["stream"] == "influx"
    assert doc["time_ns"] == T_NS + 9
    assert doc["time"] == "2026-03-01T12:00:00.000000009Z"
    assert doc["reason"] == "HTTP 400: unable to parse"
    assert doc["payload"] == "power,sensor=9 watts=\\xff\x1b[2J 1"
    assert base64.b64decode(doc["payload_base64"]) == raw
    assert doc["failed_at"].endswith("Z")
    # The table escapes the control character as well, not only the bad byte.
    rc, out, _ = run_cli(["spool", "dead-letters", "-c", str(config_file)], capsys)
    assert "\x1b" not in out
    assert "    power,sensor=9 watts=\\xff\\x1b[2J 1" in out.splitlines()


def test_dead_letters_limit_and_stream(
    config_file: Path, spool_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run_cli(
        [
            "spool",
            "dead-letters",
            "-c",
            str(config_file),
            "--stream",
            "influx",
            "--limit",
            "2",
            "--format",
            "jsonl",
        ],
        capsys,
    )
    assert rc == 0
    docs = [json.loads(text) for text in out.splitlines()]
    assert [d["payload"] for d in docs] == [line(7).decode(), line(5).decode()]
    assert "showing the newest 2 of 3 dead letters" in err
    rc, out, err = run_cli(
        ["spool", "dead-letters", "-c", str(config_file), "--stream", "mqtt"], capsys
    )
    assert rc == 0
    assert out == ""
    assert "no dead letters" in err


# -- requeue -------------------------------------------------------------------------


def test_requeue_by_id_brings_points_back_with_their_time(
    config_file: Path, spool_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Spool(spool_path) as s:
        last_seen = s.peek("influx", 100)[-1].id
        letters = s.list_dead_letters(stream="influx")
    conflict = [d.id for d in letters if d.reason == REASON]
    rc, out, _ = run_cli(
        ["spool", "requeue", "-c", str(config_file), "--id", *map(str, conflict)],
        capsys,
    )
    assert rc == 0
    assert out == "requeued 2 dead letter(s)\n"
    with Spool(spool_path) as s:
        stats = s.stats("influx")
        back = s.peek("influx", 100, after_id=last_seen)
        kept = s.list_dead_letters()
    assert [(i.time_ns, i.payload) for i in back] == [
        (T_NS + 2, line(2)),
        (T_NS + 5, line(5)),
    ]
    assert (stats.depth, stats.appended, stats.dead_lettered) == (9, 12, 3)
    assert stats.bytes == 9 * (len(line(0)) + ROW_OVERHEAD_BYTES)
    assert stats.dead_letters == 1
    assert balanced(stats)
    assert [d.payload for d in kept] == [line(7)]


def test_requeue_all_into_a_full_spool_drops_the_oldest_and_counts_them(
    config_file: Path,
    spool_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Spool(spool_path, max_items=100) as s:
        s.append("influx", points(100, 92))  # 7 + 92 + 1 (mqtt) = 100: full
    caplog.set_level(logging.WARNING, logger="wattd")
    rc, out, _ = run_cli(["spool", "requeue", "-c", str(config_file), "--all"], capsys)
    assert rc == 0
    assert out.splitlines()[0] == "requeued 3 dead letter(s)"
    assert "dropped the 3 oldest queued item(s) to make room" in out
    assert "dropped the 3 oldest influx item(s)" in caplog.text
    with Spool(spool_path) as s:
        stats = s.stats("influx")
        queue = s.peek("influx", 1000)
        assert s.depth("mqtt") == 1
    assert (stats.depth, stats.dropped, stats.dead_letters) == (99, 3, 0)
    assert balanced(stats)
    # The first three queued points (0, 1, 3) made room; the requeued are last.
    assert [i.payload for i in queue[:2]] == [line(4), line(6)]
    assert [i.payload for i in queue[-3:]] == [line(2), line(5), line(7)]


def test_unknown_ids_are_reported_and_the_others_moved(
    config_file: Path, spool_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = letter_ids(spool_path)[0]
    rc, out, err = run_cli(
        ["spool", "requeue", "-c", str(config_file), "--id", str(first), "9999"],
        capsys,
    )
    assert rc == 1
    assert out == "requeued 1 dead letter(s)\n"
    assert "no dead letter 9999" in err
    assert first not in letter_ids(spool_path)


# -- drop-dead -----------------------------------------------------------------------


def test_drop_dead_by_id_then_all(
    config_file: Path, spool_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = letter_ids(spool_path)
    rc, out, _ = run_cli(
        ["spool", "drop-dead", "-c", str(config_file), "--id", str(ids[1])], capsys
    )
    assert rc == 0
    assert out == "deleted 1 dead letter(s)\n"
    assert letter_ids(spool_path) == [ids[0], ids[2]]
    rc, out, _ = run_cli(
        ["spool", "drop-dead", "-c", str(config_file), "--stream", "influx", "--all"],
        capsys,
    )
    assert rc == 0
    assert out == "deleted 2 dead letter(s)\n"
    with Spool(spool_path) as s:
        stats = s.stats("influx")
    assert (stats.dead_letters, stats.dead_lettered, stats.depth) == (0, 3, 7)


def test_requeue_needs_ids_or_all(
    config_file: Path, spool_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["spool", "requeue", "-c", str(config_file)])
    assert caught.value.code == 2
    assert "one of the arguments --id --all is required" in capsys.readouterr().err


# -- errors --------------------------------------------------------------------------


def test_missing_spool_is_a_clear_error_and_nothing_is_created(
    config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    for action in (["status"], ["dead-letters"], ["requeue", "--all"]):
        rc, out, _ = run_cli(["spool", *action, "-c", str(config_file)], capsys)
        assert rc == 1
        assert out == ""
    spool_file = tmp_path / "state" / "spool.sqlite"
    assert f"{spool_file}: no spool here yet" in caplog.text
    assert "Check --config, state_dir or spool.path" in caplog.text
    assert "Traceback" not in caplog.text
    assert not (tmp_path / "state").exists()


def test_unknown_stream_is_a_usage_error(
    config_file: Path, spool_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = letter_ids(spool_path)
    rc, out, err = run_cli(
        ["spool", "requeue", "-c", str(config_file), "--stream", "influxdb", "--all"],
        capsys,
    )
    assert rc == 2
    assert out == ""
    assert "has no stream 'influxdb' (influx, mqtt)" in err
    assert letter_ids(spool_path) == before
    with Spool(spool_path) as s:
        assert s.streams() == ["influx", "mqtt"]


# -- next to the running daemon ------------------------------------------------------


async def test_requeue_while_the_daemon_holds_the_spool(
    config_file: Path, spool_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = AsyncSpool.for_config(load_config(config_file))
    try:
        in_flight = await daemon.peek(STREAM, 100)
        # The daemon is in the middle of a write when the command starts.
        await daemon._run(lambda s: s._conn.execute("BEGIN IMMEDIATE"))
        sync = daemon._opened.result()
        release = threading.Timer(0.4, lambda: sync._conn.execute("COMMIT"))
        start = time.monotonic()
        release.start()
        rc = await asyncio.to_thread(
            main, ["spool", "requeue", "-c", str(config_file), "--all"]
        )
        waited = time.monotonic() - start
        release.join()
        assert rc == 0
        assert "requeued 3 dead letter(s)" in capsys.readouterr().out
        assert waited >= 0.3
        # The consumer reading past its batch in flight picks them up.
        back = await daemon.peek(STREAM, 100, after_id=in_flight[-1].id)
        assert [i.payload for i in back] == [line(2), line(5), line(7)]
        stats = await daemon.stats(STREAM)
        assert (stats.depth, stats.dead_letters) == (10, 0)
        assert daemon.stats_now(STREAM).depth == 10
    finally:
        await daemon.close()


# -- end to end: a refused point, fixed on the server, requeued and delivered --------


async def test_requeued_point_is_delivered_once_the_server_accepts_it(
    tmp_path: Path,
    fake: FakeInflux,
    victoria: VictoriaMetrics,
    capsys: pytest.CaptureFixture[str],
) -> None:
    measurement = unique_measurement()
    refusing = True

    async def typed(request: Recorded) -> web.Response:
        if refusing and any(b"sensor=13 " in x for x in request.lines):
            return influx_error(400, "field type conflict")
        return await forward(request, victoria.url)

    fake.rule = typed
    path = tmp_path / "wattd.yaml"
    path.write_text(
        f"state_dir: {tmp_path}\n"
        f"influxdb: {{enabled: true, url: {fake.url}, org: home, bucket: energy,"
        f" token: t0k3n, measurement: {measurement}, flush_interval_s: 0.05,"
        " batch_size: 8}\n"
    )
    config = load_config(path)
    readings = [reading(i, sensor=13 if i == 5 else 1) for i in range(8)]
    refused = PointEncoder.from_config(config).encode(readings[5])
    async with running_sink(InfluxSink(config)) as sink:
        await sink.write(readings)
        await wait_until(lambda: sink.stats()["points_written"] == 7)
        assert sink.stats()["dead_letters"] == 1
        refusing = False  # the operator fixed the schema on the server
        rc = await asyncio.to_thread(
            main, ["spool", "requeue", "--config", str(path), "--all"]
        )
        assert rc == 0
        assert capsys.readouterr().out == "requeued 1 dead letter(s)\n"
        await wait_until(lambda: sink.stats()["points_written"] == 8)
        await wait_until(lambda: sink.stats()["spool_depth"] == 0)
    assert fake.requests[-1].lines == [refused]
    with Spool(tmp_path / "spool.sqlite", must_exist=True) as s:
        stats = s.stats(STREAM)
    assert (stats.depth, stats.dead_letters, stats.acked) == (0, 0, 8)
    assert balanced(stats)
    series = [
        s
        for s in export(victoria, measurement)
        if s["metric"]["__name__"].endswith("_watts")
        and s["metric"].get("sensor") == "13"
    ]
    (point,) = series
    assert point["values"] == [readings[5].watts]
    assert point["timestamps"] == [readings[5].time_ns // 1_000_000]
