"""Clients' server-side carts: what ``POST /dapp/orders`` turns into an order.

Owns adding to and removing from a cart, with the region and stock checks and the exact
messages of ``CartsService`` (§3.5), plus the control API's unchecked cart filling. It must not
create orders nor touch stock (checkout does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from drgreen_poller.sandbox.world.catalogue import Catalogue
from drgreen_poller.sandbox.world.clients import Clients
from drgreen_poller.sandbox.world.inputs import as_number
from drgreen_poller.sandbox.world.model import Client, InvalidInput, ServiceRefusal
from drgreen_poller.sandbox.world.tables import HolderRef, Tables

CART_NOT_FOUND = "Client cart not found"


class Carts:
    """The cart rules, over the world's shared tables, checking the catalogue and the clients."""

    def __init__(self, tables: Tables, catalogue: Catalogue, clients: Clients) -> None:
        self._t = tables
        self._catalogue = catalogue
        self._clients = clients

    def owner(self, holder: HolderRef, cart_id: str) -> Client | None:
        """The holder's client who owns the cart ``cart_id``, if any."""
        client = self._t.clients_by_cart.get(cart_id.lower())
        owner = self._t.holder(holder).name
        return client if client is not None and client.holder == owner else None

    def add(self, holder: HolderRef, cart_id: str, items: Sequence[tuple[str, float]]) -> int:
        """Add items to a cart as ``POST /dapp/carts`` does; quantities add up per strain.

        Returns:
            how many cart rows were written (one per distinct strain).

        Raises:
            ServiceRefusal: unknown cart (404), no address (400), a strain not orderable in the
                client's country (400) or not in sufficient quantity there (400).
        """
        client = self.owner(holder, cart_id)
        if client is None:
            raise ServiceRefusal(404, CART_NOT_FOUND)
        country = self._clients.shipping_country(client)
        merged: dict[str, tuple[str, float]] = {}
        for strain_id, quantity in items:
            key = strain_id.lower()
            merged[key] = (strain_id, merged.get(key, (strain_id, 0.0))[1] + quantity)
        totals: dict[str, float] = {}
        for key, (given_id, quantity) in merged.items():
            strain = self._t.strains.get(key)
            spot = None if strain is None else self._catalogue.orderable_at(strain, country)
            if spot is None:
                raise ServiceRefusal(
                    400, f"Strain {given_id} is not available in your region ({country})"
                )
            totals[key] = round(client.cart.get(key, 0.0) + quantity, 3)
            if spot.stock_quantity < totals[key]:
                raise ServiceRefusal(
                    400,
                    f"Strain {given_id} is not available in sufficient quantity "
                    f"in your region ({country})",
                )
        client.cart.update(totals)
        return len(totals)

    def remove(self, holder: HolderRef, cart_id: str, strain_id: str | None = None) -> None:
        """Empty a cart, or remove one strain from it, as ``DELETE /dapp/carts/{cartId}`` does.

        Raises:
            ServiceRefusal: 404 for an unknown cart or a strain not in the cart.
        """
        client = self.owner(holder, cart_id)
        if client is None:
            raise ServiceRefusal(404, CART_NOT_FOUND)
        if strain_id is None:
            client.cart.clear()
        elif client.cart.pop(strain_id.lower(), None) is None:
            raise ServiceRefusal(404, "Cart item not found")

    def fill(self, client_id: str, items: Mapping[str, float]) -> Client:
        """Put strains into a client's cart without Dr Green's checks (control API shortcut).

        Raises:
            UnknownEntity: the client or a strain does not exist.
            InvalidInput: a quantity is not a positive number.
        """
        client = self._clients.get(client_id)
        for strain_id, quantity in items.items():
            strain = self._catalogue.get(strain_id)
            amount = as_number(quantity, f"quantity of {strain_id}")
            if amount <= 0:
                raise InvalidInput(f"quantity of {strain_id} must be greater than 0")
            client.cart[strain.id] = round(client.cart.get(strain.id, 0.0) + amount, 3)
        return client
