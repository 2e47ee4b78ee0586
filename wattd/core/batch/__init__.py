"""The batch path: many frames decoded and computed at once, with numpy.

For bulk jobs (``wattd replay`` of long recordings, ``wattd reprocess``),
not for the daemon's live path. numpy is an optional extra
(``pip install wattd[batch]``) and only the modules of this package import
it, so a store-only install never needs it: :func:`available` tells the
jobs whether to use this path or the per-frame one.

- :mod:`~wattd.core.batch.decode`: frames to sample arrays
- :mod:`~wattd.core.batch.frames`: a batch of IO frames with arrival times
- :mod:`~wattd.core.batch.stream`: a byte stream's chunks, a batch at a time
- :mod:`~wattd.core.batch.power`: the power maths over arrays
- :mod:`~wattd.core.batch.sensors`: what one frame hands the next, per sensor
- :mod:`~wattd.core.batch.pipeline`: frames to readings, flags included
- :mod:`~wattd.core.batch.columns`: the results, as readings or JSON lines

docs/batch.md describes how the results are kept equal to the per-frame
path's.
"""

from __future__ import annotations

import importlib

__all__ = ["UNAVAILABLE_MESSAGE", "available"]

UNAVAILABLE_MESSAGE = (
    "numpy is not installed, so frames are decoded one at a time; install"
    " wattd[batch] for the faster batch path"
)


def available() -> bool:
    """Whether numpy can be imported, so the batch path can run."""
    try:
        importlib.import_module("numpy")
    except ImportError:
        return False
    return True
