"""Fixtures of the reliability suite: a sandbox process per module, a session, a receiver.

Every test here is marked ``reliability``; ``RELIABILITY_FULL=1`` (``make reliability``) runs
the full sizes, otherwise the short form runs inside ``make test``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.reliability.harness import SCALE
from tests.reliability.receiver import Receiver
from tests.reliability.sandbox_process import Control, SandboxProcess

RELIABILITY_DIR = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability: the reliability suite (real processes; `make reliability`)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if RELIABILITY_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.reliability)


def pytest_report_header() -> str:
    return f"reliability suite: {SCALE.name} form (RELIABILITY_FULL=1 for the full one)"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """``drgreen-poller sandbox --port 0`` in its own process, shared by a module's tests."""
    process = SandboxProcess(tmp_path_factory.mktemp("sandbox") / "sandbox.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def control(sandbox: SandboxProcess) -> AsyncIterator[Control]:
    """The sandbox's control API."""
    async with aiohttp.ClientSession() as session:
        yield Control(session, sandbox.control_url)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A verifying webhook receiver on loopback."""
    hook = Receiver()
    await hook.start()
    try:
        yield hook
    finally:
        await hook.close()
