"""The client tier (design §3.3, §3.4): ``pending_kyc``, the clients not yet KYC-complete.

Owns the newest-first sweep of the client list (which also discovers new clients) and when a
client leaves the tier: KYC complete or rejected, or no longer listed. It never fetches client
detail (it carries the medical record), writes nothing and never retries.
"""

from __future__ import annotations

import structlog

from drgreen_poller.changes import client_is_terminal, detect_client
from drgreen_poller.events import Resource
from drgreen_poller.store import Observation
from drgreen_poller.sweeps import TierRead, leaving, observation, previous, sweep
from drgreen_poller.tiers import Tier

log = structlog.get_logger(__name__)


async def observe_pending_kyc(run: TierRead) -> list[Observation]:
    """Sweep the client list until every pending client is seen; new ones too."""
    tracked = {
        e.resource.id: e
        for e in await run.store.entities(run.holder, kind="client", tier=Tier.PENDING_KYC)
    }
    pages = run.api.client_pages(take=run.settings.take)
    seen, stored = await sweep(run, pages, "client", tracked, discover=True, full=run.first_sync)
    observations = []
    for client in seen.values():
        entity = stored.get(client.id)
        detection = detect_client(previous(entity), client)
        tier = None if client_is_terminal(detection.snapshot) else Tier.PENDING_KYC
        o = observation(
            Resource("client", client.id), detection, entity, tier, client.raw,
            client.created_at, silent=run.seeding and entity is None,
        )  # fmt: skip
        if o:
            observations.append(o)
    # The sweep read every page and these were not on any: a wrong tracked id, or a client no
    # longer visible. They leave the tier (client detail is never fetched: it carries the
    # medical record), or every later run would read the whole client list.
    for client_id, entity in tracked.items():
        if client_id not in seen:
            log.warning("client_not_listed", holder=run.holder, client_id=client_id)
            observations.append(leaving(entity))
    return observations
