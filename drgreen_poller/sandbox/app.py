"""The sandbox's aiohttp application: the Dr Green API under ``/api/v1``, the control API beside it.

Owns putting the two layers on one app over one ``SandboxState``. It must not serve requests
itself: ``dapp/`` answers ``/api/v1`` and ``control/`` answers ``/_sandbox``.
"""

from __future__ import annotations

from aiohttp import web

from drgreen_poller.sandbox.control import CONTROL_PREFIX, control_app
from drgreen_poller.sandbox.dapp.app import API_PREFIX, add_api_routes
from drgreen_poller.sandbox.state import SandboxState

STATE_KEY: web.AppKey[SandboxState] = web.AppKey("sandbox_state", SandboxState)

__all__ = ["API_PREFIX", "STATE_KEY", "create_app"]


def create_app(state: SandboxState) -> web.Application:
    """The sandbox app: Dr Green under ``/api/v1``, the control API under ``/_sandbox``.

    The state is stored under ``STATE_KEY``; its world and traffic under ``dapp``'s keys.
    """
    app = web.Application(client_max_size=16 * 2**20)
    app[STATE_KEY] = state
    add_api_routes(app, state, state.traffic)
    app.add_subapp(CONTROL_PREFIX, control_app())
    return app
