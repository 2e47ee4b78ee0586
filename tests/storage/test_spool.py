"""The durable spool: FIFO order, acks, bounds, dead letters, crashes, corrupt files."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import pytest

import wattd.storage.spool.deadletters as dead_letters_module
from tests.fixtures.readings import reading_with_total
from wattd.config import parse_config
from wattd.errors import SpoolError
from wattd.storage.spool import ROW_OVERHEAD_BYTES, AsyncSpool, Spool, StreamStats

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def items(start: int, count: int, size: int = 10) -> list[tuple[int, bytes]]:
    return [(1_000 + i, f"{i:0{size}d}".encode()) for i in range(start, start + count)]


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool.sqlite")
    yield s
    s.close()


# -- FIFO, ack, streams -------------------------------------------------------


def test_peek_returns_oldest_first_and_ack_removes(spool: Spool) -> None:
    spool.append("influx", items(0, 5))
    spool.append("influx", items(5, 5))
    first = spool.peek("influx", 3)
    assert [i.payload for i in first] == [p for _, p in items(0, 3)]
    assert [i.time_ns for i in first] == [1000, 1001, 1002]
    # Peeking does not consume.
    assert spool.peek("influx", 3) == first
    stats = spool.ack("influx", [i.id for i in first])
    assert stats.depth == 7
    assert stats.acked == 3
    assert stats.appended == 10
    assert [i.payload for i in spool.peek("influx", 100)] == [p for _, p in items(3, 7)]


def test_streams_are_independent(spool: Spool) -> None:
    spool.append("influx", items(0, 4))
    spool.append("mqtt", items(100, 2))
    assert spool.depth("influx") == 4
    assert spool.depth("mqtt") == 2
    mqtt = spool.peek("mqtt", 10)
    assert [i.payload for i in mqtt] == [p for _, p in items(100, 2)]
    # Acking another stream's ids does nothing.
    spool.ack("influx", [i.id for i in mqtt])
    assert spool.depth("mqtt") == 2
    assert spool.depth("influx") == 4
    assert spool.streams() == ["influx", "mqtt"]


def test_peek_after_id_reads_past_items_in_flight(spool: Spool) -> None:
    spool.append("mqtt", items(0, 10))
    first = spool.peek("mqtt", 4)
    second = spool.peek("mqtt", 4, after_id=first[-1].id)
    assert [i.payload for i in second] == [p for _, p in items(4, 4)]
    # Acks out of order, with gaps, leave exactly the rest.
    spool.ack("mqtt", [second[1].id, first[0].id, second[3].id])
    left = [i.payload for i in spool.peek("mqtt", 100)]
    expected = [p for k, (_, p) in enumerate(items(0, 10)) if k not in {0, 5, 7}]
    assert left == expected


def test_ids_are_never_reused(spool: Spool) -> None:
    spool.append("influx", items(0, 3))
    old = spool.peek("influx", 10)
    spool.ack("influx", [i.id for i in old])
    spool.append("influx", items(3, 1))
    new = spool.peek("influx", 10)
    assert new[0].id > max(i.id for i in old)


def test_oldest_time_and_bytes(spool: Spool) -> None:
    assert spool.oldest_time_ns("influx") is None
    spool.append("influx", [(5_000, b"abc"), (4_000, b"defgh")])
    stats = spool.stats("influx")
    # The first queued item, whatever its timestamp.
    assert stats.oldest_time_ns == 5_000
    assert stats.bytes == 8 + 2 * ROW_OVERHEAD_BYTES


def test_counters_and_items_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    s = Spool(path)
    s.append("influx", items(0, 6))
    s.ack("influx", [i.id for i in s.peek("influx", 2)])
    s.close()
    again = Spool(path)
    stats = again.stats("influx")
    assert (stats.depth, stats.appended, stats.acked) == (4, 6, 2)
    assert [i.payload for i in again.peek("influx", 10)] == [p for _, p in items(2, 4)]
    again.close()


def test_bad_stream_name_is_refused(spool: Spool) -> None:
    with pytest.raises(SpoolError, match="stream name"):
        spool.append("Influx DB", items(0, 1))


# -- bounds -------------------------------------------------------------------


def test_full_spool_drops_oldest_of_the_stream_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = Spool(tmp_path / "s.sqlite", max_items=100)
    s.append("influx", items(0, 80))
    s.append("mqtt", items(1000, 10))
    with caplog.at_level(logging.WARNING, logger="wattd.storage.spool"):
        stats = s.append("influx", items(80, 30))
    assert s.depth("influx") + s.depth("mqtt") == 100
    assert stats.dropped == 20
    assert s.depth("mqtt") == 10
    payloads = [i.payload for i in s.peek("influx", 1000)]
    assert payloads == [p for _, p in items(20, 90)]
    assert "dropped the 20 oldest influx item(s)" in caplog.text
    # Further drops are counted but logged at most once a minute.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wattd.storage.spool"):
        s.append("influx", items(110, 5))
    assert s.stats("influx").dropped == 25
    assert caplog.text == ""
    s.close()


def test_byte_bound_counts_payload_and_overhead(tmp_path: Path) -> None:
    per_item = 100 + ROW_OVERHEAD_BYTES
    s = Spool(tmp_path / "s.sqlite", max_items=10_000, max_bytes=per_item * 10)
    s.append("influx", items(0, 25, size=100))
    stats = s.stats("influx")
    assert stats.depth == 10
    assert stats.bytes == per_item * 10
    assert stats.dropped == 15
    assert [i.payload for i in s.peek("influx", 100)] == [
        p for _, p in items(15, 10, 100)
    ]
    s.close()


def test_full_spool_takes_from_the_deepest_other_stream_when_needed(
    tmp_path: Path,
) -> None:
    s = Spool(tmp_path / "s.sqlite", max_items=10)
    s.append("mqtt", items(0, 10))
    s.append("influx", items(100, 4))
    assert s.depth("influx") == 4
    assert s.depth("mqtt") == 6
    assert s.stats("mqtt").dropped == 4
    assert [i.payload for i in s.peek("mqtt", 10)] == [p for _, p in items(4, 6)]
    s.close()


# -- dead letters ---------------------------------------------------------------


def test_dead_letters_leave_the_queue_with_the_reason(spool: Spool) -> None:
    spool.append("influx", items(0, 4))
    bad = spool.peek("influx", 4)[1:2]
    stats = spool.dead_letter("influx", bad, "HTTP 400: field type conflict")
    assert stats.depth == 3
    assert stats.dead_lettered == 1
    assert stats.dead_letters == 1
    assert bad[0].id not in {i.id for i in spool.peek("influx", 10)}
    (letter,) = spool.dead_letters("influx")
    assert letter.payload == bad[0].payload
    assert letter.time_ns == bad[0].time_ns
    assert letter.reason == "HTTP 400: field type conflict"
    assert letter.failed_at_ns > 0
    assert spool.dead_letter_count("influx") == 1
    assert spool.dead_letter_count("mqtt") == 0


def test_dead_letters_are_bounded(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dead_letters_module, "MAX_DEAD_LETTERS", 5)
    spool.append("influx", items(0, 8))
    for item in spool.peek("influx", 8):
        spool.dead_letter("influx", [item], f"bad {item.payload.decode()}")
    kept = spool.dead_letters("influx")
    assert len(kept) == 5
    assert [d.reason for d in kept] == [f"bad {p.decode()}" for _, p in items(3, 5)][
        ::-1
    ]
    assert spool.stats("influx").dead_lettered == 8


# -- crash safety ---------------------------------------------------------------

APPENDER = """
import sys
from wattd.storage.spool import Spool
s = Spool(__import__("pathlib").Path(sys.argv[1]))
n = 0
while True:
    s.append("influx", [(n + k, b"%09d" % (n + k)) for k in range(1000)])
    n += 1000
    print(n, flush=True)
"""


def test_kill_9_mid_append_keeps_whole_batches(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    confirmed = 0
    try:
        while confirmed < 20_000:
            line = proc.stdout.readline()
            assert line, "the appender died"
            confirmed = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    s = Spool(path)
    assert s.problems == []
    depth = s.depth("influx")
    # Everything confirmed is there, and no batch is there in part.
    assert depth >= confirmed
    assert depth % 1000 == 0
    queued = s.peek("influx", depth + 1)
    assert [i.payload for i in queued] == [b"%09d" % k for k in range(depth)]
    assert s.stats("influx").appended == depth
    s.close()


# -- corrupt and unreadable files ----------------------------------------------------


def test_garbage_file_is_reported_moved_aside_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.sqlite"
    path.write_bytes(b"this is not a database\n" * 500)
    with caplog.at_level(logging.ERROR, logger="wattd.storage.spool"):
        s = Spool(path)
    assert s.durable
    (problem,) = s.problems
    assert str(path) in str(problem)
    assert "fresh spool" in str(problem)
    assert "inspect or delete" in str(problem)
    assert str(problem) in caplog.text
    aside = list(tmp_path.glob("spool.sqlite.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not a database")
    s.append("influx", items(0, 3))
    assert s.depth("influx") == 3
    s.close()


def test_damaged_pages_fail_the_check_and_start_fresh(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    s = Spool(path)
    s.append("influx", items(0, 5000, size=200))
    s.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 64 * 4096
    # Scribble over the middle of the file: b-tree pages, not the header.
    data[20 * 4096 : 40 * 4096] = b"\xa5" * (20 * 4096)
    path.write_bytes(bytes(data))
    again = Spool(path)
    assert len(again.problems) == 1
    assert "cannot be opened" in str(again.problems[0]) or "integrity" in str(
        again.problems[0]
    )
    assert again.depth("influx") == 0
    again.append("influx", items(0, 2))
    assert again.depth("influx") == 2
    again.close()


def test_corruption_while_running_starts_fresh_without_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    s = Spool(path)
    # More data than SQLite's page cache holds, so pages are read back from disk.
    for start in range(0, 20_000, 2_000):
        s.append("influx", items(start, 2_000, size=1000))
    s._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with path.open("r+b") as f:
        f.seek(100 * 4096)
        f.write(b"\xa5" * (3_000 * 4096))
    assert s.peek("influx", 20_000) == []
    assert "became unreadable" in str(s.problems[0])
    s.append("influx", items(0, 1))
    assert s.depth("influx") == 1
    assert len(list(tmp_path.glob("spool.sqlite.corrupt-*"))) == 1
    s.close()


def test_a_directory_in_the_way_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    path.mkdir()
    s = Spool(path)
    assert s.durable
    assert len(s.problems) == 1
    assert path.is_file()
    assert len(list(tmp_path.glob("spool.sqlite.corrupt-*"))) == 1
    s.close()


def test_spool_from_a_newer_version_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    s = Spool(path)
    assert "newer wattd" in str(s.problems[0])
    s.close()


def test_unwritable_location_falls_back_to_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    s = Spool(blocker / "spool.sqlite")
    assert not s.durable
    assert "in memory" in str(s.problems[0])
    s.append("influx", items(0, 2))
    assert s.depth("influx") == 2
    assert blocker.read_text() == "x"
    s.close()


# -- energy totals ----------------------------------------------------------------


def test_each_append_records_the_highest_total_per_sensor(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    big = (1 << 64) - 2  # a 64-bit radio address
    with Spool(path, max_items=3) as s:
        assert s.wh_totals() == {}
        s.append("mqtt", items(0, 2), wh_totals={1: 5.0, big: 1.5})
        s.append("influx", items(2, 2), wh_totals={1: 4.0, 2: 0.25})
        # Acks and drops (the bound is 3 items) leave the totals alone.
        s.ack("mqtt", [i.id for i in s.peek("mqtt", 10)])
        assert s.stats("influx").dropped + s.stats("mqtt").dropped == 1
        assert s.wh_totals() == {1: 5.0, 2: 0.25, big: 1.5}
    assert Spool.read_wh_totals(path) == {1: 5.0, 2: 0.25, big: 1.5}
    assert Spool.read_wh_totals(tmp_path / "none.sqlite") == {}


def test_totals_of_a_spool_from_before_they_were_kept_are_empty(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.sqlite"
    Spool(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE energy")
    conn.close()
    assert Spool.read_wh_totals(path) == {}
    with Spool(path) as s:  # the table comes back when the daemon opens it
        s.append("mqtt", items(0, 1), wh_totals={1: 2.0})
        assert s.wh_totals() == {1: 2.0}


async def test_noted_totals_go_with_the_next_append_of_any_stream(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.sqlite"
    s = AsyncSpool(path)
    try:
        s.note_wh_totals(
            [
                reading_with_total(1, 2.0),
                reading_with_total(1, 3.0),
                reading_with_total(2, 9.0),
            ]
        )
        s.note_wh_totals([reading_with_total(1, float("nan"))])
        await s.stats("influx")
        assert Spool.read_wh_totals(path) == {}
        await s.append("influx", items(0, 1))
        assert Spool.read_wh_totals(path) == {1: 3.0, 2: 9.0}
        s.note_wh_totals([reading_with_total(2, 10.0)])
        with pytest.raises(SpoolError):
            await s.append("Bad Name", items(1, 1))
        # A failed append keeps the totals for the next one.
        await s.append("mqtt", items(2, 1))
        assert Spool.read_wh_totals(path) == {1: 3.0, 2: 10.0}
    finally:
        await s.close()


# -- the asyncio wrapper ----------------------------------------------------------


async def test_async_spool_runs_on_its_own_thread(tmp_path: Path) -> None:
    s = AsyncSpool(tmp_path / "spool.sqlite")
    seen: list[str] = []
    await s._run(lambda _sync: seen.append(threading.current_thread().name))
    assert seen[0].startswith("wattd-spool")
    stats = await s.append("influx", items(0, 5))
    assert stats.depth == 5
    assert s.stats_now("influx").depth == 5
    peeked = await s.peek("influx", 2)
    await s.ack("influx", [i.id for i in peeked])
    assert s.stats_now("influx").depth == 3
    await s.dead_letter("influx", (await s.peek("influx", 1)), "refused")
    assert (await s.dead_letters("influx"))[0].reason == "refused"
    assert await s.depth("influx") == 2
    assert await s.oldest_time_ns("influx") == 1003
    await s.close()
    with pytest.raises(SpoolError, match="closed"):
        await s.peek("influx", 1)


async def test_shared_spool_is_one_instance_until_the_last_close(
    tmp_path: Path,
) -> None:
    config = parse_config(f"state_dir: {tmp_path}\nspool: {{max_items: 1000}}\n")
    a = AsyncSpool.for_config(config)
    b = AsyncSpool.for_config(config)
    assert a is b
    assert a.path == tmp_path / "spool.sqlite"
    await a.append("influx", items(0, 1))
    await a.close()
    assert await b.depth("influx") == 1
    await b.close()
    c = AsyncSpool.for_config(config)
    assert c is not a
    assert await c.depth("influx") == 1
    await c.close()


async def test_async_calls_do_not_block_the_event_loop(tmp_path: Path) -> None:
    s = AsyncSpool(tmp_path / "spool.sqlite")
    done = asyncio.Event()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    async def slow_call() -> None:
        # Stands in for a long fsync on the spool thread.
        await s._run(lambda _sync: time.sleep(0.3))
        done.set()

    start = time.monotonic()
    await asyncio.gather(ticker(), slow_call())
    assert time.monotonic() - start >= 0.25
    # The loop kept running while the spool thread was busy.
    assert ticks >= 10
    await s.close()


# -- maintenance: listing, requeueing and dropping dead letters ----------------------


def dead_lettered(s: Spool, stream: str, picks: list[int], reason: str) -> list[int]:
    """Dead-letter the queued items at positions ``picks``; returns their item ids."""
    queued = s.peek(stream, 10_000)
    chosen = [queued[k] for k in picks]
    s.dead_letter(stream, chosen, reason)
    return [i.id for i in chosen]


def balanced(stats: StreamStats) -> bool:
    return stats.appended == (
        stats.depth + stats.acked + stats.dropped + stats.dead_lettered
    )


def test_requeue_appends_dead_letters_after_the_queue_with_their_time(
    spool: Spool,
) -> None:
    spool.append("influx", items(0, 6))
    old_ids = dead_lettered(spool, "influx", [1, 3], "HTTP 400: type conflict")
    spool.append("influx", items(6, 2))
    last_id = spool.peek("influx", 100)[-1].id
    before = spool.stats("influx")
    letters = spool.list_dead_letters(stream="influx")
    outcome = spool.requeue_dead_letters([letters[0].id, letters[1].id])
    assert (outcome.done, outcome.missing, outcome.left, outcome.dropped) == (
        2,
        (),
        0,
        0,
    )
    after = spool.stats("influx")
    assert after.depth == before.depth + 2
    assert after.bytes == before.bytes + 2 * (10 + ROW_OVERHEAD_BYTES)
    assert after.appended == before.appended + 2
    assert after.dead_lettered == before.dead_lettered == 2
    assert after.dead_letters == 0
    assert balanced(after)
    # A consumer reading past what it has in flight finds them, in the old order.
    back = spool.peek("influx", 10, after_id=last_id)
    assert [(i.time_ns, i.payload) for i in back] == [items(0, 6)[1], items(0, 6)[3]]
    assert min(i.id for i in back) > max(old_ids)
    queue = spool.peek("influx", 100)
    assert [i.payload for i in queue[-2:]] == [items(0, 6)[1][1], items(0, 6)[3][1]]


def test_requeue_all_of_one_stream_leaves_the_others(spool: Spool) -> None:
    spool.append("influx", items(0, 4))
    spool.append("mqtt", items(100, 4))
    dead_lettered(spool, "influx", [0, 1], "bad")
    dead_lettered(spool, "mqtt", [2], "bad too")
    outcome = spool.requeue_dead_letters(stream="influx")
    assert outcome.done == 2
    assert spool.stats("influx").dead_letters == 0
    assert spool.stats("influx").depth == 4
    assert [d.stream for d in spool.list_dead_letters()] == ["mqtt"]
    assert spool.stats("mqtt").depth == 3
    assert balanced(spool.stats("influx"))
    assert balanced(spool.stats("mqtt"))


def test_requeue_into_a_full_spool_drops_the_oldest_like_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = Spool(tmp_path / "s.sqlite", max_items=20)
    s.append("influx", items(0, 10))
    dead_lettered(s, "influx", [0, 1, 2], "HTTP 400: type conflict")
    s.append("influx", items(10, 13))
    assert s.depth("influx") == 20
    with caplog.at_level(logging.WARNING, logger="wattd.storage.spool"):
        outcome = s.requeue_dead_letters()
    assert (outcome.done, outcome.dropped, outcome.left) == (3, 3, 0)
    stats = s.stats("influx")
    assert stats.depth == 20
    assert stats.dropped == 3
    assert stats.dead_letters == 0
    assert balanced(stats)
    # The oldest queued items made room; the requeued ones are at the end.
    payloads = [i.payload for i in s.peek("influx", 100)]
    assert payloads == [p for _, p in items(6, 17)] + [p for _, p in items(0, 3)]
    assert "dropped the 3 oldest influx item(s)" in caplog.text
    s.close()


def test_requeue_more_than_the_spool_holds_keeps_the_oldest_dead(
    tmp_path: Path,
) -> None:
    s = Spool(tmp_path / "s.sqlite", max_items=5)
    for start in (0, 5):
        s.append("influx", items(start, 5))
        dead_lettered(s, "influx", [0, 1, 2, 3, 4], "bad")
    outcome = s.requeue_dead_letters(stream="influx")
    assert (outcome.done, outcome.left, outcome.dropped) == (5, 5, 0)
    assert [i.payload for i in s.peek("influx", 10)] == [p for _, p in items(5, 5)]
    kept = s.list_dead_letters(stream="influx")
    assert sorted(d.payload for d in kept) == [p for _, p in items(0, 5)]
    assert balanced(s.stats("influx"))
    s.close()


def test_requeue_and_drop_report_ids_that_are_no_dead_letter(spool: Spool) -> None:
    spool.append("influx", items(0, 3))
    spool.append("mqtt", items(10, 3))
    dead_lettered(spool, "influx", [0], "bad")
    dead_lettered(spool, "mqtt", [0], "bad")
    influx_id = spool.list_dead_letters(stream="influx")[0].id
    mqtt_id = spool.list_dead_letters(stream="mqtt")[0].id
    # An id of another stream is not found when a stream is named.
    outcome = spool.requeue_dead_letters([influx_id, mqtt_id, 999], stream="influx")
    assert outcome.done == 1
    assert outcome.missing == (mqtt_id, 999)
    dropped = spool.drop_dead_letters([mqtt_id, influx_id])
    assert dropped.done == 1
    assert dropped.missing == (influx_id,)
    assert spool.list_dead_letters() == []


def test_drop_dead_letters_keeps_the_lifetime_counters(spool: Spool) -> None:
    spool.append("influx", items(0, 5))
    dead_lettered(spool, "influx", [0, 2, 4], "bad")
    newest = spool.list_dead_letters(stream="influx", limit=1)[0]
    assert spool.drop_dead_letters([newest.id]).done == 1
    assert spool.stats("influx").dead_letters == 2
    assert spool.drop_dead_letters(stream="influx").done == 2
    stats = spool.stats("influx")
    assert (stats.dead_letters, stats.dead_lettered, stats.depth) == (0, 3, 2)
    assert balanced(stats)


def test_list_dead_letters_of_every_stream_newest_first(spool: Spool) -> None:
    spool.append("influx", items(0, 2))
    spool.append("mqtt", items(10, 2))
    dead_lettered(spool, "influx", [0], "first")
    dead_lettered(spool, "mqtt", [1], "second")
    dead_lettered(spool, "influx", [0], "third")
    letters = spool.list_dead_letters()
    assert [(d.stream, d.reason) for d in letters] == [
        ("influx", "third"),
        ("mqtt", "second"),
        ("influx", "first"),
    ]
    assert letters[1].payload == items(10, 2)[1][1]
    assert [d.reason for d in spool.list_dead_letters(limit=2)] == ["third", "second"]


def test_all_stats_covers_every_stream(spool: Spool) -> None:
    spool.append("influx", items(0, 3))
    spool.append("mqtt", items(10, 1))
    stats = spool.all_stats()
    assert list(stats) == ["influx", "mqtt"]
    assert stats["influx"] == spool.stats("influx")
    assert stats["mqtt"].depth == 1


# -- maintenance: opening an existing file only ---------------------------------------


def test_must_exist_never_creates_a_file_or_directory(tmp_path: Path) -> None:
    path = tmp_path / "state" / "spool.sqlite"
    with pytest.raises(SpoolError, match="no spool here yet") as caught:
        Spool(path, must_exist=True)
    assert str(path) in str(caught.value)
    assert not path.parent.exists()


def test_must_exist_neither_creates_streams_nor_invents_them(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    Spool(path).close()
    with Spool(path, must_exist=True) as s:
        with pytest.raises(SpoolError, match="no stream 'influx'"):
            s.stats("influx")
        with pytest.raises(SpoolError, match="no stream 'influx'"):
            s.requeue_dead_letters(stream="influx")
        assert s.streams() == []


def test_must_exist_reports_a_damaged_file_and_leaves_it(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    path.write_bytes(b"this is not a database\n" * 500)
    with pytest.raises(SpoolError, match="is damaged"):
        Spool(path, must_exist=True)
    assert path.read_bytes().startswith(b"this is not a database")
    assert list(tmp_path.glob("spool.sqlite.corrupt-*")) == []


def test_must_exist_refuses_a_database_that_is_not_a_spool(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE readings (x)")
    conn.close()
    with pytest.raises(SpoolError, match="not a wattd spool"):
        Spool(path, must_exist=True)
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert tables == {"readings"}


def test_requeue_waits_for_another_connections_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    daemon = Spool(path)
    daemon.append("influx", items(0, 4))
    dead_lettered(daemon, "influx", [1], "HTTP 400: type conflict")
    seen = daemon.peek("influx", 10)[-1].id
    # The daemon is in the middle of a write when the command comes.
    daemon._conn.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.4, lambda: daemon._conn.execute("COMMIT"))
    release.start()
    try:
        with Spool(path, must_exist=True) as tool:
            start = time.monotonic()
            outcome = tool.requeue_dead_letters(stream="influx")
            waited = time.monotonic() - start
    finally:
        release.join()
    assert outcome.done == 1
    assert waited >= 0.3
    # The daemon's own connection sees the requeued item past what it had read.
    (back,) = daemon.peek("influx", 10, after_id=seen)
    assert (back.time_ns, back.payload) == items(0, 4)[1]
    assert daemon.stats("influx").depth == 4
    assert daemon.stats("influx").dead_letters == 0
    daemon.close()


# -- gaps: what was dropped or dead-lettered, per meter ----------------------------


def meter_line(meter: int, time_ns: int) -> tuple[int, bytes]:
    return time_ns, f"power,sensor={meter} watts=1.0 {time_ns}".encode()


def meter_of(payload: bytes) -> int | None:
    head = payload.split(b" ", 1)[0]
    return int(head.split(b"sensor=")[1]) if b"sensor=" in head else None


def test_a_drop_notes_each_meters_range_in_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path, max_items=4) as s:
        s.track_gaps("influx", meter_of)
        s.append("influx", [meter_line(1, 10), meter_line(2, 11), meter_line(1, 12)])
        s.append("influx", [meter_line(2, 13), meter_line(1, 14), meter_line(2, 15)])
        assert s.stats("influx").dropped == 2
    with Spool(path, must_exist=True) as s:
        gaps = s.open_gaps("influx")
    assert [(g.meter, g.first_ns, g.last_ns, g.points, g.cause) for g in gaps] == [
        (1, 10, 10, 1, "dropped"),
        (2, 11, 11, 1, "dropped"),
    ]


def test_drops_of_one_outage_extend_one_gap_per_meter(spool: Spool) -> None:
    spool.max_items = 2
    spool.track_gaps("influx", meter_of)
    for t in range(10):
        spool.append("influx", [meter_line(7, t * 1_000_000_000)])
    (gap,) = spool.open_gaps()
    assert (gap.meter, gap.first_ns, gap.last_ns, gap.points) == (
        7,
        0,
        7_000_000_000,
        8,
    )


def test_an_untracked_stream_notes_nothing(spool: Spool) -> None:
    spool.max_items = 1
    spool.append("mqtt", [meter_line(1, 1), meter_line(1, 2)])
    assert spool.stats("mqtt").dropped == 1
    assert spool.open_gaps() == []


def test_a_dead_letter_notes_its_range_and_a_closed_gap_is_gone(spool: Spool) -> None:
    spool.track_gaps("influx", meter_of)
    spool.append("influx", [meter_line(3, 50), (60, b"unreadable")])
    spool.dead_letter("influx", spool.peek("influx", 10), "HTTP 400: bad")
    gaps = spool.open_gaps("influx")
    assert {(g.meter, g.first_ns, g.last_ns, g.cause) for g in gaps} == {
        (3, 50, 50, "dead_letter"),
        (None, 60, 60, "dead_letter"),
    }
    assert spool.close_gap(gaps[0])
    assert not spool.close_gap(gaps[0])
    assert spool.open_gaps() == gaps[1:]


def test_a_gap_that_grew_after_it_was_read_stays_open(spool: Spool) -> None:
    spool.max_items = 1
    spool.track_gaps("influx", meter_of)
    spool.append("influx", [meter_line(1, 1), meter_line(1, 2)])
    (read,) = spool.open_gaps()
    spool.append("influx", [meter_line(1, 3)])
    assert not spool.close_gap(read)
    (still,) = spool.open_gaps()
    assert (still.first_ns, still.last_ns, still.points) == (1, 2, 2)
