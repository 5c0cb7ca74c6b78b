"""The trigger tests' fixtures: a verifying receiver and a configuration pointing at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from drgreen_poller.config import Config, load_config
from drgreen_poller.request_signing import ApiCredentials
from tests.fakes import start
from tests.trigger.rig import Receiver, config_file


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, TestServer]]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    server = await start(app)
    try:
        yield hook, server
    finally:
        await server.close()


@pytest.fixture
def config(
    receiver: tuple[Receiver, TestServer], tmp_path: Path, credentials: ApiCredentials
) -> Config:
    return load_config(config_file(tmp_path, str(receiver[1].make_url("/hook")), credentials))
