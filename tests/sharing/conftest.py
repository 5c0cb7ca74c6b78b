"""The lease loop tests' world: a daemon's parts on a shared PostgreSQL database (tests/pg.py),
on a fake clock, while the sandbox and the database keep real time.

Owns the fixtures the sharing modules share; constants live in ``tests.sharing.values``.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.config import load_config
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.service import Service, build_service, open_runtime
from drgreen_poller.sharing import HolderSharing
from drgreen_poller.store.leases import Fence
from tests.conftest import PgDatabase, write_config
from tests.fakes import ClockScheduler
from tests.sharing.values import TTL


@pytest.fixture
def clock() -> SystemClock:
    """The sandbox's clock is real (the daemon's parts take their own fake one)."""
    return SystemClock()


@pytest.fixture
async def shared_service(
    tmp_path: Path, box: LocalSandbox, shop: HolderInfo, pg_database: PgDatabase
) -> AsyncIterator[tuple[Service, HolderSharing, FakeClock]]:
    """A daemon's parts on a shared PostgreSQL database, on a fake clock (nothing started)."""
    (tmp_path / "pg.password").write_text(pg_database.password + "\n")
    extra = (
        f'[store]\nurl = "{pg_database.url}"\npassword_file = "pg.password"\nlease_ttl = "{TTL}"\n'
    )
    config = load_config(write_config(tmp_path, box.base_url, shop, extra=extra), {})
    clock = FakeClock()
    async with open_runtime(config, clock, shared=True) as runtime:
        assert runtime.instance is not None
        assert isinstance(runtime.store.fence, Fence)
        service = build_service(runtime, make_scheduler=functools.partial(ClockScheduler, clock))
        assert runtime.pollers == {}  # none before a lease is taken
        sharing = HolderSharing(service, runtime.instance, runtime.store.fence, 2.0)
        yield service, sharing, clock
