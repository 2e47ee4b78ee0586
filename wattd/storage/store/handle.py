"""The :class:`Store`: a store file opened, created or upgraded, with every operation.

Each group of operations is its own class in this package (writes, queries,
repair, retention); :class:`Store` joins them over one connection.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from wattd.errors import StoreError
from wattd.storage.files import private_file
from wattd.storage.store.base import translate
from wattd.storage.store.queries import StoreQueries
from wattd.storage.store.repair import StoreRepair
from wattd.storage.store.retention import StoreRetention
from wattd.storage.store.schema import (
    DEFAULT_BUSY_TIMEOUT_S,
    SCHEMA_VERSION,
    configure,
    migrate,
)
from wattd.storage.store.writes import StoreWrites

__all__ = ["Store"]


class Store(StoreWrites, StoreRepair, StoreRetention, StoreQueries):
    """One connection to the SQLite store. Not thread-safe: one thread per Store."""

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        readonly: bool = False,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> Store:
        """Open (and create or upgrade, unless ``readonly``) the store at ``path``.

        Raises:
            StoreError: the file cannot be opened, is corrupt (:class:`StoreCorrupt`),
                is locked (:class:`StoreLocked`) or is not a wattd store.
        """
        p = Path(path)
        if readonly:
            if not p.exists():
                raise StoreError(
                    f"{p}: no store here yet; the daemon creates it on its first run"
                    " (store.enabled: true). Check --config or store.path"
                )
            target = f"file:{quote(str(p.resolve()))}?mode=ro"
        else:
            try:
                # Private from the start: SQLite gives -wal and -shm this mode.
                private_file(p)
            except OSError as exc:
                raise StoreError(
                    f"{exc.filename or p}: cannot create it ({exc.strerror}); create"
                    " the state directory for the wattd user or set store.path"
                ) from None
            target = str(p)
        try:
            conn = sqlite3.connect(
                target, timeout=busy_timeout_s, isolation_level=None, uri=readonly
            )
        except sqlite3.Error as exc:
            raise translate(exc, p, "opening the store", busy_timeout_s) from None
        store = cls(conn, p, readonly=readonly, busy_timeout_s=busy_timeout_s)
        try:
            with store._guard("opening the store"):
                store._setup()
        except BaseException:
            conn.close()
            raise
        return store

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self) -> None:
        version = configure(self._conn, self.path, readonly=self.readonly)
        if not self.readonly and version < SCHEMA_VERSION:
            with self.transaction():
                migrate(self._conn, self.path, version)
