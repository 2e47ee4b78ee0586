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

Each customer in ``web.customers`` has secrets of its own; the middleware
leaves who is asking (a :class:`Viewer`) on the request, and the handlers show
a customer only its own meters.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from wattd.config.base import is_loopback_host
from wattd.config.sinks import host_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from pydantic import SecretStr

    from wattd.config import WebConfig

__all__ = [
    "COOKIE",
    "OPERATOR",
    "VIEWER_KEY",
    "Authenticator",
    "Viewer",
    "auth_middleware",
    "viewer_of",
]

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


@dataclasses.dataclass(frozen=True, slots=True)
class Viewer:
    """Who is asking: the operator (``customer`` None) or one customer."""

    customer: str | None = None

    @property
    def is_operator(self) -> bool:
        """True for the operator, who sees every meter."""
        return self.customer is None


OPERATOR: Final = Viewer()
VIEWER_KEY: Final = web.RequestKey("viewer", Viewer)
"""Where the middleware leaves the request's :class:`Viewer`."""


def viewer_of(request: web.Request) -> Viewer:
    """The request's viewer (the operator on a server without credentials)."""
    viewer: Viewer = request.get(VIEWER_KEY, OPERATOR)
    return viewer


def _session(token: bytes, viewer: Viewer) -> bytes:
    # Bound to the viewer too, so two holders' cookies can never be swapped.
    label = b"wattd-web-session" + (viewer.customer or "").encode()
    return hmac.new(token, label, hashlib.sha256).hexdigest().encode()


class Authenticator:
    """Checks a request's credentials (without any: its Host) against the config.

    The operator's secrets and every customer's are checked on each request,
    all of them, so the time taken says nothing about which one matched.
    """

    def __init__(self, config: WebConfig) -> None:
        holders: list[tuple[Viewer, Any]] = [(OPERATOR, config)]
        holders += [(Viewer(name), c) for name, c in config.customers.items()]
        self._tokens: list[tuple[bytes, Viewer]] = []
        self._logins: list[tuple[bytes, bytes, Viewer]] = []
        self._sessions: list[tuple[bytes, Viewer]] = []
        for viewer, cfg in holders:
            token = _usable(cfg.token)
            if token is not None:
                self._tokens.append((token, viewer))
                self._sessions.append((_session(token, viewer), viewer))
            user = cfg.username
            password = _usable(cfg.password)
            if user and user.strip() and password is not None:
                self._logins.append((user.encode(), password, viewer))
        self._basic_realm = any(cfg.username for _, cfg in holders)
        # Any credential key set, even to nothing usable, keeps the door shut.
        self._required = bool(config.customers) or (
            config.token is not None
            or config.username is not None
            or config.password is not None
        )
        self._allowed_hosts = frozenset(config.allowed_hosts)

    @property
    def required(self) -> bool:
        """True when requests must carry credentials."""
        return self._required

    def token_viewer(self, token: str) -> Viewer | None:
        """Whose bearer token ``token`` is, if anyone's."""
        return _match(token.encode(), self._tokens)

    def session_for(self, viewer: Viewer) -> str:
        """The session cookie value of ``viewer`` (who logged in with a token)."""
        for value, holder in self._sessions:
            if holder == viewer:
                return value.decode()
        return ""

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

    def identify(self, request: web.BaseRequest) -> Viewer | None:
        """Who the request's credentials belong to; None if nobody's.

        Without credentials configured everyone is the operator.
        """
        if not self._required:
            return OPERATOR
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        found: Viewer | None = None
        if scheme == "bearer":
            found = self.token_viewer(value)
        elif scheme == "basic":
            found = self._basic(value)
        cookie = request.cookies.get(COOKIE)
        if found is None and cookie:
            found = _match(cookie.encode(), self._sessions)
        return found

    def _basic(self, value: str) -> Viewer | None:
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        user, sep, password = decoded.partition(b":")
        found: Viewer | None = None
        # Every login is compared, both halves each time, so timing does not
        # reveal which failed or whose it was.
        for known_user, known_password, viewer in self._logins:
            user_ok = _same(user, known_user)
            password_ok = _same(password, known_password)
            if user_ok and password_ok and found is None:
                found = viewer
        return found if sep else None

    def challenge(self) -> web.HTTPUnauthorized:
        """The 401 answer, inviting the browser to ask for basic auth if set."""
        headers = {"WWW-Authenticate": _REALM if self._basic_realm else "Bearer"}
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


def _match(given: bytes, known: list[tuple[bytes, Viewer]]) -> Viewer | None:
    """The viewer whose secret equals ``given``, comparing against all of them."""
    found: Viewer | None = None
    for secret, viewer in known:
        if _same(given, secret) and found is None:
            found = viewer
    return found


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
            viewer = auth.token_viewer(token)
            if viewer is None:
                raise auth.challenge()
            _passed(request)
            # Trade the URL token for a cookie and drop it from the address bar.
            query = request.rel_url.query.copy()
            del query[TOKEN_PARAM]
            target = request.rel_url.with_query(query)
            response = web.HTTPSeeOther(location=str(target))
            response.set_cookie(
                COOKIE,
                auth.session_for(viewer),
                httponly=True,
                samesite="Strict",
                path="/",
                secure=request.secure,
            )
            raise response
        found = auth.identify(request)
        if found is None:
            raise auth.challenge()
        request[VIEWER_KEY] = found
        _passed(request)
        return await handler(request)

    def _passed(request: web.BaseRequest) -> None:
        if on_access is not None:
            on_access(request)

    return middleware
