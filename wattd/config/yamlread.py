"""From a config file to plain data: size, encoding, YAML, and the node tree.

Everything here keeps a hostile or broken file cheap to refuse. The file is
read up to :data:`MAX_FILE_BYTES`; bytes that are not UTF-8 are reported with
their line; and before any data is built, the composed node tree is checked:
at most :data:`MAX_VALUES` values counting every use of an alias (a few
hundred bytes of nested aliases otherwise stand for billions of values), at
most :data:`MAX_DEPTH` levels, no alias inside itself, and no key twice in one
mapping (YAML would silently keep the last). The check costs one pass over the
nodes libyaml builds anyway, so the fast path stays fast.

Every problem is a :class:`~wattd.errors.ConfigError` with file and line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from wattd.config.redact import ECHO_CHARS, shown
from wattd.errors import ConfigError, ConfigErrors

MAX_FILE_BYTES: Final = 4 * 1024 * 1024
"""Largest config file read (ten thousand sensors take about 1.5 MiB)."""
MAX_VALUES: Final = 1_000_000
"""Most keys and values in a file, each use of an alias counted in full."""
MAX_DEPTH: Final = 32
"""Deepest nesting of mappings and lists (wattd's own schema needs 7)."""

_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
_REWORD_CHARS: Final = 128 * 1024
"""Largest text whose syntax error is worded by the slower pure-Python parser."""

Loc = tuple[str | int, ...]


class _Refused(Exception):
    """A node tree the loader will not build; turned into ConfigErrors."""

    def __init__(self, problems: list[tuple[int | None, Loc, str]]) -> None:
        super().__init__(problems)
        self.problems = problems


class _TreeCheck:
    """One pass over a node tree: size with aliases expanded, depth, loops, repeats."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.open: set[int] = set()
        self.repeats: list[tuple[int | None, Loc, str]] = []

    def size(self, node: Node, loc: Loc, depth: int) -> int:
        # A node reached again through an alias costs what it cost the first
        # time; counting it from the memo keeps this pass linear in the file.
        known = self.sizes.get(id(node))
        if known is not None:
            return known
        if not isinstance(node, MappingNode | SequenceNode):
            return 1
        line = int(node.start_mark.line) + 1
        if id(node) in self.open:
            msg = (
                "a YAML alias refers to a value that contains it; aliases must not loop"
            )
            raise _Refused([(line, loc, msg)])
        if depth > MAX_DEPTH:
            msg = f"nested more than {MAX_DEPTH} levels deep; a wattd config needs 7"
            raise _Refused([(line, loc, msg)])
        self.open.add(id(node))
        total = 1
        if isinstance(node, MappingNode):
            total += self._mapping(node, loc, depth)
        else:
            for i, item in enumerate(node.value):
                total += self.size(item, (*loc, i), depth + 1)
                self._bound(total, line, loc)
        self.open.discard(id(node))
        self.sizes[id(node)] = total
        return total

    def _mapping(self, node: MappingNode, loc: Loc, depth: int) -> int:
        total = 0
        line = int(node.start_mark.line) + 1
        first_line: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            part: str | int = "?"
            if isinstance(key_node, ScalarNode):
                part = str(key_node.value)
                if key_node.tag != _MERGE_TAG:
                    self._note_key(key_node, (*loc, part), first_line)
            total += self.size(key_node, loc, depth + 1)
            total += self.size(value_node, (*loc, part), depth + 1)
            self._bound(total, line, loc)
        return total

    def _note_key(
        self, key: ScalarNode, loc: Loc, first_line: dict[tuple[str, str], int]
    ) -> None:
        this = int(key.start_mark.line) + 1
        name = (key.tag, str(key.value))
        first = first_line.get(name)
        if first is None:
            first_line[name] = this
            return
        lines = f"on line {this}" if first == this else f"on lines {first} and {this}"
        msg = (
            f"key {shown(name[1])} is given twice, {lines}; YAML would keep"
            " only the last, so remove one"
        )
        self.repeats.append((this, loc, msg))

    @staticmethod
    def _bound(total: int, line: int, loc: Loc) -> None:
        if total > MAX_VALUES:
            msg = (
                f"holds more than {MAX_VALUES:,} keys and values (each use of a"
                " YAML alias counted in full); a wattd config needs far fewer"
            )
            raise _Refused([(line, loc, msg)])


def _check_tree(node: Node) -> None:
    check = _TreeCheck()
    check.size(node, (), 0)
    if check.repeats:
        raise _Refused(check.repeats)


class _CheckedLoader(yaml.SafeLoader):
    """The pure-Python SafeLoader, checking the node tree before building data.

    It rewords the syntax errors of small files (see :func:`load`).
    """

    def construct_document(self, node: Node) -> Any:
        """Check the tree, then build the data."""
        _check_tree(node)
        return super().construct_document(node)


# libyaml builds the same data with a fraction of the pure-Python parser's
# garbage: for a 1,000-sensor file ~7 MB instead of ~22 MB at peak, and much
# of that stayed resident in the daemon as fragmented heap. The pure-Python
# loader only rewords the syntax errors of small files.
_C_LOADER: Final[type[yaml.SafeLoader]] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _FastLoader(_C_LOADER):  # type: ignore[valid-type,misc]
    """libyaml's SafeLoader (when built), checking the node tree like the other."""

    def construct_document(self, node: Node) -> Any:
        """Check the tree, then build the data."""
        _check_tree(node)
        return super().construct_document(node)


def read_text(path: Path) -> str:
    """The text of a config file, at most :data:`MAX_FILE_BYTES` of UTF-8.

    Raises:
        ConfigError: if the file is missing, unreadable, too large or not UTF-8.
    """
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            "config file not found; pass --config PATH or copy"
            " config/wattd.example.yaml",
            path=path,
        ) from None
    except OSError as exc:
        msg = f"cannot read config file: {exc.strerror}"
        raise ConfigError(msg, path=path) from None
    if len(data) > MAX_FILE_BYTES:
        raise _too_large(path)
    return decode(data, path)


def _too_large(where: Path | None) -> ConfigError:
    return ConfigError(
        f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, far more"
        " than a config needs; is this the right file?",
        path=where,
    )


def decode(data: bytes, where: Path | None = None) -> str:
    """UTF-8 bytes as text; other bytes are an error naming their line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        msg = (
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at column {column}"
            f" (byte offset {exc.start}) cannot be read; save the file as UTF-8"
        )
        raise ConfigError(msg, path=where, line=line) from None


def load(text: str, where: Path | None = None) -> Any:
    """The data of a YAML document, after the node tree checks.

    Raises:
        ConfigError: for a syntax error (with its line) or a refused tree.
    """
    if len(text) > MAX_FILE_BYTES:
        raise _too_large(where)
    try:
        try:
            return yaml.load(text, Loader=_FastLoader)  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as fast:
            # The pure-Python parser finds the same error on the same line and
            # words it better (it names the character or alias). It reads about
            # a megabyte in ten seconds, though, and past libyaml's nesting
            # limit it recurses out of stack: then libyaml's report has to do.
            nested = "nesting depth" in str(getattr(fast, "problem", ""))
            if nested or len(text) > _REWORD_CHARS:
                raise _syntax_error(fast, text, where) from None
            try:
                return yaml.load(text, Loader=_CheckedLoader)  # noqa: S506
            except yaml.YAMLError as exc:
                raise _syntax_error(exc, text, where) from None
            except RecursionError:
                raise _syntax_error(fast, text, where) from None
    except _Refused as exc:
        errors = [
            ConfigError(msg, path=where, line=line, key=loc_text(loc) or None)
            for line, loc, msg in exc.problems
        ]
        if len(errors) == 1:
            raise errors[0] from None
        raise ConfigErrors(errors) from None


def _syntax_error(exc: yaml.YAMLError, text: str, where: Path | None) -> ConfigError:
    if isinstance(exc, yaml.reader.ReaderError):
        at = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        msg = (
            f"not valid YAML: character #x{exc.character:04x} at column {column} is"
            " not allowed in YAML text; remove it"
        )
        return ConfigError(msg, path=where, line=at)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        started = ""
        if exc.context and exc.context_mark is not None:
            ctx_line = exc.context_mark.line + 1
            if ctx_line != line:
                started = f" ({exc.context} that starts on line {ctx_line})"
        return ConfigError(
            f"not valid YAML: {exc.problem}{started}; check indentation and quoting",
            path=where,
            line=line,
        )
    return ConfigError(f"not valid YAML: {exc}", path=where)


def compose(text: str) -> Node | None:
    """The node tree, for error lines (only built when there is an error)."""
    try:
        return yaml.compose(text, Loader=_FastLoader)
    except yaml.YAMLError:
        return None


def node_at(root: Node | None, loc: Sequence[str | int]) -> tuple[Node | None, bool]:
    """Walk the YAML node tree along a pydantic error location.

    Returns the deepest node reached and whether the location resolved fully
    (when it did not, the key is missing and the parent's line is the best hint).
    """
    node = root
    for part in loc:
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    node = value_node
                    break
            else:
                return node, False
        elif isinstance(node, SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                node = node.value[part]
            else:
                return node, False
        else:
            return node, False
    return node, True


def key_line(root: Node | None, loc: Sequence[str | int]) -> int | None:
    """Line of the key named by ``loc`` (1-based), or of its closest parent."""
    if not loc:
        return None
    parent, _ = node_at(root, loc[:-1])
    last = loc[-1]
    if isinstance(parent, MappingNode):
        for key_node, _value in parent.value:
            if key_node.value == str(last):
                return int(key_node.start_mark.line) + 1
    node, _ = node_at(root, loc)
    return int(node.start_mark.line) + 1 if node is not None else None


def loc_text(loc: Sequence[str | int]) -> str:
    """``ports[0].baud`` for a location; long key names are cut."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if len(part) <= ECHO_CHARS else part[:ECHO_CHARS] + "…"
            out += f".{name}" if out else name
    return out
