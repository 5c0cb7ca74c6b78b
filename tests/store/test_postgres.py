"""Tests of what only the PostgreSQL store has to get right for speed and for a vanished server:
the delivery claim's plan (it reads about as many rows as it claims, however large the backlog)
and the TCP keepalives its connections carry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from drgreen_poller.config import StoreConfig
from drgreen_poller.store import Store
from drgreen_poller.store.postgres import connect, pg_sql
from drgreen_poller.store.postgres_schema import CLAIM_SQL
from tests.conftest import PgDatabase, pg_store_config
from tests.store.rig import NOW, SINKS

BACKLOG = 2_000
LIMIT = 10
IN_FLIGHT = 500
# A first sync or a receiver's outage leaves a sink's rows due at one and the same time (one
# commit's ``now``): the claim's order then rests on the id alone.
SEED_SQL = f"""
    INSERT INTO events (id, type, holder, resource_key, sequence, observed_at, body)
    SELECT 'evt_' || g, 'order.created', 'shop', 'order/' || g, 1,
        '2026-11-23T10:00:00.000Z', '{{}}'
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


def claim_plan(db: PgDatabase, in_flight: int) -> list[dict[str, Any]]:
    """The nodes of a claim's plan, run on ``BACKLOG`` rows due at one time (statistics
    gathered then, as after a first sync), the first ``in_flight`` of them claimed since."""
    with db.server.connect(db.name) as conn:
        for statement in SEED_SQL.split(";"):
            conn.execute(statement, (NOW.timestamp(),) if "%s" in statement else ())
        conn.execute("ANALYZE")
        conn.execute("UPDATE deliveries SET state = 'delivering' WHERE id <= %s", (in_flight,))
        with conn.transaction(force_rollback=True):  # EXPLAIN ANALYZE marks the rows
            [[explained]] = conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + pg_sql(CLAIM_SQL),
                ("store", NOW.timestamp(), LIMIT, "2026-11-23T10:00:00.000Z", None),
            ).fetchall()
    plan: Any = explained
    return list(plan_nodes(plan[0]["Plan"]))


class TestClaimPlan:
    async def test_a_claim_reads_its_rows_not_the_backlog(self, pg_database: PgDatabase) -> None:
        """With thousands of rows due at one time, a claim of ten reads about ten of them in
        claim order from the index (no sort of the whole backlog)."""
        store = await Store.open(pg_store_config(pg_database), sinks=SINKS)
        await store.close()
        nodes = claim_plan(pg_database, 0)
        read = [n for n in nodes if n.get("Relation Name") == "deliveries"]
        assert read
        assert all(n["Actual Rows"] <= 2 * LIMIT for n in read)
        assert not [n for n in nodes if n["Node Type"] == "Sort"]

    async def test_rows_in_flight_are_looked_at_once(self, pg_database: PgDatabase) -> None:
        """Rows in flight (which hold back another copy of their event) are read once per
        claim, not once per row the claim considers."""
        store = await Store.open(pg_store_config(pg_database), sinks=SINKS)
        await store.close()
        nodes = claim_plan(pg_database, IN_FLIGHT)
        looked_at = sum(n["Actual Rows"] * n["Actual Loops"] for n in nodes)
        assert looked_at <= 3 * (IN_FLIGHT + LIMIT)


SERVER_SIDE = ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
               "tcp_user_timeout")  # fmt: skip


def keepalives_of(store: StoreConfig) -> tuple[dict[str, str], dict[str, str]]:
    """What a connection of the store's carries: libpq's keepalive settings on the daemon's
    socket, and the server's on its end (as the server itself reports them)."""
    with connect(store) as conn:
        client = {
            name: value
            for name, value in conn.info.get_parameters().items()
            if name.startswith("keepalives") or name == "tcp_user_timeout"
        }
        rows = conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(SERVER_SIDE),)
        ).fetchall()
    return client, {row[0]: row[1] for row in rows}


class TestKeepalives:
    def test_derived_from_the_lease_ttl_on_both_ends(self, pg_database: PgDatabase) -> None:
        """With the default 30 s lease, a silent peer is probed after 5 s idle, every 2 s,
        3 times, and unacknowledged data ends the connection after 10 s: both the daemon's
        socket and the server's carry it."""
        client, server = keepalives_of(pg_store_config(pg_database))
        assert client == {
            "keepalives": "1", "keepalives_idle": "5", "keepalives_interval": "2",
            "keepalives_count": "3", "tcp_user_timeout": "10000",
        }  # fmt: skip
        assert server == {
            "tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2",
            "tcp_keepalives_count": "3", "tcp_user_timeout": "10000",
        }  # fmt: skip

    def test_a_short_lease_probes_sooner(self, pg_database: PgDatabase) -> None:
        """A 6 s lease probes after 1 s, every second, and gives up on unacknowledged data
        after 2 s: never rounded down to zero (the kernel's default)."""
        store = replace(pg_store_config(pg_database), lease_ttl_s=6.0)
        client, server = keepalives_of(store)
        assert (client["keepalives_idle"], client["keepalives_interval"]) == ("1", "1")
        assert (server["tcp_keepalives_idle"], server["tcp_user_timeout"]) == ("1", "2000")

    def test_the_url_s_own_settings_win(self, pg_database: PgDatabase) -> None:
        """A URL that sets a keepalive or server options itself keeps them; the rest are
        derived as usual."""
        url = (
            f"{pg_database.url}?keepalives_idle=7&tcp_user_timeout=4000"
            "&options=-c%20tcp_keepalives_count%3D9"
        )
        store = replace(pg_store_config(pg_database), url=url)
        client, server = keepalives_of(store)
        assert (client["keepalives_idle"], client["tcp_user_timeout"]) == ("7", "4000")
        assert client["keepalives_count"] == "3"
        assert server == {
            "tcp_keepalives_idle": "7", "tcp_keepalives_interval": "2",
            "tcp_keepalives_count": "9", "tcp_user_timeout": "4000",
        }  # fmt: skip

    def test_a_url_turning_them_off_is_obeyed(self, pg_database: PgDatabase) -> None:
        """``keepalives=0`` in the URL: no keepalives are set on either end."""
        store = replace(pg_store_config(pg_database), url=f"{pg_database.url}?keepalives=0")
        client, server = keepalives_of(store)
        with pg_database.server.connect(pg_database.name) as plain:
            rows = plain.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(SERVER_SIDE),)
            ).fetchall()
        assert client == {"keepalives": "0"}
        assert server == {row[0]: row[1] for row in rows}  # the kernel's, as with no settings
