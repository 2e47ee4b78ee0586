"""Who may see the dashboard: bearer token, HTTP basic auth, or a session cookie.

Credentials come from the ``web`` config section (values or ``*_file``); with
none configured only loopback binds are allowed (the config refuses anything
else), and requests need no credentials.

A browser cannot add an ``Authorization`` header to a page load or to an
``EventSource``, so a token may also be given once as ``?token=...``: the
answer sets an HttpOnly, SameSite=Strict cookie holding a value derived from
the token (never the token itself) and redirects to the same URL without it.
Basic auth needs no such step; browsers resend it by themselves. Comparisons
are constant-time; nothing secret is logged (the server keeps no access log).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import TYPE_CHECKING, Final

from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from wattd.config import WebConfig

__all__ = ["COOKIE", "Authenticator", "auth_middleware"]

COOKIE: Final = "wattd_session"
TOKEN_PARAM: Final = "token"  # noqa: S105 - the query key, not a secret
# Paths anyone may fetch: a liveness probe that reveals nothing.
PUBLIC_PATHS: Final = frozenset({"/healthz"})
_REALM: Final = 'Basic realm="wattd", charset="UTF-8"'


class Authenticator:
    """Checks a request's credentials against the configured ones."""

    def __init__(self, config: WebConfig) -> None:
        self._token = config.token.get_secret_value().encode() if config.token else None
        self._user = config.username.encode() if config.username else None
        self._password = (
            config.password.get_secret_value().encode() if config.password else None
        )
        self.session_value = (
            hmac.new(self._token, b"wattd-web-session", hashlib.sha256).hexdigest()
            if self._token
            else None
        )

    @property
    def required(self) -> bool:
        """True when requests must carry credentials."""
        return self._token is not None or self._user is not None

    def token_ok(self, token: str) -> bool:
        """Whether ``token`` is the configured bearer token."""
        return self._token is not None and hmac.compare_digest(
            token.encode(), self._token
        )

    def allows(self, request: web.Request) -> bool:
        """Whether the request carries valid credentials (or none are needed)."""
        if not self.required:
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
            and hmac.compare_digest(cookie.encode(), self.session_value.encode())
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
        user_ok = hmac.compare_digest(user, self._user)
        password_ok = hmac.compare_digest(password, self._password)
        return bool(sep) and user_ok and password_ok

    def challenge(self) -> web.HTTPUnauthorized:
        """The 401 answer, inviting the browser to ask for basic auth if set."""
        headers = {"WWW-Authenticate": _REALM if self._user else "Bearer"}
        return web.HTTPUnauthorized(
            text="401: credentials needed (bearer token or basic auth)\n",
            headers=headers,
        )


def auth_middleware(
    get: Callable[[], Authenticator],
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware enforcing ``get()`` (looked up per request, so reloads apply)."""

    @web.middleware
    async def middleware(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        auth = get()
        if not auth.required or request.path in PUBLIC_PATHS:
            return await handler(request)
        token = request.query.get(TOKEN_PARAM)
        if token is not None and request.method == "GET":
            if not auth.token_ok(token):
                raise auth.challenge()
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
        return await handler(request)

    return middleware
