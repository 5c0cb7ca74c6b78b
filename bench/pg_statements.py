"""What the PostgreSQL server does for each delivered event: the delivery loop's statements seen
from the server during a real drain.

The backlog bench's state (N real ``order.created`` events due at one time, from the poller's
first sync) in a database of a server started with ``pg_stat_statements``; the real daemon
(``drgreen-poller run``, one or two instances) drains it to the bench's receiver. When 40 % is
delivered, another connection takes ``EXPLAIN (ANALYZE, BUFFERS)`` of each of the loop's
statements as the daemon runs them (the claim of one sink, recording attempts, moving rows on,
the next due time), with the custom and the generic plan (psycopg prepares a statement after
five runs, and PostgreSQL may then keep a generic plan), in a transaction rolled back, and the
tables' and indexes' counters (dead rows, HOT updates, index entries read). At the end: each
statement's calls, time and rows (``pg_stat_statements``), the drain's rate and the server's
CPU per event. It prints its report; nothing is appended to BENCHMARKS.md.

    .venv/bin/python bench/pg_statements.py [--events 20000] [--concurrency 16] [--instances 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import CLOCK, receiver
from _delivery import SINK, Backlog, backlog, run_daemon
from _pg import POSTGRESQL, Postgres, Setup, postgres
from psycopg import sql as pgsql

from drgreen_poller import logs
from drgreen_poller.store.claims import _NEXT_OF_SINK_SQL, CLAIMS
from drgreen_poller.store.postgres import pg_sql

STATISTICS = ("shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all")
EXPLAINED_AT = 0.4  # of the events delivered
CLAIM_ROWS = 32
STAMP = "2026-11-30T10:00:00.000Z"
TOP_STATEMENTS = """
    SELECT calls, round(total_exec_time::numeric, 1), round((total_exec_time / calls)::numeric, 3),
        rows, shared_blks_hit, shared_blks_dirtied, wal_bytes,
        left(regexp_replace(query, '\\s+', ' ', 'g'), 90)
    FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 8
"""
TABLES = """
    SELECT relname, n_tup_upd, n_tup_hot_upd, n_dead_tup, autovacuum_count
    FROM pg_stat_user_tables WHERE relname IN ('deliveries', 'attempts') ORDER BY relname
"""
INDEXES = """
    SELECT indexrelname, idx_scan, idx_tup_read, idx_tup_fetch FROM pg_stat_user_indexes
    WHERE relname = 'deliveries' ORDER BY indexrelname
"""


def statements(ids: str, now_s: float) -> list[tuple[str, str, tuple[Any, ...]]]:
    """The loop's statements with the values one turn of it passes: a claim of ``CLAIM_ROWS``
    (one statement, or this build's three), then the record of ``ids`` as delivered."""
    loop = CLAIMS["postgresql"]
    instance = "bench"
    attempts = json.dumps([[i, 1, STAMP, 1.0, 1, 204, None, None] for i in json.loads(ids)])
    claim = (SINK, now_s, CLAIM_ROWS, STAMP, instance)
    found: list[tuple[str, str, tuple[Any, ...]]] = [("claim", loop.choose, claim)]
    if loop.claimed is not None and loop.mark_delivering is not None:  # an older build's three
        found = [
            ("choose", loop.choose, (SINK, now_s, CLAIM_ROWS)),
            ("mark_delivering", loop.mark_delivering, (STAMP, instance, ids)),
            ("claimed", loop.claimed, (ids,)),
        ]
    return [
        *found,
        ("insert_attempts", loop.insert_attempts, (attempts, instance)),
        ("move_on", loop.move_on, ("delivered", 1, None, "204", STAMP, ids, 1, instance)),
        ("next_due", _NEXT_OF_SINK_SQL, (SINK, now_s)),
    ]


def numbered(text: str) -> str:
    """psycopg's ``%s`` placeholders as PREPARE takes them: ``$1``, ``$2``, ..."""
    parts = text.split("%s")
    out = parts[0]
    for n, part in enumerate(parts[1:], 1):
        out += f"${n}{part}"
    return out.replace("%%", "%")


def explain(pg: Postgres, database: str, now_s: float) -> list[str]:
    """Each statement's plans (custom, then generic) on ``database`` as it is, rolled back."""
    lines: list[str] = []
    with pg.server.connect(database) as conn:
        conn.autocommit = False
        [[ids]] = conn.execute(
            "SELECT json_agg(id)::text FROM (SELECT id FROM deliveries WHERE state = 'pending'"
            " ORDER BY next_attempt_at, id OFFSET 1000 LIMIT %s) AS later",
            (CLAIM_ROWS,),
        ).fetchall()
        for mode in ("force_custom_plan", "force_generic_plan"):
            conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
            for name, text, params in statements(str(ids), now_s):
                conn.execute(f"PREPARE {name}_{mode[6]} AS {numbered(pg_sql(text))}")
                values = pgsql.SQL(", ").join(pgsql.Literal(v) for v in params)
                run = pgsql.SQL("EXPLAIN (ANALYZE, BUFFERS) EXECUTE {}({})").format(
                    pgsql.Identifier(f"{name}_{mode[6]}"), values
                )
                conn.execute("SAVEPOINT plan")
                plan = [str(row[0]) for row in conn.execute(run)]
                conn.execute("ROLLBACK TO SAVEPOINT plan")
                lines += [f"--- {name}, {mode}", *plan]
        for query in (TABLES, INDEXES):
            lines += [" | ".join(map(str, row)) for row in conn.execute(query)]
        conn.rollback()
    return lines


async def explain_midway(pg: Postgres, events: Backlog) -> list[str]:
    """The plans on the run's database once ``EXPLAINED_AT`` of its events are delivered."""
    while True:
        with pg.server.connect() as conn:
            names = [
                str(row[0])
                for row in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'bench%%'"
                    " AND datname <> %s ORDER BY oid",
                    (events.pg_seed,),
                )
            ]
        if names:
            with pg.server.connect(names[-1]) as conn:
                row = conn.execute("SELECT count(*) FILTER (WHERE state = 'delivered'),"
                                   " count(*) FROM deliveries").fetchone()  # fmt: skip
            delivered, every = (int(str(value)) for value in row or (0, 0))
            if delivered >= EXPLAINED_AT * every > 0:
                return await asyncio.to_thread(explain, pg, names[-1], CLOCK.now().timestamp())
        await CLOCK.sleep(0.2)


async def main(args: argparse.Namespace) -> None:
    logs.configure("warning", "console", stream=sys.stderr)
    setup = Setup(POSTGRESQL, args.instances)
    with tempfile.TemporaryDirectory() as tmp, postgres([setup], STATISTICS) as pg:
        assert pg is not None
        with pg.server.connect() as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        async with backlog(args.events, Path(tmp), pg) as events, receiver() as target:
            with pg.server.connect() as conn:
                conn.execute("SELECT pg_stat_statements_reset()")
            midway = asyncio.create_task(explain_midway(pg, events))
            run = await run_daemon(events, target, args.concurrency, Path(tmp) / "run", setup)
            plans = await midway
        with pg.server.connect() as conn:
            top = [" | ".join(map(str, row)) for row in conn.execute(TOP_STATEMENTS)]
    rate = args.events / run.received.window_s()
    print(f"{args.events:,} events, concurrency {args.concurrency}, {setup.label}: {rate:,.0f}"
          f" events/s; server CPU {run.cpu.server_us:.0f} µs/event")  # fmt: skip
    print("calls | total ms | mean ms | rows | blocks hit | dirtied | WAL bytes | statement")
    print("\n".join([*top, *plans]))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--instances", type=int, choices=(1, 2), default=1)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
