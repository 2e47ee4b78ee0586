"""Reading a config file: YAML, ``${ENV}`` expansion, file:line errors, masking.

Problems are reported as :class:`~wattd.errors.ConfigError` naming the file, the
line and the key. The YAML node tree that supplies the lines is only built when
there is something to report.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from wattd.config.model import Config
from wattd.errors import ConfigError, ConfigErrors

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that also keeps the composed node tree for error lines."""


# libyaml builds the same data with a fraction of the pure-Python parser's
# garbage: for a 1,000-sensor file ~7 MB instead of ~22 MB at peak, and much
# of that stayed resident in the daemon as fragmented heap. The pure-Python
# loader still runs when a problem needs its line numbers or its wording.
_FAST_LOADER: Final[type[yaml.SafeLoader]] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)


def _load_yaml(text: str) -> Any:
    """The document's data; a syntax error is raised by the pure-Python parser."""
    try:
        return yaml.load(text, Loader=_FAST_LOADER)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError:
        # Same error, but with the messages and marks the reports are built on.
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader


def _compose(text: str) -> yaml.Node | None:
    """The node tree, for error lines (only built when there is an error)."""
    try:
        return yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError:
        return None


def _expand_env(
    value: Any,
    path: tuple[str | int, ...],
    errors: list[tuple[tuple[str | int, ...], str]],
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
    if isinstance(value, dict):
        return {k: _expand_env(v, (*path, k), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*path, i), errors) for i, v in enumerate(value)]
    return value


def _node_at(
    root: yaml.Node | None, loc: Sequence[str | int]
) -> tuple[yaml.Node | None, bool]:
    """Walk the YAML node tree along a pydantic error location.

    Returns the deepest node reached and whether the location resolved fully
    (when it did not, the key is missing and the parent's line is the best hint).
    """
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    node = value_node
                    break
            else:
                return node, False
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                node = node.value[part]
            else:
                return node, False
        else:
            return node, False
    return node, True


def _key_line(root: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """Line of the key named by ``loc`` (1-based), or of its closest parent."""
    if not loc:
        return None
    parent, _ = _node_at(root, loc[:-1])
    last = loc[-1]
    if isinstance(parent, yaml.MappingNode):
        for key_node, _value in parent.value:
            if key_node.value == str(last):
                return int(key_node.start_mark.line) + 1
    node, _ = _node_at(root, loc)
    return int(node.start_mark.line) + 1 if node is not None else None


def _loc_text(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_for(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that owns the last key of ``loc`` (for suggestions)."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _unwrap_model(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap_model(annotation: Any) -> Any:
    for arg in _iter_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def _iter_args(annotation: Any) -> Iterator[Any]:
    yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _iter_args(arg)


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
        key = _loc_text(loc)
        line = _key_line(root, loc)
        kind = err["type"]
        if kind == "secret_file":
            loc = (*loc, str(err.get("ctx", {}).get("field", "")))
            key = _loc_text(loc)
            line = _key_line(root, loc)
        if kind == "extra_forbidden":
            owner = _model_for(loc)
            hint = ""
            if owner is not None:
                fields = list(owner.model_fields)
                close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
                if close:
                    hint = f"; did you mean {close[0]!r}?"
                else:
                    hint = "; allowed keys: " + ", ".join(sorted(owner.model_fields))
            message = f"unknown key {str(loc[-1])!r}{hint}"
        elif kind == "missing":
            message = "required key is missing"
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
            given = err.get("input")
            scalar = given is not None and not isinstance(given, dict | list)
            if scalar and kind != "value_error":
                shown = given if not isinstance(given, str) else repr(given)
                message += f" (got {shown})"
            if _is_secret_key(loc):
                message = str(err["msg"]).removeprefix("Value error, ")
        out.append(ConfigError(message, path=path, line=line, key=key or None))
    return out


def _is_secret_name(name: str) -> bool:
    return name in {"password", "token", "secret"} or name.endswith(
        ("_secret", "_token", "_password", "consumer_key")
    )


def _is_secret_key(loc: Sequence[str | int]) -> bool:
    """True for keys whose values must never be echoed (SecretStr fields)."""
    if not loc:
        return False
    name = str(loc[-1])
    if _is_secret_name(name):
        return True
    owner = _model_for(loc)
    field = owner.model_fields.get(name) if owner is not None else None
    if field is None:
        return False
    return any(a is SecretStr for a in _iter_args(field.annotation))


def parse_config(text: str, path: Path | str | None = None) -> Config:
    """Validate YAML text as a wattd config.

    Raises:
        ConfigError: with file, line and key of every problem found.
    """
    where = Path(path) if path is not None else None
    try:
        data = _load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        started = ""
        if exc.context and exc.context_mark is not None:
            ctx_line = exc.context_mark.line + 1
            if ctx_line != line:
                started = f" ({exc.context} that starts on line {ctx_line})"
        raise ConfigError(
            f"not valid YAML: {exc.problem}{started}; check indentation and quoting",
            path=where,
            line=line,
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=where) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            "the top level must be a mapping of sections (ports:, sensors:, ...)",
            path=where,
            line=1,
        )
    env_errors: list[tuple[tuple[str | int, ...], str]] = []
    data = _expand_env(data, (), env_errors)
    if env_errors:
        root = _compose(text)
        found = [
            ConfigError(msg, path=where, line=_key_line(root, loc), key=_loc_text(loc))
            for loc, msg in env_errors
        ]
        if len(found) == 1:
            raise found[0]
        raise ConfigErrors(found)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        errors = _render_validation_errors(exc, _compose(text), where)
        if len(errors) == 1:
            raise errors[0] from None
        raise ConfigErrors(errors) from None


def load_config(path: Path | str) -> Config:
    """Read and validate a config file.

    Raises:
        ConfigError: if the file is missing, unreadable or invalid.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "config file not found; pass --config PATH or copy"
            " config/wattd.example.yaml",
            path=p,
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", path=p) from None
    return parse_config(text, p)


def dump_effective(config: Config) -> str:
    """The effective config as YAML, with every secret masked."""
    data = config.model_dump(mode="json")
    return yaml.safe_dump(_mask(data), sort_keys=False, default_flow_style=False)


def _mask(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: ("**********" if v and _is_secret_name(str(k)) else _mask(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value
