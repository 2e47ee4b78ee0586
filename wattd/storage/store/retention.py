"""Retention: deleting rows older than each table's limit, a little at a time.

Small delete batches keep the write lock short, so the daemon's flushes and
readers never wait long behind a retention pass. The time before which rows of
readings and frames are gone is kept in the metadata, so tools can tell missing
history from history that was never recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

from wattd.storage.store.base import StoreBase
from wattd.storage.store.records import RetentionResult
from wattd.storage.store.times import DAY_NS, HOUR_NS, MINUTE_NS

if TYPE_CHECKING:
    from wattd.config import StoreConfig

__all__ = ["RETENTION_BATCH_ROWS", "StoreRetention"]

RETENTION_BATCH_ROWS: Final = 5000


class StoreRetention(StoreBase):
    """The store's retention passes."""

    def apply_retention(
        self,
        config: StoreConfig,
        *,
        now_ns: int,
        batch_rows: int = RETENTION_BATCH_ROWS,
        max_batches: int | None = None,
    ) -> RetentionResult:
        """Delete rows older than each table's retention, in small transactions.

        ``max_batches`` bounds the work of one call; ``complete`` tells whether
        anything due is left for the next call. A retention of 0 days keeps all.
        """
        plan = (
            ("readings", config.readings_retention_days, "time_ns", 0),
            ("frames", config.frames_retention_days, "time_ns", 0),
            ("rollup_1m", config.rollup_1m_retention_days, "bucket_ns", MINUTE_NS),
            ("rollup_1h", config.rollup_1h_retention_days, "bucket_ns", HOUR_NS),
        )
        deleted: dict[str, int] = {}
        budget = max_batches
        complete = True
        for table, days, column, size in plan:
            if days <= 0:
                continue
            cutoff = now_ns - round(days * DAY_NS)
            if size:
                # A bucket goes only once all of it is older than the cutoff.
                cutoff = cutoff - size + 1
            deleted[table] = 0
            while True:
                if budget is not None and budget <= 0:
                    complete = False
                    break
                n = self._retention_batch(table, column, cutoff, batch_rows)
                deleted[table] += n
                if budget is not None:
                    budget -= 1
                if n < batch_rows:
                    break
        return RetentionResult(deleted=deleted, complete=complete)

    def _retention_batch(self, table: str, column: str, cutoff: int, rows: int) -> int:
        with self._guard(f"applying retention to {table}"), self.transaction():
            cur = self._conn.execute(
                f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table}"  # noqa: S608
                f" WHERE {column} < ? ORDER BY {column} LIMIT ?) RETURNING {column}",
                (cutoff, rows),
            )
            times = [int(row[0]) for row in cur.fetchall()]
            done = len(times) < rows
            if table in {"readings", "frames"} and (times or done):
                mark = cutoff if done else max(times) + 1
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key)"
                    " DO UPDATE SET value = max(value, excluded.value)",
                    (f"purged_before_ns.{table}", mark),
                )
            if table == "readings" and times:
                self._last_ns.clear()
            return len(times)

    def purged_before_ns(self, table: Literal["readings", "frames"]) -> int | None:
        """Rows of ``table`` before this time have been deleted by retention."""
        return self.meta(f"purged_before_ns.{table}")
