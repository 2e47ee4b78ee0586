"""The InfluxDB HTTP client: where to write, one session, and what a failure means.

:class:`InfluxTarget` resolves the config to one of two write APIs:

* ``v2``: ``/api/v2/write`` with org, bucket and token (2.x, 3.x, Cloud,
  VictoriaMetrics), or 1.8+ through its compatibility API (bucket
  ``database/retention_policy``, token ``username:password``);
* ``v1``: 1.x's native ``POST /write?db=&rp=&precision=ns`` with HTTP basic
  auth, which every 1.x release has (1.6 has no ``/api/v2/write``) and 3.x
  keeps.

:class:`InfluxWriter` is one session to one server and :func:`classify_error`
turns each failure into a :class:`~wattd.errors.SinkError` that says what to
check. The InfluxDB sink and ``wattd influx-test`` both talk to the server
this way.

For ``v2`` the HTTP side is influxdb-client's async client
(``InfluxDBClientAsync``, its aiohttp session, auth and error types) and its
``/api/v2/write`` service. influxdb-client has no ``/write`` call (its "v1
compatibility" is the 1.8+ ``/api/v2/write`` above), so ``v1`` is one plain
aiohttp POST. The points are already line protocol, so they go out as one body
without being parsed again, and the body is gzipped on the worker thread at a
fast level: the client's own gzip runs at level 9 on the event loop, about
50 ms per 5,000 points here, for 1 % less size than level 1.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gzip
import json
import socket
import ssl
import urllib.parse
from typing import TYPE_CHECKING, Any, Final, Literal

import aiohttp
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.rest import ApiException
from influxdb_client.service.write_service import WriteService

from wattd.errors import SinkAuthError, SinkError, SinkRejected, SinkUnavailable
from wattd.support.worker import run_blocking

if TYPE_CHECKING:
    from pathlib import Path

    from wattd.config import InfluxConfig

__all__ = [
    "SINK_NAME",
    "InfluxBusy",
    "InfluxNotFound",
    "InfluxRejected",
    "InfluxTarget",
    "InfluxWriter",
    "classify_error",
    "classify_status",
]

SINK_NAME: Final = "influxdb"
"""The sink the errors name."""
GZIP_LEVEL: Final = 1
"""Level 1 compresses line protocol ~3x at a sixth of level 9's CPU."""
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
    api: Literal["v1", "v2"] = "v2"
    database: str = ""
    """``v1`` only: the database (``db``); ``bucket`` is ``database[/rp]``."""
    retention_policy: str = ""
    """``v1`` only: ``rp``; empty means the database's default policy."""
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)

    @classmethod
    def from_config(cls, influx: InfluxConfig) -> InfluxTarget:
        """The target for the config's form and :attr:`~InfluxConfig.write_api`."""
        api = influx.write_api
        password = influx.password.get_secret_value() if influx.password else ""
        if influx.database is not None:
            bucket = influx.database
            if influx.retention_policy:
                bucket = f"{bucket}/{influx.retention_policy}"
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
            api=api,
            database=influx.database or "",
            retention_policy=influx.retention_policy or "",
            username=influx.username or "",
            password=password,
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
        """``URL bucket 'x'`` (or ``URL database 'x'`` for v1) for messages."""
        if self.api == "v1":
            rp = f" retention policy {self.retention_policy!r}"
            return f"{self.safe_url} database {self.database!r}" + (
                rp if self.retention_policy else ""
            )
        return f"{self.safe_url} bucket {self.bucket!r}"


class InfluxWriter:
    """One client session to one server; raises classified :class:`SinkError`."""

    def __init__(self, target: InfluxTarget) -> None:
        self.target = target
        self._client: InfluxDBClientAsync | None = None
        self._service: WriteService | None = None
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """Create the HTTP session (needs a running event loop)."""
        if self.target.api == "v1":
            await self._open_v1()
            return
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

    async def _open_v1(self) -> None:
        if self._session is not None:
            return
        ssl_arg: ssl.SSLContext | bool = self.target.verify_ssl
        if self.target.ca_file is not None:
            try:
                ssl_arg = ssl.create_default_context(cafile=str(self.target.ca_file))
            except (OSError, ssl.SSLError) as exc:
                msg = (
                    f"cannot set up TLS for {self.target.safe_url}: {exc};"
                    " check ca_file"
                )
                raise SinkUnavailable(msg, sink=SINK_NAME) from None
        headers: dict[str, str] = {}
        if self.target.username:
            login = f"{self.target.username}:{self.target.password}".encode()
            headers["Authorization"] = f"Basic {base64.b64encode(login).decode()}"
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.target.timeout_s),
            connector=aiohttp.TCPConnector(ssl=ssl_arg),
        )

    async def close(self) -> None:
        """Close the HTTP session."""
        client, self._client, self._service = self._client, None, None
        if client is not None:
            await client.close()  # type: ignore[no-untyped-call]
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def write(self, body: bytes) -> None:
        """POST line protocol (lines joined by newlines) with ns precision.

        Raises:
            SinkAuthError: the credentials were refused (401/403).
            InfluxRejected: the data was refused (other 4xx except 404/408/429).
            SinkUnavailable: anything worth retrying later.
        """
        await self.open()
        data = body
        if self.target.gzip:
            data = await run_blocking(gzip.compress, body, GZIP_LEVEL)
        if self.target.api == "v1":
            await self._write_v1(data)
            return
        assert self._service is not None  # noqa: S101 - set by open()
        extra: dict[str, str] = {}
        if self.target.gzip:
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

    async def _write_v1(self, data: bytes) -> None:
        """``POST /write?db=&rp=&precision=ns``; a 1.x error body is ``{"error"}``."""
        assert self._session is not None  # noqa: S101 - set by open()
        params = {"db": self.target.database, "precision": "ns"}
        if self.target.retention_policy:
            params["rp"] = self.target.retention_policy
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.target.gzip:
            headers["Content-Encoding"] = "gzip"
        try:
            async with self._session.post(
                f"{self.target.url}/write", params=params, data=data, headers=headers
            ) as resp:
                if 200 <= resp.status < 300:
                    return
                text = await resp.text(errors="replace")
                retry_after = _seconds(resp.headers.get("Retry-After"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is classified below
            raise classify_error(exc, self.target) from None
        raise classify_status(
            resp.status, _v1_message(text), self.target, retry_after_s=retry_after
        )

    async def _ping_v1(self) -> str:
        assert self._session is not None  # noqa: S101 - set by open()
        try:
            async with self._session.get(f"{self.target.url}/ping") as resp:
                if 200 <= resp.status < 300:
                    return resp.headers.get("X-Influxdb-Version", "")
                text = await resp.text(errors="replace")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is classified below
            raise classify_error(exc, self.target, action="ping") from None
        raise classify_status(
            resp.status, _v1_message(text), self.target, action="ping"
        )

    async def ping(self) -> str:
        """GET /ping; returns the server's version header (may be empty)."""
        await self.open()
        if self.target.api == "v1":
            return await self._ping_v1()
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
        return classify_status(
            int(exc.status),
            _server_message(exc),
            target,
            action=action,
            retry_after_s=_retry_after_s(exc),
        )
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


def classify_status(
    status: int,
    server: str,
    target: InfluxTarget,
    *,
    action: str = "write",
    retry_after_s: float | None = None,
) -> SinkError:
    """The :class:`SinkError` for an HTTP error ``status`` with ``server``'s message.

    Never includes the token or password.
    """
    server = _clean(server)
    said = f"HTTP {status}: {server}" if server else f"HTTP {status}"
    if status in {401, 403} and target.api == "v1":
        msg = (
            f"{target.safe_url} refused the credentials ({said}); check username and"
            " password (or password_file) and that the user may write to database"
            f" {target.database!r}"
        )
        return SinkAuthError(msg, sink=SINK_NAME)
    if status in {401, 403}:
        msg = (
            f"{target.safe_url} refused the credentials ({said}); check token or"
            " token_file (username/password for InfluxDB 1.8) and that it may write"
            f" to bucket {target.bucket!r}"
        )
        return SinkAuthError(msg, sink=SINK_NAME)
    if target.api == "v1" and action == "write":
        found = _v1_missing(status, server, target, said)
        if found is not None:
            return found
    if status == 404 and action == "ping":
        msg = (
            f"{target.safe_url}/ping answered {said}; url does not point at an"
            " InfluxDB server (check host, port and any path prefix)"
        )
        return SinkUnavailable(msg, sink=SINK_NAME)
    if status == 404 and server == NO_ROUTE_BODY and target.api == "v1":
        msg = (
            f"{action} to {target.describe()} answered {said}; nothing at url takes"
            " InfluxDB 1.x writes (/write): url does not point at InfluxDB 1.x or"
            " 3.x (for 2.x set bucket, org and token)"
        )
        return InfluxNotFound(msg, server_message=server)
    if status == 404 and server == NO_ROUTE_BODY:
        # InfluxDB 2.x and 1.8+ say which bucket is missing, as JSON; a bare
        # "404 page not found" means nothing at that URL takes writes.
        msg = (
            f"{action} to {target.describe()} answered {said}; nothing at url takes"
            " InfluxDB 2.x writes (/api/v2/write): InfluxDB 1.x before 1.8 has no"
            " such API (set database instead of bucket to write through its /write),"
            " or url does not point at InfluxDB"
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
        return InfluxBusy(msg, retry_after_s=retry_after_s)
    return InfluxRejected(
        f"{target.describe()} refused the data ({said})",
        status=status,
        server_message=server,
    )


def _v1_missing(
    status: int, server: str, target: InfluxTarget, said: str
) -> SinkError | None:
    """A 1.x answer for a missing database or retention policy, else None."""
    where = target.describe()
    if status == 404 and server.startswith("database not found"):
        msg = (
            f"write to {where} answered {said}; create it with InfluxQL"
            f" CREATE DATABASE {_ident(target.database)} (e.g. influx -execute),"
            " or fix database"
        )
        return InfluxNotFound(msg, server_message=server)
    if server.startswith("retention policy not found"):
        # 1.x answers 500 for this; it is a setting to fix, not a busy server.
        msg = (
            f"write to {where} answered {said}; create it with InfluxQL CREATE"
            f" RETENTION POLICY {_ident(target.retention_policy)} ON"
            f" {_ident(target.database)} ..., or fix retention_policy"
        )
        return InfluxNotFound(msg, server_message=server)
    return None


def _ident(name: str) -> str:
    """An InfluxQL identifier, double-quoted."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _v1_message(body: str) -> str:
    """The ``error`` of a 1.x JSON error body, or the body itself."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return body
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
        return str(decoded["error"])
    return body


def _clean(message: str) -> str:
    text = " ".join(message.split())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


def _server_message(exc: ApiException) -> str:
    message: object = getattr(exc, "message", None) or exc.reason or ""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return _clean(str(message))


def _retry_after_s(exc: ApiException) -> float | None:
    return _seconds(getattr(exc, "retry_after", None))


def _seconds(value: object) -> float | None:
    """A Retry-After value in seconds, or None if absent or not a number."""
    if value is None:
        return None
    try:
        seconds = float(str(value))
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


def _is_dns(exc: BaseException) -> bool:
    os_error = getattr(exc, "os_error", None)
    return isinstance(exc, socket.gaierror) or isinstance(os_error, socket.gaierror)
