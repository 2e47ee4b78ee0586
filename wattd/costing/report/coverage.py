"""Time with data: the part of a report's range each meter really covered.

A report's range often starts before a meter's first frame, ends after its
last, or spans an outage. Counting that time as 0 W would make a 100 W heater
with two minutes of data look like a 13 W one, so means and peak windows are
taken over the time each meter had data, and a group adds up its meters'
powers (a silent meter adds nothing and shows up in the completeness).

The time is found from the energy intervals themselves (store buckets or
single readings), one meter at a time, in time order:

* Intervals of a meter that touch form a run; the inside of a run is covered.
* At a run's first and last interval only as much time counts as its frames
  account for (readings x the frame period): data that starts at 10:00:40
  covers the last 20 s of the 10:00 minute bucket, not all of it.
* An interval with no energy that is much longer than its frames (a silence
  the energy integrator did not bridge) covers nothing and ends the run.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from typing import TYPE_CHECKING, Final

from wattd.costing.cost import PEAK_WINDOW_S

if TYPE_CHECKING:
    from collections.abc import Iterator

    from wattd.costing.cost import EnergyInterval, Segment, Timeline

__all__ = ["Layout", "MeterCoverage", "PowerBins"]

_GAP_SHARE: Final = 0.5
"""An energyless interval whose frames cover less than this share is a gap."""
_PEAK_DATA_SHARE: Final = 0.5
"""A peak window needs this share of the best-covered window's time with data."""


class Layout:
    """Where a report's hours and peak windows end, shared by every meter."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.start_s = timeline.start.timestamp()
        self.end_s = timeline.end.timestamp()
        starts = [h.timestamp() for h in timeline.hours]
        self.hour_starts = [max(self.start_s, s) for s in starts]
        self.hour_ends = [*starts[1:], self.end_s]

    def segments_between(self, a: float, b: float) -> Iterator[Segment]:
        """The timeline's segments that overlap ``[a, b)`` (epoch seconds)."""
        edges, segments = self.timeline.edges, self.timeline.segments
        i = max(0, bisect_right(edges, a) - 1)
        while i < len(segments) and edges[i] < b:
            yield segments[i]
            i += 1

    def hour_len_s(self, hour: int) -> float:
        """Seconds of the hour inside the range."""
        return self.hour_ends[hour] - self.hour_starts[hour]

    def window_end_s(self, window: int) -> float:
        """End of a peak window, cut at the range's end."""
        return min(self.end_s, (window + 1) * PEAK_WINDOW_S)

    def window_len_s(self, window: int) -> float:
        """Seconds of the peak window inside the range."""
        return self.window_end_s(window) - max(self.start_s, window * PEAK_WINDOW_S)


@dataclasses.dataclass(slots=True)
class PowerBins:
    """A group's power over the time with data: the sum over its meters.

    ``*_watts`` add each meter's energy divided by its own time with data;
    ``*_data_s`` is the longest time with data of any one meter.
    """

    hour_watts: list[float]
    hour_data_s: list[float]
    window_watts: dict[int, float] = dataclasses.field(default_factory=dict)
    window_data_s: dict[int, float] = dataclasses.field(default_factory=dict)
    mean_watts: float = 0.0
    data_s: float = 0.0

    @classmethod
    def empty(cls, n_hours: int) -> PowerBins:
        """Bins for a range of ``n_hours`` local hours."""
        return cls(hour_watts=[0.0] * n_hours, hour_data_s=[0.0] * n_hours)

    def merge(self, other: PowerBins) -> None:
        """Add another group's meters to these."""
        for i, w in enumerate(other.hour_watts):
            self.hour_watts[i] += w
            self.hour_data_s[i] = max(self.hour_data_s[i], other.hour_data_s[i])
        for k, w in other.window_watts.items():
            self.window_watts[k] = self.window_watts.get(k, 0.0) + w
            self.window_data_s[k] = max(
                self.window_data_s.get(k, 0.0), other.window_data_s[k]
            )
        self.mean_watts += other.mean_watts
        self.data_s = max(self.data_s, other.data_s)

    def peak(self) -> tuple[int | None, float, float]:
        """The peak window: its index, its watts and its time with data.

        Windows with less than half the data of the best-covered one are left
        out, so a few seconds at a meter's first frame cannot make the peak.
        """
        if not self.window_watts:
            return None, 0.0, 0.0
        enough = max(self.window_data_s.values()) * _PEAK_DATA_SHARE
        best = max(
            (k for k, s in self.window_data_s.items() if s >= enough),
            key=lambda k: (self.window_watts[k], -k),
        )
        return best, self.window_watts[best], self.window_data_s[best]


class MeterCoverage:
    """One meter's energy and time with data, per hour and peak window.

    Feed it the meter's intervals in time order (:meth:`energy` for each
    piece of energy, :meth:`feed` for each interval), then :meth:`finish`.
    An hour or window is added to the group's :class:`PowerBins` once the
    meter's intervals have moved past it.
    """

    def __init__(self, layout: Layout, bins: PowerBins, frame_period_s: float) -> None:
        self.layout = layout
        self.bins = bins
        self.frame_period_s = frame_period_s
        self.wh = 0.0
        self.data_s = 0.0
        # The last interval, held back until the next shows whether a run
        # ends with it: (start_s, end_s, readings, wh).
        self._pending: tuple[float, float, float, float] | None = None
        self._pending_first = True
        # Open bins: index -> [energy Wh, seconds with data].
        self._hours: dict[int, list[float]] = {}
        self._windows: dict[int, list[float]] = {}

    def energy(self, hour: int, window: int, wh: float) -> None:
        """Count ``wh`` used in this hour and peak window."""
        self.wh += wh
        self._hours.setdefault(hour, [0.0, 0.0])[0] += wh
        self._windows.setdefault(window, [0.0, 0.0])[0] += wh

    def feed(self, interval: EnergyInterval) -> None:
        """Take the meter's next interval into account."""
        a, b = interval.start.timestamp(), interval.end.timestamp()
        if b <= a:
            return
        frames_s = interval.readings * self.frame_period_s
        gap = interval.wh == 0 and frames_s < (b - a) * _GAP_SHARE
        pending = self._pending
        touches = pending is not None and not gap and a == pending[1]
        if pending is not None:
            self._cover(*pending, first=self._pending_first, last=not touches)
            self._pending = None
        if gap:
            self._close(b)
            return
        self._close(a)
        self._pending = (a, b, interval.readings, interval.wh)
        self._pending_first = not touches

    def finish(self) -> None:
        """Close every bin and add the meter's mean to the group."""
        if self._pending is not None:
            self._cover(*self._pending, first=self._pending_first, last=True)
            self._pending = None
        self._close(float("inf"))
        if self.data_s > 0:
            self.bins.mean_watts += self.wh * 3600.0 / self.data_s
        elif self.wh:
            span = self.layout.end_s - self.layout.start_s
            self.bins.mean_watts += self.wh * 3600.0 / span
        self.bins.data_s = max(self.bins.data_s, self.data_s)

    def _cover(
        self,
        start_s: float,
        end_s: float,
        readings: float,
        wh: float,
        *,
        first: bool,
        last: bool,
    ) -> None:
        # A bucket that sticks out of the range (the current minute, say) has
        # its frames inside the range.
        lo = max(start_s, self.layout.start_s)
        hi = min(end_s, self.layout.end_s)
        if hi <= lo:
            return
        frames = readings or (1.0 if wh else 0.0)
        held = min(hi - lo, frames * self.frame_period_s)
        if first:
            lo = hi - held  # the data began inside the interval, by its end
        elif last:
            hi = lo + held  # the data stopped inside it
        if hi <= lo:
            return
        self.data_s += hi - lo
        for segment in self.layout.segments_between(lo, hi):
            s = min(hi, segment.end_s) - max(lo, segment.start_s)
            if s <= 0:
                continue
            self._hours.setdefault(segment.hour, [0.0, 0.0])[1] += s
            window = int(segment.start_s // PEAK_WINDOW_S)
            self._windows.setdefault(window, [0.0, 0.0])[1] += s

    def _close(self, frontier_s: float) -> None:
        layout, bins = self.layout, self.bins
        for hour in [h for h in self._hours if layout.hour_ends[h] <= frontier_s]:
            wh, data_s = self._hours.pop(hour)
            if data_s <= 0 and wh:
                data_s = layout.hour_len_s(hour)
            if data_s > 0:
                bins.hour_watts[hour] += wh * 3600.0 / data_s
                bins.hour_data_s[hour] = max(bins.hour_data_s[hour], data_s)
        for window in [
            w for w in self._windows if layout.window_end_s(w) <= frontier_s
        ]:
            wh, data_s = self._windows.pop(window)
            if data_s <= 0 and wh:
                data_s = layout.window_len_s(window)
            if data_s > 0:
                bins.window_watts[window] = (
                    bins.window_watts.get(window, 0.0) + wh * 3600.0 / data_s
                )
                bins.window_data_s[window] = max(
                    bins.window_data_s.get(window, 0.0), data_s
                )
