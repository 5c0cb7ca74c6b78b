"""The event contract: the schemas under ``schemas/``, and what ``data.previous`` means.

Every event type comes out of real tier runs against the sandbox (and a refused key), and each
event must match its schemas (``contract.problems``); the schema files must be exactly the
types the code can emit, shipped in the package as they are in the repository. A receiver diffs
``previous`` against ``object``: each key of ``previous`` must be a field of ``object`` with
the same meaning and the same JSON type, and the value must have moved.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock
from drgreen_poller.contract import EVENT_TYPES
from drgreen_poller.events import Resource, envelope, iso_ms
from drgreen_poller.tiers import Tier
from tests.conftest import World
from tests.contract_check import problems
from tests.scenarios import EVERY_TYPE, HOLDER_TYPES, every_event


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string"}.get(
        type(value), type(value).__name__
    )


def _contract_breaks(event: dict[str, Any]) -> list[str]:
    """What in ``event`` breaks the contract (empty when it holds)."""
    obj, previous = event["data"]["object"], event["data"]["previous"]
    problems = []
    for key, before in previous.items():
        if not isinstance(obj, dict) or key not in obj:
            problems.append(f"{event['type']}: previous.{key} is not a field of object")
        elif _json_type(before) != _json_type(obj[key]):
            problems.append(
                f"{event['type']}: previous.{key} is {_json_type(before)} {before!r}, "
                f"object.{key} is {_json_type(obj[key])} {obj[key]!r}"
            )
    return problems


class TestPreviousMatchesObject:
    @pytest.mark.timeout(30)
    async def test_every_event_type(self, make_world: Callable[..., Any]) -> None:
        """For every event type, each key of previous is a field of object of the same type."""
        events = await every_event(await make_world(first_sync="seed"))
        assert {e["type"] for e in events} == EVERY_TYPE | set(HOLDER_TYPES)
        assert [p for e in events for p in _contract_breaks(e)] == []

    async def test_strain_stock_is_the_countrys(self, make_world: Callable[..., Any]) -> None:
        """A strain's stock in previous and object is its country's stock, as an integer."""
        world: World = await make_world()
        await world.poll(Tier.STRAINS)
        strain = world.state.catalogue.create("Kush", locations={"GBR": 300, "ZAF": 588})
        await world.poll(Tier.STRAINS)
        world.state.catalogue.set_location(strain.id, "GBR", {"stockQuantity": 495})
        await world.poll(Tier.STRAINS)
        [updated] = await world.store.events(patterns=["strain.updated"])
        assert updated["data"]["previous"] == {"stockQuantity": 300}
        assert updated["data"]["object"]["stockQuantity"] == 495

    def test_holder_events_carry_no_previous(self) -> None:
        """Operational events have an empty previous, so they cannot mislead a diff."""
        for kind in HOLDER_TYPES:
            event = envelope(
                holder="main",
                resource=Resource("holder", "main"),
                sequence=1,
                change=Change(kind, {}),
                observed_at=FakeClock().now(),
                obj={"name": "main"},
            )
            assert _contract_breaks(event) == []
            assert event["data"]["previous"] == {}


class TestIsoMs:
    @pytest.mark.parametrize(
        ("moment", "text"),
        [
            (datetime(2026, 11, 23, 10, 0, 3, 512999, tzinfo=UTC), "2026-11-23T10:00:03.512Z"),
            (datetime(2026, 11, 23, 10, 0, 3, tzinfo=UTC), "2026-11-23T10:00:03.000Z"),
            (
                datetime(2026, 11, 23, 11, 0, 3, 7000, tzinfo=timezone(timedelta(hours=1))),
                "2026-11-23T10:00:03.007Z",
            ),
        ],
    )
    def test_utc_with_milliseconds(self, moment: datetime, text: str) -> None:
        """Timestamps read as Dr Green writes them: UTC, milliseconds cut (not rounded), Z."""
        assert iso_ms(moment) == text


class TestEventsMatchTheirSchemas:
    @pytest.mark.timeout(30)
    async def test_every_type_from_real_tier_runs(self, make_world: Callable[..., Any]) -> None:
        """Every type the code emits, from real tier runs, matches the envelope and data schemas."""
        events = await every_event(await make_world(first_sync="seed"))
        assert {e["type"] for e in events} == set(EVENT_TYPES)
        assert [p for e in events for p in problems(e)] == []

    async def test_first_sync_emit_matches(self, make_world: Callable[..., Any]) -> None:
        """The *.created events of first_sync = "emit" match their schemas too."""
        world: World = await make_world(first_sync="emit")
        world.state.orders.create("shop")
        world.state.clients.create("shop")
        world.state.catalogue.create("Emit Kush", locations={"GBR": 10})
        for tier in (Tier.ACTIVE_ORDERS, Tier.PENDING_KYC, Tier.STRAINS, Tier.COMMISSIONS):
            await world.poll(tier)
        events = await world.store.events(limit=0)
        assert {"order.created", "client.created", "strain.created"} <= {e["type"] for e in events}
        assert [p for e in events for p in problems(e)] == []
