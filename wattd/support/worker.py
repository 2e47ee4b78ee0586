"""One worker thread for the daemon's heavy blocking jobs.

Saving the state file, gzipping InfluxDB bodies, rendering /metrics and reading
history each allocate up to megabytes at a time. On asyncio's default pool they
land on whichever of its threads is idle, and glibc gives every thread its own
malloc arena, which keeps freed memory up to about twice its largest recent
block: each pool thread ends up holding a megabyte or so for nothing. Running
them all on one thread keeps that to one arena. Reading the summary ledger,
loading TLS files and loading a capture to replay (outside the daemon) use it
too.

The jobs are short; one thread runs them in turn. So a call that may take long
keeps a thread of its own from the default pool (``asyncio.to_thread``), or a
state save and a scrape would wait behind it: anything that waits on another
host (name lookups, paho's blocking connect, summary posts to X and Mastodon),
opening a serial device (which can block in its driver), reading stdin, and
composing a summary (seconds of pricing over up to two months of minute
buckets).

The store and the spool each run on a :class:`DedicatedThread` of their own
instead. A SQLite connection belongs to the thread that made it, and neither
may queue behind the other or behind the worker's jobs: the other sinks wait
for the store's commits, and a spool call can wait out an fsync or its busy
timeout while a ``wattd spool`` command holds the lock. The shared worker is a
:class:`DedicatedThread` too, so there is one way to own a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from typing import TYPE_CHECKING, ParamSpec, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DedicatedThread", "run_blocking"]

P = ParamSpec("P")
T = TypeVar("T")


class DedicatedThread:
    """One thread of its own that runs the calls handed to it in order.

    For code that keeps state on its thread (a SQLite connection) or must not
    wait behind others. The thread starts with the first call.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=name
        )

    def submit(
        self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn(*args, **kwargs)`` without waiting for it."""
        return self._executor.submit(fn, *args, **kwargs)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on this thread and await it."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(fn, *args, **kwargs)
        )

    def close(self, *, wait: bool = True) -> None:
        """Take no more calls; the thread ends once those queued are done.

        With ``wait`` this returns only when it has ended.
        """
        self._executor.shutdown(wait=wait)


_lock = threading.Lock()
_worker: DedicatedThread | None = None


def _shared_worker() -> DedicatedThread:
    global _worker  # one per process, made on first use
    with _lock:
        if _worker is None:
            _worker = DedicatedThread("wattd-worker")
        return _worker


async def run_blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` on the shared worker thread and await it."""
    return await _shared_worker().run(fn, *args, **kwargs)
