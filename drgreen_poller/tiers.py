"""The polling tiers (design §3.2): one name for each, from the config's keys to the database.

Owns the names and their order (the order ``poll-once`` and ``status`` show them in). What each
tier keeps fresh is its observer's (``order_tiers``, ``client_tier``, ``summary_tiers``); when
it runs, ``scheduler`` and ``runner``'s.
"""

from __future__ import annotations

from enum import StrEnum


class Tier(StrEnum):
    """A tier of polling; its value is its name in the config, the logs and the database."""

    ACTIVE_ORDERS = "active_orders"  # recent orders not finished; discovers new ones
    STALE_ORDERS = "stale_orders"  # older unfinished orders, and shipped ones until delivered
    PENDING_KYC = "pending_kyc"  # clients not yet KYC-complete; discovers new ones
    COMMISSIONS = "commissions"  # the holder's commission summary
    STRAINS = "strains"  # the strain catalogue of each configured country


TIERS: tuple[Tier, ...] = tuple(Tier)
