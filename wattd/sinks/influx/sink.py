"""The InfluxDB sink: readings to line protocol, through the spool, to the server.

Zero loss: :meth:`InfluxSink.write` only encodes and appends to the durable
spool. :meth:`InfluxSink.run` drains the spool in batches (by size and by
interval) and removes points only after a 2xx. Network errors, timeouts, 5xx
and 429 are retried with capped, jittered exponential backoff; a 4xx that
refuses data (bad point, body too large) bisects the batch until the refused
point(s) are found, which go to the spool's dead-letter table with the server's
message while the good points go through. Re-sending a point is harmless:
InfluxDB identifies a point by series and timestamp, so a retry overwrites it.

The HTTP side is influxdb-client's async client (``InfluxDBClientAsync``, its
aiohttp session, auth and error types) and its ``/api/v2/write`` service. The
points are already line protocol in the spool, so they go out as one body
without being parsed again, and the body is gzipped on the worker thread at a
fast level: the client's own gzip runs at level 9 on the event loop, about
50 ms per 5,000 points here, for 1 % less size than level 1.

With ``aggregate_s`` set, ``write()`` first folds readings into per-meter
interval means (:mod:`wattd.core.aggregate`) and spools only closed intervals;
``flush()``, ``stop()`` and a reload that changes the interval spool the open
ones too.

Both InfluxDB forms use that endpoint: 2.x/3.x with org, bucket and token, and
1.8+ through its compatibility API (bucket ``database/retention_policy``,
token ``username:password``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import logging
import random
import socket
import ssl
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.rest import ApiException
from influxdb_client.service.write_service import WriteService

from wattd.core.aggregate import ReadingAggregator
from wattd.errors import (
    SinkAuthError,
    SinkError,
    SinkRejected,
    SinkUnavailable,
    SpoolError,
)
from wattd.sinks.base import Sink
from wattd.sinks.influx.lineprotocol import PointEncoder
from wattd.storage.spool import AsyncSpool, SpoolItem, StreamStats
from wattd.support.worker import run_blocking

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from wattd.config import Config, InfluxConfig
    from wattd.core.readings import Reading

__all__ = [
    "STREAM",
    "InfluxBusy",
    "InfluxNotFound",
    "InfluxRejected",
    "InfluxSink",
    "InfluxTarget",
    "InfluxWriter",
    "backoff_delay",
    "classify_error",
]

log = logging.getLogger(__name__)

SINK_NAME: Final = "influxdb"
STREAM: Final = "influx"
"""The spool stream this sink owns."""
GZIP_LEVEL: Final = 1
"""Level 1 compresses line protocol ~3x at a sixth of level 9's CPU."""
BASE_BACKOFF_S: Final = 1.0
MAX_MESSAGE_CHARS: Final = 500
"""Server messages are cut to this in errors and logs."""
NO_ROUTE_BODY: Final = "404 page not found"
"""What InfluxDB 1.x (and any Go server) answers for a path it does not serve."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class InfluxTarget:
    """Where and how to write, resolved from either config form."""

    url: str
    org: str
    bucket: str
    token: str = dataclasses.field(repr=False)
    gzip: bool = True
    timeout_s: float = 10.0
    verify_ssl: bool = True
    ca_file: Path | None = None

    @classmethod
    def from_config(cls, influx: InfluxConfig) -> InfluxTarget:
        """The 2.x/3.x form, or the 1.8+ compatibility form when ``database`` is set."""
        if influx.database is not None:
            bucket = influx.database
            if influx.retention_policy:
                bucket = f"{bucket}/{influx.retention_policy}"
            password = influx.password.get_secret_value() if influx.password else ""
            token = f"{influx.username}:{password}" if influx.username else ""
            org = influx.org or "-"
        else:
            bucket = influx.bucket or ""
            token = influx.token.get_secret_value() if influx.token else ""
            # InfluxDB 3 and Cloud ignore org; the client insists on a value.
            org = influx.org or "-"
        return cls(
            url=influx.url.rstrip("/"),
            org=org,
            bucket=bucket,
            token=token,
            gzip=influx.gzip,
            timeout_s=influx.timeout_s,
            verify_ssl=influx.verify_ssl,
            ca_file=influx.ca_file,
        )

    @property
    def safe_url(self) -> str:
        """The URL without user info or query, fit for logs."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def describe(self) -> str:
        """``URL bucket 'x'`` for messages."""
        return f"{self.safe_url} bucket {self.bucket!r}"


class InfluxWriter:
    """One client session to one server; raises classified :class:`SinkError`."""

    def __init__(self, target: InfluxTarget) -> None:
        self.target = target
        self._client: InfluxDBClientAsync | None = None
        self._service: WriteService | None = None

    async def open(self) -> None:
        """Create the HTTP session (needs a running event loop)."""
        if self._client is not None:
            return
        kwargs: dict[str, Any] = {"verify_ssl": self.target.verify_ssl}
        if self.target.ca_file is not None:
            kwargs["ssl_ca_cert"] = str(self.target.ca_file)
        else:
            # aiohttp's shared default context, verifying or not as configured.
            # Left alone, the client builds one more per session and loads the
            # system CA bundle into it (~1 MB), even for a plain-HTTP URL.
            kwargs["ssl_context"] = self.target.verify_ssl
        try:
            self._client = InfluxDBClientAsync(
                url=self.target.url,
                token=self.target.token,
                org=self.target.org,
                timeout=int(self.target.timeout_s * 1000),
                enable_gzip=False,
                **kwargs,
            )
        except (OSError, ssl.SSLError) as exc:
            msg = f"cannot set up TLS for {self.target.safe_url}: {exc}; check ca_file"
            raise SinkUnavailable(msg, sink=SINK_NAME) from None
        # The generated service classes carry no annotations.
        self._service = WriteService(self._client.api_client)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        """Close the HTTP session."""
        client, self._client, self._service = self._client, None, None
        if client is not None:
            await client.close()  # type: ignore[no-untyped-call]

    async def write(self, body: bytes) -> None:
        """POST line protocol (lines joined by newlines) with ns precision.

        Raises:
            SinkAuthError: the credentials were refused (401/403).
            InfluxRejected: the data was refused (other 4xx except 404/408/429).
            SinkUnavailable: anything worth retrying later.
        """
        await self.open()
        assert self._service is not None  # noqa: S101 - set by open()
        extra: dict[str, str] = {}
        data = body
        if self.target.gzip:
            data = await run_blocking(gzip.compress, body, GZIP_LEVEL)
            extra["content_encoding"] = "gzip"
        try:
            await self._service.post_write_async(  # type: ignore[no-untyped-call]
                org=self.target.org,
                bucket=self.target.bucket,
                body=data,
                precision="ns",
                content_type="text/plain; charset=utf-8",
                **extra,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is classified below
            raise classify_error(exc, self.target) from None

    async def ping(self) -> str:
        """GET /ping; returns the server's version header (may be empty)."""
        await self.open()
        assert self._client is not None  # noqa: S101 - set by open()
        try:
            version = str(await self._client.version() or "")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is classified below
            raise classify_error(exc, self.target, action="ping") from None
        # The client says "unknown" when the server sends no version header.
        return "" if version == "unknown" else version


class InfluxBusy(SinkUnavailable):
    """The server is overloaded or failing; it may say when to come back."""

    def __init__(self, message: str, *, retry_after_s: float | None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, sink=SINK_NAME)


class InfluxNotFound(SinkUnavailable):
    """A write answered 404: no such bucket or org, or no write API at that URL."""

    def __init__(self, message: str, *, server_message: str) -> None:
        self.server_message = server_message
        super().__init__(message, sink=SINK_NAME)


class InfluxRejected(SinkRejected):
    """The server refused the data itself (a 4xx other than auth/404/408/429)."""

    def __init__(self, message: str, *, status: int, server_message: str) -> None:
        self.status = status
        self.server_message = server_message
        super().__init__(message, sink=SINK_NAME)


def classify_error(
    exc: BaseException, target: InfluxTarget, *, action: str = "write"
) -> SinkError:
    """Turn a client failure into a :class:`SinkError` that says what to do.

    Never includes the token or password: only the status, the server's message
    and the URL without user info.
    """
    where = target.describe()
    if isinstance(exc, ApiException) and exc.status:
        return _classify_status(exc, target, action)
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or _is_dns(exc):
        host = urllib.parse.urlsplit(target.url).hostname
        msg = f"cannot resolve host {host!r} of {target.safe_url}; check url"
        return SinkUnavailable(msg, sink=SINK_NAME)
    if isinstance(
        exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError
    ):
        msg = (
            f"TLS with {target.safe_url} failed ({exc}); set ca_file to the CA that"
            " signed the server's certificate, or check the host name"
        )
        return SinkUnavailable(msg, sink=SINK_NAME)
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            reason = "connection refused"
        else:
            reason = exc.os_error.strerror or str(exc.os_error)
        msg = (
            f"cannot connect to {target.safe_url} ({reason}); is InfluxDB running"
            " and is url right?"
        )
        return SinkUnavailable(msg, sink=SINK_NAME)
    if isinstance(exc, TimeoutError):
        msg = (
            f"{target.safe_url} did not answer within {target.timeout_s:g} s;"
            " the server is overloaded or unreachable (raise timeout_s if it is slow)"
        )
        return SinkUnavailable(msg, sink=SINK_NAME)
    if isinstance(exc, aiohttp.ClientError | OSError):
        msg = f"{action} to {where} failed: {type(exc).__name__}: {exc}"
        return SinkUnavailable(msg, sink=SINK_NAME)
    if isinstance(exc, InfluxDBError):
        return SinkUnavailable(
            f"{action} to {where} failed: {exc.message}", sink=SINK_NAME
        )
    msg = f"{action} to {where} failed unexpectedly: {type(exc).__name__}: {exc}"
    return SinkUnavailable(msg, sink=SINK_NAME)


def _classify_status(exc: ApiException, target: InfluxTarget, action: str) -> SinkError:
    status = int(exc.status)
    server = _server_message(exc)
    said = f"HTTP {status}: {server}" if server else f"HTTP {status}"
    if status in {401, 403}:
        msg = (
            f"{target.safe_url} refused the credentials ({said}); check token or"
            " token_file (username/password for InfluxDB 1.8) and that it may write"
            f" to bucket {target.bucket!r}"
        )
        return SinkAuthError(msg, sink=SINK_NAME)
    if status == 404 and action == "ping":
        msg = (
            f"{target.safe_url}/ping answered {said}; url does not point at an"
            " InfluxDB server (check host, port and any path prefix)"
        )
        return SinkUnavailable(msg, sink=SINK_NAME)
    if status == 404 and server == NO_ROUTE_BODY:
        # InfluxDB 2.x and 1.8+ say which bucket is missing, as JSON; a bare
        # "404 page not found" means nothing at that URL takes writes.
        msg = (
            f"{action} to {target.describe()} answered {said}; nothing at url takes"
            " InfluxDB 2.x writes (/api/v2/write): InfluxDB 1.x before 1.8 has no"
            " such API, or url does not point at InfluxDB"
        )
        return InfluxNotFound(msg, server_message=server)
    if status == 404:
        msg = (
            f"{action} to {target.describe()} answered {said}; the bucket or org does"
            " not exist, or url does not point at InfluxDB"
        )
        return InfluxNotFound(msg, server_message=server)
    if status in {408, 429} or status >= 500:
        msg = f"{target.safe_url} is busy or failing ({said}); retrying later"
        return InfluxBusy(msg, retry_after_s=_retry_after_s(exc))
    return InfluxRejected(
        f"{target.describe()} refused the data ({said})",
        status=status,
        server_message=server,
    )


def _server_message(exc: ApiException) -> str:
    message: object = getattr(exc, "message", None) or exc.reason or ""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    text = " ".join(str(message).split())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


def _retry_after_s(exc: ApiException) -> float | None:
    value = getattr(exc, "retry_after", None)
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


def _is_dns(exc: BaseException) -> bool:
    os_error = getattr(exc, "os_error", None)
    return isinstance(exc, socket.gaierror) or isinstance(os_error, socket.gaierror)


def backoff_delay(attempt: int, cap_s: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    Doubles from :data:`BASE_BACKOFF_S` up to ``cap_s``; the wait is drawn
    from the upper half so that many daemons restarted together spread out.
    """
    ceiling = min(cap_s, BASE_BACKOFF_S * 2 ** min(attempt - 1, 30))
    return rng.uniform(ceiling / 2, ceiling)


class InfluxSink(Sink):
    """Writes readings to InfluxDB through the durable spool."""

    name = SINK_NAME
    queue_size = 20_000
    batch_size = 1_000

    def __init__(
        self,
        config: Config,
        *,
        spool: AsyncSpool | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._influx = config.influxdb
        self._target = InfluxTarget.from_config(config.influxdb)
        self._encoder = PointEncoder.from_config(config)
        self._aggregator = ReadingAggregator(config.influxdb.aggregate_s)
        self._held: list[tuple[int, bytes]] = []
        """Aggregated points the spool refused; they go in first."""
        self._config = config
        self._spool = spool
        self._own_spool = spool is None
        self._rng = rng or random.Random()
        self._writer: InfluxWriter | None = None
        self._wake = asyncio.Event()
        self._retry_now = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._unsent = 0
        self._points_written = 0
        self._retries = 0
        self._skipped = 0
        self._last_error: str | None = None
        self._last_error_unix_s = 0.0
        self._failing_since: float | None = None

    # -- Sink interface ---------------------------------------------------------

    async def start(self) -> None:
        """Open the shared spool and the HTTP session."""
        if self._spool is None:
            self._spool = AsyncSpool.for_config(self._config)
        try:
            stats = await self._spool.stats(STREAM)
        except SpoolError as exc:
            raise SinkUnavailable(str(exc), sink=self.name) from None
        if stats.depth:
            log.info(
                "InfluxDB: %d point(s) from before the restart wait in the spool",
                stats.depth,
            )
        self._writer = InfluxWriter(self._target)
        await self._writer.open()

    async def write(self, readings: Sequence[Reading]) -> None:
        """Encode and append to the spool; the network work happens in :meth:`run`.

        With ``aggregate_s`` set, only the per-meter means of closed intervals.
        """
        # Recorded with the next append, so a restart never goes below them.
        self._require_spool().note_wh_totals(readings)
        # Points of an earlier batch go first; until the spool takes them,
        # batches are refused (and so kept, and retried, by the daemon).
        await self._append_held()
        aggregator = self._aggregator
        rows = self._encode(aggregator.add(readings, time.monotonic()))
        if not aggregator.active:
            await self._append(rows)
            return
        # The aggregator has taken this batch, so a retry of it would count it
        # twice: what the spool refuses now waits here instead.
        await self._hold_and_append(rows)

    async def run(self) -> None:
        """Drain the spool forever: batch, send, ack; back off while it fails."""
        attempt = 0
        while True:
            if attempt == 0:
                await self._wait_for_work()
            await self._expire_idle()
            try:
                async with self._send_lock:
                    await self._drain()
            except SinkError as exc:
                attempt += 1
                await self._note_failure(exc)
                delay = backoff_delay(attempt, self._influx.max_backoff_s, self._rng)
                if isinstance(exc, InfluxBusy) and exc.retry_after_s is not None:
                    hinted = min(exc.retry_after_s, self._influx.max_backoff_s)
                    delay = max(delay, hinted)
                await self._sleep_unless_retry_now(delay)
                continue
            if attempt:
                self._note_recovery()
            attempt = 0

    def reconfigure(self, config: Config) -> None:
        """Apply new tags at once; new connection settings before the next send."""
        if config.influxdb.aggregate_s != self._influx.aggregate_s:
            # Open intervals are closed (and encoded) under the old settings;
            # they are spooled ahead of the next batch, or by flush/stop.
            self._drain_aggregator()
            self._aggregator = ReadingAggregator(config.influxdb.aggregate_s)
        self._config = config
        self._influx = config.influxdb
        self._encoder = PointEncoder.from_config(config)
        target = InfluxTarget.from_config(config.influxdb)
        if target != self._target:
            self._target = target
            self._retry_now.set()
            self._wake.set()

    async def flush(self) -> None:
        """Spool open intervals; one attempt to send what is pending."""
        if self._spool is None:
            return
        await self._spool_pending()
        try:
            async with self._send_lock:
                await self._drain()
        except SinkError as exc:
            depth = self._require_spool().stats_now(STREAM).depth
            log.info(
                "InfluxDB: %d point(s) stay in the spool for the next start (%s)",
                depth,
                exc,
            )

    async def stop(self) -> None:
        """Close the HTTP session and release the spool."""
        if self._spool is not None:
            # Also here, for a stop that came without a flush (flush timed out).
            await self._spool_pending()
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()
        spool = self._spool
        if spool is not None and self._own_spool:
            self._spool = None
            await spool.close()

    def stats(self) -> dict[str, float]:
        """Spool depth, oldest pending age, points written, retries, dead letters."""
        if self._spool is None:
            return {}
        spool = self._spool.stats_now(STREAM)
        oldest = spool.oldest_time_ns
        age_s = max(0.0, (time.time_ns() - oldest) / 1e9) if oldest is not None else 0.0
        return {
            "spool_depth": float(spool.depth),
            "spool_bytes": float(spool.bytes),
            "oldest_pending_age_s": age_s,
            "points_written": float(self._points_written),
            "retries": float(self._retries),
            "dead_letters": float(spool.dead_lettered),
            "dropped": float(spool.dropped),
            "skipped": float(self._skipped),
            "failing": 1.0 if self._failing_since is not None else 0.0,
            "last_error_unix_s": self._last_error_unix_s,
            "spool_durable": 1.0 if self._spool.durable else 0.0,
            "aggregate_open": float(self._aggregator.pending),
        }

    @property
    def last_error(self) -> str | None:
        """The latest delivery error (no secrets), or None if there was none."""
        return self._last_error

    # -- spooling ----------------------------------------------------------------

    def _encode(self, readings: Sequence[Reading]) -> list[tuple[int, bytes]]:
        """Spool rows (time, line) for ``readings``; fieldless ones are skipped."""
        rows: list[tuple[int, bytes]] = []
        encode = self._encoder.encode
        for reading in readings:
            line = encode(reading)
            if line is None:
                self._skipped += 1
            else:
                rows.append((reading.time_ns, line))
        return rows

    async def _append(self, rows: Sequence[tuple[int, bytes]]) -> None:
        """Append to the spool; wake the sender once a batch is full.

        Raises:
            SinkUnavailable: the spool could not take them.
        """
        if not rows:
            return
        try:
            await self._require_spool().append(STREAM, rows)
        except SpoolError as exc:
            raise SinkUnavailable(str(exc), sink=self.name) from None
        self._unsent += len(rows)
        if self._unsent >= self._influx.batch_size:
            self._wake.set()

    async def _append_held(self) -> None:
        """Append the held points, keeping them held if that fails."""
        if not self._held:
            return
        # Swapped out first: a reload may add points while this waits.
        held, self._held = self._held, []
        try:
            await self._append(held)
        except BaseException:
            self._held[:0] = held
            raise

    async def _expire_idle(self) -> None:
        """Spool open intervals once every meter has gone quiet (radio unplugged)."""
        closed = self._aggregator.expire_idle(time.monotonic())
        if closed:
            await self._hold_and_append(self._encode(closed))

    async def _hold_and_append(self, rows: list[tuple[int, bytes]]) -> None:
        """Append aggregated points; what the spool refuses waits in ``_held``."""
        self._held.extend(rows)
        try:
            await self._append_held()
        except SinkUnavailable as exc:
            log.warning(
                "InfluxDB: %s; %d aggregated points wait in memory",
                exc,
                len(self._held),
            )

    def _drain_aggregator(self) -> None:
        """Close every open interval; its points wait in ``_held``."""
        self._held.extend(self._encode(self._aggregator.drain()))

    async def _spool_pending(self) -> None:
        """Spool open intervals and held points (flush, stop); never raises."""
        self._drain_aggregator()
        try:
            await self._append_held()
        except SinkUnavailable as exc:
            log.error(
                "InfluxDB: %s; %d aggregated points are not spooled",
                exc,
                len(self._held),
            )

    # -- draining ----------------------------------------------------------------

    async def _wait_for_work(self) -> None:
        try:
            async with asyncio.timeout(self._influx.flush_interval_s):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()

    async def _sleep_unless_retry_now(self, delay: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._retry_now.wait()
        except TimeoutError:
            pass
        self._retry_now.clear()

    async def _drain(self) -> None:
        """Send batches until the spool is empty; raises on a retryable failure."""
        spool = self._require_spool()
        writer = await self._current_writer()
        while True:
            self._unsent = 0
            batch = self._influx.batch_size
            try:
                items = await spool.peek(STREAM, batch)
            except SpoolError as exc:
                raise SinkUnavailable(str(exc), sink=self.name) from None
            if not items:
                return
            await self._deliver(writer, items)
            if len(items) < batch:
                return

    async def _deliver(self, writer: InfluxWriter, items: Sequence[SpoolItem]) -> None:
        """Send ``items``; bisect a refused batch down to the refused points."""
        spool = self._require_spool()
        try:
            await writer.write(b"\n".join(item.payload for item in items))
        except InfluxRejected as exc:
            if len(items) > 1:
                half = len(items) // 2
                await self._deliver(writer, items[:half])
                await self._deliver(writer, items[half:])
                return
            reason = f"HTTP {exc.status}: {exc.server_message or 'no message'}"
            try:
                await spool.dead_letter(STREAM, items, reason)
            except SpoolError as spool_exc:
                raise SinkUnavailable(str(spool_exc), sink=self.name) from None
            log.warning(
                "InfluxDB refused a point (%s); it was moved to the dead-letter table"
                " of the spool and will not be retried: %s",
                reason,
                items[0].payload[:300].decode("utf-8", "replace"),
            )
            return
        try:
            await spool.ack(STREAM, [item.id for item in items])
        except SpoolError as exc:
            raise SinkUnavailable(str(exc), sink=self.name) from None
        self._points_written += len(items)

    async def _current_writer(self) -> InfluxWriter:
        writer = self._writer
        if writer is None or writer.target != self._target:
            if writer is not None:
                await writer.close()
            writer = InfluxWriter(self._target)
            self._writer = writer
        await writer.open()
        return writer

    async def _note_failure(self, exc: SinkError) -> None:
        self._retries += 1
        message = str(exc)
        self._last_error_unix_s = time.time()
        first = self._failing_since is None
        if first:
            self._failing_since = time.monotonic()
        if first or message != self._last_error:
            depth = (await self._safe_stats()).depth
            log.warning(
                "%s; %d point(s) wait in the spool and are retried with backoff",
                message,
                depth,
            )
        else:
            log.debug("%s (retry %d)", message, self._retries)
        self._last_error = message

    def _note_recovery(self) -> None:
        if self._failing_since is None:
            return
        down_s = time.monotonic() - self._failing_since
        self._failing_since = None
        log.info(
            "InfluxDB at %s accepts writes again after %.0f s; backlog sent",
            self._target.safe_url,
            down_s,
        )

    async def _safe_stats(self) -> StreamStats:
        spool = self._require_spool()
        try:
            return await spool.stats(STREAM)
        except SpoolError:
            return spool.stats_now(STREAM)

    def _require_spool(self) -> AsyncSpool:
        if self._spool is None:
            msg = "the sink was not started; call start() first"
            raise SinkUnavailable(msg, sink=self.name)
        return self._spool
