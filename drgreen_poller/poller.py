"""One tier run for one holder: fetch → detect → store, then one canonical log line.

Owns the polling strategy of design §3.3: newest-first list sweeps that stop once every tracked
id is seen (page 1 also discovers new orders and clients), per-status filtered sweeps for the
stale tier, order detail only as a fallback, and the active-set rules of §3.4/§3.5. It never
fetches client detail (the medical record) and never retries: the scheduler decides when to
run again. Upstream errors propagate to the caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import structlog

from drgreen_poller.api import ApiClient
from drgreen_poller.changes import (
    ORDER_TERMINAL_STATUSES,
    Detection,
    Snapshot,
    client_is_terminal,
    detect_client,
    detect_commissions,
    detect_order,
    detect_strain,
    order_is_terminal,
    strain_removed,
)
from drgreen_poller.clock import Clock
from drgreen_poller.errors import StaleTier, UpstreamNotFound, UpstreamUnauthorized
from drgreen_poller.events import Resource
from drgreen_poller.models import Order, Page
from drgreen_poller.progress import OnProgress, ProgressPolicy, SweepProgress, TierProgress
from drgreen_poller.store import TRACKED, Entity, Observation
from drgreen_poller.store.roles import PollerStore
from drgreen_poller.tiers import TIERS, Tier

log = structlog.get_logger(__name__)

# orderStatus values the list endpoint's ``status`` filter accepts (anything else is a 400).
FILTERABLE_STATUSES = frozenset({"PENDING", "PROCESSING", "SHIPPED", "DELIVERED"})
# Dr Green's "authenticated, but not this holder's resource" (docs 04-errors).
FORBIDDEN = 403
# An entity tracked by id (``drgreen-poller track``) before any poll saw it: its snapshot holds
# only this mark, and its first observation counts as first seen (``*.created`` and so on).
TRACKED_MARK = TRACKED


def _previous(stored: Entity | None) -> Snapshot | None:
    """The snapshot to compare with: none for an unknown or merely tracked entity."""
    if stored is None or TRACKED_MARK in stored.snapshot:
        return None
    return stored.snapshot


class Record(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=Record)


@dataclass(frozen=True, slots=True)
class PollSettings:
    """How a holder is polled (from ``[daemon]`` and ``[schedule]``)."""

    first_sync: str = "seed"
    stale_after_s: float = 7 * 86400.0
    order_terminal_statuses: frozenset[str] = ORDER_TERMINAL_STATUSES
    take: int = 100
    max_detail_fallbacks: int = 50
    progress: ProgressPolicy = field(default_factory=ProgressPolicy)


@dataclass(slots=True)
class PollResult:
    """What one tier run did."""

    holder: str
    tier: str
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    observed: int = 0
    first_sync: bool = False


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else None


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
        # Orders created before this are stale; set once per tier run (``observe``).
        self._stale_cutoff = clock.now()

    async def poll_tier(
        self, tier: str, *, next_due_at: float, dry_run: bool = False
    ) -> PollResult:
        """Run ``tier`` once: fetch, detect, and commit in one transaction (unless ``dry_run``).

        Raises:
            UpstreamError: the API failed; nothing was written.
        """
        first_sync = await self._first_sync(tier)
        requests_before, started = self.api.requests_sent, self.clock.monotonic()
        self._progress = self._new_progress(tier, writer=None if dry_run else self.store)
        try:
            try:
                observations = await self.observe(tier, first_sync=first_sync)
                events = await self._record(tier, observations, next_due_at, dry_run=dry_run)
            except StaleTier:
                # Another connection (the CLI's ``track``, say) committed after the tier was
                # read from memory: nothing was written; once more, from the database.
                observations = await self.observe(tier, first_sync=first_sync)
                events = await self._record(tier, observations, next_due_at, dry_run=dry_run)
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
        self._stale_cutoff = self.clock.now() - timedelta(seconds=self.settings.stale_after_s)
        handlers: dict[str, Callable[[bool], Any]] = {
            Tier.ACTIVE_ORDERS: self._active_orders,
            Tier.STALE_ORDERS: self._stale_orders,
            Tier.PENDING_KYC: self._pending_kyc,
            Tier.COMMISSIONS: self._commissions,
            Tier.STRAINS: self._strains,
        }
        observations: list[Observation] = await handlers[tier](first_sync)
        return observations

    # --- orders ------------------------------------------------------------------------------

    def _order_tier(self, snapshot: Snapshot, created_at: str | None) -> str | None:
        if order_is_terminal(snapshot, self.settings.order_terminal_statuses):
            return None
        if snapshot.get("orderStatus") == "SHIPPED":
            return Tier.STALE_ORDERS  # kept, slowly, until delivered
        created = _parse_time(created_at)
        stale = created is not None and created < self._stale_cutoff
        return Tier.STALE_ORDERS if stale else Tier.ACTIVE_ORDERS

    def _order_observation(
        self, order: Order, stored: Entity | None, *, silent: bool
    ) -> Observation | None:
        created_at = order.created_at or (stored.created_at if stored else None)
        # Nothing detect_order could find (the common case) and the tier stays: nothing to store.
        if (
            stored is not None
            and _order_unchanged(stored.snapshot, order)
            and self._order_tier(stored.snapshot, created_at) == stored.tier
        ):
            return None
        detection = detect_order(_previous(stored), order)
        tier = self._order_tier(detection.snapshot, created_at)
        return _observation(
            Resource("order", order.id), detection, stored, tier, order.raw, created_at,
            silent=silent,
        )  # fmt: skip

    async def _active_orders(self, first_sync: bool) -> list[Observation]:
        tracked = {
            e.resource.id: e
            for e in await self.store.entities(self.holder, kind="order", tier=Tier.ACTIVE_ORDERS)
        }
        pages = self.api.order_pages(take=self.settings.take)
        seen, stored = await self._sweep(pages, "order", tracked, discover=True, full=first_sync)
        silent = first_sync and self.settings.first_sync == "seed"
        observations = [
            o
            for order in seen.values()
            if (
                o := self._order_observation(
                    order, stored.get(order.id), silent=silent and order.id not in stored
                )
            )
        ]
        missing = [tracked[i] for i in tracked if i not in seen]
        return observations + await self._order_fallbacks(missing)

    async def _stale_orders(self, first_sync: bool) -> list[Observation]:
        tracked = await self.store.entities(self.holder, kind="order", tier=Tier.STALE_ORDERS)
        by_status: dict[str, dict[str, Entity]] = {}
        missing: list[Entity] = []
        for entity in tracked:
            status = str(entity.snapshot.get("orderStatus") or "PENDING")
            if status in FILTERABLE_STATUSES:
                by_status.setdefault(status, {})[entity.resource.id] = entity
            else:
                missing.append(entity)  # Dr Green refuses a filter on a value it does not know
        observations: list[Observation] = []
        for status, entities in sorted(by_status.items()):
            pages = self.api.order_pages(take=self.settings.take, status=status)
            seen, _ = await self._sweep(pages, "order", entities, discover=False, full=False)
            for order_id, entity in entities.items():
                if order_id in seen:
                    if o := self._order_observation(seen[order_id], entity, silent=False):
                        observations.append(o)
                else:
                    missing.append(entity)  # left its status bucket: ask for it directly
        return observations + await self._order_fallbacks(missing)

    async def _order_fallbacks(self, missing: list[Entity]) -> list[Observation]:
        """Order detail for tracked orders a sweep did not reach (detail lacks adminApproval).

        An order detail cannot show leaves the active set: gone (404, ``orderDetails: null``) or
        not this holder's (403, after this run's list call was accepted, so the key is fine).
        """
        observations = []
        for entity in missing[: self.settings.max_detail_fallbacks]:
            try:
                order = await self.api.order(entity.resource.id)
            except (UpstreamNotFound, UpstreamUnauthorized) as exc:
                if isinstance(exc, UpstreamUnauthorized) and exc.status != FORBIDDEN:
                    raise
                event = "order_vanished" if isinstance(exc, UpstreamNotFound) else "order_not_ours"
                log.warning(event, holder=self.holder, order_id=entity.resource.id)
                observations.append(
                    Observation(
                        entity.resource, entity.snapshot, tier=None, created_at=entity.created_at,
                        expected_sequence=entity.sequence,
                    )
                )  # fmt: skip
                continue
            if o := self._order_observation(order, entity, silent=False):
                observations.append(o)
        return observations

    # --- clients -----------------------------------------------------------------------------

    async def _pending_kyc(self, first_sync: bool) -> list[Observation]:
        tracked = {
            e.resource.id: e
            for e in await self.store.entities(self.holder, kind="client", tier=Tier.PENDING_KYC)
        }
        pages = self.api.client_pages(take=self.settings.take)
        seen, stored = await self._sweep(pages, "client", tracked, discover=True, full=first_sync)
        silent = first_sync and self.settings.first_sync == "seed"
        observations = []
        for client in seen.values():
            entity = stored.get(client.id)
            detection = detect_client(_previous(entity), client)
            tier = None if client_is_terminal(detection.snapshot) else Tier.PENDING_KYC
            o = _observation(
                Resource("client", client.id),
                detection,
                entity,
                tier,
                client.raw,
                client.created_at,
                silent=silent and entity is None,
            )
            if o:
                observations.append(o)
        # The sweep read every page and these were not on any: a wrong tracked id, or a client
        # no longer visible. They leave the tier (client detail is never fetched: it carries
        # the medical record), or every later run would read the whole client list.
        for client_id, entity in tracked.items():
            if client_id not in seen:
                log.warning("client_not_listed", holder=self.holder, client_id=client_id)
                observations.append(
                    Observation(
                        entity.resource, entity.snapshot, None, expected_sequence=entity.sequence
                    )
                )
        return observations

    # --- sweeps ------------------------------------------------------------------------------

    async def _sweep(
        self,
        pages: AsyncIterator[Page[R]],
        kind: str,
        wanted: Mapping[str, Entity],
        *,
        discover: bool,
        full: bool,
    ) -> tuple[dict[str, R], dict[str, Entity]]:
        """Read pages newest first until every wanted id is seen (and, when discovering, until
        a page holds something already known: new records sit above known ones).

        ``wanted`` holds the tier's entities as this run already read them; only the other ids
        of a page are looked up. Returns the records seen (deduplicated by id: offset pages can
        shift) and the stored entities among them.
        """
        seen: dict[str, R] = {}
        stored: dict[str, Entity] = {}
        async for page in self._counted(pages, full=full):
            ids = [item.id for item in page.items]
            known = {i: wanted[i] for i in ids if i in wanted}
            others = [f"{kind}:{i}" for i in ids if i not in known]
            if others:
                found = await self.store.entities_by_key(self.holder, others)
                known.update({e.resource.id: e for e in found.values()})
            stored.update(known)
            for item in page.items:
                seen.setdefault(item.id, item)
            all_new = bool(ids) and not known
            if not full and wanted.keys() <= seen.keys() and not (discover and all_new):
                break
        return seen, stored

    async def _counted(
        self, pages: AsyncIterator[Page[R]], *, full: bool
    ) -> AsyncIterator[Page[R]]:
        """``pages``, each counted in the run's progress before it is handed on.

        A ``full`` sweep reads the whole list, so the list's own count is what it expects.
        """
        async for page in pages:
            await self._progress.page(len(page.items), page.meta.item_count if full else None)
            yield page

    # --- commissions and strains ---------------------------------------------------------------

    async def _commissions(self, first_sync: bool) -> list[Observation]:
        resource = Resource("commission", "summary")
        stored = await self.store.entities_by_key(self.holder, [resource.key])
        entity = stored.get(resource.key)
        summary = await self.api.commissions_summary()
        detection = detect_commissions(entity.snapshot if entity else None, summary)
        o = _observation(resource, detection, entity, None, summary.raw, None, silent=False)
        return [o] if o else []

    async def _strains(self, first_sync: bool) -> list[Observation]:
        silent = first_sync and self.settings.first_sync == "seed"
        stored = await self.store.entities(self.holder, kind="strain")
        observations: list[Observation] = []
        for country in self.countries:
            previous = {e.resource.id: e for e in stored if e.resource.country == country}
            seen: dict[str, Any] = {}
            strain_pages = self.api.strain_pages(country, take=self.settings.take)
            async for page in self._counted(strain_pages, full=False):
                seen.update({s.id: s for s in page.items if s.id not in seen})
            for strain in seen.values():
                entity = previous.get(strain.id)
                present = entity if entity and not entity.snapshot.get("removed") else None
                detection = detect_strain(present.snapshot if present else None, strain)
                o = _observation(
                    Resource("strain", strain.id, country),
                    detection,
                    entity,
                    None,
                    strain.raw,
                    None,
                    silent=silent and entity is None,
                )
                if o:
                    observations.append(o)
            for strain_id, entity in previous.items():
                if strain_id not in seen and not entity.snapshot.get("removed"):
                    observations.append(
                        Observation(
                            entity.resource,
                            {**entity.snapshot, "removed": True},
                            tier=None,
                            changes=[strain_removed(entity.snapshot)],
                            expected_sequence=entity.sequence,
                        )
                    )
        return observations


def _order_unchanged(snapshot: Snapshot, order: Order) -> bool:
    """Whether ``order`` shows nothing new against its stored snapshot: every status field it
    carries equals the stored one (a field it lacks is no change). ``detect_order`` would then
    find no event and return the same snapshot."""
    if TRACKED_MARK in snapshot:
        return False
    status, approval, payment = order.order_status, order.admin_approval, order.payment_status
    return (
        (status is None or snapshot.get("orderStatus") == status)
        and (approval is None or snapshot.get("adminApproval") == approval)
        and (payment is None or snapshot.get("paymentStatus") == payment)
    )


def _observation(
    resource: Resource,
    detection: Detection,
    stored: Entity | None,
    tier: str | None,
    obj: Mapping[str, Any],
    created_at: str | None,
    *,
    silent: bool,
) -> Observation | None:
    """The observation to store, or None when nothing about the entity changed.

    The object events show is the record as fetched with the snapshot's normalized values over
    it (an approval the detail endpoint lacks, a country's stock, the USD totals).
    """
    changes = [] if silent else detection.changes
    if stored and not changes and stored.snapshot == detection.snapshot and stored.tier == tier:
        return None
    expected = stored.sequence if stored else 0
    shown = {**obj, **detection.shown}
    return Observation(resource, detection.snapshot, tier, shown, created_at, changes, expected)
