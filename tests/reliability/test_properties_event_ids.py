"""Property tests of event ids across crashes, lost databases and restored copies (taken by
``backup``, stopped or hot): an id names one transition only, and the README's receiver keeps
every event.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drgreen_poller.changes import (
    Detection,
    Snapshot,
    detect_order,
    detect_strain,
)
from drgreen_poller.clock import FakeClock
from drgreen_poller.events import Resource
from drgreen_poller.models import parse_order, parse_strain
from drgreen_poller.store import Observation, Store
from drgreen_poller.store.lineage import backup_database
from tests.example_receiver import dropped_by_example_receiver
from tests.reliability.properties import (
    PROPERTY_ON_DISK,
    PROPERTY_TIMEOUT_S,
    order_records,
    strain_records,
)

HOLDER = "shop"
ORDER_RESOURCES = [Resource("order", "o-1"), Resource("order", "o-2")]
# One strain listed in two countries: one resource per country (design §3.6).
STRAIN_RESOURCES = [Resource("strain", "s-1", "GBR"), Resource("strain", "s-1", "ZAF")]
DETECT: dict[str, tuple[Callable[[Snapshot | None, Any], Detection], Callable[[Any], Any]]] = {
    "order": (detect_order, parse_order),
    "strain": (detect_strain, parse_strain),
}
# How a copy of the state is taken: ``backup PATH`` while the daemon runs, the file copied while
# it is stopped, or a file-system snapshot while it runs (database, WAL and lineage file).
COMMAND, STOPPED, HOT = "backup command", "stopped copy", "hot copy"
STATE_FILES = ("state.db", "state.db-wal", "state.db.lineage")


@dataclass
class History:
    """A state database living through polls, crashes, losses and restores, on a fake clock."""

    directory: Path
    clock: FakeClock = field(default_factory=FakeClock)
    store: Store | None = None
    backups: list[Path] = field(default_factory=list)
    committed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.directory / "state.db"

    async def open(self) -> Store:
        if self.store is None:
            self.store = await Store.open(self.path, clock=self.clock, sinks=())
            await self.store.ensure_holders([HOLDER], self.clock.now())
        return self.store

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def poll(self, resource: Resource, record: dict[str, Any], *, crash: bool) -> None:
        """One poll of ``resource``; after a ``crash`` its commit was lost and it runs again."""
        store = await self.open()
        entity = (await store.entities_by_key(HOLDER, [resource.key])).get(resource.key)
        previous = entity.snapshot if entity and not entity.snapshot.get("removed") else None
        detect, parse = DETECT[resource.type]
        detection = detect(previous, parse({**record, "id": resource.id}))
        observation = Observation(
            resource, detection.snapshot, tier=None, obj=detection.shown,
            changes=detection.changes, expected_sequence=entity.sequence if entity else 0,
        )  # fmt: skip
        now = self.clock.now()
        lost = await store.preview(HOLDER, [observation], now=now) if crash else None
        result = await store.commit_events(HOLDER, [observation], now=now)
        if lost is not None:  # derived again from the same state: the same ids
            assert [e["id"] for e in result.events] == [e["id"] for e in lost]
        self.committed += result.events

    async def backup(self, how: str) -> None:
        """Keep a copy of the state, taken ``how``."""
        target = self.directory / f"backup-{len(self.backups)}"
        target.mkdir()
        await self.open()
        if how == COMMAND:
            backup_database(self.path, target / "state.db", self.clock.now())
        else:
            if how == STOPPED:
                await self.close()
            for name in STATE_FILES:
                if (self.directory / name).exists():
                    shutil.copyfile(self.directory / name, target / name)
        self.backups.append(target)

    async def replace(self, source: Path | None, *, whole_directory: bool) -> None:
        """The database deleted (``source`` None) or a copy put back, then a restart.

        ``whole_directory``: the lineage file goes too (deleted, or put back from the copy).
        """
        await self.close()
        for name in ("state.db", "state.db-wal", "state.db-shm", "state.db.lineage"):
            if whole_directory or not name.endswith(".lineage"):
                (self.directory / name).unlink(missing_ok=True)
        if source is None:
            return
        for name in STATE_FILES:
            copy = source / name
            if copy.exists() and (whole_directory or not name.endswith(".lineage")):
                shutil.copyfile(copy, self.directory / name)


async def _live(directory: Path, steps: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Run ``steps`` over a fresh state; the events committed, in commit order."""
    history = History(directory)
    try:
        for step in steps:
            history.clock.advance(1.0)
            match step:
                case ("poll", resource, record, crash):
                    await history.poll(resource, record, crash=crash)
                case ("backup", how):
                    await history.backup(how)
                case ("lose", whole_directory):
                    await history.replace(None, whole_directory=whole_directory)
                case ("restore", index, whole_directory) if history.backups:
                    source = history.backups[index % len(history.backups)]
                    await history.replace(source, whole_directory=whole_directory)
    finally:
        await history.close()
    return history.committed


def _steps(
    resources: list[Resource],
    records: st.SearchStrategy[Any],
    copies: list[str],
    lineage_lost: bool,
) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """Polls, crashes, copies, losses and restores; ``lineage_lost``: the lineage file may go
    with the database (deleted with it, or put back from the copy)."""
    whole_directory = st.booleans() if lineage_lost else st.just(False)
    return st.lists(
        st.one_of(
            st.tuples(st.just("poll"), st.sampled_from(resources), records, st.booleans()),
            st.tuples(st.just("backup"), st.sampled_from(copies)),
            st.tuples(st.just("lose"), whole_directory),
            st.tuples(st.just("restore"), st.integers(0, 9), whole_directory),
        ),
        max_size=14,
    )


def _run(steps: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as directory:
        return asyncio.run(_live(Path(directory), steps))


def _transition(event: dict[str, Any]) -> tuple[Any, ...]:
    """What an id must name: one resource's event of one type, from these values, at this place."""
    resource = event["resource"]
    where = (resource["type"], resource.get("country"), resource["id"], event["sequence"])
    return (*where, event["type"], json.dumps(event["data"]["previous"], sort_keys=True))


def _check_ids_and_receiver(events: list[dict[str, Any]]) -> None:
    """No id names two transitions; examples/receiver.py keeps every event it has not seen."""
    named: dict[str, tuple[Any, ...]] = {}
    for event in events:
        assert named.setdefault(event["id"], _transition(event)) == _transition(event), event
    stale = [event for why, event in dropped_by_example_receiver(events) if why == "stale"]
    assert stale == [], f"real events dropped as stale: {stale}"


class TestEventIds:
    @pytest.mark.timeout(PROPERTY_TIMEOUT_S)
    @PROPERTY_ON_DISK
    @given(steps=_steps(ORDER_RESOURCES, order_records, [COMMAND, STOPPED], False))
    def test_no_id_names_two_events(self, steps: list[tuple[Any, ...]]) -> None:
        """Across crashes, lost databases and restored copies, an id names one transition only
        and the README's receiver (dedupe on id, drop stale by sequence) keeps every event."""
        _check_ids_and_receiver(_run(steps))

    @pytest.mark.timeout(PROPERTY_TIMEOUT_S)
    @PROPERTY_ON_DISK
    @given(steps=_steps(ORDER_RESOURCES, order_records, [HOT, STOPPED], True))
    @example(
        steps=[
            ("poll", ORDER_RESOURCES[0], {"adminApproval": "PENDING"}, False),
            ("backup", HOT),
            ("poll", ORDER_RESOURCES[0], {"adminApproval": "VERIFIED"}, False),
            ("restore", 0, False),
            ("poll", ORDER_RESOURCES[0], {"adminApproval": "REJECTED"}, False),
        ]
    )
    def test_restored_snapshots_keep_every_event(self, steps: list[tuple[Any, ...]]) -> None:
        """A snapshot of the running state, or a copy without its lineage file, loses no event."""
        _check_ids_and_receiver(_run(steps))

    @pytest.mark.timeout(PROPERTY_TIMEOUT_S)
    @PROPERTY_ON_DISK
    @given(steps=_steps(STRAIN_RESOURCES, strain_records, [COMMAND, STOPPED], False))
    @example(
        steps=[
            ("poll", STRAIN_RESOURCES[0], {"retailPrice": 10}, False),
            ("poll", STRAIN_RESOURCES[1], {"retailPrice": 10}, False),
        ]
    )
    def test_readme_receiver_keeps_every_strain_event(self, steps: list[tuple[Any, ...]]) -> None:
        """A strain listed in two countries: the README's receiver keeps both countries' events."""
        _check_ids_and_receiver(_run(steps))
