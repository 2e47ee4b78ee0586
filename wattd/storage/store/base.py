"""One connection to the store: its transactions, its errors and its metadata.

Every operation runs inside :meth:`StoreBase._guard`, which turns an
``sqlite3`` error into a :class:`~wattd.errors.StoreError` that says what to
do. The connection must stay on the thread that opened it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING

from wattd.errors import StoreCorrupt, StoreError, StoreLocked
from wattd.storage.sqlite import Failure, classify

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["StoreBase", "translate"]


def translate(
    exc: sqlite3.Error, path: Path, action: str, busy_timeout_s: float
) -> StoreError:
    """Turn an sqlite3 exception into a StoreError that says what to do."""
    text = str(exc)
    match classify(exc):
        case Failure.LOCKED:
            return StoreLocked(
                f"{path}: the store stayed locked for {busy_timeout_s:g} s while"
                f" {action}; another process (a second wattd, a reprocess run, or a"
                " sqlite3 shell inside a transaction) is writing to it. Stop that"
                " process or wait, then retry"
            )
        case Failure.CORRUPT:
            return StoreCorrupt(
                f"{path}: the store file is corrupt ({text}) while {action}. Move it"
                f" aside (the daemon does this itself when it starts) or salvage it"
                f" with `sqlite3 {path} .recover`"
            )
        case Failure.CANNOT_OPEN:
            return StoreError(
                f"{path}: cannot open or write the store ({text}) while {action};"
                " check that the file and its directory exist and belong to the"
                " wattd user, or set store.path"
            )
        case Failure.DISK:
            return StoreError(
                f"{path}: disk error ({text}) while {action}; free space on the"
                " state directory's file system or lower the store retention"
            )
        case Failure.OTHER:
            return StoreError(f"{path}: SQLite failed while {action}: {text}")


class StoreBase:
    """One connection to the SQLite store. Not thread-safe: one thread per Store."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        readonly: bool,
        busy_timeout_s: float,
    ) -> None:
        self._conn = conn
        self.path = path
        self.readonly = readonly
        self.busy_timeout_s = busy_timeout_s
        self._depth = 0
        # Latest stored reading time per sensor, so a batch need not query
        # where each reading's energy interval starts.
        self._last_ns: dict[int, int] = {}

    def close(self) -> None:
        """Close the connection (uncommitted work is rolled back)."""
        self._conn.close()

    @property
    def journal_mode(self) -> str:
        """SQLite's journal mode for this file (``wal`` once opened read-write)."""
        with self._guard("reading the journal mode"):
            return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0])

    def checkpoint(self) -> None:
        """Fold the WAL back into the main file and truncate it (best at shutdown)."""
        with self._guard("checkpointing the WAL"):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- transactions ----------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, *, dry_run: bool = False) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE``); nested use joins the outer one.

        With ``dry_run`` everything done inside is rolled back at the end.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with self._guard("starting a write transaction"):
            self._conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
            if dry_run:
                self._rollback()
            else:
                with self._guard("committing"):
                    self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        finally:
            self._depth = 0

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        # Anything cached about stored readings may describe rolled-back rows.
        self._last_ns.clear()

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise translate(exc, self.path, action, self.busy_timeout_s) from exc

    # -- metadata --------------------------------------------------------------

    def meta(self, key: str) -> int | None:
        """An integer from the store's key/value table."""
        with self._guard("reading metadata"):
            row = self._conn.execute(
                "SELECT value FROM meta WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def set_meta(self, key: str, value: int | None) -> None:
        """Set (or with ``None`` remove) an integer in the key/value table."""
        with self._guard("writing metadata"), self.transaction():
            if value is None:
                self._conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
