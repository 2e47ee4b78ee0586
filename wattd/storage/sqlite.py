"""What an SQLite failure means, and what to do with a damaged database file.

The store and the spool both keep their data in SQLite files. Here they learn
what an ``sqlite3`` error says about the file (another process holds the lock,
the file is damaged, it cannot be opened, the disk failed), check a file before
trusting it, and move a damaged file out of the way together with its WAL.
Each caller words its own message: what to do differs between the two.
"""

from __future__ import annotations

import enum
import sqlite3
from typing import TYPE_CHECKING, Final

from wattd.storage.files import set_aside

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "SQLITE_CANTOPEN",
    "Failure",
    "classify",
    "is_corruption",
    "quick_check",
    "result_code",
    "set_aside_database",
]

# SQLite primary result codes (the low byte of an extended code).
SQLITE_PERM: Final = 3
SQLITE_BUSY: Final = 5
SQLITE_LOCKED: Final = 6
SQLITE_READONLY: Final = 8
SQLITE_IOERR: Final = 10
SQLITE_CORRUPT: Final = 11
SQLITE_FULL: Final = 13
SQLITE_CANTOPEN: Final = 14
SQLITE_NOTADB: Final = 26

# The WAL and shared-memory files beside a database in WAL mode.
_COMPANIONS: Final = ("-wal", "-shm")


class Failure(enum.Enum):
    """The kinds of SQLite failure that call for different advice."""

    LOCKED = "locked"
    """Another connection held the lock past the busy timeout; retrying helps."""
    CORRUPT = "corrupt"
    """The file is damaged or no SQLite database; retrying will not help."""
    CANNOT_OPEN = "cannot open"
    """The file or its directory is missing, not permitted or read-only."""
    DISK = "disk"
    """The disk is full or failing."""
    OTHER = "other"


_BY_CODE: Final[dict[int, Failure]] = {
    SQLITE_BUSY: Failure.LOCKED,
    SQLITE_LOCKED: Failure.LOCKED,
    SQLITE_CORRUPT: Failure.CORRUPT,
    SQLITE_NOTADB: Failure.CORRUPT,
    SQLITE_CANTOPEN: Failure.CANNOT_OPEN,
    SQLITE_PERM: Failure.CANNOT_OPEN,
    SQLITE_READONLY: Failure.CANNOT_OPEN,
    SQLITE_FULL: Failure.DISK,
    SQLITE_IOERR: Failure.DISK,
}


def result_code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code behind ``exc``, if it carries one."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def classify(exc: sqlite3.Error) -> Failure:
    """What ``exc`` says about the database file.

    The result code decides; an error without a known code (raised by the
    ``sqlite3`` module itself, or a generic one) is judged by its message.
    """
    code = result_code(exc)
    known = None if code is None else _BY_CODE.get(code)
    if known is not None:
        return known
    text = str(exc).lower()
    if "locked" in text:
        return Failure.LOCKED
    if "malformed" in text or "not a database" in text:
        return Failure.CORRUPT
    return Failure.OTHER


def is_corruption(exc: sqlite3.Error) -> bool:
    """True when ``exc`` means the file is damaged or no SQLite database."""
    return classify(exc) is Failure.CORRUPT


def quick_check(conn: sqlite3.Connection) -> str | None:
    """What ``PRAGMA quick_check`` finds wrong with the file; None when intact.

    The first three findings are given: enough to tell what kind of damage
    it is without flooding a log line.
    """
    rows = conn.execute("PRAGMA quick_check").fetchall()
    if rows == [("ok",)]:
        return None
    return "; ".join(str(r[0]) for r in rows[:3])


def set_aside_database(path: Path, now_ns: int) -> Path:
    """Rename a damaged database and its WAL files out of the way.

    The WAL files go too: left behind, they would be replayed into the new
    database made at ``path``. Returns the new name of the database.

    Raises:
        OSError: the file could not be renamed.
    """
    return set_aside(path, now_ns, companions=_COMPANIONS)
