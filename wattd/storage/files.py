"""Files in the state directory: private to the wattd user, replaced atomically.

A damaged file is renamed aside rather than deleted, so it can be inspected.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "atomic_write",
    "private_dir",
    "private_file",
    "set_aside",
]

PRIVATE_DIR_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600
_TMP_SEQ: Final = itertools.count()
_WRITE_BUFFER: Final = 64 * 1024


def private_dir(path: Path) -> None:
    """Create the directory ``path`` (and its parents) if missing; itself 0700.

    The state directory holds the readings, the spooled payloads and the energy
    totals: only the wattd user should read them, with or without systemd's
    ``UMask=``. An existing directory keeps its mode.
    """
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists; its directory too.

    SQLite gives a database's ``-wal`` and ``-shm`` files the database file's
    mode, so creating the file first makes all three private.
    """
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))


def atomic_write(
    path: Path, data: bytes | Iterable[bytes], *, mode: int = PRIVATE_FILE_MODE
) -> None:
    """Replace ``path`` with ``data`` so that readers never see a partial file.

    ``data`` may be the bytes or an iterable of pieces, written as they come.
    """
    private_dir(path.parent)
    # Unique per writer, so two writers can never rename each other's file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_TMP_SEQ)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with open(fd, "wb", buffering=_WRITE_BUFFER, closefd=False) as out:
            if isinstance(data, bytes | bytearray | memoryview):
                out.write(data)
            else:
                for piece in data:
                    out.write(piece)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        # A target that cannot be replaced (a directory, a read-only mount)
        # must not leave the half-step behind beside it.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def set_aside(path: Path, now_ns: int, *, companions: Sequence[str] = ()) -> Path:
    """Rename a damaged file to ``<name>.corrupt-<UTC time>``; return the new name.

    The file is kept, never deleted, so a person can inspect or salvage it. A
    name already taken gets ``-2``, ``-3``, ... appended. Each existing file
    ``<name><suffix>`` for a suffix in ``companions`` follows it.

    Raises:
        OSError: a file could not be renamed.
    """
    stamp = datetime.fromtimestamp(now_ns / 1e9, UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    path.rename(target)
    for suffix in companions:
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    return target
