"""The tier runner tests' ``rig`` fixture (``tests.runner.rig.Rig``), closed after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import aiohttp
import pytest

from drgreen_poller.clock import FakeClock
from drgreen_poller.runner import TierRunner
from drgreen_poller.sandbox import LocalSandbox, SandboxState
from drgreen_poller.store import Store
from tests.runner.rig import Rig


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """The rig for one test: a fresh sandbox, store and runner on a fake clock."""
    clock = FakeClock()
    async with LocalSandbox(SandboxState(clock)) as box, aiohttp.ClientSession() as session:
        holder = box.state.create_holder("shop")
        box.state.orders.create("shop")
        store = await Store.open(tmp_path / "state.db", sinks=())
        rig = Rig(box, holder, clock, store, session, cast(TierRunner, None), [])
        try:
            rig.runner = rig.new_runner()
            yield rig
        finally:
            await store.close()
