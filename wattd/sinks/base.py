"""The sink interface: small on purpose, so every destination plugs in the same way.

The supervisor gives each sink its own bounded queue and a runner task. The
runner batches readings from the queue and awaits :meth:`Sink.write`; a slow or
failing sink only fills its own queue, never the serial reader's path. Sinks
that talk to servers (MQTT, InfluxDB) make ``write`` a fast append to the
durable spool and do the network work in :meth:`Sink.run`.

Lifecycle, in the order the supervisor calls it::

    sink.attach(snapshot)     # optional: the daemon's live status provider
    await sink.start()        # open files / connections; may raise SinkError
    run() task started        # long-lived background work, cancelled at exit
    await sink.write(batch)   # many times; raise SinkError to have it retried
    await sink.write_frames() # only if wants_frames
    sink.reconfigure(config)  # on SIGHUP, with an already validated config
    await sink.flush()        # at shutdown, within a timeout
    await sink.stop()
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Callable

    from wattd.config import Config
    from wattd.core.readings import FrameRecord, Reading
    from wattd.core.snapshot import DaemonSnapshot


class Sink(abc.ABC):
    """A destination for readings."""

    name: str = "sink"
    wants_readings: ClassVar[bool] = True
    """False for sinks that only run background work (e.g. scheduled summaries)."""
    wants_frames: ClassVar[bool] = False
    """True if the sink also receives raw :class:`FrameRecord` items."""
    queue_size: int = 10_000
    """Readings the supervisor buffers for this sink before counting drops."""
    batch_size: int = 500
    """Most readings handed to one :meth:`write` call."""
    retries_itself: ClassVar[bool] = False
    """True for sinks whose :meth:`write` only appends to a durable spool and whose
    :meth:`run` retries delivery on its own (MQTT, InfluxDB). The runner then
    does not retry a refused batch with backoff: it keeps it at the head of the
    queue and hands it over again with the next readings."""

    def attach(self, snapshot: Callable[[], DaemonSnapshot]) -> None:  # noqa: B027
        """Receive the daemon's status provider (optional hook).

        Called once, before :meth:`start`. Calling ``snapshot()`` is cheap and
        returns the current :class:`~wattd.core.snapshot.DaemonSnapshot` (ports,
        sinks, sensors); the web dashboard and metrics use it.
        """

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Prepare the sink. Called once before the first write."""

    @abc.abstractmethod
    async def write(self, readings: Sequence[Reading]) -> None:
        """Take a batch of readings, in arrival order.

        Raises:
            SinkError: the batch was not taken; the runner keeps it and retries it
                with backoff (or, if :attr:`retries_itself`, with the next batch).
            SinkRejected: the batch can never be taken; the runner drops it.
        """

    async def write_frames(self, frames: Sequence[FrameRecord]) -> None:  # noqa: B027
        """Take a batch of raw frames (only called when ``wants_frames``)."""

    async def run(self) -> None:  # noqa: B027 - optional hook
        """Long-running background work; cancelled at shutdown."""

    def reconfigure(self, config: Config) -> None:  # noqa: B027 - optional hook
        """Apply a new, already validated config (SIGHUP)."""

    async def flush(self) -> None:  # noqa: B027 - optional hook
        """Push out whatever is buffered. Called at shutdown under a timeout."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    def stats(self) -> dict[str, float]:
        """Sink-specific health figures (backlog, spool depth, errors...)."""
        return {}


class CommitListener(Protocol):
    """What a store sink reports to: its commits and its failures."""

    @property
    def waiting(self) -> int:
        """Readings that other sinks wait to get until the store commits them."""
        ...

    def committed(self, last: Reading | None) -> None:
        """A write succeeded; ``last`` is the last reading it held (if any)."""
        ...

    def failed(self) -> None:
        """A write failed; the readings it held are not durable."""
        ...


@runtime_checkable
class RecordsReadings(Protocol):
    """A sink that is the system of record (the SQLite store)."""

    def set_commit_listener(self, listener: CommitListener | None) -> None:
        """Report commits and failures to ``listener`` (None: to nobody)."""
        ...
