"""Several daemons on one PostgreSQL database: the instance registry, the holders' leases and the
fence a holder's writes pass.

Owns the SQL of ``instances`` (id, host, pid, started, last heartbeat) and ``leases`` (a holder,
the instance holding it, its fencing token and when it expires), all timed by the DATABASE's
clock (``clock_timestamp()``), never a process's. A round (``share_holders``) heartbeats, returns
the deliveries of instances gone quiet to pending, renews this instance's leases and evens them
out: an instance holds about ``ceil(holders / live instances)`` of them, taking free or expired
ones (each take increments the token) and naming any beyond its share, which it hands back
(``release_leases``) once it has stopped polling them. ``Fence`` checks,
inside a holder's write transaction, that the lease and its token are still this instance's.
It decides nothing about when rounds run or what a held holder polls (``sharing`` does).
PostgreSQL only: SQLite keeps its one-daemon lock.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from drgreen_poller.errors import LeaseLost
from drgreen_poller.events import iso_ms
from drgreen_poller.store.connection import Connection
from drgreen_poller.store.dialect import Db

_NAMES = "SELECT value FROM json_array_elements_text(?::json)"
_TTL = "? * interval '1 second'"
_REGISTER_SQL = (
    "INSERT INTO instances (id, host, pid) VALUES (?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET heartbeat_at = clock_timestamp()"
)
# Deliveries in flight on an instance that stopped heartbeating go back to pending (retried
# under the same event ids), and the instance leaves the registry.
_RECLAIM_SQL = f"""
    UPDATE deliveries SET state = 'pending', claimed_by = NULL, updated_at = ?
    WHERE state = 'delivering' AND claimed_by IS NOT NULL AND claimed_by NOT IN (
        SELECT id FROM instances WHERE heartbeat_at >= clock_timestamp() - {_TTL})
"""  # noqa: S608 - constant text
_FORGET_GONE_SQL = f"DELETE FROM instances WHERE heartbeat_at < clock_timestamp() - {_TTL}"  # noqa: S608 - constant text
_LIVE_SQL = f"SELECT count(*) FROM instances WHERE heartbeat_at >= clock_timestamp() - {_TTL}"  # noqa: S608 - constant text
_ENSURE_SQL = f"INSERT INTO leases (holder) {_NAMES} ON CONFLICT DO NOTHING"
# A lease still marked ours was taken by no one since (a take moves it): renewing keeps its token.
_RENEW_SQL = f"""
    UPDATE leases SET expires_at = clock_timestamp() + {_TTL}
    WHERE instance = ? AND holder IN ({_NAMES})
    RETURNING holder, token
"""  # noqa: S608 - constant text
_TAKE_SQL = f"""
    WITH chosen AS (
        SELECT holder, instance AS previous FROM leases
        WHERE holder IN ({_NAMES})
          AND (instance IS NULL OR expires_at < clock_timestamp())
        ORDER BY holder LIMIT ?
        FOR UPDATE SKIP LOCKED)
    UPDATE leases SET instance = ?, token = leases.token + 1,
        acquired_at = clock_timestamp(), expires_at = clock_timestamp() + {_TTL}
    FROM chosen WHERE leases.holder = chosen.holder
    RETURNING leases.holder, leases.token, chosen.previous
"""  # noqa: S608 - constant text
_RELEASE_SQL = f"""
    UPDATE leases SET instance = NULL, expires_at = NULL
    WHERE instance = ? AND holder IN ({_NAMES})
"""  # noqa: S608 - constant text
_FENCE_SQL = (
    "SELECT 1 FROM leases WHERE holder = ? AND instance = ? AND token = ?"
    " AND expires_at > clock_timestamp() FOR SHARE"
)
# Seconds until the earliest expiry still to come among other instances' leases of ``holders``
# and other instances' heartbeats (+ TTL): when a takeover or a reclaim can next happen (0: at
# once). Expiries past before the round began are left out: a lease this instance did not take
# at its share is no reason to come back sooner; one that passed during the round (a slow
# database: after its reclaim or take had looked) is.
_NEXT_EXPIRY_SQL = f"""
    SELECT EXTRACT(EPOCH FROM MIN(upcoming.at) - clock_timestamp()) FROM (
        SELECT expires_at AS at FROM leases WHERE holder IN ({_NAMES}) AND instance <> ?
        UNION ALL
        SELECT heartbeat_at + {_TTL} FROM instances WHERE id <> ?) AS upcoming
    WHERE upcoming.at > now()
"""  # noqa: S608 - constant text
_INSTANCES_SQL = f"""
    SELECT i.id, i.host, i.pid, i.started_at, i.heartbeat_at,
        i.heartbeat_at >= clock_timestamp() - {_TTL} AS alive,
        COALESCE((SELECT json_agg(l.holder ORDER BY l.holder)::text FROM leases AS l
                  WHERE l.instance = i.id AND l.expires_at > clock_timestamp()), '[]') AS holders
    FROM instances AS i ORDER BY i.started_at, i.id
"""  # noqa: S608 - constant text


@dataclass(frozen=True, slots=True)
class Instance:
    """One running daemon: an id unique per process (host, pid and a random part)."""

    id: str
    host: str
    pid: int

    @classmethod
    def this_process(cls) -> Instance:
        host, pid = socket.gethostname(), os.getpid()
        return cls(f"{host}-{pid}-{secrets.token_hex(3)}", host, pid)


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """A registered instance as ``status`` shows it (times as ISO text, the database's)."""

    id: str
    host: str
    pid: int
    started_at: str
    heartbeat_at: str
    alive: bool
    holders: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LeaseRound:
    """What one round left this instance holding, and what moved.

    Attributes:
        held: holder → fencing token, every lease this instance holds now.
        taken_over: holders just taken from another instance whose lease had expired.
        released: holders beyond this instance's share, to hand back (``release_leases``)
            once it has stopped polling them: until then they stay its, renewed.
        reclaimed: deliveries of gone instances returned to pending.
        live: live instances counted (this one included).
        next_expiry_s: seconds (the database's) until another instance's lease of these
            holders or its heartbeat next expires; None: none to come.
    """

    held: dict[str, int]
    taken_over: tuple[str, ...] = ()
    released: tuple[str, ...] = ()
    reclaimed: int = 0
    live: int = 1
    next_expiry_s: float | None = None


@dataclass
class Fence:
    """The leases this instance holds, checked inside a holder's write transaction: the row of
    the lease is read ``FOR SHARE``, so no other instance takes it before this commit ends."""

    instance: str
    tokens: dict[str, int] = field(default_factory=dict)

    def __call__(self, conn: Db, holder: str) -> None:
        """Raises ``LeaseLost`` (the transaction then rolls back) unless ``holder``'s lease is
        this instance's, with the token it was taken with, and not expired."""
        token = self.tokens.get(holder)
        if token is None:
            raise LeaseLost(holder)
        if conn.execute(_FENCE_SQL, (holder, self.instance, token)).fetchone() is None:
            raise LeaseLost(holder)


def fair_share(holders: int, live: int) -> int:
    """The leases one instance aims to hold: ``ceil(holders / live)`` (at least one instance)."""
    return math.ceil(holders / max(live, 1))


def _round(conn: Db, instance: str, holders: Sequence[str], ttl_s: float, stamp: str) -> LeaseRound:
    """One round in one transaction (see ``Leases.share_holders``)."""
    names = json.dumps(sorted(holders))
    reclaimed = conn.execute(_RECLAIM_SQL, (stamp, ttl_s)).rowcount
    conn.execute(_FORGET_GONE_SQL, (ttl_s,))
    conn.execute(_ENSURE_SQL, (names,))
    held = {r[0]: int(r[1]) for r in conn.execute(_RENEW_SQL, (ttl_s, instance, names)).fetchall()}
    live = int(conn.execute(_LIVE_SQL, (ttl_s,)).fetchone()[0])
    share = fair_share(len(holders), live)
    released: list[str] = []
    if len(held) > share:  # renewed still: freed once this instance stopped polling them
        released = sorted(held)[share:]
        for holder in released:
            del held[holder]
    taken: list[str] = []
    if len(held) < share:
        rows = conn.execute(_TAKE_SQL, (names, share - len(held), instance, ttl_s)).fetchall()
        for holder, token, previous in rows:
            held[holder] = int(token)
            if previous is not None and previous != instance:
                taken.append(holder)
    expiry = conn.execute(_NEXT_EXPIRY_SQL, (names, instance, ttl_s, instance)).fetchone()[0]
    next_expiry_s = None if expiry is None else max(0.0, float(expiry))
    return LeaseRound(held, tuple(sorted(taken)), tuple(released), reclaimed, live, next_expiry_s)


class Leases(Connection):
    """The instance registry and the holders' leases (PostgreSQL)."""

    async def register_instance(self, me: Instance) -> None:
        """Enter this instance in the registry (heartbeat now)."""
        await self._atomically(lambda conn: conn.execute(_REGISTER_SQL, (me.id, me.host, me.pid)))

    async def share_holders(
        self, me: Instance, holders: Sequence[str], ttl_s: float, now: datetime
    ) -> LeaseRound:
        """Heartbeat (registering again if this instance was taken for gone), return gone
        instances' deliveries to pending, renew this instance's leases of ``holders``, then name
        those beyond its fair share (to hand back) or take free and expired ones up to it."""
        stamp = iso_ms(now)

        def work(conn: Db) -> LeaseRound:
            conn.execute(_REGISTER_SQL, (me.id, me.host, me.pid))
            return _round(conn, me.id, holders, ttl_s, stamp)

        return await self._atomically(work)

    async def release_leases(self, instance: str, holders: Sequence[str]) -> None:
        """Hand ``holders``' leases back at once (a reload removed them, or they are beyond
        this instance's share), once this instance has stopped polling them."""
        await self._atomically(
            lambda conn: conn.execute(_RELEASE_SQL, (instance, json.dumps(list(holders))))
        )

    async def deregister(self, instance: str) -> None:
        """A stopping instance leaves: its leases are free for the others at once."""

        def work(conn: Db) -> None:
            conn.execute(
                "UPDATE leases SET instance = NULL, expires_at = NULL WHERE instance = ?",
                (instance,),
            )
            conn.execute("DELETE FROM instances WHERE id = ?", (instance,))

        await self._atomically(work)

    async def instances(self, ttl_s: float) -> list[InstanceRow]:
        """The registered instances, oldest first, with the holders each holds."""
        rows: list[Any] = await self._fetch(_INSTANCES_SQL, (ttl_s,))
        return [
            InstanceRow(
                r["id"], r["host"], int(r["pid"]), _iso(r["started_at"]),
                _iso(r["heartbeat_at"]), bool(r["alive"]), tuple(json.loads(r["holders"])),
            )
            for r in rows
        ]  # fmt: skip


def _iso(value: Any) -> str:
    return value.isoformat(timespec="milliseconds") if isinstance(value, datetime) else str(value)
