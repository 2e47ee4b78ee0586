"""Daemon state on disk: per-sensor energy totals and calibration tracking.

The pipeline's state (energy registers, drift estimates, sample intervals) is
written to ``<state_dir>/state.json`` every ``save_interval_s`` and at shutdown,
atomically: a temporary file in the same directory is written, fsynced and
renamed over the old one, then the directory is fsynced so the rename itself
survives a power cut. A reader therefore sees either the old file or the new
one, never a torn mix.

After a crash (``kill -9``, power loss) the saved totals are at most one save
interval old. Every other durable record of a reading carries its total in the
same transaction: the store's ``sensors`` table and the spool's ``energy``
table. At start-up the daemon raises each sensor's total to the largest of the
three (:func:`recorded_energy_totals`, :func:`restore_pipeline`). While the
store writes, the other sinks get a reading only once it holds it
(:mod:`wattd.daemon.handoff`); while it cannot, the spool still records the totals
of what MQTT and InfluxDB take. So no sink sees a total below one already
handed out; and since the pipeline integrates only frames that arrive after
start-up, nothing is counted twice.

A state file that cannot be parsed is moved aside (never deleted: it may be
needed to recover by hand) and the daemon starts from the store's totals.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from wattd.errors import SpoolError, StateError, StoreError
from wattd.storage.files import atomic_write, private_dir, private_file, set_aside

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from wattd.config import Config
    from wattd.core.pipeline import PipelineState

log = logging.getLogger(__name__)

FORMAT: Final = "wattd-state"
VERSION: Final = 1


class StateFile:
    """Load and atomically save the pipeline state at one path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.saved_at: datetime | None = None
        self.last_error: str | None = None

    def load(self) -> PipelineState | None:
        """Read the saved state; ``None`` if there is none or it was corrupt.

        A corrupt file is logged and renamed to ``<name>.corrupt-<time>``.
        """
        from wattd.core.pipeline import PipelineState

        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            log.info("no saved state at %s; starting fresh", self.path)
            return None
        except OSError as exc:
            raise StateError(
                f"cannot read state file {self.path}: {exc.strerror}; check that"
                " the state directory belongs to the wattd user"
            ) from None
        try:
            doc = json.loads(raw.decode("utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError("not a wattd state file")
            if doc.get("version") != VERSION:
                raise ValueError(f"unsupported version {doc.get('version')!r}")
            state = PipelineState.from_json(_pipeline_text(doc.get("pipeline")))
        except Exception as exc:  # any parse failure means the same: set it aside
            aside = self._move_aside()
            log.error(
                "state file %s is corrupt (%s); moved it to %s and starting from"
                " the store's energy totals",
                self.path,
                _short(exc),
                aside,
            )
            return None
        saved = doc.get("saved_at")
        log.info("loaded state saved at %s from %s", saved, self.path)
        return state

    def save(self, state: PipelineState) -> None:
        """Write the state atomically (temp file, fsync, rename, fsync dir).

        Raises:
            StateError: the file could not be written; the old one is intact.
        """
        now = datetime.now(UTC)
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "saved_at": now.isoformat(),
            "pipeline": _pipeline_doc(state.to_json()),
        }
        # Streamed: the whole text at once (with its ~40,000 pieces at 1,000
        # sensors) was megabytes of garbage every save interval.
        pieces = json.JSONEncoder(indent=1, sort_keys=True).iterencode(doc)
        data = (piece.encode() for piece in itertools.chain(pieces, ("\n",)))
        try:
            atomic_write(self.path, data)
        except OSError as exc:
            self.last_error = f"{self.path}: {exc.strerror or exc}"
            raise StateError(
                f"cannot save state to {self.path}: {exc.strerror or exc}; check"
                " free space and that the state directory is writable"
            ) from None
        self.saved_at = now
        self.last_error = None

    def _move_aside(self) -> Path | None:
        try:
            return set_aside(self.path, time.time_ns())
        except OSError:
            return None


def recorded_energy_totals(config: Config) -> dict[int, float]:
    """Per sensor, the highest ``wh_total`` the store or the spool recorded.

    This is the floor for energy at start-up; the saved state is the third
    source, already in the pipeline.
    """
    totals = store_energy_totals(config)
    for sensor, wh_total in spool_energy_totals(config).items():
        if wh_total > totals.get(sensor, -math.inf):
            totals[sensor] = wh_total
    return totals


def spool_energy_totals(config: Config) -> dict[int, float]:
    """The highest ``wh_total`` per sensor that the spool recorded.

    Empty when there is no spool file; an unreadable one is logged (the other
    records are then the floor, and the sinks set a damaged spool aside).
    """
    from wattd.storage.spool import Spool

    try:
        return Spool.read_wh_totals(config.spool_path)
    except SpoolError as exc:
        log.warning("%s; energy continues from the store and the saved state", exc)
        return {}


def store_energy_totals(config: Config) -> dict[int, float]:
    """The last ``wh_total`` per sensor recorded in the SQLite store.

    Returns an empty mapping when the store is disabled, absent or unreadable
    (the latter is logged: the saved state alone is then the floor).
    """
    if not config.store.enabled or not config.store_path.exists():
        return {}
    try:
        from wattd.storage.store import Store

        with Store.open(config.store_path, readonly=True) as store:
            totals = store.last_wh_totals()
    except (StoreError, OSError) as exc:
        log.warning(
            "cannot read energy totals from the store %s: %s; energy continues"
            " from the saved state only",
            config.store_path,
            exc,
        )
        return {}
    return {int(k): float(v) for k, v in totals.items()}


class EnergyFloor(Protocol):
    """The part of the pipeline that takes a recorded energy total."""

    def raise_energy_floor(self, sensor: int, wh_total: float) -> None:
        """Never publish below ``wh_total`` for ``sensor``."""
        ...


def restore_pipeline(
    pipeline: EnergyFloor, floors: Mapping[int, float]
) -> dict[int, float]:
    """Raise each sensor's energy total to at least its recorded floor.

    Returns the floors applied, for logging and tests.
    """
    applied: dict[int, float] = {}
    for sensor, wh_total in sorted(floors.items()):
        pipeline.raise_energy_floor(sensor, wh_total)
        applied[sensor] = wh_total
    if applied:
        log.info(
            "energy totals: at least the store's and the spool's last values"
            " for %d sensors",
            len(applied),
        )
    return applied


def _pipeline_doc(payload: Any) -> Any:
    # Embed structured state as JSON rather than as an escaped string.
    if isinstance(payload, str | bytes):
        return json.loads(payload)
    return payload


def _pipeline_text(payload: Any) -> Any:
    if payload is None:
        raise ValueError("no pipeline section")
    return payload


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


__all__ = [
    "StateFile",
    "atomic_write",
    "private_dir",
    "private_file",
    "recorded_energy_totals",
    "restore_pipeline",
    "spool_energy_totals",
    "store_energy_totals",
]
