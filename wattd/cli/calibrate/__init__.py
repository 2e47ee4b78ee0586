"""``wattd calibrate``: measure a meter's zero (and gains) and write them to the config.

Frames come from a live port (``--port``; the daemon must not hold it) or from a
capture (``--capture``: a ``wattd record`` recording or raw bytes). Without
``--reference-watts`` the meter must have nothing plugged in and the current
zero is measured; with it, a known resistive load is plugged in and the gains
are fitted (see :mod:`wattd.core.calibrate`). ``--write`` edits the sensor's entry
in the config file in place, keeping comments and layout.

- :mod:`~wattd.cli.calibrate.command`: the arguments, the estimate and the output
- :mod:`~wattd.cli.calibrate.frames`: the sensor's frames from a capture or a port
- :mod:`~wattd.cli.calibrate.configfile`: the result written into the config file
"""

from __future__ import annotations

from wattd.cli.calibrate.command import handle, register

__all__ = ["handle", "register"]
