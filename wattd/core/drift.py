"""Current zero: where a sensor's current channel sits with no current flowing.

The configured ``current_zero`` comes from one calibration, but the
Kill-A-Watt's op-amp bias wanders with temperature and age by a few counts,
and an uncalibrated unit sits anywhere in 470-507 instead of the default 492.
Real power over whole cycles barely notices, but every count of offset adds
1/15.5 A of DC to Irms (about 8 VA at 120 V), so it is worth tracking.

Two estimates come from the same frames.

The running zero (:attr:`ZeroDriftTracker.zero_counts`) is the interquartile
mean of the whole-cycle means of the current of the last ``zero_window``
usable frames, loaded or not. A load's current is AC, so over whole cycles it
averages to the zero; the per-frame mean scatters by about 0.2-0.5 count (ADC
noise) whatever the load, and the trimmed mean drops the odd frame in which a
load switched on or off. It stands in for a ``current_zero`` that is not
configured. A load that draws direct current (a half-wave rectifier) moves it.

The drift (:attr:`ZeroDriftTracker.estimate_counts`) only uses no-load frames.
A frame counts as no load when the voltage waveform is there, the current's AC
RMS is down at the ADC noise, and the current is not correlated with the
voltage (any real load, even a few watts, follows the voltage). Its window mean
of the raw current counts is then one observation of the true zero. The
estimate is the interquartile mean of the most recent observations, so a few
odd frames (a glitch, a load switching on mid-frame) cannot drag it, minus the
configured zero. Until ``min_frames`` observations exist there is no estimate.

The tracker only reports. The caller decides whether to correct (by setting
``Calibration.zero_drift_counts`` and flagging ``DRIFT_CORRECTED``, or by using
the running zero and flagging ``ZERO_ESTIMATED``); the observations are raw
counts, so a correction never feeds back into them.
"""

from __future__ import annotations

import dataclasses
import math
from array import array
from typing import TYPE_CHECKING, Any, Final

from wattd.core.readings import Flag
from wattd.errors import ConfigError, StateError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from wattd.core.power import PowerResult

__all__ = [
    "DEFAULT_MIN_FRAMES",
    "DEFAULT_WINDOW",
    "DEFAULT_ZERO_WINDOW",
    "NO_LOAD_MAX_AC_RMS_COUNTS",
    "NO_LOAD_MAX_CORRELATION",
    "DriftState",
    "ZeroDriftTracker",
]

# ~40 s of frames at one per ~2 s: enough that the interquartile mean of the
# per-frame means is good to ~0.1 count.
DEFAULT_MIN_FRAMES: Final = 20
# The last ~4 minutes of no-load frames: follows thermal drift, forgets glitches.
DEFAULT_WINDOW: Final = 120
# The last ~minute of frames: the running zero settles within a minute of the
# first frame and follows a warming unit.
DEFAULT_ZERO_WINDOW: Final = 30
# ADC noise gives 0.3-1 count of current AC RMS at no load; a 5 W load adds
# about 0.65 count, a 50 W load 6.5 counts.
NO_LOAD_MAX_AC_RMS_COUNTS: Final = 1.5
# A per-frame correlation over ~12 samples of pure noise rarely exceeds this.
NO_LOAD_MAX_CORRELATION: Final = 0.5
# Frames with these flags say nothing reliable about the current zero.
_UNUSABLE: Final = frozenset(
    {Flag.FLAT_VOLTAGE, Flag.CLIPPED, Flag.MISSING_CHANNEL, Flag.TOO_FEW_SAMPLES}
)
# Under load, a mean over a window that is not whole cycles (a guessed
# interval, or the legacy method's plain mean) carries part of the waveform.
_NOT_WHOLE_CYCLES: Final = _UNUSABLE | {Flag.INTERVAL_FALLBACK, Flag.LEGACY}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DriftState:
    """A tracker's memory, for saving and restoring (JSON-friendly).

    ``observations`` are the raw no-load current means (counts), oldest first,
    so they stay valid if the configured zero changes. ``no_load_frames``
    counts every no-load frame ever seen. ``cycle_means`` are the whole-cycle
    current means (counts) of the latest usable frames, loaded or not.
    """

    observations: tuple[float, ...] = ()
    no_load_frames: int = 0
    cycle_means: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in self.observations):
            msg = "drift state observations must all be finite numbers"
            raise StateError(msg)
        if not all(math.isfinite(v) for v in self.cycle_means):
            msg = "drift state cycle_means must all be finite numbers"
            raise StateError(msg)
        if self.no_load_frames < len(self.observations):
            msg = (
                f"drift state no_load_frames {self.no_load_frames} is less than"
                f" the {len(self.observations)} observations it holds"
            )
            raise StateError(msg)

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return {
            "observations": list(self.observations),
            "no_load_frames": self.no_load_frames,
            "cycle_means": list(self.cycle_means),
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> DriftState:
        """Rebuild a state saved by :meth:`to_json_dict`.

        A state saved before ``cycle_means`` existed restores with none.

        Raises:
            StateError: a field is missing or of the wrong type.
        """
        frames = data.get("no_load_frames")
        if isinstance(frames, bool) or not isinstance(frames, int):
            msg = (
                f"saved drift state 'no_load_frames' must be an integer, got"
                f" {frames!r}; delete the state file to start tracking afresh"
            )
            raise StateError(msg)
        return cls(
            observations=_numbers(data.get("observations"), "observations"),
            no_load_frames=frames,
            cycle_means=_numbers(data.get("cycle_means", []), "cycle_means"),
        )


def _numbers(values: object, key: str) -> tuple[float, ...]:
    """A saved list of numbers as floats.

    Raises:
        StateError: ``values`` is not a list of numbers.
    """
    if not isinstance(values, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        msg = (
            f"saved drift state {key!r} must be a list of numbers;"
            " delete the state file to start tracking afresh"
        )
        raise StateError(msg)
    return tuple(float(v) for v in values)


class ZeroDriftTracker:
    """Tracks one sensor's current zero: its running level and no-load drift."""

    def __init__(
        self,
        *,
        current_zero: float,
        min_frames: int = DEFAULT_MIN_FRAMES,
        window: int = DEFAULT_WINDOW,
        max_ac_rms_counts: float = NO_LOAD_MAX_AC_RMS_COUNTS,
        max_correlation: float = NO_LOAD_MAX_CORRELATION,
        zero_window: int = DEFAULT_ZERO_WINDOW,
        state: DriftState | None = None,
    ) -> None:
        if not 1 <= min_frames <= window:
            msg = (
                f"the drift tracker needs 1 <= min_frames <= window, got"
                f" min_frames={min_frames} window={window}"
            )
            raise ConfigError(msg, key="min_frames")
        if zero_window < 1:
            msg = f"the drift tracker needs zero_window >= 1, got {zero_window}"
            raise ConfigError(msg, key="zero_window")
        self.current_zero = current_zero
        """The configured zero (counts) the drift is measured against."""
        self.min_frames = min_frames
        self.max_ac_rms_counts = max_ac_rms_counts
        self.max_correlation = max_correlation
        start = state or DriftState()
        # Raw doubles, oldest first: 1 KB for a full window where a deque of
        # float objects took ~4 KB, for every sensor.
        self._window = window
        self._recent = array("d", start.observations[-window:])
        self._seen = start.no_load_frames
        self._level: float | None = None
        self._stale = True
        self._zero_window = zero_window
        self._means = array("d", start.cycle_means[-zero_window:])
        self._zero: float | None = None
        self._zero_stale = True

    @property
    def no_load_frames(self) -> int:
        """No-load frames seen so far (including restored ones)."""
        return self._seen

    @property
    def estimate_counts(self) -> float | None:
        """Observed no-load level minus the configured zero, or None (too few)."""
        level = self.level_counts
        return None if level is None else level - self.current_zero

    @property
    def level_counts(self) -> float | None:
        """The observed no-load current level in counts, or None (too few)."""
        if len(self._recent) < self.min_frames:
            return None
        if self._stale:
            self._level = _interquartile_mean(sorted(self._recent))
            self._stale = False
        return self._level

    @property
    def zero_counts(self) -> float | None:
        """The running current zero in counts, or None before any usable frame."""
        if not self._means:
            return None
        if self._zero_stale:
            self._zero = _interquartile_mean(sorted(self._means))
            self._zero_stale = False
        return self._zero

    @property
    def state(self) -> DriftState:
        """A snapshot to save; pass it back as ``state`` to resume."""
        return DriftState(
            observations=tuple(self._recent),
            no_load_frames=self._seen,
            cycle_means=tuple(self._means),
        )

    def is_no_load(self, result: PowerResult) -> bool:
        """Whether a frame's figures show nothing drawing current."""
        return (
            not (result.flags & _UNUSABLE)
            and math.isfinite(result.current_mean_counts)
            and result.current_ac_rms_counts <= self.max_ac_rms_counts
            and abs(result.vi_correlation) <= self.max_correlation
        )

    def observe(self, result: PowerResult) -> bool:
        """Take one frame's figures; True if it counted as a no-load frame."""
        if not (result.flags & _NOT_WHOLE_CYCLES) and math.isfinite(
            result.current_mean_counts
        ):
            means = self._means
            if len(means) >= self._zero_window:
                del means[0]
            means.append(result.current_mean_counts)
            self._zero_stale = True
        if not self.is_no_load(result):
            return False
        recent = self._recent
        if len(recent) >= self._window:
            del recent[0]
        recent.append(result.current_mean_counts)
        self._seen += 1
        self._stale = True
        return True


def _interquartile_mean(values: list[float]) -> float:
    """Mean of the middle half of sorted ``values`` (all of them if few)."""
    drop = len(values) // 4
    middle = values[drop : len(values) - drop]
    return math.fsum(middle) / len(middle)
