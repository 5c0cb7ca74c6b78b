"""The operator page: a server-rendered view of the running daemon at ``http_listen`` ``/``.

Holders, active sets, events, deliveries and two charts, and two actions (requeue failed
deliveries, replay to a sink) that reuse the CLI's operator tools. ``access`` decides who may see
and act, ``gather`` reads the daemon, ``render``, ``markup`` and ``charts`` write the HTML,
``app`` routes.
It must not change the daemon's state other than through those two tools, and it runs no script
in the browser.
"""

from __future__ import annotations

from drgreen_poller.operator.app import OperatorPage

__all__ = ["OperatorPage"]
