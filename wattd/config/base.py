"""What every config section shares: the base model, field types and helpers.

Sections are frozen pydantic models that forbid unknown keys and non-finite
numbers (``.inf``, ``.nan``). A secret may be given inline (or through
``${ENV}``), from a ``*_file`` path, or as a ``*_credential``: a systemd
credential read from ``$CREDENTIALS_DIRECTORY``. Whichever way, an empty or
blank secret is an error; the helpers here read and check them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
)
from pydantic_core import PydanticCustomError

from wattd.config.redact import shown

MAX_SECRET_BYTES: Final = 64 * 1024
"""Largest secret file read; a secret is one value, not a document."""
_KNOWN_SHOWN: Final = 10
_UNREADABLE: Final = (
    "cannot read {path}: {reason}; check the path and that wattd may read it"
)


class _Model(BaseModel):
    # allow_inf_nan: a float bound like ``ge=0`` lets .inf through, and an
    # infinite retention or interval breaks the task that uses it every cycle.
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )


def _parse_address(value: Any) -> Any:
    """Accept 5, "5", "0x0005" or a 16-hex-digit 64-bit address."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if re.fullmatch(r"0x[0-9a-f]{1,16}", text):
        return int(text, 16)
    if re.fullmatch(r"[0-9]{1,5}", text):
        return int(text)
    if re.fullmatch(r"[0-9a-f]{16}", text):
        return int(text, 16)
    msg = (
        f"address {shown(value)} is not a number, a hex string like 0x0001, or a"
        " 16-digit 64-bit address"
    )
    raise ValueError(msg)


Address = Annotated[int, BeforeValidator(_parse_address), Field(ge=0, lt=1 << 64)]
AdcChannel = Annotated[int, Field(ge=0, le=5)]


def _non_blank(value: Any) -> Any:
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if isinstance(text, str) and not text.strip():
        # A blank secret is no secret: where its presence is tested it counts
        # as set, and where its value is compared an empty guess matches it.
        msg = "is empty; set the secret, or remove the key if none is needed"
        raise ValueError(msg)
    return value


Secret = Annotated[SecretStr, BeforeValidator(_non_blank)]
"""A secret given inline or through ``${ENV}``: masked when shown, never blank."""


def _check_credential_name(value: str) -> str:
    if not value or "/" in value or "\0" in value or value in {".", ".."}:
        msg = (
            f"credential name {shown(value)} must be a plain file name, as in"
            " LoadCredential=NAME:PATH"
        )
        raise ValueError(msg)
    return value


CredentialName = Annotated[
    str, Field(max_length=255), AfterValidator(_check_credential_name)
]
"""The NAME of a systemd credential (``LoadCredential=NAME:PATH``)."""


def _secret_error(field: str, msg: str, **ctx: str) -> PydanticCustomError:
    # The error type carries the field name, so the message can point at the
    # *_file or *_credential key's own line rather than at the section.
    return PydanticCustomError("secret_file", msg, {"field": field, **ctx})


def _secret_from_file(
    path: Path, field: str, credential: str | None = None
) -> SecretStr:
    """The stripped text of a secret file; unreadable or blank is an error."""
    what = f"credential {credential}" if credential is not None else str(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        if credential is not None and isinstance(exc, FileNotFoundError):
            msg = "{what} is not in {path}; does the unit load it with LoadCredential=?"
            raise _secret_error(field, msg, what=what, path=str(path.parent)) from None
        reason = exc.strerror or type(exc).__name__
        raise _secret_error(field, _UNREADABLE, path=str(path), reason=reason) from None
    if len(data) > MAX_SECRET_BYTES:
        msg = "{what} is larger than 64 KiB; it should hold just the secret"
        raise _secret_error(field, msg, what=what)
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _secret_error(field, "{what} is not UTF-8 text", what=what) from None
    if not text:
        raise _secret_error(field, "{what} is empty", what=what)
    return SecretStr(text)


def _secret_from_credential(name: str, field: str) -> SecretStr:
    """A systemd credential, from ``$CREDENTIALS_DIRECTORY/NAME``."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        msg = (
            "$CREDENTIALS_DIRECTORY is not set, so credential {name} cannot be"
            " read; systemd sets it for a service with LoadCredential={name}:PATH."
            " Outside the service, set it to the directory that holds the file"
        )
        raise _secret_error(field, msg, name=name)
    return _secret_from_file(Path(directory) / name, field, credential=name)


def _load_secret_pairs(model: BaseModel, fields: Sequence[str]) -> None:
    """Fill each ``<field>`` from ``<field>_file`` or ``<field>_credential``.

    Giving more than one of the three is an error. A section switched off
    (``enabled: false``) reads nothing, so a config can keep a disabled section
    whose secret files or credentials do not exist on this host.
    """
    if getattr(model, "enabled", True) is False:
        return
    for value_field in fields:
        file_field = f"{value_field}_file"
        credential_field = f"{value_field}_credential"
        given = [
            name
            for name in (value_field, file_field, credential_field)
            if getattr(model, name, None) is not None
        ]
        if len(given) == 2:
            msg = f"give either {given[0]} or {given[1]}, not both"
            raise ValueError(msg)
        if len(given) > 2:
            msg = f"give only one of {', '.join(given)}"
            raise ValueError(msg)
        path = getattr(model, file_field)
        credential = getattr(model, credential_field, None)
        if path is not None:
            object.__setattr__(model, value_field, _secret_from_file(path, file_field))
        elif credential is not None:
            secret = _secret_from_credential(credential, credential_field)
            object.__setattr__(model, value_field, secret)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_") or "wattd"


def _check_topic(value: str, what: str) -> str:
    """Reject topic names that would publish somewhere unexpected."""
    if not value or value.startswith("/") or value.endswith("/") or "//" in value:
        msg = (
            f"{what} {shown(value)} must be non-empty, with no leading, trailing or //"
        )
        raise ValueError(msg)
    if any(c in value for c in "+#\0"):
        msg = f"{what} {shown(value)} must not contain the MQTT wildcards + or #"
        raise ValueError(msg)
    return value


def is_loopback_host(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _known(names: Mapping[str, object]) -> str:
    if not names:
        return "none defined"
    listed = sorted(names)
    more = len(listed) - _KNOWN_SHOWN
    text = ", ".join(n if len(n) <= 40 else n[:40] + "…" for n in listed[:_KNOWN_SHOWN])
    return "defined: " + text + (f" and {more} more" if more > 0 else "")


def _require_secrets(model: BaseModel, fields: Sequence[str], what: str) -> None:
    if getattr(model, "enabled", False):
        missing = [f for f in fields if getattr(model, f) is None]
        if missing:
            msg = f"{what} is enabled but {', '.join(missing)} is not set"
            raise ValueError(msg)
