"""State lost or restored: no event id ever names two events, and a README receiver keeps all.

The README tells receivers to deduplicate on ``webhook-id`` and to drop an event whose
``sequence`` is not above the last one applied for its resource (``examples/receiver.py``).
These tests delete the state database, or put an older copy of it back, between runs of a
real poller against the sandbox, and check that receiver against everything the runs emitted.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock
from drgreen_poller.events import Resource
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.ratelimit import TokenBucket
from drgreen_poller.sandbox import LocalSandbox, SandboxState
from drgreen_poller.store import Observation, SinkRoute, Store
from drgreen_poller.store.lineage import backup_database, sidecar_path
from drgreen_poller.tiers import Tier
from tests.example_receiver import dropped_by_example_receiver


def _transition(event: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two events the same transition: who, what, and the values it moved to."""
    moved_to = {k: (event["data"]["object"] or {}).get(k) for k in event["data"]["previous"]}
    return (event["holder"], event["resource"]["id"], event["type"], sorted(moved_to.items()))


def assert_ids_name_one_transition(events: list[dict[str, Any]]) -> None:
    """No id is shared by two different transitions."""
    named: dict[str, tuple[Any, ...]] = {}
    for event in events:
        seen = named.setdefault(event["id"], _transition(event))
        assert seen == _transition(event), f"{event['id']} names two events"


@dataclass
class Shop:
    """A sandbox with one holder and an order, polled by runs over a state file at ``path``."""

    box: LocalSandbox
    clock: FakeClock
    session: aiohttp.ClientSession
    path: Path
    order_id: str = ""
    emitted: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> SandboxState:
        return self.box.state

    async def run(self, *steps: str) -> Store:
        """One daemon run: open the state, sync, then apply each step upstream and poll."""
        self.clock.advance(3600)  # runs are an hour apart
        store = await Store.open(self.path, sinks=[SinkRoute("all", ("*",))], clock=self.clock)
        try:
            poller = self._poller(store)
            await self._poll(poller)
            for step in steps:
                getattr(self.state.lifecycle, step)(self.order_id)
                self.clock.advance(60)
                await self._poll(poller)
        finally:
            await store.close()
        return store

    def _poller(self, store: Store) -> HolderPoller:
        settings = ApiSettings(self.box.base_url, timeout_s=5, requests_per_second=1.0, burst=3)
        bucket = TokenBucket(rate=1.0, burst=10**9, clock=self.clock)
        api = ApiClient(
            self.session, settings, self.holder.credentials, self.clock, bucket=bucket, holder="s"
        )
        return HolderPoller("s", ("GBR",), api, store, self.clock, PollSettings())

    async def _poll(self, poller: HolderPoller) -> None:
        result = await poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)
        self.emitted.extend(result.events)

    @property
    def holder(self) -> Any:
        return self.state.holder("s")

    def delete_state(self) -> None:
        for suffix in ("", "-wal", "-shm", ".lineage"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)

    def put_back(self, copy: Path) -> None:
        """What an operator does to restore: the copy in place, the old journal files gone."""
        for suffix in ("-wal", "-shm"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
        shutil.copyfile(copy, self.path)


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    clock = FakeClock()
    async with LocalSandbox(SandboxState(clock)) as box, aiohttp.ClientSession() as session:
        box.state.create_holder("s")
        made = Shop(box, clock, session, tmp_path / "state.db")
        await made.run()  # the first sync: the holder's history is taken as it is
        made.order_id = box.state.orders.create("s").id
        yield made


class TestStateDeleted:
    async def test_no_id_reused_and_every_event_kept(self, shop: Shop) -> None:
        """After the database is deleted, new transitions get new ids and higher sequences."""
        await shop.run("approve", "pay", "unpay")
        before = len(shop.emitted)
        shop.delete_state()
        store = await shop.run("pay", "unpay", "pay", "ship")
        assert store.lineage.fresh
        after = shop.emitted[before:]
        assert [e["type"] for e in after] == [
            "order.paid",
            "order.payment_status_changed",
            "order.paid",
            "order.shipped",
        ]
        assert_ids_name_one_transition(shop.emitted)
        assert dropped_by_example_receiver(shop.emitted) == []

    async def test_holder_events_on_two_databases_differ(self, tmp_path: Path) -> None:
        """The same kind of holder event in a later, new database is a new id."""
        clock = FakeClock()
        ids = []
        for _ in range(2):
            store = await Store.open(tmp_path / "h.db", clock=clock, sinks=())
            observation = Observation(
                Resource("holder", "main"),
                {"event": "poller.holder_unauthorized"},
                None,
                obj={"name": "main"},
                changes=[Change("poller.holder_unauthorized", {})],
            )
            result = await store.commit_events("main", [observation], now=clock.now())
            ids.append(result.events[0]["id"])
            await store.close()
            (tmp_path / "h.db").unlink()
            clock.advance(60)
        assert ids[0] != ids[1]


class TestStateRestored:
    @pytest.mark.parametrize(
        ("how", "reason"),
        [("backup", "restored from a backup taken at "), ("plain copy", "an older copy was put")],
    )
    async def test_replayed_and_new_events_all_kept(
        self, shop: Shop, tmp_path: Path, how: str, reason: str
    ) -> None:
        """An older copy put back rebases: replayed and new transitions are kept, no id reused.

        ``backup`` marks its copy; a plain copy of a stopped daemon's file is recognised by its
        generation, below the one recorded beside the database.
        """
        await shop.run("approve")
        copy = tmp_path / "copy.db"
        if how == "backup":
            backup_database(shop.path, copy, shop.clock.now())
        else:
            shutil.copyfile(shop.path, copy)
        await shop.run("pay", "unpay")
        before = len(shop.emitted)
        shop.put_back(copy)
        store = await shop.run("pay", "process")
        assert (store.lineage.rebase_reason or "").startswith(reason)
        assert [e["type"] for e in shop.emitted[before:]] == ["order.paid", "order.processing"]
        assert_ids_name_one_transition(shop.emitted)
        assert dropped_by_example_receiver(shop.emitted) == []

    async def test_another_database_at_the_path_is_rebased(
        self, shop: Shop, tmp_path: Path
    ) -> None:
        """A database that is not the one last used at this path counts as restored."""
        await shop.run("approve")
        other = tmp_path / "other" / "state.db"
        other.parent.mkdir()
        await (await Store.open(other, clock=shop.clock, sinks=())).close()
        shop.put_back(other)
        store = await shop.run()
        assert store.lineage.rebase_reason == "another database was put at this path"

    async def test_by_one_within_a_run_forward_at_a_restart(self, shop: Shop) -> None:
        """A resource's sequence rises by one within a run and jumps to the new floor at a start.

        A restart is not told apart from a whole state directory put back from a snapshot, so
        every start numbers above the time it opened.
        """
        await shop.run("approve", "pay")
        store = await shop.run("unpay")
        first, second, third = (e["sequence"] for e in shop.emitted[1:])
        assert second == first + 1
        assert third == store.lineage.sequence_floor + 1 > second
        assert store.lineage.rebase_reason is None
        assert sidecar_path(shop.path).exists()

    async def test_a_snapshot_with_its_lineage_file_keeps_every_event(
        self, shop: Shop, tmp_path: Path
    ) -> None:
        """A whole state directory put back (database and lineage file) loses no event."""
        await shop.run("approve")
        saved = tmp_path / "snapshot"
        saved.mkdir()
        for name in ("state.db", "state.db.lineage"):
            shutil.copyfile(shop.path.with_name(name), saved / name)
        await shop.run("pay", "unpay")
        before = len(shop.emitted)
        shop.put_back(saved / "state.db")
        shutil.copyfile(saved / "state.db.lineage", sidecar_path(shop.path))
        store = await shop.run("reject")
        assert store.lineage.rebase_reason is None  # not recognisable: nothing says it is older
        # Paid and unpaid again meanwhile: upstream shows only the rejection as new.
        assert [e["type"] for e in shop.emitted[before:]] == ["order.rejected"]
        assert_ids_name_one_transition(shop.emitted)
        assert dropped_by_example_receiver(shop.emitted) == []


class TestReaders:
    async def test_a_reader_records_nothing(self, tmp_path: Path) -> None:
        """A reader (a listing, a dry run) counts no start: generation, floor and file stay."""
        clock = FakeClock()
        path = tmp_path / "r.db"
        await (await Store.open(path, clock=clock, sinks=())).close()
        recorded = sidecar_path(path).read_bytes()
        clock.advance(3600)
        reader = await Store.open_reader(path, clock=clock)
        await reader.close()
        writer = await Store.open(path, clock=clock, sinks=())
        await writer.close()
        assert reader.lineage.sequence_floor == writer.lineage.sequence_floor
        assert writer.lineage.generation == reader.lineage.generation + 1 == 2
        assert sidecar_path(path).read_bytes() != recorded
