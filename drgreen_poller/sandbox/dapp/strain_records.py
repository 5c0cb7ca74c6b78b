"""Strains in the exact JSON shapes of the Dr Green API (§3.10, §7.1).

Owns the strain list item (locations selected by country) and the strain detail (top-level
flags and stock from the requested country). It must not filter, sort or change anything.
"""

from __future__ import annotations

from drgreen_poller.sandbox.dapp.records import Json
from drgreen_poller.sandbox.world.model import (
    IMAGE_BASE_URL,
    Strain,
    StrainLocation,
    iso_or_none,
    num,
)


def image_url(key: str) -> str:
    """An absolute image URL, as the latest snapshot returns them."""
    return key if key.startswith(("http://", "https://")) or not key else IMAGE_BASE_URL + key


def _stock(strain: Strain) -> float:
    return sum(spot.stock_quantity for spot in strain.locations.values())


def strain_list_item(strain: Strain, spots: list[StrainLocation]) -> Json:
    """An item of ``GET /dapp/strains``; ``spots`` are the locations selected by country."""
    return {
        "id": strain.id,
        "name": strain.name,
        "description": strain.description,
        "retailPrice": num(strain.retail_price),
        "wholeSalePrice": num(strain.wholesale_price),
        "type": strain.type,
        "thc": num(strain.thc),
        "cbd": num(strain.cbd),
        "cbg": num(strain.cbg),
        "batchNumber": strain.batch_number,
        "feelings": strain.feelings,
        "helpsWith": strain.helps_with,
        "effects": strain.effects,
        "popularity": num(strain.popularity),
        "flavour": strain.flavour,
        "imageUrl": image_url(strain.image_key),
        "isAvailable": strain.is_available,
        "isActive": strain.is_active,
        "stockQuantity": num(_stock(strain)),
        "expiryDate": iso_or_none(strain.expiry_date),
        "discount": num(strain.discount),
        "strainImages": [dict(image) for image in strain.images],
        "prices": [dict(price) for price in strain.prices],
        "strainLocations": [
            {
                "isActive": s.is_active,
                "isAvailable": s.is_available,
                "stockQuantity": num(s.stock_quantity),
            }
            for s in spots
        ],
    }


def strain_detail(strain: Strain, country_code: str | None) -> Json:
    """``GET /dapp/strains/{strainId}``; with a country, its flags and stock come from there."""
    spots = list(strain.locations.values())
    if country_code is not None:
        spots = [s for s in spots if s.location.country_code == country_code]
    here = spots[0] if country_code is not None and spots else None
    return {
        "id": strain.id,
        "name": strain.name,
        "description": strain.description,
        "retailPrice": num(strain.retail_price),
        "flavour": strain.flavour,
        "imageUrl": image_url(strain.image_key),
        "batchNumber": strain.batch_number,
        "thc": num(strain.thc),
        "cbd": num(strain.cbd),
        "cbg": num(strain.cbg),
        "strainId": strain.code,
        "wholeSalePrice": num(strain.wholesale_price),
        "isAvailable": here.is_available if here else strain.is_available,
        "stockQuantity": num(here.stock_quantity if here else _stock(strain)),
        "expiryDate": iso_or_none(strain.expiry_date),
        "discount": num(strain.discount),
        "type": strain.type,
        "isActive": here.is_active if here else strain.is_active,
        "feelings": strain.feelings,
        "popularity": num(strain.popularity),
        "helpsWith": strain.helps_with,
        "strainImages": [dict(image) for image in strain.images],
        "prices": [dict(price) for price in strain.prices],
        "strainLocations": [
            {
                "location": {
                    "id": s.location.id,
                    "country": s.location.country,
                    "countryCode": s.location.country_code,
                },
                "stockQuantity": num(s.stock_quantity),
                "isActive": s.is_active,
                "isAvailable": s.is_available,
            }
            for s in spots
        ],
        "planets": [dict(planet) for planet in strain.planets],
    }
