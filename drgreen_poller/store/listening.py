"""Waking a delivery worker when another process commits deliveries: PostgreSQL's ``LISTEN``.

Owns one dedicated connection per daemon on a PostgreSQL database, listening on the channel the
commits that write outbox rows ``NOTIFY`` (``dialect.DELIVERIES_CHANNEL``): each notification
calls ``wake``, so a free instance claims new events at once instead of at its next check. A lost
connection is logged in one line and opened again after a pause. It reads and writes no table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from drgreen_poller.clock import Clock
from drgreen_poller.store.dialect import DELIVERIES_CHANNEL

if TYPE_CHECKING:
    from drgreen_poller.config import StoreConfig

log = structlog.get_logger(__name__)

RETRY_S = 5.0  # after a lost connection (the worker's own checks go on meanwhile)


async def listen_for_deliveries(store: StoreConfig, wake: Callable[[], None], clock: Clock) -> None:
    """Call ``wake`` at every notification on the deliveries channel, until cancelled."""
    import psycopg

    from drgreen_poller.store.postgres import CONNECT_TIMEOUT_S, connection_settings, error_line

    password = store.password.value if store.password is not None else None
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                store.url, **connection_settings(store), password=password, autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S, application_name="drgreen-poller listen",
            ) as conn:  # fmt: skip
                await conn.execute(f"LISTEN {DELIVERIES_CHANNEL}")
                wake()  # whatever was committed while this connection was not listening
                async for _ in conn.notifies():
                    wake()
        except psycopg.Error as exc:
            log.warning("deliveries_listen_failed", error=error_line(exc), retry_in_s=RETRY_S)
        await clock.sleep(RETRY_S)
