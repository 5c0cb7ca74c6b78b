"""Tests of the store's transactions: writers sharing one connection, a cancelled commit or
``_atomically`` leaving nothing half-done, and a read the engine refuses becoming a
``StoreError``."""

from __future__ import annotations

from pathlib import Path

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.config import StoreConfig
from drgreen_poller.errors import StoreError
from drgreen_poller.events import Resource
from drgreen_poller.store import Observation, Store
from drgreen_poller.store.dialect import Db
from tests.store.rig import NOW, approved


class TestSharedConnection:
    async def test_concurrent_writers_take_turns(self, store: Store) -> None:
        """The poller and the delivery worker write through one connection without clashing."""
        import asyncio

        async def poll(number: int) -> None:
            observation = Observation(
                Resource("order", f"o-{number}"), {}, None, changes=[Change("order.created", {})]
            )
            await store.commit_events("main", [observation], now=NOW)

        async def deliver() -> None:
            for _ in range(20):
                await store.settle([], NOW, {"store": 5})

        await asyncio.gather(*(poll(n) for n in range(30)), deliver(), deliver())
        assert len(await store.events(limit=0)) == 30


class TestCancellation:
    async def test_cancelled_commit_leaves_no_open_transaction(self, store: Store) -> None:
        """A commit cancelled mid-way (a stop) is rolled back whole; the next one works."""
        import asyncio

        many = [
            Observation(
                Resource("order", f"o-{n}"), {}, None, changes=[Change("order.created", {})]
            )
            for n in range(400)
        ]
        for delay in (0.0, 0.001, 0.003, 0.01):
            task = asyncio.create_task(store.commit_events("main", many, now=NOW))
            await asyncio.wait([task], timeout=delay)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            count = len(await store.events(limit=0))
            assert count % 400 == 0  # all or nothing
        await store.commit_events("main", [approved()], now=NOW)
        assert (await store.events(limit=0))[-1]["type"] == "order.approved"


class TestAtomically:
    """``_atomically``: a whole transaction as one call into the engine's thread (SQLite: the
    one use of aiosqlite's private ``_execute``)."""

    async def test_commits_what_the_work_wrote(self, store: Store) -> None:
        """The work runs in one transaction on the real connection and is committed."""

        def work(conn: Db) -> int:
            conn.execute("INSERT INTO holders (name, added_at) VALUES ('h', 'now')")
            return int(conn.execute("SELECT COUNT(*) FROM holders").fetchone()[0])

        assert await store._atomically(work) == 1
        assert [row[0] for row in await store._rows("SELECT name FROM holders")] == ["h"]
        await store.ensure_holders(["next"], NOW)  # no transaction was left open

    async def test_rolls_back_whole_on_an_error(self, store: Store) -> None:
        """A failing statement rolls the whole transaction back and becomes a ``StoreError``."""

        def work(conn: Db) -> None:
            conn.execute("INSERT INTO holders (name, added_at) VALUES ('h', 'now')")
            conn.execute("INSERT INTO holders (name, added_at) VALUES ('h', 'again')")

        with pytest.raises(StoreError, match=r"(?i)unique"):
            await store._atomically(work)
        assert await store._rows("SELECT name FROM holders") == []
        await store.ensure_holders(["next"], NOW)  # no transaction was left open

    async def test_a_cancelled_caller_does_not_cut_it(self, store: Store) -> None:
        """Cancelling the caller leaves no open transaction; the next write works."""
        import asyncio

        many = [(f"h-{n}", "now") for n in range(2000)]

        def work(conn: Db) -> None:
            conn.executemany("INSERT INTO holders (name, added_at) VALUES (?, ?)", many)

        task = asyncio.create_task(store._atomically(work))
        await asyncio.wait([task], timeout=0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.ensure_holders(["late"], NOW)
        count = (await store._rows("SELECT COUNT(*) FROM holders"))[0][0]
        assert count in (1, 2001)  # all of the work or none of it, and the later write


class TestReadFailures:
    async def test_a_refused_read_is_a_store_error(
        self, store: Store, store_state: Path | StoreConfig
    ) -> None:
        """A tier run's read that the engine refuses (the table is gone) raises StoreError."""
        other = await Store.open(store_state, sinks=())

        def drop(conn: Db) -> None:
            conn.execute("DROP TABLE entities")

        await other._atomically(drop)
        await other.close()
        with pytest.raises(StoreError, match="reading the state database failed"):
            await store.entities("main", kind="order")
