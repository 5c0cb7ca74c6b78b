"""Commission managers of the sandbox world: the agents a holder's NFT shares its profit with.

Owns adding a manager to a holder's NFT (with a unique username and email made from the name
and a share of each order's profit in percent), dissociating one, and the shares in force when
an order is paid. It must not accrue commissions (``commissions.py`` does) nor know about HTTP.
"""

from __future__ import annotations

from drgreen_poller.sandbox.world.model import InvalidInput, Manager, UnknownEntity
from drgreen_poller.sandbox.world.tables import HolderRef, Tables


class Managers:
    """The manager rules, over the world's shared tables."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    def add(self, holder: HolderRef, full_name: str, commission_percent: float) -> Manager:
        """Associate a new manager with the holder's NFT.

        Raises:
            InvalidInput: an empty name, or a share outside 0–100 percent.
            UnknownEntity: no such holder.
        """
        owner = self._t.holder(holder)
        name, percent = full_name.strip(), commission_percent
        if not name:
            raise InvalidInput("fullName must not be empty")
        if not 0 <= percent <= 100:
            raise InvalidInput("commissionPercent must be between 0 and 100")
        if percent + sum(m.commission_percent for m in self.sharing(owner)) > 100:
            raise InvalidInput("the NFT's managers would share more than 100 percent of profit")
        username = f"{name.lower().replace(' ', '.')}.{len(self._t.managers) + 1}"
        when = self._t.now()
        manager = Manager(
            id=self._t.new_id(),
            holder=owner.name,
            full_name=name,
            username=username,
            email=f"{username}@example.com",
            wallet_address="0x" + self._t.random_hex(40),
            commission_percent=percent,
            created_at=when,
            updated_at=when,
        )
        self._t.managers[manager.id] = manager
        self._t.holder_managers[owner.name].append(manager)
        return manager

    def get(self, manager_id: str) -> Manager:
        """The manager with that id.

        Raises:
            UnknownEntity: no such manager.
        """
        try:
            return self._t.managers[manager_id.lower()]
        except KeyError:
            raise UnknownEntity("manager", manager_id) from None

    def of(self, holder: HolderRef) -> list[Manager]:
        """The holder's managers, associated or not, in creation order."""
        return self._t.holder_managers[self._t.holder(holder).name]

    def dissociate(self, manager_id: str) -> Manager:
        """End the manager's association with the NFT: no share in later payments."""
        manager = self.get(manager_id)
        manager.associated = False
        manager.updated_at = self._t.now()
        return manager

    def sharing(self, holder: HolderRef) -> list[Manager]:
        """The managers who share in a payment now: associated and active."""
        return [m for m in self.of(holder) if m.associated and m.is_active]
