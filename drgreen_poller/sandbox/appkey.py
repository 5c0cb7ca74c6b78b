"""The aiohttp application key under which a sandbox app keeps its ``SandboxState``.

Its own module so that the Dr Green side and the control API can both read the state without
importing each other. Holds nothing else.
"""

from __future__ import annotations

from aiohttp import web

from drgreen_poller.sandbox.state import SandboxState

STATE_KEY: web.AppKey[SandboxState] = web.AppKey("sandbox_state", SandboxState)
