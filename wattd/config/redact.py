"""What the config may show of itself: secrets masked, long values shortened.

``check-config`` prints the effective config and every command prints config
errors; both go to terminals, logs and bug reports. Secrets are masked the
same way everywhere, including those that hide in URLs (``user:password@``, a
webhook's path and query) and in webhook headers, and no echoed value is
longer than a line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

MASK: Final = "**********"
ECHO_CHARS: Final = 80
"""Longest value echoed in a message; longer ones are cut with their length."""
MESSAGE_CHARS: Final = 1000
"""Longest config error message (its key and place come on top)."""

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s]+@")


def is_secret_name(name: str) -> bool:
    """True for keys whose values are secrets (passwords, tokens, API keys)."""
    return name in {"password", "token", "secret"} or name.endswith(
        ("_secret", "_token", "_password", "consumer_key")
    )


def shown(value: object) -> str:
    """``value`` as a message quotes it: strings repr'd, all cut to a line.

    A long string is cut to :data:`ECHO_CHARS` before quoting, so a huge value
    is never copied whole into a message.
    """
    if isinstance(value, str):
        if len(value) <= ECHO_CHARS:
            return repr(scrub(value))
        # Scrubbed before the cut, so a cut cannot leave half a password.
        head = scrub(value[: ECHO_CHARS + 1024])[:ECHO_CHARS]
        return f"{head!r}… ({len(value):,} characters)"
    text = str(value)
    if len(text) <= ECHO_CHARS:
        return text
    return f"{text[:ECHO_CHARS]}… ({len(text):,} characters)"


def clip(message: str) -> str:
    """A message with URL credentials masked and cut to :data:`MESSAGE_CHARS`."""
    if len(message) > MESSAGE_CHARS:
        message = message[: MESSAGE_CHARS - 1] + "…"
    return scrub(message)


def scrub(text: str) -> str:
    """Mask the ``user:password@`` of every URL in ``text``."""
    return _URL_USERINFO.sub(rf"\g<1>{MASK}@", text)


def mask_url_path(url: str) -> str:
    """A URL with its credentials, path and query masked (webhook URLs).

    Slack-style hook URLs carry their secret in the path, others in the query;
    scheme, host and port stay visible so the URL can still be recognised.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if not parts.scheme or not parts.netloc:
        return MASK
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{MASK}@{host}" if "@" in parts.netloc else host
    path = f"/{MASK}" if parts.path.strip("/") or parts.query else parts.path
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def mask_tree(value: Any, key: str | None = None) -> Any:
    """Plain config data (``model_dump``) with every secret masked.

    ``key`` is the name the value sits under: every value under ``headers``
    is masked, and a ``url`` under ``webhook`` loses its path and query too.
    """
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            name = str(k)
            if v and (key == "headers" or is_secret_name(name)):
                out[k] = MASK
            elif name == "url" and key == "webhook" and isinstance(v, str):
                out[k] = mask_url_path(v)
            else:
                out[k] = mask_tree(v, name)
        return out
    if isinstance(value, list):
        return [mask_tree(v, key) for v in value]
    if isinstance(value, str):
        return scrub(value)
    return value
