"""How a frame's samples are weighted: whole-cycle windows and sine-fit rows.

The power maths averages over whole mains cycles where the frame holds one
(:func:`window_weights`) and fits sines where it does not (:func:`fit_rows`).
Both depend only on the frame length and the samples per cycle, so they are
built once per pair and cached: a fleet sees a few hundred such pairs, and
every frame reuses them.
"""

from __future__ import annotations

import functools
import math
from array import array
from operator import mul
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["CYCLE_STEPS", "fit_rows", "window_weights"]

# Window weights are cached per frame length and samples-per-cycle, the latter
# rounded to 1/CYCLE_STEPS of a sample (under 0.05 % of window length): callers
# pass ``key = round(samples_per_cycle * CYCLE_STEPS)``.
CYCLE_STEPS: Final = 256
_WINDOW_STARTS: Final = 32
_FIT_HARMONICS: Final = (1, 3, 5)
# Harmonics are fitted only well below the Nyquist frequency.
_MAX_FIT_RADIANS: Final = 0.8 * math.pi


@functools.lru_cache(maxsize=4096)
def window_weights(count: int, key: int) -> Sequence[float]:
    """Weights (summing to 1) of whole-cycle windows averaged over start points.

    Sample ``j`` stands for the interval ``[j, j+1)``. A window covers the
    largest whole number of cycles that fits and may start anywhere in the
    slack; the weights are averaged over evenly spaced starts.

    Raw doubles, shared by every caller (never modified): a fleet shows
    hundreds of sample intervals, and a tuple of float objects per entry took
    three times the memory.
    """
    per_cycle = key / CYCLE_STEPS
    length = math.floor(count / per_cycle) * per_cycle
    slack = count - length
    totals = [0.0] * count
    starts = _WINDOW_STARTS if slack > 0.0 else 1
    for s in range(starts):
        lo = slack * s / (starts - 1) if starts > 1 else 0.0
        hi = lo + length
        for j in range(math.floor(lo), min(count, math.ceil(hi))):
            overlap = min(j + 1.0, hi) - max(float(j), lo)
            if overlap > 0.0:
                totals[j] += overlap
    norm = 1.0 / (starts * length)
    return array("d", [t * norm for t in totals])


@functools.lru_cache(maxsize=1024)
def fit_rows(count: int, key: int) -> tuple[tuple[float, ...], ...]:
    """Least-squares projection rows for DC, cos, sin and harmonics.

    Row 0 gives the DC level, rows 1-2 the fundamental's cosine and sine
    amplitudes, later rows the odd harmonics that fit below Nyquist.
    """
    w = 2.0 * math.pi * CYCLE_STEPS / key
    centre = 0.5 * (count - 1)
    orders = [h for h in _FIT_HARMONICS if h * w <= _MAX_FIT_RADIANS or h == 1]
    # Keep the system well over-determined: at least two samples per unknown.
    while len(orders) > 1 and 2 * (1 + 2 * len(orders)) > count:
        orders.pop()
    while True:
        basis: list[list[float]] = [[1.0] * count]
        for h in orders:
            basis.append([math.cos(h * w * (j - centre)) for j in range(count)])
            basis.append([math.sin(h * w * (j - centre)) for j in range(count)])
        rows = _pseudo_inverse(basis)
        if rows is not None or len(orders) == 1:
            break
        orders.pop()
    if rows is None:
        # Degenerate (should not happen for a sane interval): plain mean, no AC.
        return ((1.0 / count,) * count, (0.0,) * count, (0.0,) * count)
    return tuple(tuple(r) for r in rows)


def _pseudo_inverse(basis: list[list[float]]) -> list[list[float]] | None:
    """Rows of (B B^T)^-1 B for basis vectors B, by Gauss-Jordan elimination."""
    size = len(basis)
    gram = [[sum(map(mul, a, b)) for b in basis] for a in basis]
    inv = [[1.0 if r == c else 0.0 for c in range(size)] for r in range(size)]
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(gram[r][col]))
        if abs(gram[pivot][col]) < 1e-9 * max(1.0, gram[col][col]):
            return None
        gram[col], gram[pivot] = gram[pivot], gram[col]
        inv[col], inv[pivot] = inv[pivot], inv[col]
        scale = 1.0 / gram[col][col]
        gram[col] = [v * scale for v in gram[col]]
        inv[col] = [v * scale for v in inv[col]]
        for r in range(size):
            if r != col and gram[r][col] != 0.0:
                f = gram[r][col]
                gram[r] = [a - f * b for a, b in zip(gram[r], gram[col], strict=True)]
                inv[r] = [a - f * b for a, b in zip(inv[r], inv[col], strict=True)]
    count = len(basis[0])
    return [
        [sum(inv[r][c] * basis[c][j] for c in range(size)) for j in range(count)]
        for r in range(size)
    ]
