"""One tier run for one holder: read, detect, then commit in one transaction, and one canonical
log line.

Owns the run's bookkeeping: whether it is the tier's first sync (design §3.5), its progress row,
the commit (or a dry run's preview), the retry of a run another writer overtook, the
``poll_finished`` line, and the cheap probe of a refused key. What each tier reads and what it
detects belong to the observers (``order_tiers``, ``client_tier``, ``summary_tiers``, over
``sweeps``). It never retries an upstream failure: the runner decides when to run again, and
upstream errors propagate to it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog

from drgreen_poller.api import ApiClient
from drgreen_poller.client_tier import observe_pending_kyc
from drgreen_poller.clock import Clock
from drgreen_poller.errors import StaleTier
from drgreen_poller.order_tiers import observe_active_orders, observe_stale_orders
from drgreen_poller.progress import OnProgress, SweepProgress, TierProgress
from drgreen_poller.store import Observation
from drgreen_poller.store.roles import PollerStore
from drgreen_poller.summary_tiers import observe_commissions, observe_strains
from drgreen_poller.sweeps import PollSettings, TierRead
from drgreen_poller.tiers import TIERS, Tier

__all__ = ["HolderPoller", "PollResult", "PollSettings"]  # PollSettings: where callers look

log = structlog.get_logger(__name__)

# How many times a dry run reads and previews a tier while another connection keeps committing
# (each read fetches again from Dr Green, within the politeness budget).
DRY_RUN_READS = 4

Observer = Callable[[TierRead], Awaitable[list[Observation]]]
# What each tier reads and detects.
OBSERVERS: Mapping[str, Observer] = {
    Tier.ACTIVE_ORDERS: observe_active_orders,
    Tier.STALE_ORDERS: observe_stale_orders,
    Tier.PENDING_KYC: observe_pending_kyc,
    Tier.COMMISSIONS: observe_commissions,
    Tier.STRAINS: observe_strains,
}


@dataclass(slots=True)
class PollResult:
    """What one tier run did."""

    holder: str
    tier: str
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    observed: int = 0
    first_sync: bool = False


class HolderPoller:
    """Runs the tiers of one holder.

    Args:
        holder: the holder's name.
        countries: strain catalogue countries (alpha-3) to watch.
        api: the holder's API client.
        store: the state database.
        clock: the time source.
        settings: polling rules.
        on_progress: called on every page a tier run reads, and once when it ends (a bar).
        rows_left: the tiers of this holder whose progress row an earlier process left in the
            database (read once at start-up); None when unknown: every tier's first run then
            clears its row, whether there is one or not (a write transaction each).
    """

    def __init__(
        self,
        holder: str,
        countries: Iterable[str],
        api: ApiClient,
        store: PollerStore,
        clock: Clock,
        settings: PollSettings,
        *,
        on_progress: OnProgress | None = None,
        rows_left: Iterable[str] | None = None,
    ) -> None:
        self.holder = holder
        self.countries = tuple(countries)
        self.api = api
        self.store = store
        self.clock = clock
        self.settings = settings
        self._on_progress = on_progress
        # Tiers whose progress row no earlier process can have left behind.
        self._rows_checked: set[str] = set()
        if rows_left is not None:
            self._rows_checked = {str(tier) for tier in TIERS} - set(rows_left)
        # The current tier run's progress (tier runs of one holder never overlap).
        self._progress = self._new_progress("", writer=None)
        # Tiers whose first sync this process saw recorded: a seed mark is never taken back, so
        # their later runs need not ask the database again.
        self._seeded: set[str] = set()

    async def poll_tier(
        self, tier: str, *, next_due_at: float, dry_run: bool = False
    ) -> PollResult:
        """Run ``tier`` once: fetch, detect, and commit in one transaction (unless ``dry_run``).

        Raises:
            UpstreamError: the API failed; nothing was written.
            StaleTier: another connection committed under every read (``DRY_RUN_READS``: a
                dry run beside a daemon delivering without pause); nothing was written.
        """
        first_sync = await self._first_sync(tier)
        requests_before, started = self.api.requests_sent, self.clock.monotonic()
        self._progress = self._new_progress(tier, writer=None if dry_run else self.store)
        try:
            # Another connection committing after the tier was read from memory (the CLI's
            # ``track``; beside a dry run, the running daemon, whose tiers commit one after
            # another at its start) means nothing was written: the run is done again from the
            # database, once, or up to ``DRY_RUN_READS`` times in all for a dry run.
            reads_left = DRY_RUN_READS if dry_run else 2
            while True:
                reads_left -= 1
                try:
                    observations = await self.observe(tier, first_sync=first_sync)
                    events = await self._record(tier, observations, next_due_at, dry_run=dry_run)
                    break
                except StaleTier:
                    if not reads_left:
                        raise
        finally:
            await self._progress.finish()
        if not dry_run:
            self._seeded.add(tier)  # the commit recorded the seed (or it was there already)
        result = PollResult(
            self.holder,
            tier,
            events,
            requests=self.api.requests_sent - requests_before,
            observed=len(observations),
            first_sync=first_sync,
        )
        log.info(
            "poll_finished",
            holder=self.holder,
            tier=tier,
            outcome="ok",
            events=len(events),
            requests=result.requests,
            records=result.observed,
            first_sync=first_sync,
            dry_run=dry_run,
            duration_ms=round((self.clock.monotonic() - started) * 1000, 1),
        )
        return result

    async def _first_sync(self, tier: str) -> bool:
        """Whether no run of ``tier`` was ever committed (its first sync is still to come)."""
        if tier in self._seeded:
            return False
        runs = await self.store.tier_runs(self.holder)
        if any(r.tier == tier and r.seeded_at for r in runs):
            self._seeded.add(tier)
            return False
        return True

    def _new_progress(self, tier: str, writer: PollerStore | None) -> TierProgress:
        row_left = writer is not None and tier not in self._rows_checked
        if writer is not None:
            self._rows_checked.add(tier)
        return TierProgress(
            SweepProgress(self.holder, tier, self.clock.now()),
            self.clock,
            self.settings.progress,
            writer=writer,
            on_progress=self._on_progress,
            row_left=row_left,
        )

    async def _record(
        self, tier: str, observations: list[Observation], next_due_at: float, *, dry_run: bool
    ) -> list[dict[str, Any]]:
        """Commit the run (or, in a dry run, preview it); the events it made."""
        now = self.clock.now()
        if dry_run:
            return await self.store.preview(self.holder, observations, now=now)
        committed = await self.store.commit_poll(
            self.holder, tier, observations, now=now, next_due_at=next_due_at
        )
        return committed.events

    async def probe(self) -> None:
        """One cheap signed call (the order counts): whether Dr Green accepts the key again.

        Raises:
            UpstreamError: it does not (``UpstreamUnauthorized``), or the call failed.
        """
        await self.api.orders_summary()

    async def observe(self, tier: str, *, first_sync: bool) -> list[Observation]:
        """Fetch and detect for ``tier``; nothing is written."""
        stale_after = timedelta(seconds=self.settings.stale_after_s)
        run = TierRead(
            self.holder, self.countries, self.api, self.store, self.settings, self._progress,
            first_sync=first_sync, stale_cutoff=self.clock.now() - stale_after,
        )  # fmt: skip
        return await OBSERVERS[tier](run)
