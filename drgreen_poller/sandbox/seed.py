"""``seed_demo``: a ready holder in a small, varied world, for the demo and for trying the API.

Owns the demo catalogue, clients and orders. It must only use the world's public
methods (its parts), so what it builds is what a test could build.
"""

from __future__ import annotations

from datetime import timedelta

from drgreen_poller.sandbox.state import SandboxState
from drgreen_poller.sandbox.world.clients import Identity
from drgreen_poller.sandbox.world.model import HolderInfo, Strain

DEMO_STRAINS: tuple[tuple[str, float, float, dict[str, object], dict[str, float]], ...] = (
    (
        "Peanut Butter Breath", 10, 6,
        {"type": "Hybrid", "thc": 22.5, "cbd": 0.1, "cbg": 0.4, "popularity": 42,
         "feelings": "Relaxed, Happy", "helpsWith": "Stress, Insomnia", "effects": "Body calm",
         "flavour": "Nutty, Earthy", "description": "Nutty indica-leaning hybrid",
         "planets": [{"planetDetailId": 3,
                      "planetDetail": {"name": "Planet Kush", "planetNo": 3}}]},
        {"GBR": 300, "ZAF": 200, "PRT": 250},
    ),
    (
        "Blue Dream", 8, 5,
        {"type": "Sativa", "thc": 18, "popularity": 35, "feelings": "Uplifted, Creative",
         "helpsWith": "Fatigue, Depression", "flavour": "Berry",
         "description": "Sativa-leaning hybrid"},
        {"GBR": 500, "PRT": 400},
    ),
    (
        "Northern Lights", 9, 5.5,
        {"type": "Indica", "thc": 16, "popularity": 28, "feelings": "Sleepy, Relaxed",
         "helpsWith": "Insomnia, Pain", "flavour": "Pine", "description": "Classic indica"},
        {"GBR": 400},
    ),
    (
        "Durban Poison", 11, 7,
        {"type": "Sativa", "thc": 24, "popularity": 30, "feelings": "Energetic, Focused",
         "helpsWith": "Fatigue", "flavour": "Sweet, Anise", "description": "South African sativa"},
        {"ZAF": 300},
    ),
)  # fmt: skip


def _catalogue(state: SandboxState) -> list[Strain]:
    existing = state.catalogue.listed()
    if existing:
        return existing
    strains = [
        state.catalogue.create(name, retail_price=retail, wholesale_price=wholesale,
                            locations=stock, fields=fields)
        for name, retail, wholesale, fields, stock in DEMO_STRAINS
    ]  # fmt: skip
    state.catalogue.set_location(strains[2].id, "PRT", {"stockQuantity": 0, "isAvailable": False})
    return strains


def _identity(state: SandboxState, name: str, holder: str) -> Identity:
    first, last = name.split()
    phone = state.clients.generated_identity().contact_number
    return Identity(first, last, f"{first}.{last}@{holder}.example.com".lower(), phone)


# (name, country, days ago, KYC verified, adminApproval)
DEMO_CLIENTS = (
    ("Jane Doe", "GBR", 12, True, "VERIFIED"),
    ("Sam Lee", "GBR", 11, True, "VERIFIED"),
    ("Amara Okafor", "ZAF", 3, True, "PENDING"),
    ("Luis Silva", "PRT", 1, False, "PENDING"),
    ("Tom Brown", "GBR", 5, False, "REJECTED"),
)
# (client index, {strain index: grams}, days ago, adminApproval, paid, orderStatus)
DEMO_ORDERS: tuple[tuple[int, dict[int, float], float, str, bool, str], ...] = (
    (1, {0: 5}, 10, "VERIFIED", True, "DELIVERED"),
    (0, {1: 20}, 4, "REJECTED", False, "PENDING"),
    (1, {0: 3, 1: 2}, 2, "VERIFIED", True, "PROCESSING"),
    (0, {0: 10}, 1, "VERIFIED", False, "PENDING"),
    (1, {1: 7}, 0.25, "PENDING", False, "PENDING"),
)


def seed_demo(state: SandboxState, *, holder_name: str = "demo") -> HolderInfo:
    """Create holder ``holder_name`` with a few strains, clients and orders in various states.

    Strains (shared, created once): four, stocked in GBR and some in ZAF/PRT. Clients: two
    fully verified in GBR (Jane with a cart ready to order), one KYC-verified awaiting approval
    (ZAF), one not yet verified (PRT), one rejected. Orders: delivered (ten days old), rejected,
    paid and processing, approved, pending.
    """
    holder = state.create_holder(holder_name)
    strain_ids = [strain.id for strain in _catalogue(state)]
    now = state.now()
    day = timedelta(days=1)
    client_ids = [
        state.clients.create(
            holder, identity=_identity(state, name, holder_name), country_code=country,
            created_at=now - day * days_ago, kyc_verified=kyc, admin_approval=approval,
        ).id
        for name, country, days_ago, kyc, approval in DEMO_CLIENTS
    ]  # fmt: skip
    state.carts.fill(client_ids[0], {strain_ids[0]: 10, strain_ids[1]: 5})
    for who, lines, days_ago, approval, paid, status in DEMO_ORDERS:
        state.orders.create(
            holder,
            client_id=client_ids[who],
            items={strain_ids[i]: grams for i, grams in lines.items()},
            created_at=now - day * days_ago,
            admin_approval=approval,
            payment_status=state.settings.paid_status if paid else "PENDING",
            order_status=status,
        )
    return holder
