"""Writing calibrate's result into the config file, keeping its comments and layout.

The sensor's entry is edited through ruamel's round-trip loader, so comments,
key order, quoting and indentation survive; the edited text is validated as a
whole before the file is replaced, so the daemon never meets a file it would
refuse.
"""

from __future__ import annotations

import io
import os
import re
from typing import TYPE_CHECKING, Any, Final

from wattd.errors import ConfigError
from wattd.storage.files import atomic_write

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["write_sensor_values"]


def write_sensor_values(path: Path, sensor: int, values: dict[str, float]) -> None:
    """Set ``values`` in the sensor's entry of a YAML config, keeping comments.

    The entry is added if the sensor is not listed yet. The edited text is
    validated as a whole before the file is replaced (atomically), so a failure
    leaves the file untouched.

    Raises:
        ConfigError: the file cannot be read, parsed, validated or replaced.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.util import load_yaml_guess_indent

    from wattd.config import SensorConfig, parse_config

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=path) from None
    try:
        _, seq_indent, seq_offset = load_yaml_guess_indent(text)
        yaml = YAML()  # round-trip: comments, order and quoting survive
        yaml.preserve_quotes = True
        yaml.width = 4096
        yaml.indent(
            mapping=_mapping_indent(text),
            sequence=seq_indent or 2,
            offset=seq_offset or 0,
        )
        doc = yaml.load(text)
    except YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=path) from None
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, dict):
        raise ConfigError("the top level must be a mapping of sections", path=path)
    sensors = doc.get("sensors")
    if sensors is None:
        sensors = doc["sensors"] = CommentedSeq()
    if not isinstance(sensors, list):
        raise ConfigError("sensors must be a list", path=path, key="sensors")
    entry = None
    for item in sensors:
        if not isinstance(item, dict) or "address" not in item:
            continue
        try:
            address = SensorConfig.model_validate({"address": item["address"]}).address
        except ValueError:
            continue
        if address == sensor:
            entry = item
            break
    if entry is None:
        entry = CommentedMap(address=sensor)
        for key, value in values.items():
            entry[key] = value
        previous = sensors[-1] if sensors else None
        sensors.append(entry)
        if previous is not None:
            _move_trailing_comment(previous, entry)
    else:
        for key, value in values.items():
            entry[key] = value
    out = io.StringIO()
    yaml.dump(doc, out)
    new_text = out.getvalue()
    parse_config(new_text, path)  # never write a file the daemon would refuse
    _replace_file(path, new_text)


_NESTED_KEY: Final = re.compile(
    r"^[A-Za-z_][\w-]*:[ \t]*(#.*)?\n( +)[A-Za-z_\"']", re.M
)


def _mapping_indent(text: str) -> int:
    """How far the file indents a mapping under a top-level key (default 2)."""
    found = _NESTED_KEY.search(text)
    return len(found.group(2)) if found else 2


def _last_line_holder(node: object) -> tuple[Any, Any] | None:
    """The (container, key) whose comment slot holds what follows ``node``."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    while True:
        if isinstance(node, CommentedMap) and node:
            key: Any = list(node.keys())[-1]
        elif isinstance(node, CommentedSeq) and node:
            key = len(node) - 1
        else:
            return None
        value = node[key]
        if isinstance(value, CommentedMap | CommentedSeq) and value:
            node = value
            continue
        return node, key


def _move_trailing_comment(previous: object, new: object) -> None:
    """Keep comments that followed the old last entry after the appended one.

    ruamel attaches the blank lines and comments between the last list entry
    and the next section to that entry's last key; appending after it would
    otherwise leave them above the new entry.
    """
    import copy

    old_at = _last_line_holder(previous)
    new_at = _last_line_holder(new)
    if old_at is None or new_at is None:
        return
    slots = old_at[0].ca.items.get(old_at[1])
    if not slots or len(slots) < 3 or slots[2] is None:
        return
    token = slots[2]
    inline, newline, rest = token.value.partition("\n")
    if not newline or not rest:
        return
    moved = copy.copy(token)
    moved.value = "\n" + rest
    token.value = inline + "\n"
    new_at[0].ca.items[new_at[1]] = [None, None, moved, None]


def _replace_file(path: Path, text: str) -> None:
    try:
        mode = path.stat().st_mode & 0o7777
        atomic_write(path, text.encode("utf-8"), mode=mode)
        # The new file was created through the umask: give it the old mode back.
        os.chmod(path, mode)
    except OSError as exc:
        raise ConfigError(
            f"cannot replace the file: {exc.strerror}", path=path
        ) from None
