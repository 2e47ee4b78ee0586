"""The web dashboard and /metrics as a sink; the code lives in :mod:`wattd.web`."""

from __future__ import annotations

from wattd.web.sink import WebSink

__all__ = ["WebSink"]
