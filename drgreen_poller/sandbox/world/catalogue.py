"""The strain catalogue of the sandbox world: strains, their prices and per-country stock.

Owns creating, changing and removing strains and their locations, and the availability checks
that carts and orders share. It must not know about holders' clients or orders beyond those
checks, nor about HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from drgreen_poller.sandbox.world.inputs import (
    as_bool,
    as_country_code,
    as_dict,
    as_dict_list,
    as_non_negative,
    as_number,
    as_opt_time,
    as_str,
    as_time,
)
from drgreen_poller.sandbox.world.model import (
    Converter,
    InvalidInput,
    Strain,
    StrainLocation,
    UnknownEntity,
    apply_patch,
)
from drgreen_poller.sandbox.world.tables import Tables

STRAIN_FIELDS: Mapping[str, tuple[str, Converter]] = {
    "name": ("name", as_str),
    "description": ("description", as_str),
    "retailPrice": ("retail_price", as_non_negative),
    "wholeSalePrice": ("wholesale_price", as_non_negative),
    "type": ("type", as_str),
    "thc": ("thc", as_number),
    "cbd": ("cbd", as_number),
    "cbg": ("cbg", as_number),
    "batchNumber": ("batch_number", as_str),
    "feelings": ("feelings", as_str),
    "helpsWith": ("helps_with", as_str),
    "effects": ("effects", as_str),
    "popularity": ("popularity", as_number),
    "flavour": ("flavour", as_str),
    "imageUrl": ("image_key", as_str),
    "isAvailable": ("is_available", as_bool),
    "isActive": ("is_active", as_bool),
    "expiryDate": ("expiry_date", as_opt_time),
    "discount": ("discount", as_number),
    "strainImages": ("images", as_dict_list),
    "prices": ("prices", as_dict_list),
    "planets": ("planets", as_dict_list),
    "strainId": ("code", as_str),
    "createdAt": ("created_at", as_time),
    "updatedAt": ("updated_at", as_time),
}
LOCATION_FIELDS: Mapping[str, tuple[str, Converter]] = {
    "stockQuantity": ("stock_quantity", as_non_negative),
    "isActive": ("is_active", as_bool),
    "isAvailable": ("is_available", as_bool),
}
_WORD_RE = re.compile(r"[A-Za-z0-9]+")
LocationsSpec = Mapping[str, float] | Sequence[Mapping[str, Any]]


def _code_for(name: str) -> str:
    initials = "".join(word[0] for word in _WORD_RE.findall(name)).upper()
    return initials or "STR"


def _slug(name: str) -> str:
    return "-".join(word.lower() for word in _WORD_RE.findall(name)) or "strain"


class Catalogue:
    """The strain rules, over the world's shared tables."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    def create(
        self,
        name: str,
        *,
        retail_price: float = 10,
        wholesale_price: float = 6,
        locations: LocationsSpec | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> Strain:
        """Add a strain to the catalogue.

        Args:
            name: the strain's name.
            retail_price: price per gram to the customer.
            wholesale_price: price per gram to the holder (profit is the difference).
            locations: ``{"GBR": 300}`` (stock per country, active and available) or a list of
                ``{"countryCode", "stockQuantity", "isActive", "isAvailable"}`` objects.
            fields: any other strain field by its Dr Green name (``type``, ``thc``,
                ``feelings``, ``imageUrl``, ``expiryDate``, ``prices``, ``createdAt``, ...).
        """
        now = self._t.now()
        code = _code_for(name)
        strain = Strain(
            id=self._t.new_id(),
            seq=self._t.next_seq(),
            name=as_str(name, "name"),
            retail_price=as_non_negative(retail_price, "retailPrice"),
            wholesale_price=as_non_negative(wholesale_price, "wholeSalePrice"),
            created_at=now,
            updated_at=now,
            code=code,
            description=f"{name}, grown for the sandbox",
            batch_number=f"{code}-{self._t.rng.randrange(1000, 10000)}",
            image_key=f"dr-green-strains/{_slug(name)}.png",
            expiry_date=(now + timedelta(days=365)).replace(
                hour=0, minute=0, second=0, microsecond=0
            ),
        )
        strain.prices = [
            {
                "currency": "EUR",
                "retailPrice": strain.retail_price,
                "wholeSalePrice": wholesale_price,
            }
        ]
        apply_patch(strain, STRAIN_FIELDS, fields or {})
        for spec in self._location_specs(locations or {}):
            self._set_location(strain, spec)
        self._t.strains[strain.id] = strain
        return strain

    @staticmethod
    def _location_specs(locations: LocationsSpec) -> list[dict[str, Any]]:
        if isinstance(locations, Mapping):
            return [{"countryCode": cc, "stockQuantity": qty} for cc, qty in locations.items()]
        return [as_dict(spec, f"locations[{i}]") for i, spec in enumerate(locations)]

    def _set_location(self, strain: Strain, spec: Mapping[str, Any]) -> StrainLocation:
        code = as_country_code(spec.get("countryCode"), "countryCode")
        changes = {key: value for key, value in spec.items() if key != "countryCode"}
        if code not in strain.locations:
            strain.locations[code] = StrainLocation(self._t.location(code), 0)
        apply_patch(strain.locations[code], LOCATION_FIELDS, changes)
        return strain.locations[code]

    def get(self, strain_id: str, *, include_removed: bool = False) -> Strain:
        """The strain with that id.

        Raises:
            UnknownEntity: no such strain (or it was removed and ``include_removed`` is false).
        """
        strain = self._t.strains.get(strain_id.lower())
        if strain is None or (strain.deleted and not include_removed):
            raise UnknownEntity("strain", strain_id)
        return strain

    def update(self, strain_id: str, changes: Mapping[str, Any]) -> Strain:
        """Set any strain fields by their Dr Green names (price, flags, texts, ...)."""
        strain = self.get(strain_id)
        apply_patch(strain, STRAIN_FIELDS, changes)
        if "updatedAt" not in changes:
            strain.updated_at = self._t.now()
        return strain

    def set_location(
        self, strain_id: str, country_code: str, changes: Mapping[str, Any]
    ) -> StrainLocation:
        """Set ``stockQuantity``/``isActive``/``isAvailable`` at a country (adding it if new)."""
        strain = self.get(strain_id)
        location = self._set_location(strain, {**changes, "countryCode": country_code})
        strain.updated_at = self._t.now()
        return location

    def remove(self, strain_id: str) -> Strain:
        """Take a strain out of the catalogue; orders that hold it still show it."""
        strain = self.get(strain_id)
        strain.deleted = True
        strain.updated_at = self._t.now()
        return strain

    def listed(self) -> list[Strain]:
        """Every strain not removed, in creation order."""
        return [strain for strain in self._t.strains.values() if not strain.deleted]

    def orderable_at(self, strain: Strain, country_code: str) -> StrainLocation | None:
        """The strain's location at ``country_code`` if it is active and available there."""
        spot = strain.locations.get(country_code)
        if strain.deleted or not (strain.is_active and strain.is_available):
            return None
        if spot is None or not (spot.is_active and spot.is_available):
            return None
        return spot

    def take_stock(
        self, strain: Strain, country_code: str, quantity: float, when: datetime
    ) -> None:
        """Remove ``quantity`` from the strain's stock at ``country_code``."""
        spot = strain.locations.get(country_code)
        if spot is None:
            raise InvalidInput(f"strain {strain.id} has no location {country_code}")
        spot.stock_quantity = round(max(0.0, spot.stock_quantity - quantity), 3)
        strain.updated_at = when
