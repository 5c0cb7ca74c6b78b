"""Holders whose key Dr Green refuses: their probes, their hold on every tier, their events.

Owns which holders are refused and when each is probed next (loaded once from the marks the
database keeps, so a restarted daemon probes at once and polls nothing before), the one cheap
signed probe per ``retry_s`` (± jitter), and ``poller.holder_unauthorized`` /
``poller.holder_recovered`` committed together with the database's mark. Which run asks, and
when the other tiers run, is ``runner``'s; the timing rules are ``scheduler``'s.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog

from drgreen_poller.changes import Change
from drgreen_poller.clock import Clock
from drgreen_poller.errors import UpstreamError, UpstreamTransient, UpstreamUnauthorized
from drgreen_poller.events import Resource
from drgreen_poller.poller import HolderPoller
from drgreen_poller.scheduler import (
    RETRY_AFTER_CAP_S,
    UNAUTHORIZED_HINT,
    NextRuns,
    jittered,
)
from drgreen_poller.store import Observation
from drgreen_poller.store.roles import RunStateStore

log = structlog.get_logger(__name__)

# Told (holder, "holder", "event", events, 0.0) for each operational event committed: the
# runner's result hook, as tier "holder".
EventHook = Callable[[str, str, str, Sequence[Mapping[str, Any]], float], None]


def describe(exc: Exception) -> str:
    """An error as a log line's ``error`` field (its message, else its class)."""
    return str(exc) or type(exc).__name__


class Refusals:
    """The refused holders of one daemon.

    Args:
        store: the state database (the refusal marks, the events).
        clock: the time source.
        rng: randomness for the probes' jitter.
        on_event: told about each operational event committed (metrics; waking delivery).
        retry_s: the probe interval of a refused holder (``[schedule] unauthorized_retry``).
    """

    def __init__(
        self,
        store: RunStateStore,
        clock: Clock,
        rng: random.Random,
        on_event: EventHook,
        retry_s: float,
    ) -> None:
        self.store = store
        self.clock = clock
        self.rng = rng
        self.on_event = on_event
        self.retry_s = retry_s
        self._next_probe: dict[str, float] | None = None  # loaded at first use

    async def next_probes(self) -> dict[str, float]:
        """Refused holders and when each is probed next; a mark left in the database by an
        earlier run is probed at once, before any tier polls."""
        if self._next_probe is None:
            marked = await self.store.unauthorized_holders()
            # Another holder's run may have loaded (and added to) it meanwhile: keep that one.
            self._next_probe = self._next_probe or dict.fromkeys(marked, 0.0)
        return self._next_probe

    def forget(self, holder: str) -> None:
        """A holder removed by a reload: no probe of it (its mark stays in the database)."""
        if self._next_probe is not None:
            self._next_probe.pop(holder, None)

    async def probe_now(self, holder: str, tiers: Collection[str]) -> NextRuns:
        """When a refused holder gets new keys or comes back: its tiers due now (only a probe
        clears the refusal the database remembers); nothing when it is not refused."""
        refused = await self.next_probes()
        if holder not in refused and holder not in await self.store.unauthorized_holders():
            return {}
        refused[holder] = 0.0
        now = self.clock.now().timestamp()
        return dict.fromkeys(((holder, tier) for tier in tiers), now)

    async def refuse(
        self,
        holder: str,
        tier: str,
        exc: UpstreamUnauthorized,
        *,
        duration_ms: float,
        jitter: float,
        tiers: Collection[str],
        keys_moved: Callable[[], bool],
    ) -> NextRuns:
        """A run met a 401/403: log what to check, emit ``poller.holder_unauthorized`` the
        first time, and hold every tier until the next probe."""
        now = self.clock.now()
        retry_s = jittered(self.retry_s, jitter, self.rng)
        next_probe = now.timestamp() + retry_s
        await self.store.record_failure(
            holder, tier, now=now, error=describe(exc), next_due_at=next_probe
        )
        log.error(
            "holder_unauthorized",
            holder=holder,
            tier=tier,
            outcome="unauthorized",
            duration_ms=duration_ms,
            status=exc.status,
            error=exc.message,
            hint=UNAUTHORIZED_HINT,
            retry_in_s=round(retry_s, 1),
        )
        if holder not in await self.store.unauthorized_holders():
            details = {"status": exc.status, "message": exc.message, "tier": tier}
            await self._event(holder, "poller.holder_unauthorized", details, since=now)
        return await self._hold(holder, next_probe, tiers, keys_moved)

    async def probe(
        self,
        holder: str,
        tier: str,
        poller: HolderPoller,
        *,
        jitter: float,
        tiers: Collection[str],
        fired: Callable[[], Collection[str]],
        keys_moved: Callable[[], bool],
    ) -> NextRuns:
        """One cheap signed call for a refused holder. When it works, ``poller.holder_recovered``
        and every tier due now but those ``fired`` names once the probe is answered (runs
        already under way or queued for the holder poll next anyway: a second job would poll
        them twice); else every tier waits on."""
        now = self.clock.now().timestamp()
        retry_s = jittered(self.retry_s, jitter, self.rng)
        started = self.clock.monotonic()
        try:
            await poller.probe()
        except UpstreamError as exc:
            if isinstance(exc, UpstreamTransient) and exc.retry_after_s is not None:
                retry_s = max(retry_s, min(exc.retry_after_s, RETRY_AFTER_CAP_S))
            refused = isinstance(exc, UpstreamUnauthorized)
            log.warning(
                "holder_still_unauthorized" if refused else "holder_probe_failed",
                holder=holder,
                tier=tier,
                outcome="unauthorized" if refused else "failed",
                duration_ms=self._ms_since(started),
                error=describe(exc),
                retry_in_s=round(retry_s, 1),
            )
            return await self._hold(holder, now + retry_s, tiers, keys_moved)
        await self._event(holder, "poller.holder_recovered", {}, since=None)
        del (await self.next_probes())[holder]
        log.info(
            "holder_recovered",
            holder=holder,
            tier=tier,
            outcome="ok",
            duration_ms=self._ms_since(started),
        )
        busy = fired()
        due = [other for other in tiers if other not in busy or other == tier]
        return dict.fromkeys(((holder, other) for other in due), now)

    async def _hold(
        self, holder: str, next_probe: float, tiers: Collection[str], keys_moved: Callable[[], bool]
    ) -> NextRuns:
        """Refuse the holder until ``next_probe``: every tier waits for it, across a restart. If
        a reload installed new keys since the refused run began, they are probed at once."""
        (await self.next_probes())[holder] = next_probe
        await self.store.postpone(holder, next_probe)
        if keys_moved():
            next_probe = self.clock.now().timestamp()
            (await self.next_probes())[holder] = next_probe
        return dict.fromkeys(((holder, tier) for tier in tiers), next_probe)

    async def _event(
        self, holder: str, kind: str, details: Mapping[str, object], *, since: datetime | None
    ) -> None:
        """The event and the holder's unauthorized mark (``since``; None clears it), together."""
        observation = Observation(
            Resource("holder", holder),
            snapshot={"event": kind},
            tier=None,
            obj={"name": holder},
            changes=[Change(kind, {}, extra=dict(details))],
        )
        committed = await self.store.commit_holder_event(
            holder, observation, now=self.clock.now(), unauthorized_since=since
        )
        self.on_event(holder, "holder", "event", committed.events, 0.0)

    def _ms_since(self, started: float) -> float:
        return round((self.clock.monotonic() - started) * 1000, 1)
