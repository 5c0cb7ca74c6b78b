"""Upstream cost: requests per hour to keep N active orders fresh at the 60 s tier.

Runs against the sandbox in this process and counts the requests the sandbox receives for one
``active_orders`` pass of drgreen-poller (after its first sync), and for one pass of the docs'
pattern (``GET /dapp/orders/{id}`` for every active order), in the same run. Each store has N
active orders (created over the last few days) and 1,000 finished orders before them.

    .venv/bin/python bench/upstream_cost.py [--profile quick|full] [--no-append] [N ...]
        quick: N = 100, 1000; full: N = 100, 1000, 5000 (given sizes replace the profile's)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import aiohttp
from _common import append_run, machine, profile_arguments, run_record, table

from drgreen_poller import logs
from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.clock import FakeClock
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.ratelimit import TokenBucket
from drgreen_poller.sandbox import LocalSandbox, SandboxState
from drgreen_poller.store import Store
from drgreen_poller.tiers import Tier

HISTORY = 1000
PASSES_PER_HOUR = 60  # the active_orders tier runs once a minute
PROFILES = {"quick": [100, 1000], "full": [100, 1000, 5000]}
SECTION = "Upstream cost: keeping N active orders fresh at the 60 s tier"
INTRO = (
    "`bench/upstream_cost.py`: requests the sandbox counted for one `active_orders` pass of "
    "drgreen-poller after its first sync, against one pass of the docs' per-order pattern."
)


async def measure(active: int) -> tuple[int, int]:
    """Requests for one pass: (drgreen-poller, the docs' per-order pattern)."""
    clock = FakeClock()
    state = SandboxState(clock)
    state.create_holder("shop")
    old = clock.now() - timedelta(days=30)
    state.orders.create_many(
        "shop",
        HISTORY,
        created_at=old,
        spacing_s=60,
        order_status="DELIVERED",
        admin_approval="VERIFIED",
        payment_status="PAID",
    )
    state.orders.create_many(
        "shop", active, created_at=clock.now() - timedelta(days=3), spacing_s=30
    )
    with tempfile.TemporaryDirectory() as tmp:
        async with LocalSandbox(state) as box, aiohttp.ClientSession() as session:
            holder = state.holder("shop")
            bucket = TokenBucket(rate=1.0, burst=10**9, clock=clock)  # count, do not wait
            api = ApiClient(
                session, ApiSettings(box.base_url), holder.credentials, clock, bucket=bucket
            )
            store = await Store.open(Path(tmp) / "state.db", sinks=())
            poller = HolderPoller("shop", [], api, store, clock, PollSettings())
            await poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)  # first sync
            order = state.orders.of("shop")[HISTORY]
            state.lifecycle.approve(order.id)  # something to find
            state.traffic.reset_request_counts()
            result = await poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)
            ours = state.traffic.request_counts("shop")["total"]
            assert [e["type"] for e in result.events] == ["order.approved"]
            tracked = await store.entities("shop", tier=Tier.ACTIVE_ORDERS)
            assert len(tracked) == active
            state.traffic.reset_request_counts()
            for entity in tracked:  # the docs' pattern: one detail call per active order
                await api.order(entity.resource.id)
            docs = state.traffic.request_counts("shop")["total"]
            await store.close()
    return ours, docs


def row(size: int, ours: int, docs: int) -> list[str]:
    ours_h, docs_h = ours * PASSES_PER_HOUR, docs * PASSES_PER_HOUR
    fits = "yes" if docs_h <= 3600 else f"no ({docs_h / 3600:.1f}x the budget)"
    return [f"{size:,}", str(ours), f"{ours_h:,}", f"{docs_h:,}", f"{docs_h / ours_h:.0f}x", fits]


async def main(sizes: list[int], profile: str, append: bool) -> None:
    logs.configure("warning", "console", stream=sys.stderr)
    print(f"machine: {machine()}")
    rows = [row(size, *await measure(size)) for size in sizes]
    headers = [
        "active orders", "drgreen-poller req/pass", "req/hour", "docs' pattern req/hour",
        "ratio", "docs' pattern fits 1 req/s?",
    ]  # fmt: skip
    result = table(headers, rows, "rrrrrl")
    print(result)
    if append:
        append_run(SECTION, INTRO, run_record(profile, result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    profile_arguments(parser)
    parser.add_argument("sizes", nargs="*", type=int, help="active orders per store")
    args = parser.parse_args()
    asyncio.run(main(args.sizes or PROFILES[args.profile], args.profile, not args.no_append))
