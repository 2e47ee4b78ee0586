"""Waiting, cancelling and ending inside the broker session's ``TaskGroup``.

aiomqtt awaits its acknowledgements through ``asyncio.wait_for``, which on
Python 3.11 can swallow a cancellation, and a ``TaskGroup`` reports how it
ended as an exception group. These functions let the session's long-lived
tasks end when asked, and the session tell a requested end from a lost
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import aiomqtt

from wattd.errors import SinkError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "SessionEnd",
    "cancel_count",
    "leave_session",
    "raise_if_cancelled",
    "wait_set",
]


class SessionEnd(Exception):
    """Raised inside a session's task group to end it on purpose."""


async def wait_set(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set, at most ``timeout_s``; True if it was set.

    ``asyncio.timeout`` rather than ``wait_for``: on Python 3.11 ``wait_for``
    can swallow a cancellation that arrives just as the event fires, and a
    loop that then carries on keeps its TaskGroup from ever finishing.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()


def cancel_count() -> int:
    """How many cancellations of the current task are pending."""
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()


def raise_if_cancelled(baseline: int = 0) -> None:
    """Re-raise a cancellation that a library's ``wait_for`` swallowed.

    aiomqtt awaits every acknowledgement through ``asyncio.wait_for``, which on
    Python 3.11 may return normally although the task was cancelled meanwhile
    (the task then still reports ``cancelling()``). Long-lived loops call this
    at each turn so that they end as asked. ``baseline`` is the count that is
    not a request (see :meth:`~wattd.sinks.mqtt.session.BrokerSession.run`).
    """
    if cancel_count() > baseline:
        raise asyncio.CancelledError


def leave_session(group: BaseExceptionGroup) -> None:
    """Leave a session: quietly on request, else with its first real error."""
    leaves = list(_leaves(group))
    for exc in leaves:
        if isinstance(exc, aiomqtt.MqttError | SinkError):
            raise exc
    for exc in leaves:
        if not isinstance(exc, SessionEnd):
            raise group
    # Every leaf was the end request: a clean, deliberate exit.


def _leaves(group: BaseExceptionGroup) -> Iterable[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
