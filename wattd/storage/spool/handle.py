"""The synchronous :class:`Spool`: the queue and its dead letters over one file.

The parts are their own classes in this package (the file and its recovery,
the queue, the dead letters); :class:`Spool` is the one to use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wattd.storage.spool.deadletters import SpoolDeadLetters

if TYPE_CHECKING:
    from wattd.config import Config

__all__ = ["Spool"]


class Spool(SpoolDeadLetters):
    """The synchronous spool. Use it from one thread only (see :class:`AsyncSpool`).

    Args:
        path: the SQLite file; ``None`` keeps the spool in memory (tests, fallback).
        max_items: most items over all streams.
        max_bytes: most payload bytes (plus :data:`ROW_OVERHEAD_BYTES` per item).
        must_exist: for maintenance commands: the file and every stream named
            must already exist, and a missing, locked or damaged file raises
            :class:`~wattd.errors.SpoolError` instead of being created, set aside
            or replaced by memory.
    """

    @classmethod
    def for_config(cls, config: Config, *, must_exist: bool = False) -> Spool:
        """The spool described by ``config.spool`` (its path and bounds)."""
        return cls(
            config.spool_path,
            max_items=config.spool.max_items,
            max_bytes=config.spool.max_bytes,
            must_exist=must_exist,
        )

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
