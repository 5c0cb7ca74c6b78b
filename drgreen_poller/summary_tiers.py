"""The tiers read whole on every run (design §3.2): ``commissions`` (the holder's commission
summary) and ``strains`` (each watched country's strain catalogue).

Owns comparing what was read with what is stored: a summary's totals, a strain that appeared,
changed or disappeared. These keep no active set; they write nothing and never retry.
"""

from __future__ import annotations

from drgreen_poller.changes import detect_commissions, detect_strain, strain_removed
from drgreen_poller.events import Resource
from drgreen_poller.models import Strain
from drgreen_poller.store import Entity, Observation
from drgreen_poller.sweeps import TierRead, counted, observation


async def observe_commissions(run: TierRead) -> list[Observation]:
    """The commission summary against the stored one (never silent: it has no first sighting)."""
    resource = Resource("commission", "summary")
    stored = await run.store.entities_by_key(run.holder, [resource.key])
    entity = stored.get(resource.key)
    summary = await run.api.commissions_summary()
    detection = detect_commissions(entity.snapshot if entity else None, summary)
    o = observation(resource, detection, entity, None, summary.raw, None, silent=False)
    return [o] if o else []


async def observe_strains(run: TierRead) -> list[Observation]:
    """Every watched country's catalogue against the strains stored for it."""
    stored = await run.store.entities(run.holder, kind="strain")
    observations: list[Observation] = []
    for country in run.countries:
        previous = {e.resource.id: e for e in stored if e.resource.country == country}
        observations += await _country_strains(run, country, previous)
    return observations


async def _country_strains(
    run: TierRead, country: str, previous: dict[str, Entity]
) -> list[Observation]:
    """One country's catalogue read whole; a stored strain not in it is marked removed."""
    seen: dict[str, Strain] = {}
    pages = run.api.strain_pages(country, take=run.settings.take)
    async for page in counted(run, pages, full=False):
        seen.update({s.id: s for s in page.items if s.id not in seen})
    observations: list[Observation] = []
    for strain in seen.values():
        entity = previous.get(strain.id)
        present = entity if entity and not entity.snapshot.get("removed") else None
        detection = detect_strain(present.snapshot if present else None, strain)
        o = observation(
            Resource("strain", strain.id, country), detection, entity, None, strain.raw, None,
            silent=run.seeding and entity is None,
        )  # fmt: skip
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
