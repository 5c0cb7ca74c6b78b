"""Several daemons on one PostgreSQL database: which holders this instance polls, round by round.

Owns the lease loop of a daemon that shares its database: every third of ``[store] lease_ttl``
a round (``Leases.share_holders``) heartbeats, renews this instance's leases and evens them out
between the live instances; the service then starts polling the holders it took and stops
those it lost (``service.start_holder`` / ``stop_holder``, the path a reload takes), and the
fence learns the tokens. A write refused by the fence (``LeaseLost``) stops its holder at once.
On stop the instance leaves the registry, freeing its leases. It holds no SQL (``store.leases``)
and polls nothing itself.
"""

from __future__ import annotations

import structlog

from drgreen_poller.service import Service, start_holder, stop_holder
from drgreen_poller.store.leases import Fence, Instance, LeaseRound

log = structlog.get_logger(__name__)

ROUNDS_PER_TTL = 3  # a lease is renewed three times within its time to live


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
        service.runner.on_lease_lost = self.lost

    async def run(self) -> None:
        """Rounds until cancelled; a failed database ends the daemon, as everywhere."""
        clock = self.service.runtime.clock
        while True:
            await clock.sleep(self.ttl_s / ROUNDS_PER_TTL)
            await self.round()

    async def round(self) -> LeaseRound:
        """One round: renew, even out, and start or stop polling the holders that moved."""
        service = self.service
        names = [holder.name for holder in service.config.holders]
        done = await service.runtime.store.share_holders(
            self.instance, names, self.ttl_s, service.runtime.clock.now()
        )
        self.fence.tokens = dict(done.held)
        for name in done.taken_over:
            service.metrics.lease_takeovers.inc()
            log.warning("lease_taken_over", holder=name, token=done.held[name])
        for name in sorted(set(service.runner.pollers) - set(done.held)):
            stop_holder(service, name)
            log.info("lease_released", holder=name, live_instances=done.live)
        for name in sorted(set(done.held) - set(service.runner.pollers)):
            await start_holder(service, name)
            log.info("lease_taken", holder=name, token=done.held[name], live_instances=done.live)
        if done.reclaimed:
            log.warning("deliveries_reclaimed", count=done.reclaimed, reason="instance gone")
            service.worker.wake()
        return done

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
