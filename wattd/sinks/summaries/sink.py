"""Scheduled energy summaries, run by the daemon like any other sink.

The summaries read the store, not the reading stream, so :meth:`write` takes
nothing; the sink exists so the supervisor starts, reloads and stops the
scheduler the same way it handles every other destination. A failed post is
the scheduler's own business and never reaches the measurement path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from wattd.sinks.base import Sink
from wattd.sinks.summaries.service import SummaryService

if TYPE_CHECKING:
    from collections.abc import Sequence

    from wattd.config import Config
    from wattd.core.readings import Reading


class SummarySink(Sink):
    """Runs :class:`~wattd.sinks.summaries.service.SummaryService` inside the daemon."""

    name = "summaries"
    wants_readings: ClassVar[bool] = False
    queue_size = 1

    def __init__(self, config: Config) -> None:
        self._service = SummaryService(config)

    async def write(self, readings: Sequence[Reading]) -> None:
        """Readings are not needed: summaries are computed from the store."""

    async def run(self) -> None:
        """The scheduler loop; cancelled at shutdown."""
        await self._service.run()

    def reconfigure(self, config: Config) -> None:
        """Use the new schedules and destinations from the next wake-up."""
        self._service.reconfigure(config)
