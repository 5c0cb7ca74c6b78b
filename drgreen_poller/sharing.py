"""Several daemons on one PostgreSQL database: which holders this instance polls, round by round.

Owns the lease loop of a daemon that shares its database: every third of ``[store] lease_ttl``,
or just after another instance's lease or heartbeat expires if that comes sooner, a round
(``Leases.share_holders``) heartbeats, renews this instance's leases and evens them out between
the live instances; the service then starts polling the holders it took and stops
those it lost (``service.start_holder`` / ``stop_holder``, the path a reload takes), and the
fence learns the tokens. Each request of a held holder passes ``gate`` (no request once the
last renewal is too old to be sure of the lease: a paused instance that resumes sends nothing),
and a write refused by the fence (``LeaseLost``) or the gate stops its holder at once; each
delivery the worker claims or sends passes ``sending`` (none once the heartbeat is not sure, and
none claimed before a renewal that came too late: another instance may have reclaimed it).
On stop the instance leaves the registry, freeing its leases. ``sharing_of`` and
``sharing_jobs`` give the daemon its loop and the connection that wakes its delivery worker on
new deliveries (none for SQLite, alone). It holds no SQL (``store.leases``)
and polls nothing itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

from drgreen_poller.errors import LeaseLost, StoreError
from drgreen_poller.service import Service, start_holder, stop_holder
from drgreen_poller.store.leases import Fence, Instance, LeaseRound
from drgreen_poller.store.listening import listen_for_deliveries

log = structlog.get_logger(__name__)

ROUNDS_PER_TTL = 3  # a lease is renewed three times within its time to live
# The part of a lease's time to live this instance counts on after the round that renewed it:
# a margin for the round's own time and clocks that run at slightly different rates.
SURE_SHARE = 2 / 3
# A round meant to follow another instance's expiry comes this long after it: the database's
# clock and this process's sleep both run from the same moment, so a few ms suffice.
EXPIRY_MARGIN_S = 0.02


def next_round_in(ttl_s: float, next_expiry_s: float | None) -> float:
    """Seconds until the next lease round: a third of the time to live, or sooner, just after
    the next expiry of another instance's lease or heartbeat (a takeover, a reclaim)."""
    every = ttl_s / ROUNDS_PER_TTL
    if next_expiry_s is None:
        return every
    return min(every, next_expiry_s + EXPIRY_MARGIN_S)


class HolderSharing:
    """The lease loop of one instance (``run``), its first round (``round``) and its leaving.

    Args:
        service: the running daemon's parts; its runner's holders are the ones held.
        instance: this instance (its id is in the registry, the leases and the User-Agent).
        fence: the store's fence, told the token of every lease held.
        ttl_s: how long a lease lasts unless renewed (``[store] lease_ttl``).
    """

    def __init__(self, service: Service, instance: Instance, fence: Fence, ttl_s: float) -> None:
        self.service = service
        self.instance = instance
        self.fence = fence
        self.ttl_s = ttl_s
        # Until when (monotonic) this instance's leases surely hold, by the last round that
        # renewed them: a stop (SIGSTOP, a stalled host) past it sends no request on resuming.
        self.valid_until = 0.0
        # Counts the rounds that ended past the sure window of the one before: this instance's
        # heartbeat may have lapsed meanwhile, and its deliveries been reclaimed by another.
        self.epoch = 0
        self.next_round_s = next_round_in(ttl_s, None)  # the last round's choice
        # Set by the first round (the daemon's, before its first runs): the loop, started
        # before it, waits for its choice of the next round rather than a third of the TTL.
        self._first_round = asyncio.Event()
        service.runner.on_lease_lost = self.lost
        service.runtime.lease_gate = self.gate
        service.worker.gate = self.sending

    async def run(self) -> None:
        """Rounds until cancelled, after the first (``round``, which the daemon awaits); a failed
        database ends the daemon, as everywhere."""
        clock = self.service.runtime.clock
        await self._first_round.wait()
        while True:
            await clock.sleep(self.next_round_s)
            await self.round()

    async def round(self) -> LeaseRound:
        """One round: renew, even out, and start or stop polling the holders that moved."""
        service = self.service
        names = [holder.name for holder in service.config.holders]
        clock = service.runtime.clock
        began = clock.monotonic()  # the leases run from no earlier than this
        done = await service.runtime.store.share_holders(
            self.instance, names, self.ttl_s, clock.now()
        )
        self.fence.tokens = dict(done.held)
        self._renewed(began)
        self.next_round_s = next_round_in(self.ttl_s, done.next_expiry_s)
        self._first_round.set()
        for name in done.taken_over:
            service.metrics.lease_takeovers.inc()
            log.warning("lease_taken_over", holder=name, token=done.held[name])
        for name in sorted(set(service.runner.pollers) - set(done.held)):
            stop_holder(service, name)  # before its lease is free: no request under way then
            if name in done.released:
                log.info("lease_released", holder=name, live_instances=done.live)
            else:
                log.warning("lease_lost", holder=name, hint="another instance took it")
        if done.released:
            await service.runtime.store.release_leases(self.instance.id, done.released)
        for name in sorted(set(done.held) - set(service.runner.pollers)):
            await start_holder(service, name)
            log.info("lease_taken", holder=name, token=done.held[name], live_instances=done.live)
        if done.reclaimed:
            log.warning("deliveries_reclaimed", count=done.reclaimed, reason="instance gone")
            service.worker.wake()
        return done

    def _renewed(self, began: float) -> None:
        """The round that began at ``began`` (monotonic) renewed the heartbeat and leases. One
        ending past the last sure window starts a new epoch (the heartbeat may have lapsed:
        claims made before are void) and wakes the delivery worker, which claims nothing while
        the gate is closed."""
        lapsed = self.service.runtime.clock.monotonic() >= self.valid_until
        self.valid_until = began + self.ttl_s * SURE_SHARE
        if lapsed:
            self.epoch += 1
            self.service.worker.wake()

    def sending(self) -> int | None:
        """Before each claim and each send of a delivery: the epoch whose claims may go out
        now, None while the last renewal is too old to be sure that no other instance has
        reclaimed this one's deliveries (it does once the heartbeat is ``ttl_s`` old)."""
        if self.service.runtime.clock.monotonic() >= self.valid_until:
            return None
        return self.epoch

    def gate(self, holder: str) -> None:
        """Before each request of ``holder``'s: ``LeaseLost`` unless this instance holds its
        lease, renewed recently enough to be sure no other instance took it meanwhile."""
        if holder not in self.fence.tokens or self.service.runtime.clock.monotonic() >= (
            self.valid_until
        ):
            raise LeaseLost(holder)

    def lost(self, holder: str) -> None:
        """The fence refused a write of ``holder``'s: poll it no more (the next round takes
        it again only if its lease is still this instance's)."""
        self.service.metrics.fencing_refusals.inc()
        self.fence.tokens.pop(holder, None)
        stop_holder(self.service, holder)

    async def leave(self) -> None:
        """Leave the registry: this instance's leases are free for the others at once."""
        await self.service.runtime.store.deregister(self.instance.id)
        log.info("instance_left", instance=self.instance.id)


def sharing_of(service: Service) -> HolderSharing | None:
    """The lease loop of a daemon sharing its PostgreSQL database (None: SQLite, alone)."""
    runtime = service.runtime
    fence, store_config = runtime.store.fence, runtime.config.store
    if runtime.instance is None or not isinstance(fence, Fence) or store_config is None:
        return None
    return HolderSharing(service, runtime.instance, fence, store_config.lease_ttl_s)


def sharing_jobs(
    service: Service, sharing: HolderSharing | None
) -> list[Coroutine[Any, Any, None]]:
    """The lease rounds, and the connection that wakes the delivery worker on new deliveries."""
    store_config = service.config.store
    if sharing is None or store_config is None:
        return []
    wake, clock = service.worker.wake, service.runtime.clock
    return [sharing.run(), listen_for_deliveries(store_config, wake, clock)]


async def leave_quietly(sharing: HolderSharing) -> None:
    """Leave the registry on stop; a database already gone lets the leases expire instead."""
    try:
        await sharing.leave()
    except StoreError as exc:
        log.warning("instance_leave_failed", error=str(exc), hint="its leases expire instead")
