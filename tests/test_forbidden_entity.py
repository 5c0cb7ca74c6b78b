"""A 403 on one order's detail means that order is not this holder's, not that the key is refused.

Dr Green's docs: 403 is "authenticated, but the resource is not this holder's/NFT's". Only a
list or probe call that fails says the key itself is refused; a detail call that fails after
the same run's list succeeded says only that this order is not visible.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from drgreen_poller.clock import FakeClock
from drgreen_poller.errors import UpstreamUnauthorized
from drgreen_poller.events import Resource
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.store import Store
from drgreen_poller.tiers import Tier
from tests.fakes import Scripted, ScriptedApi

FOREIGN = "0b9e2c3a-1f4d-4e5a-9b6c-7d8e9f0a1b2c"
EMPTY_PAGE = {
    "orders": [],
    "pageMetaDto": {"page": "1", "take": "100", "itemCount": 0, "pageCount": 0,
                    "hasPreviousPage": False, "hasNextPage": False},
}  # fmt: skip
FORBIDDEN = json.dumps(
    {"message": "Forbidden resource", "error": "Forbidden", "statusCode": 403}
).encode()


UNAUTHORIZED = json.dumps({"message": "Unauthorized", "statusCode": 401}).encode()


@pytest.fixture
async def tracked(
    scripted: tuple[ScriptedApi, str], make_client: Callable[..., Any], tmp_path: Path
) -> AsyncIterator[tuple[ScriptedApi, HolderPoller, Store]]:
    """A synced poller over a scripted Dr Green, tracking an order no list shows."""
    api, base_url = scripted
    clock = FakeClock()
    store = await Store.open(tmp_path / "s.db", clock=clock, sinks=())
    poller = HolderPoller("h", (), make_client(base_url, clock=clock), store, clock, PollSettings())
    api.then(Scripted.data(EMPTY_PAGE))
    await poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)  # the first sync
    await store.track("h", Resource("order", FOREIGN), Tier.ACTIVE_ORDERS, clock.now())
    yield api, poller, store
    await store.close()


class TestForbiddenOrderDetail:
    async def test_the_order_leaves_the_tier_and_the_holder_is_not_refused(
        self, tracked: tuple[ScriptedApi, HolderPoller, Store]
    ) -> None:
        """A tracked order whose detail answers 403 leaves the active tier; nothing is refused."""
        api, poller, store = tracked
        api.then(Scripted.data(EMPTY_PAGE), Scripted(403, FORBIDDEN))
        result = await poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)
        assert result.events == []
        assert await store.entities("h", tier=Tier.ACTIVE_ORDERS) == []
        assert await store.unauthorized_holders() == {}
        assert [r.path for r in api.received[-2:]] == [
            "/api/v1/dapp/orders",
            f"/api/v1/dapp/orders/{FOREIGN}",
        ]

    async def test_a_401_on_detail_still_refuses_the_key(
        self, tracked: tuple[ScriptedApi, HolderPoller, Store]
    ) -> None:
        """A 401 on the detail call is the key refused, as anywhere else: the run fails."""
        api, poller, store = tracked
        api.then(Scripted.data(EMPTY_PAGE), Scripted(401, UNAUTHORIZED))
        with pytest.raises(UpstreamUnauthorized):
            await poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)
        assert [e.resource.id for e in await store.entities("h", tier=Tier.ACTIVE_ORDERS)] == [
            FOREIGN
        ]
