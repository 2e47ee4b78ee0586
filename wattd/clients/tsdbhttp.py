"""HTTP for the readers of a central store (:mod:`wattd.clients.tsdb`).

The standard library's: one POST per query, HTTP basic auth when a user is
given, and no proxy from the environment (a proxy set for downloads would
otherwise carry the store's queries). Every failure is one
:class:`~wattd.errors.TsdbError` line that names the store and what to check.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any, Final

from wattd.errors import TsdbError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

__all__ = ["StoreHttp", "shorten"]

_MESSAGE_CHARS: Final = 300


class StoreHttp:
    """POSTs forms to one store and turns every failure into a TsdbError."""

    def __init__(
        self,
        kind: str,
        url: str,
        *,
        username: str | None,
        password: str | None,
        timeout_s: float,
    ) -> None:
        self.base = url.rstrip("/")
        self.where = f"{kind} at {self.base}"
        parts = urllib.parse.urlsplit(self.base)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise TsdbError(
                f"{self.where}: the URL must start with http:// or https://"
            )
        if parts.username is not None or parts.password is not None:
            # Keeps passwords out of the command line and the process list.
            raise TsdbError(
                f"{kind}: put the user in --username and the password in"
                " --password-file or $WATTD_SOURCE_PASSWORD, not in the URL"
            )
        self.timeout_s = timeout_s
        self._headers = {"Accept": "application/json"}
        if username is not None:
            pair = f"{username}:{password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def post_json(self, path: str, params: Mapping[str, str]) -> Any:
        """The JSON answer to one query."""
        with self._open(path, params) as response:
            try:
                return json.loads(self._read(response.read))
            except ValueError:
                raise self._not_json(path) from None

    def post_json_lines(self, path: str, params: Mapping[str, str]) -> Iterator[Any]:
        """The answer's JSON documents, one per line, as they arrive."""
        with self._open(path, params) as response:
            while line := self._read(response.readline):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError:
                        raise self._not_json(path) from None

    @contextlib.contextmanager
    def _open(
        self, path: str, params: Mapping[str, str]
    ) -> Iterator[http.client.HTTPResponse]:
        body = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.base + path, data=body, headers=self._headers, method="POST"
        )
        try:
            response = self._opener.open(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            raise self._refused(path, exc) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        with response:
            yield response

    def _read(self, read: Callable[[], bytes]) -> bytes:
        """One read of the answer; a connection lost meanwhile is a TsdbError."""
        try:
            return read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None

    def _not_json(self, path: str) -> TsdbError:
        return TsdbError(
            f"{self.where}: {path} did not answer with JSON; is the URL the store's"
            " base URL (for example http://host:8428 or http://host:8086)?"
        )

    def _refused(self, path: str, exc: urllib.error.HTTPError) -> TsdbError:
        status = exc.code
        said = _server_message(exc.read(4096))
        detail = f"HTTP {status}: {said}" if said else f"HTTP {status}"
        if status in {401, 403}:
            return TsdbError(
                f"{self.where} refused the credentials ({detail}); check --username"
                " and the password (--password-file or $WATTD_SOURCE_PASSWORD)"
            )
        if status == 404:
            return TsdbError(
                f"{self.where} has no {path} ({detail}); is the URL the store's"
                " base URL, and is the store of that kind?"
            )
        return TsdbError(f"{self.where} refused the query ({detail})")

    def _unreachable(self, exc: Exception) -> TsdbError:
        reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError | socket.timeout):
            return TsdbError(
                f"{self.where} did not answer within {self.timeout_s:g} s;"
                " it is overloaded or unreachable"
            )
        if isinstance(reason, socket.gaierror):
            host = urllib.parse.urlsplit(self.base).hostname
            msg = f"{self.where}: cannot resolve host {host!r}; check the URL"
            return TsdbError(msg)
        if isinstance(reason, ssl.SSLError):
            return TsdbError(f"{self.where}: TLS failed ({reason}); check the URL")
        if isinstance(reason, ConnectionRefusedError):
            text = "connection refused"
        elif isinstance(reason, OSError):
            text = reason.strerror or type(reason).__name__
        else:
            text = str(reason)
        return TsdbError(
            f"cannot connect to {self.where} ({shorten(text)}); is it running,"
            " and is the URL right?"
        )


def _server_message(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return shorten(text)
    if isinstance(data, dict) and data.get("error"):
        return shorten(str(data["error"]))
    return shorten(text)


def shorten(text: str) -> str:
    """One line of at most :data:`_MESSAGE_CHARS` characters."""
    flat = " ".join(text.split())
    if len(flat) > _MESSAGE_CHARS:
        return flat[: _MESSAGE_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return flat
