"""Opening the spool file, and what happens when it is damaged.

A corrupt or unreadable file is reported as a :class:`~wattd.errors.SpoolError`,
set aside and replaced by a fresh spool; if not even that works, the spool
falls back to memory (not durable, loudly reported) rather than stopping the
daemon. An operation that meets corruption while running is run once more on
the fresh spool, so an append is not lost.

Maintenance commands open the file with ``must_exist=True``: then nothing is
created, set aside or replaced, and any problem is raised instead.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from typing import TYPE_CHECKING, TypeVar

from wattd.errors import SpoolError
from wattd.storage.files import private_file
from wattd.storage.spool.model import (
    BUSY_TIMEOUT_S,
    PAGE_CACHE_KIB,
    SCHEMA,
    SCHEMA_VERSION,
    TABLES,
)
from wattd.storage.sqlite import (
    SQLITE_CANTOPEN,
    Failure,
    classify,
    is_corruption,
    quick_check,
    result_code,
    set_aside_database,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from wattd.storage.spool.gaps import MeterOf

__all__ = ["SpoolFile", "Transaction"]

log = logging.getLogger(__package__)

T = TypeVar("T")


class _UnusableFile(SpoolError):
    """The file exists but is corrupt, unreadable or from a newer schema."""


class Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error.

    With ``immediate=False`` a plain ``BEGIN``: a read-only snapshot that takes
    no write lock.
    """

    def __init__(self, conn: sqlite3.Connection, *, immediate: bool = True) -> None:
        self._conn = conn
        self._immediate = immediate

    def __enter__(self) -> None:
        # IMMEDIATE takes the write lock up front, so the bounds read inside the
        # transaction cannot go stale under another writer.
        self._conn.execute("BEGIN IMMEDIATE" if self._immediate else "BEGIN")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        elif self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.debug("rollback failed after %s", exc_type)


class SpoolFile:
    """The spool's connection: opened, checked, and replaced when damaged."""

    def __init__(
        self,
        path: Path | None,
        *,
        max_items: int = 2_000_000,
        max_bytes: int = 512 << 20,
        must_exist: bool = False,
    ) -> None:
        if max_items < 1 or max_bytes < 1:
            msg = (
                "spool bounds must be positive"
                f" (max_items={max_items}, max_bytes={max_bytes})"
            )
            raise SpoolError(msg)
        if must_exist and path is None:
            msg = "must_exist needs a spool file, not an in-memory spool"
            raise SpoolError(msg)
        self.path = path
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.must_exist = must_exist
        self.problems: list[SpoolError] = []
        """Every corrupt/unreadable file met since start, oldest first."""
        self.durable = path is not None
        self._stream_ids: dict[str, int] = {}
        self._last_drop_log: dict[str, float] = {}
        self._gap_keys: dict[int, MeterOf] = {}
        """Stream id -> the meter of a payload, for streams whose losses are noted."""
        self._recorded_totals: dict[int, float] = {}
        """Energy totals this connection has committed, so none is written twice."""
        self._conn = self._open_or_recover()

    def close(self) -> None:
        """Close the file; the spool cannot be used afterwards."""
        self._conn.close()

    def _transaction(self, *, immediate: bool = True) -> Transaction:
        return Transaction(self._conn, immediate=immediate)

    def _where(self) -> str:
        return (
            str(self.path) if self.durable and self.path is not None else "(in memory)"
        )

    def _guarded(self, operation: Callable[[], T]) -> T:
        """Run ``operation``; on a corrupt file set it aside and start fresh.

        The operation then runs once more on the fresh spool, so an append is not
        lost; reads and acks just see the new, empty spool.
        """
        try:
            return operation()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise self._io_error(exc) from None
            if self.must_exist:
                msg = (
                    f"spool {self._where()} is damaged ({exc}); the daemon sets it"
                    " aside and starts a fresh spool when it next reads it"
                )
                raise SpoolError(msg) from None
            self._recover(f"it became unreadable ({exc})")
            return operation()

    def _io_error(self, exc: sqlite3.DatabaseError) -> SpoolError:
        if classify(exc) is Failure.LOCKED:
            return SpoolError(
                f"spool {self._where()}: {exc}; another process kept it locked for"
                f" more than {BUSY_TIMEOUT_S:g} s, try again"
            )
        return SpoolError(
            f"spool {self._where()}: {exc}; check free disk space and that the"
            " directory is writable by wattd"
        )

    def _open_or_recover(self) -> sqlite3.Connection:
        if self.path is None:
            return self._connect(None)
        if self.must_exist:
            return self._connect_existing(self.path)
        try:
            return self._connect(self.path)
        except _UnusableFile as exc:
            self._report_and_move_aside(str(exc))
        except (sqlite3.DatabaseError, SpoolError, OSError) as exc:
            # Locked by another process, or the disk fails: the file may be fine,
            # so leave it where it is.
            return self._fall_back_to_memory(exc)
        try:
            return self._connect(self.path)
        except (sqlite3.DatabaseError, SpoolError, OSError) as exc:
            return self._fall_back_to_memory(exc)

    def _recover(self, why: str) -> None:
        self._stream_ids.clear()
        # The fresh file has none of them.
        self._recorded_totals.clear()
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        if self.path is None:
            self._conn = self._connect(None)
            return
        self._report_and_move_aside(why)
        try:
            self._conn = self._connect(self.path)
        except (sqlite3.DatabaseError, SpoolError, OSError) as exc:
            self._conn = self._fall_back_to_memory(exc)

    def _report_and_move_aside(self, why: str) -> None:
        assert self.path is not None  # noqa: S101 - only called for file spools
        try:
            where = f"moved to {set_aside_database(self.path, time.time_ns())}"
        except OSError:
            where = "could not be moved aside"
        error = SpoolError(
            f"spool {self.path}: {why}; the file was {where} and a fresh spool was"
            " started. Items in the old file are not sent; inspect or delete it"
        )
        self.problems.append(error)
        log.error("%s", error)

    def _fall_back_to_memory(self, exc: BaseException) -> sqlite3.Connection:
        error = SpoolError(
            f"spool {self.path}: cannot create a spool file ({exc}); keeping the spool"
            " in memory, so pending items are lost on restart. Make the directory"
            " writable by wattd or set spool.path"
        )
        self.problems.append(error)
        log.error("%s", error)
        self.durable = False
        return self._connect(None)

    def _connect(self, path: Path | None) -> sqlite3.Connection:
        existed = path is not None and path.exists()
        if path is not None:
            try:
                private_file(path)
            except OSError as exc:
                msg = f"cannot create {path}: {exc.strerror}"
                raise SpoolError(msg) from None
        try:
            conn = sqlite3.connect(
                ":memory:" if path is None else str(path),
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_S,
            )
            try:
                self._prepare(conn, durable=path is not None)
            except BaseException:
                conn.close()
                raise
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc) or (existed and result_code(exc) == SQLITE_CANTOPEN):
                msg = f"it cannot be opened ({exc})"
                raise _UnusableFile(msg) from None
            raise
        return conn

    def _connect_existing(self, path: Path) -> sqlite3.Connection:
        """Open a spool file that must exist; never create, move or replace it."""
        if not path.is_file():
            what = "is not a file" if path.exists() else "no spool here yet"
            msg = (
                f"{path}: {what}; the daemon creates the spool when the InfluxDB or"
                " MQTT sink first starts. Check --config, state_dir or spool.path"
            )
            raise SpoolError(msg)
        # mode=rw: SQLite must not create the file if it vanished meanwhile.
        target = f"{path.absolute().as_uri()}?mode=rw"
        try:
            conn = sqlite3.connect(
                target,
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_S,
            )
        except sqlite3.Error as exc:
            raise self._cannot_open(path, exc) from None
        try:
            self._prepare(conn, durable=True, create=False)
        except _UnusableFile as exc:
            conn.close()
            msg = (
                f"spool {path}: {exc}; the daemon sets such a file aside and starts"
                " a fresh spool when it next opens it"
            )
            raise SpoolError(msg) from None
        except SpoolError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            if is_corruption(exc):
                msg = (
                    f"spool {path} is damaged ({exc}); the daemon sets it aside and"
                    " starts a fresh spool when it next opens it"
                )
                raise SpoolError(msg) from None
            raise self._cannot_open(path, exc) from None
        return conn

    @staticmethod
    def _cannot_open(path: Path, exc: sqlite3.Error) -> SpoolError:
        if classify(exc) is Failure.LOCKED:
            return SpoolError(
                f"cannot open spool {path}: {exc}; another process kept it locked"
                f" for more than {BUSY_TIMEOUT_S:g} s, try again"
            )
        return SpoolError(
            f"cannot open spool {path}: {exc}; run this as the user wattd runs as"
            " (it needs to write the file, its directory and the -wal/-shm files)"
        )

    @staticmethod
    def _prepare(
        conn: sqlite3.Connection, *, durable: bool, create: bool = True
    ) -> None:
        if create:
            # auto_vacuum only takes effect before the first table is created.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB:d}")
        if durable:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                msg = f"the file system does not support SQLite WAL mode (got {mode})"
                raise SpoolError(msg)
            # FULL: a commit survives power loss, not only a process crash; the
            # cost is one fsync per batch.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA journal_size_limit = 67108864")
            damage = quick_check(conn)
            if damage is not None:
                msg = f"its integrity check failed ({damage})"
                raise _UnusableFile(msg)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            msg = (
                f"it was written by a newer wattd (schema {version}, this one"
                f" knows {SCHEMA_VERSION})"
            )
            raise _UnusableFile(msg)
        if not create:
            tables = {
                str(r[0])
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
            if not tables >= TABLES:
                msg = (
                    "it is not a wattd spool (it lacks the tables"
                    f" {', '.join(sorted(TABLES - tables))}); check spool.path"
                )
                raise SpoolError(msg)
            return
        with Transaction(conn):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
