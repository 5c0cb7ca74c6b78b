"""Request reading shared by the control API's route modules.

Owns how a control request's JSON body and the app's state are obtained. Holds no routes.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from drgreen_poller.sandbox.appkey import STATE_KEY
from drgreen_poller.sandbox.model import InvalidInput
from drgreen_poller.sandbox.state import SandboxState


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body (``{}`` when empty).

    Raises:
        InvalidInput: the body is not JSON or not an object.
    """
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    return body


def state_of(request: web.Request) -> SandboxState:
    """The state behind this app (stored by ``create_app``)."""
    return request.app[STATE_KEY]
