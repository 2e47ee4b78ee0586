"""The built-in web dashboard and Prometheus endpoint, served by the daemon.

``sink`` plugs the server into the daemon as a sink; ``app`` holds the routes,
``board`` the live values, ``hub`` the event streams, ``history`` the store
queries, ``auth`` the access control and ``metrics`` the Prometheus exposition.
The page itself is plain HTML, JavaScript and CSS in ``static/``.
"""

from __future__ import annotations
