"""Handlers of the simulated strain, commission, dashboard and health endpoints (§3.9–3.10).

Owns the strain filters (country availability, search, THC levels, feelings, planets), strain
detail per country (500 "strain not found" like the snapshot), the commission summary and list,
and the dashboard numbers. It must not change anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drgreen_poller.sandbox.dapp import records, strain_records
from drgreen_poller.sandbox.dapp.orders import client_name_matches
from drgreen_poller.sandbox.dapp.replies import ApiError
from drgreen_poller.sandbox.dapp.routes import Call, Handler, Reply
from drgreen_poller.sandbox.dapp.validation import QueryCheck, ordered
from drgreen_poller.sandbox.world.model import COMMISSION_STATUSES, Strain, StrainLocation, num

THC_LEVELS: dict[str, tuple[float, float]] = {
    "None": (0, 1),
    "Low": (1, 15),
    "Mid": (15, 20),
    "High": (20, float("inf")),
}
StrainTest = Callable[[Strain], bool]


def health(call: Call) -> Reply:
    """``GET /public/healthStatus`` (no auth)."""
    return Reply("Success")


def _terms(text: str) -> set[str]:
    return {term.strip().lower() for term in text.split(",") if term.strip()}


def _shares_term(field: Callable[[Strain], str], wanted: list[str]) -> StrainTest:
    """A test: the strain's comma-separated ``field`` shares a term with ``wanted``."""
    lowered = {w.lower() for w in wanted}
    return lambda s: bool(_terms(field(s)) & lowered)


def _strain_tests(check: QueryCheck) -> list[StrainTest]:
    search = check.query.get("search", "").lower()
    levels = check.json_list("thcLevels")
    if levels is not None and any(level not in THC_LEVELS for level in levels):
        check.messages.append("thcLevels must be one of the following values: None, Low, Mid, High")
        levels = None
    tests: list[StrainTest] = []
    if search:
        tests.append(
            lambda s: any(
                search in text.lower()
                for text in (s.name, s.flavour, s.feelings, s.helps_with, s.description, s.effects)
            )
        )
    if levels is not None:
        ranges = [THC_LEVELS[level] for level in levels]
        tests.append(lambda s: any(low <= s.thc < high for low, high in ranges))
    feelings, helps_with = check.json_list("feelings"), check.json_list("helpsWith")
    if feelings is not None:
        tests.append(_shares_term(lambda s: s.feelings, feelings))
    if helps_with is not None:
        tests.append(_shares_term(lambda s: s.helps_with, helps_with))
    planets = check.json_list("planetNames")
    if planets is not None:
        tests.append(
            lambda s: any(p.get("planetDetail", {}).get("name") in planets for p in s.planets)
        )
    return tests


def _spots(strain: Strain, country: str | None, public: bool) -> list[StrainLocation] | None:
    """The locations a list item shows, or ``None`` when the strain is not listed."""
    spots = [
        spot
        for code, spot in strain.locations.items()
        if (country is None or code == country)
        and (public or (spot.is_active and spot.is_available))
    ]
    if not public and not (strain.is_active and strain.is_available):
        return None
    return spots if spots or (public and country is None) else None


def _list_strains(call: Call, *, public: bool) -> Reply:
    check = QueryCheck(call.query)
    page = check.page()
    country = check.country_code()
    order = check.choice("order", ("createdAt", "popularity"))
    tests = _strain_tests(check)
    check.done()
    listed: list[tuple[Strain, list[StrainLocation]]] = []
    for strain in call.state.catalogue.listed():
        spots = _spots(strain, country, public)
        if spots is not None and all(test(strain) for test in tests):
            listed.append((strain, spots))
    key = "popularity" if order == "popularity" else "created_at"
    strains = ordered([s for s, _ in listed], key, page.descending)
    spots_of = {s.id: spots for s, spots in listed}
    items = [strain_records.strain_list_item(s, spots_of[s.id]) for s in page.slice(strains)]
    return Reply({"strains": items, "pageMetaDto": page.meta(len(strains))})


def list_strains(call: Call) -> Reply:
    """``GET /dapp/strains``: only strains orderable in the country (all countries if none)."""
    return _list_strains(call, public=call.holder is None)


def strain_detail(call: Call) -> Reply:
    """``GET /dapp/strains/{strainId}[?countryCode=]``."""
    check = QueryCheck(call.query)
    country = check.country_code()
    check.done()
    strain = call.state.tables.strains.get(call.params["strainId"].lower())
    if strain is None or strain.deleted:
        raise ApiError(500, "strain not found")
    return Reply(strain_records.strain_detail(strain, country))


def commission_summary(call: Call) -> Reply:
    """``GET /dapp/commissions/summary``: USD per status and ETH at the cached rate."""
    state = call.state
    totals = state.commissions.totals(call.owner)
    summary: dict[str, Any] = {
        status: {"amountInDollar": num(usd), "amountInEth": num(state.commissions.usd_to_eth(usd))}
        for status, usd in totals.items()
    }
    summary["totalInDollar"] = num(sum(totals.values()))
    return Reply({"commissionSummary": summary})


def list_commissions(call: Call) -> Reply:
    """``GET /dapp/commissions``."""
    check = QueryCheck(call.query)
    page = check.page()
    status = check.choice("paymentStatus", COMMISSION_STATUSES)
    search = check.search()
    check.done()
    state = call.state
    found = [
        c
        for c in state.commissions.of(call.owner)
        if (status is None or c.payment_status == status)
        and (
            search is None
            or (
                c.order_id is not None
                and client_name_matches(state, state.tables.orders[c.order_id].client_id, search)
            )
        )
    ]
    found = ordered(found, "created_at", page.descending)
    items = [records.commission_item(state, c) for c in page.slice(found)]
    return Reply({"commissions": items, "pageMetaDto": page.meta(len(found))})


def dashboard(call: Call) -> Reply:
    """``GET /dapp/dashboard/summary`` (``profitRecieved`` is Dr Green's spelling)."""
    state = call.state
    orders = state.orders.of(call.owner)
    totals = state.commissions.totals(call.owner)
    products = [s for s in state.catalogue.listed() if s.is_active and s.is_available]
    estimate = sum(o.agent_profit for o in orders if o.admin_approval != "REJECTED")
    return Reply(
        {
            "clientCount": len(state.clients.of(call.owner)),
            "orderCount": len(orders),
            "productCount": len(products),
            "estimateProfit": num(estimate),
            "totalProfit": num(sum(totals.values())),
            "profitRecieved": num(totals["PAID"]),
        }
    )


HANDLERS: dict[str, Handler] = {
    "GET /public/healthStatus": health,
    "GET /strains": list_strains,
    "GET /dapp/strains": list_strains,
    "GET /dapp/strains/{strainId}": strain_detail,
    "GET /dapp/commissions/summary": commission_summary,
    "GET /dapp/commissions": list_commissions,
    "GET /dapp/dashboard/summary": dashboard,
}
