"""The monitoring tests' rig: a sandbox, a store, a tier runner and a delivery worker on one
fake clock, all reporting to one ``Metrics`` that the real monitoring app serves on loopback.

Owns ``Rig`` (the ``rig`` fixture in ``tests/monitoring/conftest.py`` builds it) and the steps
the monitoring tests share. It asserts nothing of its own beyond a scrape answering 200.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.clock import FakeClock
from drgreen_poller.delivery import DeliveryWorker
from drgreen_poller.monitoring import HealthInputs, Metrics
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.ratelimit import TokenBucket
from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.runner import TierRunner
from drgreen_poller.sandbox import LocalSandbox
from drgreen_poller.scheduler import Timing
from drgreen_poller.store import Store
from drgreen_poller.tiers import TIERS, Tier
from tests.fakes import WebhookReceiver

HOUR = Timing(interval_s=3600, jitter=0.1)
SECRET = "whsec_" + base64.b64encode(b"m" * 32).decode()
RATE = 2.5  # the holder's [api] requests_per_second in the rig


@dataclass
class Rig:
    """A sandbox, a store, a runner and a delivery worker on one fake clock, all reporting to
    one ``Metrics``, and the monitoring app serving it on loopback."""

    clock: FakeClock
    box: LocalSandbox
    store: Store
    metrics: Metrics
    runner: TierRunner
    hook: WebhookReceiver
    worker: DeliveryWorker
    session: aiohttp.ClientSession
    url: str
    judged: list[HealthInputs]  # [what the app judges now]: a test may swap it, as a reload does

    async def poll(self, tier: str = Tier.ACTIVE_ORDERS) -> None:
        assert await self.runner.run("shop", tier)

    async def scrape(self) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
        """The /metrics text, and its samples by (name, labels)."""
        async with self.session.get(f"{self.url}/metrics") as response:
            assert response.status == 200
            text = await response.text()
        samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        return text, samples

    async def value(self, name: str, **labels: str) -> float | None:
        return (await self.scrape())[1].get((name, frozenset(labels.items())))

    async def health(self) -> tuple[int, Any]:
        async with self.session.get(f"{self.url}/healthz") as response:
            return response.status, await response.json()


def runner_for(
    session: aiohttp.ClientSession,
    base_url: str,
    credentials: ApiCredentials,
    clock: FakeClock,
    store: Store,
    metrics: Metrics,
) -> TierRunner:
    """Holder ``shop``'s tier runner against ``base_url``, reporting to ``metrics``."""
    settings = ApiSettings(base_url, timeout_s=5, requests_per_second=RATE)
    bucket = TokenBucket(RATE, 10**6, clock)
    api = ApiClient(session, settings, credentials, clock, bucket=bucket, holder="shop")
    metrics.watch_api("shop", api)
    poller = HolderPoller("shop", ["GBR"], api, store, clock, PollSettings())
    return TierRunner(
        {"shop": poller}, store, clock, dict.fromkeys(TIERS, HOUR), random.Random(2),
        on_result=metrics.poll_finished,
    )  # fmt: skip


async def new_order_event(rig: Rig, lag_s: float = 30) -> None:
    """Seed, then an order appears upstream and is detected ``lag_s`` later."""
    await rig.poll()
    rig.box.state.orders.create("shop")
    rig.clock.advance(lag_s)
    await rig.poll()
