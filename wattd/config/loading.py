"""Reading a config: ``${ENV}`` expansion, validation, file:line errors, masking.

Problems are reported as :class:`~wattd.errors.ConfigError` naming the file, the
line and the key. The YAML node tree that supplies the lines is only built when
there is something to report. The file itself is read by
:mod:`wattd.config.yamlread`, which bounds what a file can cost.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from wattd.config import yamlread
from wattd.config.model import Config
from wattd.config.redact import (
    MESSAGE_CHARS,
    clip,
    is_secret_name,
    mask_tree,
    shown,
)
from wattd.config.yamlread import Loc, key_line, loc_text
from wattd.errors import ConfigError, ConfigErrors

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PLACES_SHOWN = 3
"""A key that belongs in more places than this gets the usual hints instead."""


def _expand_env(
    value: Any,
    path: Loc,
    errors: list[tuple[Loc, str]],
    done: dict[int, Any],
) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            env = os.environ.get(name)
            if env is None:
                errors.append(
                    (
                        path,
                        f"environment variable {name} is not set; export it or"
                        " use a *_file setting",
                    )
                )
                return ""
            return env

        return _ENV_REF.sub(repl, value)
    if not isinstance(value, dict | list):
        return value
    # A value shared through a YAML alias is expanded once and stays shared;
    # walking every use would cost as much as the aliases expand to.
    known = done.get(id(value))
    if known is not None:
        return known
    out: Any
    if isinstance(value, dict):
        out = {k: _expand_env(v, (*path, k), errors, done) for k, v in value.items()}
    else:
        out = [_expand_env(v, (*path, i), errors, done) for i, v in enumerate(value)]
    done[id(value)] = out
    return out


# -- where a key belongs in the schema ------------------------------------------


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _core(tp: Any) -> Any:
    """The type inside ``Annotated[...]`` and ``X | None``."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _core(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        args = [_core(a) for a in get_args(tp) if a is not type(None)]
        for arg in args:
            if _is_model(arg) or get_origin(arg) in (dict, list):
                return arg
        return args[0] if args else tp
    return tp


def _step(tp: Any, part: str | int) -> Any:
    """The type one location part below ``tp`` (None if there is none)."""
    tp = _core(tp)
    if _is_model(tp):
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field is not None else None
    origin = get_origin(tp)
    if origin is dict:
        return get_args(tp)[1]  # ``part`` is a name the user chose
    if origin is list and isinstance(part, int):
        return get_args(tp)[0]
    return None


def _model_for(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that owns the last key of ``loc`` (for suggestions)."""
    tp: Any = Config
    for part in loc[:-1]:
        tp = _step(tp, part)
        if tp is None:
            return None
    tp = _core(tp)
    return tp if _is_model(tp) else None


@functools.cache
def _places() -> dict[str, list[str]]:
    """Every key of the schema and the sections it belongs under.

    Sections keyed by a chosen name read ``summaries.<name>``, list entries
    ``ports[n]``; the top level is the empty string.
    """
    out: dict[str, list[str]] = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            out.setdefault(name, []).append(prefix)
            tp, below = _core(field.annotation), name
            while get_origin(tp) in (dict, list):
                is_dict = get_origin(tp) is dict
                tp = _core(get_args(tp)[-1])
                below += ".<name>" if is_dict else "[n]"
            if _is_model(tp):
                walk(tp, f"{prefix}.{below}" if prefix else below)

    walk(Config, "")
    return out


def _unknown_key_hint(loc: Loc) -> str:
    key = str(loc[-1])
    places = _places().get(key, [])
    if places and len(places) <= _PLACES_SHOWN:
        named = [p or "the top level" for p in places]
        where = (
            named[0] if len(named) == 1 else f"{', '.join(named[:-1])} or {named[-1]}"
        )
        return f"; {shown(key)} belongs under {where}"
    owner = _model_for(loc)
    if owner is None:
        return ""
    fields = list(owner.model_fields)
    close = difflib.get_close_matches(key, fields, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return "; allowed keys: " + ", ".join(sorted(fields))


# -- validation errors ----------------------------------------------------------


def _render_validation_errors(
    exc: ValidationError, root: yaml.Node | None, path: Path | None
) -> list[ConfigError]:
    out: list[ConfigError] = []
    for err in exc.errors(include_url=False):
        loc = tuple(
            p
            for p in err["loc"]
            if not (isinstance(p, str) and p.startswith("function-"))
        )
        kind = err["type"]
        if kind == "secret_file":
            loc = (*loc, str(err.get("ctx", {}).get("field", "")))
        if kind == "extra_forbidden":
            message = f"unknown key {shown(str(loc[-1]))}{_unknown_key_hint(loc)}"
        elif kind == "missing":
            message = "required key is missing"
        elif _is_secret_key(loc):
            message = str(err["msg"]).removeprefix("Value error, ")
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
            given = err.get("input")
            if isinstance(given, str) and len(message) > MESSAGE_CHARS:
                message = message.replace(repr(given), shown(given))
            scalar = given is not None and not isinstance(given, dict | list)
            if scalar and kind != "value_error":
                message += f" (got {shown(given)})"
        key = loc_text(loc)
        line = key_line(root, loc)
        out.append(ConfigError(clip(message), path=path, line=line, key=key or None))
    return out


def _is_secret_key(loc: Sequence[str | int]) -> bool:
    """True for keys whose values must never be echoed (secrets, headers)."""
    if not loc:
        return False
    name = str(loc[-1])
    if is_secret_name(name) or "headers" in loc[:-1]:
        return True
    owner = _model_for(loc)
    field = owner.model_fields.get(name) if owner is not None else None
    if field is None:
        return False
    return any(a is SecretStr for a in _iter_args(field.annotation))


def _iter_args(annotation: Any) -> Iterator[Any]:
    yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _iter_args(arg)


def parse_config(text: str, path: Path | str | None = None) -> Config:
    """Validate YAML text as a wattd config.

    Raises:
        ConfigError: with file, line and key of every problem found.
    """
    where = Path(path) if path is not None else None
    data = yamlread.load(text, where)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            "the top level must be a mapping of sections (ports:, sensors:, ...)",
            path=where,
            line=1,
        )
    env_errors: list[tuple[Loc, str]] = []
    data = _expand_env(data, (), env_errors, {})
    if env_errors:
        root = yamlread.compose(text)
        found = [
            ConfigError(
                clip(msg), path=where, line=key_line(root, loc), key=loc_text(loc)
            )
            for loc, msg in env_errors
        ]
        if len(found) == 1:
            raise found[0]
        raise ConfigErrors(found)
    try:
        # Price and carbon files are named relative to the config file.
        context = {"config_dir": where.parent if where is not None else None}
        return Config.model_validate(data, context=context)
    except ValidationError as exc:
        errors = _render_validation_errors(exc, yamlread.compose(text), where)
        if len(errors) == 1:
            raise errors[0] from None
        raise ConfigErrors(errors) from None


def load_config(path: Path | str) -> Config:
    """Read and validate a config file.

    Raises:
        ConfigError: if the file is missing, unreadable, too large, not UTF-8
            or invalid.
    """
    p = Path(path)
    return parse_config(yamlread.read_text(p), p)


def dump_effective(config: Config) -> str:
    """The effective config as YAML, with every secret masked."""
    data = config.model_dump(mode="json")
    return yaml.safe_dump(mask_tree(data), sort_keys=False, default_flow_style=False)
