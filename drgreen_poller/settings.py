"""The configuration as each part of the daemon takes it: the API clients' settings, the
pollers', each tier's timing, the sinks' routes for the outbox.

Pure functions of a ``Config``, shared by the daemon (``service``), its reload and the commands
that report on it (``status``, ``check-config --online``). It builds no part itself.
"""

from __future__ import annotations

from drgreen_poller.api import ApiSettings
from drgreen_poller.config import Config
from drgreen_poller.poller import PollSettings
from drgreen_poller.scheduler import Timing
from drgreen_poller.store import SinkRoute
from drgreen_poller.tiers import Tier


def api_settings(config: Config) -> ApiSettings:
    """``[api]`` as every holder's API client takes it."""
    api = config.api
    return ApiSettings(api.base_url, api.timeout_s, api.requests_per_second, api.burst)


def poll_settings(config: Config) -> PollSettings:
    """``[daemon]`` and ``[schedule]`` as every holder's poller takes them."""
    return PollSettings(
        first_sync=config.daemon.first_sync,
        stale_after_s=config.schedule.stale_after_s,
        order_terminal_statuses=frozenset(config.schedule.terminal_order_statuses),
    )


def timings(config: Config) -> dict[str, Timing]:
    """Each tier's interval, jitter and backoff, from ``[schedule]``."""
    s = config.schedule
    intervals = {
        Tier.ACTIVE_ORDERS: s.active_orders_s,
        Tier.STALE_ORDERS: s.stale_orders_s,
        Tier.PENDING_KYC: s.pending_kyc_s,
        Tier.COMMISSIONS: s.commissions_s,
        Tier.STRAINS: s.strains_s,
    }
    return {
        tier: Timing(interval, s.jitter, s.backoff_base_s, s.backoff_max_s)
        for tier, interval in intervals.items()
    }


def sink_routes(config: Config) -> list[SinkRoute]:
    """Each sink's name and event patterns, for the rows a commit writes."""
    return [SinkRoute(sink.name, sink.events) for sink in config.sinks]
