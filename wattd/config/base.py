"""What every config section shares: the base model, field types and helpers.

Sections are frozen pydantic models that forbid unknown keys. Secrets may come
from a ``*_file`` path instead of the YAML itself; the helpers here read them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr
from pydantic_core import PydanticCustomError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


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
        f"address {value!r} is not a number, a hex string like 0x0001, or a"
        " 16-digit 64-bit address"
    )
    raise ValueError(msg)


Address = Annotated[int, BeforeValidator(_parse_address), Field(ge=0, lt=1 << 64)]
AdcChannel = Annotated[int, Field(ge=0, le=5)]


def _secret_from_file(path: Path | None, field: str) -> SecretStr | None:
    if path is None:
        return None
    # The error type carries the field name, so the message can point at the
    # *_file key's own line rather than at the section holding it.
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        msg = "cannot read {path}: {reason}; check the path and that wattd may read it"
        raise PydanticCustomError(
            "secret_file",
            msg,
            {"field": field, "path": str(path), "reason": exc.strerror},
        ) from None
    if not text:
        raise PydanticCustomError(
            "secret_file", "{path} is empty", {"field": field, "path": str(path)}
        )
    return SecretStr(text)


def _load_secret_pairs(model: BaseModel, fields: Sequence[str]) -> None:
    """Fill each ``<field>`` from ``<field>_file``; both at once is an error.

    A section switched off (``enabled: false``) reads no files, so a config can
    keep a disabled section whose secret files do not exist on this host.
    """
    if getattr(model, "enabled", True) is False:
        return
    for value_field in fields:
        file_field = f"{value_field}_file"
        path = getattr(model, file_field)
        if path is not None:
            if getattr(model, value_field) is not None:
                msg = f"give either {value_field} or {file_field}, not both"
                raise ValueError(msg)
            object.__setattr__(model, value_field, _secret_from_file(path, file_field))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_") or "wattd"


def _check_topic(value: str, what: str) -> str:
    """Reject topic names that would publish somewhere unexpected."""
    if not value or value.startswith("/") or value.endswith("/") or "//" in value:
        msg = f"{what} {value!r} must be non-empty, with no leading, trailing or //"
        raise ValueError(msg)
    if any(c in value for c in "+#\0"):
        msg = f"{what} {value!r} must not contain the MQTT wildcards + or #"
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
    return "defined: " + ", ".join(sorted(names)) if names else "none defined"


def _require_secrets(model: BaseModel, fields: Sequence[str], what: str) -> None:
    if getattr(model, "enabled", False):
        missing = [f for f in fields if getattr(model, f) is None]
        if missing:
            msg = f"{what} is enabled but {', '.join(missing)} is not set"
            raise ValueError(msg)
