"""Tests of what only the PostgreSQL store has to get right for speed and for a vanished server:
the delivery claim's plan (it reads about as many rows as it claims, however large the backlog)
and the TCP keepalives its connections carry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from drgreen_poller.store import Store
from drgreen_poller.store.postgres import pg_sql
from drgreen_poller.store.postgres_schema import CHOOSE_SQL
from tests.conftest import PgDatabase, pg_store_config
from tests.store.rig import NOW, SINKS

BACKLOG = 2_000
LIMIT = 10
# A first sync or a receiver's outage leaves a sink's rows due at one and the same time (one
# commit's ``now``): the claim's order then rests on the id alone.
SEED_SQL = f"""
    INSERT INTO events (id, type, holder, resource_key, sequence, observed_at, body)
    SELECT 'evt_' || g, 'order.created', 'shop', 'order/' || g, 1, '2026-11-23T10:00:00.000Z', '{{}}'
    FROM generate_series(1, {BACKLOG}) AS g;
    INSERT INTO deliveries (event_id, sink, state, resource_key, sequence, next_attempt_at,
        created_at, updated_at)
    SELECT 'evt_' || g, 'store', 'pending', 'shop/order/' || g, 1, %s,
        '2026-11-23T10:00:00.000Z', '2026-11-23T10:00:00.000Z'
    FROM generate_series(1, {BACKLOG}) AS g
"""  # noqa: S608 - constant text


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A plan node of ``EXPLAIN (FORMAT JSON)`` and every node under it."""
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)


class TestClaimPlan:
    async def test_a_claim_reads_its_rows_not_the_backlog(self, pg_database: PgDatabase) -> None:
        """With thousands of rows due at one time, a claim of ten reads about ten of them in
        claim order from the index (no sort of the whole backlog)."""
        store = await Store.open(pg_store_config(pg_database), sinks=SINKS)
        await store.close()
        with pg_database.server.connect(pg_database.name) as conn:
            for statement in SEED_SQL.split(";"):
                conn.execute(statement, (NOW.timestamp(),) if "%s" in statement else ())
            conn.execute("ANALYZE")
            [[plan]] = conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + pg_sql(CHOOSE_SQL),
                ("store", NOW.timestamp(), LIMIT),
            ).fetchall()
        nodes = list(plan_nodes(plan[0]["Plan"]))
        [due] = [n for n in nodes if n.get("Relation Name") == "deliveries" and n["Alias"] == "d"]
        assert due["Actual Rows"] <= 2 * LIMIT
        assert not [n for n in nodes if n["Node Type"] == "Sort"]
