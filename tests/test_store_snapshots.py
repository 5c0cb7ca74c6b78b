"""Tests of the tiers' entities as a run reads them: always what the database holds, whoever
wrote it. SQLite keeps them in memory (and refuses a commit that relied on them once another
connection wrote); PostgreSQL reads them each time. The contract runs on both (``store``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.config import StoreConfig
from drgreen_poller.errors import StaleTier
from drgreen_poller.events import Resource
from drgreen_poller.store import Entity, Observation, SinkRoute, Store
from drgreen_poller.store.snapshots import SHARED_SNAPSHOTS_MAX, TierEntities

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 23, 10, 1, 0, tzinfo=UTC)
ACTIVE, STALE = "active_orders", "stale_orders"
PENDING = {"orderStatus": "PENDING", "adminApproval": "PENDING", "paymentStatus": "PENDING"}
SINKS = [SinkRoute("audit", ("*",))]


def _order(number: int) -> Resource:
    return Resource("order", f"00000000-0000-4000-8000-{number:012d}")


def _seen(
    number: int,
    tier: str | None,
    snapshot: dict[str, str] = PENDING,
    created_at: str | None = "2026-11-20T10:00:00.000Z",
    *,
    changes: tuple[Change, ...] = (),
) -> Observation:
    return Observation(
        _order(number), snapshot, tier, {"id": _order(number).id}, created_at, changes
    )


async def _write_elsewhere(state: Path | StoreConfig) -> None:
    """Another connection (as the CLI's) tracks order 9 and moves order 1 on to PROCESSING."""
    other = await Store.open(state, sinks=SINKS)
    try:
        await other.track("main", _order(9), ACTIVE, NOW)
        changed = _seen(1, ACTIVE, {**PENDING, "orderStatus": "PROCESSING"})
        await other.commit_events("main", [changed], now=NOW)
    finally:
        await other.close()


async def _from_the_database(store: Store, holder: str, tier: str) -> list[Entity]:
    """The orders of ``tier`` read from the rows (a read with no kind is never kept)."""
    return [e for e in await store.entities(holder, tier=tier) if e.resource.type == "order"]


@pytest.fixture
async def store(store_state: Path | StoreConfig) -> AsyncIterator[Store]:
    """The store on each engine (``store_state``)."""
    opened = await Store.open(store_state, sinks=SINKS)
    yield opened
    await opened.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    """The store on SQLite, the engine that keeps tiers in memory."""
    opened = await Store.open(tmp_path / "state.db", sinks=SINKS)
    yield opened
    await opened.close()


class TestKeptTiers:
    async def test_own_commits_keep_every_tier_as_the_database_has_it(self, store: Store) -> None:
        """After each commit of this connection (new, changed, moved, gone entities, with and
        without a creation time, an empty one) the kept tiers equal their rows, in order."""
        approved = {**PENDING, "adminApproval": "VERIFIED"}
        steps = [
            [_seen(5, ACTIVE), _seen(3, ACTIVE), _seen(8, ACTIVE), _seen(1, "pending_kyc")],
            [_seen(3, ACTIVE, approved, None, changes=(Change("order.approved", {}),))],
            [_seen(8, STALE)],
            [_seen(5, None), _seen(2, ACTIVE, created_at=None)],
            [_seen(8, ACTIVE, approved, "2026-11-21T00:00:00.000Z")],
            [_seen(2, ACTIVE, created_at="")],
        ]
        await store.commit_events("main", steps[0], now=NOW)
        for tier in (ACTIVE, STALE):
            await store.entities("main", kind="order", tier=tier)  # read: kept from now on
        for step in steps[1:]:
            await store.commit_poll("main", ACTIVE, step, now=NOW, next_due_at=0)
            for tier in (ACTIVE, STALE):
                kept = await store.entities("main", kind="order", tier=tier)
                assert kept == await _from_the_database(store, "main", tier)
        kept = await store.entities("main", kind="order", tier=ACTIVE)
        assert [(e.resource, e.sequence) for e in kept] == [
            (_order(2), 0),
            (_order(3), store.lineage.sequence_floor + 1),
            (_order(8), 0),
        ]

    async def test_another_connections_writes_are_in_the_next_read(
        self, store: Store, store_state: Path | StoreConfig
    ) -> None:
        """What another connection committed is in the tier the next run reads, and that run
        commits against it."""
        await store.commit_events("main", [_seen(1, ACTIVE), _seen(2, ACTIVE)], now=NOW)
        await store.entities("main", kind="order", tier=ACTIVE)
        await store.commit_poll("main", ACTIVE, [], now=NOW, next_due_at=0)
        await _write_elsewhere(store_state)
        await store.entities("main", kind="order", tier=ACTIVE)  # the next run's read
        with contextlib.suppress(StaleTier):  # SQLite: the tier was kept from before the commit
            await store.commit_poll("main", ACTIVE, [], now=NOW, next_due_at=0)
        kept = await store.entities("main", kind="order", tier=ACTIVE)
        assert [e.snapshot.get("orderStatus", "tracked") for e in kept] == [
            "PROCESSING",
            "PENDING",
            "tracked",
        ]
        await store.commit_poll("main", ACTIVE, [_seen(3, ACTIVE)], now=LATER, next_due_at=0)
        assert len(await store.entities("main", kind="order", tier=ACTIVE)) == 4

    async def test_a_commit_after_another_connections_commit_is_refused(
        self, sqlite_store: Store, tmp_path: Path
    ) -> None:
        """After another connection committed (the CLI's ``track``, a changed snapshot), a
        commit relying on the kept tier is refused with nothing written, and the tier is read
        again: the next read has what the other connection wrote."""
        store = sqlite_store
        await store.commit_events("main", [_seen(1, ACTIVE), _seen(2, ACTIVE)], now=NOW)
        await store.entities("main", kind="order", tier=ACTIVE)
        await store.commit_poll("main", ACTIVE, [], now=NOW, next_due_at=0)
        await _write_elsewhere(tmp_path / "state.db")
        await store.entities("main", kind="order", tier=ACTIVE)  # kept: what a run compares
        with pytest.raises(StaleTier):
            await store.commit_poll("main", ACTIVE, [_seen(3, ACTIVE)], now=LATER, next_due_at=0)
        assert [(r.tier, r.last_success_at) for r in await store.tier_runs("main")] == [
            (ACTIVE, "2026-11-23T10:00:00.000Z")
        ]
        kept = await store.entities("main", kind="order", tier=ACTIVE)
        assert kept == await _from_the_database(store, "main", ACTIVE)
        assert [e.snapshot.get("orderStatus", "tracked") for e in kept] == [
            "PROCESSING",
            "PENDING",
            "tracked",
        ]
        await store.commit_poll("main", ACTIVE, [], now=LATER, next_due_at=0)  # read afresh

    async def test_a_preview_after_another_connections_commit_is_refused(
        self, sqlite_store: Store, tmp_path: Path
    ) -> None:
        """A dry run's preview relying on a kept tier another connection has since written to
        is refused the same way."""
        store = sqlite_store
        await store.commit_events("main", [_seen(1, ACTIVE)], now=NOW)
        await store.entities("main", kind="order", tier=ACTIVE)
        await store.commit_poll("main", ACTIVE, [], now=NOW, next_due_at=0)
        await store.entities("main", kind="order", tier=ACTIVE)
        assert await store.preview("main", [], now=NOW) == []  # nothing written elsewhere yet
        await store.entities("main", kind="order", tier=ACTIVE)
        await _write_elsewhere(tmp_path / "state.db")
        with pytest.raises(StaleTier):
            await store.preview("main", [], now=NOW)

    async def test_a_commit_that_read_nothing_kept_is_not_checked(
        self, store: Store, store_state: Path | StoreConfig
    ) -> None:
        """A run that compared with no kept tier (commissions, say) commits whatever another
        connection wrote meanwhile."""
        await store.commit_events("main", [_seen(1, ACTIVE)], now=NOW)
        await _write_elsewhere(store_state)
        await store.commit_poll("main", "commissions", [], now=NOW, next_due_at=0)
        assert [r.tier for r in await store.tier_runs("main")] == ["commissions"]

    async def test_own_track_is_read_again(self, store: Store) -> None:
        """An entity this connection tracks into a kept tier is in its next read."""
        await store.commit_events("main", [_seen(1, ACTIVE)], now=NOW)
        await store.entities("main", kind="order", tier=ACTIVE)
        await store.track("main", _order(4), ACTIVE, NOW)
        kept = await store.entities("main", kind="order", tier=ACTIVE)
        assert [e.resource for e in kept] == [_order(1), _order(4)]

    async def test_a_cancelled_commit_that_went_through_is_read_again(self, store: Store) -> None:
        """A commit whose caller was cancelled while SQLite's thread ran it (it commits all the
        same) does not leave the kept tier behind the database."""
        await store.commit_events("main", [_seen(1, ACTIVE)], now=NOW)
        await store.entities("main", kind="order", tier=ACTIVE)
        task = asyncio.create_task(store.commit_events("main", [_seen(1, STALE)], now=NOW))
        await asyncio.wait([task], timeout=0)  # the commit is queued for SQLite's thread
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert await _from_the_database(store, "main", ACTIVE) == []  # it did commit
        assert await store.entities("main", kind="order", tier=ACTIVE) == []

    async def test_equal_snapshots_share_one_dict(self, store: Store) -> None:
        """Entities stored with the same snapshot share one dict (the memory a tier keeps)."""
        await store.commit_events("main", [_seen(n, ACTIVE) for n in range(3)], now=NOW)
        kept = await store.entities("main", kind="order", tier=ACTIVE)
        assert len({id(e.snapshot) for e in kept}) == 1


class TestSharedSnapshots:
    def test_the_table_of_shared_snapshots_is_bounded(self) -> None:
        """Past ``SHARED_SNAPSHOTS_MAX`` distinct texts the table starts over; values stay right."""
        tiers = TierEntities()
        first = tiers.snapshot('{"n":0}')
        for n in range(1, SHARED_SNAPSHOTS_MAX + 1):
            assert tiers.snapshot(f'{{"n":{n}}}') == {"n": n}
        again = tiers.snapshot('{"n":0}')
        assert again == first
        assert again is not first
