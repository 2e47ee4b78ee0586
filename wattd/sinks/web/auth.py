"""Who may see the dashboard: bearer token, HTTP basic auth, or a session cookie.

Credentials come from the ``web`` config section (values or ``*_file``); with
none configured only loopback binds are allowed (the config refuses anything
else), and requests need no credentials. Such a server answers only requests
addressed to a loopback name (``Host: localhost``, ``*.localhost``,
``127.0.0.0/8``, ``[::1]``, any port) or to a name in ``web.allowed_hosts``:
a web page that rebinds its own name to 127.0.0.1 gets a 421, not the data.

A browser cannot add an ``Authorization`` header to a page load or to an
``EventSource``, so a token may also be given once as ``?token=...``: the
answer sets an HttpOnly, SameSite=Strict cookie holding a value derived from
the token (never the token itself) and redirects to the same URL without it.
Basic auth needs no such step; browsers resend it by themselves.

A configured secret that is empty or blank matches nothing, so it can never
open the server by accident. Secrets are compared through their SHA-256
digests with :func:`hmac.compare_digest`: constant time, whatever the length.
Nothing secret is logged (the server keeps no access log).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import TYPE_CHECKING, Final

from aiohttp import web

from wattd.config.base import is_loopback_host
from wattd.config.sinks import host_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from pydantic import SecretStr

    from wattd.config import WebConfig

__all__ = ["COOKIE", "Authenticator", "auth_middleware"]

COOKIE: Final = "wattd_session"
TOKEN_PARAM: Final = "token"  # noqa: S105 - the query key, not a secret
# Paths anyone may fetch: a liveness probe that reveals nothing.
PUBLIC_PATHS: Final = frozenset({"/healthz"})
_REALM: Final = 'Basic realm="wattd", charset="UTF-8"'
# How much of a refused Host header the 421 answer repeats.
_SHOWN_HOST_CHARS: Final = 80


def _usable(secret: SecretStr | None) -> bytes | None:
    """The secret's bytes, or None if unset, empty or only whitespace."""
    if secret is None:
        return None
    value = secret.get_secret_value()
    return value.encode() if value.strip() else None


def _same(given: bytes, expected: bytes) -> bool:
    # Equal-length digests: the comparison time says nothing about either value.
    return hmac.compare_digest(
        hashlib.sha256(given).digest(), hashlib.sha256(expected).digest()
    )


class Authenticator:
    """Checks a request's credentials (without any: its Host) against the config."""

    def __init__(self, config: WebConfig) -> None:
        self._token = _usable(config.token)
        user = config.username
        self._user = user.encode() if user and user.strip() else None
        self._password = _usable(config.password)
        # Any credential key set, even to nothing usable, keeps the door shut.
        self._required = (
            config.token is not None
            or config.username is not None
            or config.password is not None
        )
        self._allowed_hosts = frozenset(config.allowed_hosts)
        self.session_value = (
            hmac.new(self._token, b"wattd-web-session", hashlib.sha256).hexdigest()
            if self._token
            else None
        )

    @property
    def required(self) -> bool:
        """True when requests must carry credentials."""
        return self._required

    def token_ok(self, token: str) -> bool:
        """Whether ``token`` is the configured bearer token."""
        return self._token is not None and _same(token.encode(), self._token)

    def host_ok(self, request: web.BaseRequest) -> bool:
        """Whether the request's Host may be answered.

        Only checked without credentials: with them, a rebound name gets a
        401 like anyone else (browsers keep cookies and basic auth per name).
        """
        if self._required:
            return True
        header = request.headers.get("Host")
        if header is None:
            return True  # HTTP/1.0 tools; every browser sends Host
        name = host_name(_strip_port(header))
        if name is None:
            return False
        return (
            name == "localhost"
            or name.endswith(".localhost")
            or is_loopback_host(name)
            or name in self._allowed_hosts
        )

    def allows(self, request: web.BaseRequest) -> bool:
        """Whether the request carries valid credentials (or none are needed)."""
        if not self._required:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer" and self.token_ok(value):
            return True
        if scheme == "basic" and self._basic_ok(value):
            return True
        cookie = request.cookies.get(COOKIE)
        return bool(
            cookie
            and self.session_value
            and _same(cookie.encode(), self.session_value.encode())
        )

    def _basic_ok(self, value: str) -> bool:
        if self._user is None or self._password is None:
            return False
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        # Both comparisons always run, so timing does not reveal which failed.
        user_ok = _same(user, self._user)
        password_ok = _same(password, self._password)
        return bool(sep) and user_ok and password_ok

    def challenge(self) -> web.HTTPUnauthorized:
        """The 401 answer, inviting the browser to ask for basic auth if set."""
        headers = {"WWW-Authenticate": _REALM if self._user else "Bearer"}
        return web.HTTPUnauthorized(
            text="401: credentials needed (bearer token or basic auth)\n",
            headers=headers,
        )

    def misdirected(self, request: web.BaseRequest) -> web.HTTPMisdirectedRequest:
        """The 421 answer for a Host this server does not answer to."""
        shown = request.headers.get("Host", "")[:_SHOWN_HOST_CHARS]
        return web.HTTPMisdirectedRequest(
            text=(
                "421: without credentials this dashboard answers only to"
                f" localhost and loopback addresses, not to Host {shown!r};"
                " add the name to web.allowed_hosts, or set a token\n"
            ),
            headers={"X-Content-Type-Options": "nosniff"},
        )


def _strip_port(host: str) -> str:
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        return host if end < 0 else host[: end + 1]
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


def auth_middleware(
    get: Callable[[], Authenticator],
    on_access: Callable[[web.BaseRequest], None] | None = None,
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware enforcing ``get()`` (looked up per request, so reloads apply).

    ``on_access`` is told about each request that passed: one with valid
    credentials, or any request to a server that needs none.
    """

    @web.middleware
    async def middleware(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        auth = get()
        if not auth.host_ok(request):
            raise auth.misdirected(request)
        if not auth.required:
            _passed(request)
            return await handler(request)
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        token = request.query.get(TOKEN_PARAM)
        if token is not None and request.method == "GET":
            if not auth.token_ok(token):
                raise auth.challenge()
            _passed(request)
            # Trade the URL token for a cookie and drop it from the address bar.
            query = request.rel_url.query.copy()
            del query[TOKEN_PARAM]
            target = request.rel_url.with_query(query)
            response = web.HTTPSeeOther(location=str(target))
            response.set_cookie(
                COOKIE,
                auth.session_value or "",
                httponly=True,
                samesite="Strict",
                path="/",
                secure=request.secure,
            )
            raise response
        if not auth.allows(request):
            raise auth.challenge()
        _passed(request)
        return await handler(request)

    def _passed(request: web.BaseRequest) -> None:
        if on_access is not None:
            on_access(request)

    return middleware
