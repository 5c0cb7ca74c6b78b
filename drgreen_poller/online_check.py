"""``check-config --online``: the ``[store]`` database reached, and one signed call per holder.

Owns what each check tries and how a failure is explained (a refused key with the hint of what
to check, the one line libpq gives for a database). Printing and exit codes belong to the CLI;
it writes nothing anywhere.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from drgreen_poller.api import ApiClient
from drgreen_poller.clock import Clock
from drgreen_poller.config import Config, StoreConfig
from drgreen_poller.errors import StoreError, UpstreamError, UpstreamUnauthorized
from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.scheduler import UNAUTHORIZED_HINT
from drgreen_poller.settings import api_settings


@dataclass
class OnlineCheck:
    holder: str
    ok: bool
    message: str


async def check_online(config: Config, clock: Clock) -> list[OnlineCheck]:
    """The ``[store]`` database reached (when there is one), then one signed call per holder
    (``GET /dapp/orders/summary``), each failure explained."""
    results = [await check_database(config.store)] if config.store is not None else []
    async with aiohttp.ClientSession() as session:
        for holder in config.holders:
            credentials = ApiCredentials(holder.api_key.value, holder.secret_key.value)
            api = ApiClient(session, api_settings(config), credentials, clock, holder=holder.name)
            try:
                summary = await api.orders_summary()
            except UpstreamUnauthorized as exc:
                results.append(OnlineCheck(holder.name, False, f"{exc}. {UNAUTHORIZED_HINT}"))
            except UpstreamError as exc:
                results.append(OnlineCheck(holder.name, False, str(exc)))
            else:
                results.append(
                    OnlineCheck(holder.name, True, f"signed call accepted ({summary.total} orders)")
                )
    return results


async def check_database(store: StoreConfig) -> OnlineCheck:
    """Connect to the ``[store]`` database as the daemon would and say what is there; a refused
    connection, a wrong password or a missing database is the one line libpq gives."""
    from drgreen_poller.store.postgres import describe_database

    try:
        found = await asyncio.to_thread(describe_database, store)
    except StoreError as exc:
        return OnlineCheck("store", False, str(exc))
    return OnlineCheck("store", True, f"connected to {store.shown}: {found}")
