"""Upstream cost: requests per hour to keep N active orders fresh at the 60 s tier.

Runs against the sandbox in this process and counts the requests the sandbox receives for one
``active_orders`` pass of drgreen-poller (after its first sync), and for one pass of the docs'
pattern (``GET /dapp/orders/{id}`` for every active order), in the same run. Each store has N
active orders (created over the last few days) and 1,000 finished orders before them.

    .venv/bin/python bench/upstream_cost.py [N ...]      (default: 100 1000 5000)
"""

from __future__ import annotations

import asyncio
import platform
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import aiohttp

from drgreen_poller import logs
from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.clock import FakeClock
from drgreen_poller.poller import ACTIVE_ORDERS, HolderPoller, PollSettings
from drgreen_poller.ratelimit import TokenBucket
from drgreen_poller.sandbox import LocalSandbox, SandboxState
from drgreen_poller.store import Store

HISTORY = 1000
PASSES_PER_HOUR = 60  # the active_orders tier runs once a minute


async def measure(active: int) -> tuple[int, int]:
    """Requests for one pass: (drgreen-poller, the docs' per-order pattern)."""
    clock = FakeClock()
    state = SandboxState(clock)
    state.create_holder("shop")
    old = clock.now() - timedelta(days=30)
    state.create_orders(
        "shop",
        HISTORY,
        created_at=old,
        spacing_s=60,
        order_status="DELIVERED",
        admin_approval="VERIFIED",
        payment_status="PAID",
    )
    state.create_orders("shop", active, created_at=clock.now() - timedelta(days=3), spacing_s=30)
    with tempfile.TemporaryDirectory() as tmp:
        async with LocalSandbox(state) as box, aiohttp.ClientSession() as session:
            holder = state.holder("shop")
            bucket = TokenBucket(rate=1.0, burst=10**9, clock=clock)  # count, do not wait
            api = ApiClient(
                session, ApiSettings(box.base_url), holder.credentials, clock, bucket=bucket
            )
            store = await Store.open(Path(tmp) / "state.db")
            poller = HolderPoller("shop", [], api, store, clock, PollSettings())
            await poller.poll_tier(ACTIVE_ORDERS, next_due_at=0)  # first sync
            order = state.holder_orders("shop")[HISTORY]
            state.approve_order(order.id)  # something to find
            state.reset_request_counts()
            result = await poller.poll_tier(ACTIVE_ORDERS, next_due_at=0)
            ours = state.request_counts("shop")["total"]
            assert [e["type"] for e in result.events] == ["order.approved"]
            tracked = await store.entities("shop", tier=ACTIVE_ORDERS)
            assert len(tracked) == active
            state.reset_request_counts()
            for entity in tracked:  # the docs' pattern: one detail call per active order
                await api.order(entity.resource.id)
            docs = state.request_counts("shop")["total"]
            await store.close()
    return ours, docs


async def main(sizes: list[int]) -> None:
    logs.configure("warning", "console", stream=sys.stderr)
    print(
        f"machine: {platform.machine()}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )
    print(
        "| active orders | drgreen-poller req/pass | req/hour | docs' pattern req/hour | "
        "ratio | docs' pattern fits 1 req/s? |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | --- |")
    for size in sizes:
        ours, docs = await measure(size)
        ours_h, docs_h = ours * PASSES_PER_HOUR, docs * PASSES_PER_HOUR
        fits = "yes" if docs_h <= 3600 else f"no ({docs_h / 3600:.1f}x the budget)"
        print(f"| {size:,} | {ours} | {ours_h:,} | {docs_h:,} | {docs_h / ours_h:.0f}x | {fits} |")


if __name__ == "__main__":
    asyncio.run(main([int(a) for a in sys.argv[1:]] or [100, 1000, 5000]))
