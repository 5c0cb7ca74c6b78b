"""The store tests' fixture: the store on each engine, routing to ``rig.SINKS``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drgreen_poller.config import StoreConfig
from drgreen_poller.store import Store
from tests.store.rig import SINKS


@pytest.fixture
async def store(store_state: Path | StoreConfig) -> AsyncIterator[Store]:
    """The store on each engine (``store_state``)."""
    opened = await Store.open(store_state, sinks=SINKS)
    yield opened
    await opened.close()
