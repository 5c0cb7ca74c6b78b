"""The control API under ``/_sandbox`` (not Dr Green): drive one sandbox from tests and tools.

Owns the control routes: the world's entities and their lifecycles (``entities``, ``orders``,
through ``world/``'s parts, so every rule and 409 is the world's), and the sandbox's machinery
(``machinery``: reset, settings, holders, ETH rate, faults, request counts). It imports
``world/`` and, one way only, ``dapp/``: the faults and counts it drives are the simulated API's
``Traffic`` (they describe requests, so they belong to ``dapp/``, not to the pure world), and
its views extend ``dapp``'s records with what only the sandbox knows. ``dapp/`` never imports
it. Control requests are never faulted and never counted.
"""

from drgreen_poller.sandbox.control.machinery import CONTROL_PREFIX, control_app

__all__ = ["CONTROL_PREFIX", "control_app"]
