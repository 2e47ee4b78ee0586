"""The built-in web dashboard and Prometheus endpoint, served by the daemon.

``sink`` plugs the server into the daemon as a sink; ``app`` holds the routes,
``board`` the live values, ``hub`` the event streams, ``history`` the store
queries, ``auth`` the access control (the operator and each customer),
``customer`` what a customer may see and the customer page's figures,
``bills`` their pricing and the bills, and ``metrics`` the Prometheus
exposition. The pages are plain HTML, JavaScript and CSS in ``static/``.
"""

from __future__ import annotations
