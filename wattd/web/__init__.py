"""The built-in web dashboard and Prometheus endpoint, served by the daemon.

:mod:`wattd.web.sink` plugs the server into the daemon as a sink;
:mod:`wattd.web.app` holds the routes, :mod:`wattd.web.board` the live values,
:mod:`wattd.web.hub` the event streams, :mod:`wattd.web.history` the store
queries and :mod:`wattd.web.auth` the access control. The page itself is plain
HTML, JavaScript and CSS in ``static/``.
"""

from __future__ import annotations
