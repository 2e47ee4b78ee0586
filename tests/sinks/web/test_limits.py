"""The web server's bounds: timeouts, connection and stream limits, quiet errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from tests.sinks.web.test_app import make_config, read_event, serving
from wattd.sinks.web.guard import BACKLOG, FD_RESERVE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from wattd.sinks.web.sink import WebSink

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def address(sink: WebSink) -> tuple[str, int]:
    assert sink.url is not None
    host, port = sink.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    return host, int(port)


@contextlib.asynccontextmanager
async def raw_connections(sink: WebSink) -> AsyncIterator[list[Conn]]:
    """Plain TCP connections to the sink, all closed at the end."""
    conns: list[Conn] = []
    try:
        yield conns
    finally:
        for _reader, writer in conns:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def connect(sink: WebSink, conns: list[Conn]) -> Conn:
    conn = await asyncio.open_connection(*address(sink))
    conns.append(conn)
    return conn


async def closed_by_server(conn: Conn, timeout: float) -> bool:
    """True once the server hangs up (EOF), False if it is still open."""
    try:
        data = await asyncio.wait_for(conn[0].read(65536), timeout)
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    while data:  # a response came first; the hang-up follows
        try:
            data = await asyncio.wait_for(conn[0].read(65536), timeout)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return True


async def get(conn: Conn, path: str = "/api/state") -> bytes:
    """One keep-alive request on a raw connection; the status line."""
    reader, writer = conn
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    status = await asyncio.wait_for(reader.readline(), 5)
    length = 0
    while (line := await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await asyncio.wait_for(reader.readexactly(length), 5)
    return status


async def test_a_silent_or_slow_client_is_closed_after_the_header_timeout(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, header_timeout_s=0.5, idle_timeout_s=30)
    async with serving(config) as (sink, _base), raw_connections(sink) as conns:
        started = time.monotonic()
        silent = await connect(sink, conns)
        slow = await connect(sink, conns)
        slow[1].write(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ends
        served = await connect(sink, conns)
        assert (await get(served)).startswith(b"HTTP/1.1 200")
        assert await closed_by_server(silent, 5)
        assert await closed_by_server(slow, 5)
        assert time.monotonic() - started >= 0.5
        # A connection that made a request keeps the long idle timeout.
        assert not await closed_by_server(served, 0.5)
        assert (await get(served)).startswith(b"HTTP/1.1 200")
        assert sink.stats()["connections_timed_out"] == 2


async def test_an_accepted_connection_closes_after_the_idle_timeout(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, header_timeout_s=30, idle_timeout_s=0.5)
    async with serving(config) as (sink, _base), raw_connections(sink) as conns:
        conn = await connect(sink, conns)
        assert (await get(conn)).startswith(b"HTTP/1.1 200")
        assert not await closed_by_server(conn, 0.2)
        assert await closed_by_server(conn, 5)


async def test_at_the_limit_the_oldest_idle_unproven_connection_makes_room(
    tmp_path: Path,
) -> None:
    config = make_config(
        tmp_path, max_connections=6, max_streams=2, header_timeout_s=30
    )
    async with serving(config) as (sink, _base), raw_connections(sink) as conns:
        served = await connect(sink, conns)
        assert (await get(served)).startswith(b"HTTP/1.1 200")
        silent = [await connect(sink, conns) for _ in range(5)]
        await asyncio.sleep(0.05)  # let the server take them all in
        newcomer = await connect(sink, conns)
        assert (await get(newcomer)).startswith(b"HTTP/1.1 200")
        # The oldest connection that never made a request went, nothing else.
        assert await closed_by_server(silent[0], 5)
        for conn in (served, *silent[1:]):
            assert not await closed_by_server(conn, 0.05)
        # Every new one pushes out the next oldest idle one; the server stays
        # at its limit and keeps answering.
        for _ in range(20):
            conn = await connect(sink, conns)
            assert (await get(conn)).startswith(b"HTTP/1.1 200")
        stats = sink.stats()
        assert stats["connections"] <= 6
        assert stats["connections_shed"] >= 20
        assert stats["connections_refused"] == 0


async def test_when_every_connection_is_busy_a_new_one_gets_503(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, max_connections=2, max_streams=2)
    async with (
        serving(config) as (sink, base),
        aiohttp.ClientSession() as http,
        raw_connections(sink) as conns,
    ):
        streams = [await http.get(f"{base}/api/events") for _ in range(2)]
        try:
            for stream in streams:
                assert (await read_event(stream))[0] == "snapshot"
            reader, _writer = await connect(sink, conns)
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 503")
            assert answer.endswith(b"too many open connections; try again shortly\n")
            assert sink.stats()["connections_refused"] == 1
            # The streams were not touched.
            for stream in streams:
                assert (await read_event(stream))[0] == "update"
        finally:
            for stream in streams:
                stream.close()


async def test_at_the_stream_limit_the_oldest_stream_ends(tmp_path: Path) -> None:
    config = make_config(tmp_path, max_streams=2)
    async with serving(config) as (sink, base), aiohttp.ClientSession() as http:
        streams = []
        try:
            for _ in range(3):
                stream = await http.get(f"{base}/api/events")
                streams.append(stream)
                assert (await read_event(stream))[0] == "snapshot"
            oldest = streams[0]
            while await asyncio.wait_for(oldest.content.readany(), 5):
                pass  # drain up to the end of the stream
            assert oldest.content.at_eof()
            for stream in streams[1:]:
                assert (await read_event(stream))[0] == "update"
            assert sink.stats()["clients"] == 2
            assert sink.stats()["streams_shed"] == 1
        finally:
            for stream in streams:
                stream.close()


@pytest.fixture
def web_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record from wattd and aiohttp, whatever wattd's logger propagates."""
    wattd_logger = logging.getLogger("wattd")
    wattd_logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    caplog.set_level(logging.INFO, logger="wattd")
    return caplog


async def send_raw(sink: WebSink, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*address(sink))
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_bad_requests_are_one_line_each_kind_without_traceback(
    tmp_path: Path, web_log: pytest.LogCaptureFixture
) -> None:
    big = "x" * 9000
    kinds: dict[str, bytes] = {
        "header": f"GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n".encode(),
        "line": f"GET /{big} HTTP/1.1\r\nHost: a\r\n\r\n".encode(),
        "garbage": b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n",
        "bad header": b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: 1\r\n\r\n",
    }
    async with serving(make_config(tmp_path)) as (sink, _base):
        for _ in range(50):
            for request in kinds.values():
                status = await send_raw(sink, request)
                assert status.split(b" ", 2)[1] == b"400", status
    records: list[Any] = [r for r in web_log.records if r.levelno >= logging.DEBUG]
    assert not [r for r in records if r.exc_info], [r.getMessage() for r in records]
    refused = [r for r in records if "refused" in r.getMessage()]
    # One line per kind of fault (at most one a minute), not one per request.
    assert 1 <= len(refused) <= len(kinds), [r.getMessage() for r in refused]
    assert len(records) <= len(kinds) + 2, [r.getMessage() for r in records]
    for record in refused:
        message = record.getMessage()
        assert "\n" not in message
        assert big[:100] not in message
        assert record.name.startswith("wattd.sinks.web")


def test_a_low_open_file_limit_lowers_the_connection_limit_and_says_so() -> None:
    code = (
        "import logging, resource\n"
        "logging.basicConfig(format='%(message)s')\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (160, 160))\n"
        "from wattd.config import WebConfig\n"
        "from wattd.sinks.web.guard import ConnectionGuard\n"
        "print(ConnectionGuard(WebConfig()).max_connections)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    fit = int(result.stdout)
    # 160 descriptors, less what the interpreter holds, the reserve and a backlog.
    assert 2 <= fit <= 160 - FD_RESERVE - BACKLOG
    assert "open-file limit (160)" in result.stderr
    assert f"room for {fit} connections" in result.stderr
    assert "LimitNOFILE=" in result.stderr
