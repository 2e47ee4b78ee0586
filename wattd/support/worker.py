"""One worker thread for the daemon's heavy blocking jobs.

Saving the state file, gzipping InfluxDB bodies, rendering /metrics and reading
history each allocate up to megabytes at a time. On asyncio's default pool they
land on whichever of its threads is idle, and glibc gives every thread its own
malloc arena, which keeps freed memory up to about twice its largest recent
block: each pool thread ends up holding a megabyte or so for nothing. Running
them all on one thread keeps that to one arena. Network connects (name lookups,
paho's blocking connect) stay on the default pool, so a hung DNS lookup cannot
hold up a state save or a scrape.

The jobs are short; one thread runs them in turn. Code that owns a SQLite
connection keeps its own thread (the store, the spool), as a connection must.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from typing import TYPE_CHECKING, ParamSpec, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["run_blocking"]

P = ParamSpec("P")
T = TypeVar("T")

_lock = threading.Lock()
_executor: concurrent.futures.ThreadPoolExecutor | None = None


def _shared_executor() -> concurrent.futures.ThreadPoolExecutor:
    global _executor  # one pool per process, made on first use
    with _lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="wattd-worker"
            )
        return _executor


async def run_blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` on the shared worker thread and await it."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        _shared_executor(), functools.partial(fn, *args, **kwargs)
    )
