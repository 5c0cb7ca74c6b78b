"""Orders and commissions in the exact JSON shapes of the Dr Green API (§3.1–3.5, §3.9, §7.1).

Owns field names, key order and which fields each endpoint selects (list items, recent items,
details, raw rows), plus the fragments every shape shares (``nft``, shipping, logs). It must not
filter, sort, paginate or change anything: handlers do that.
"""

from __future__ import annotations

from typing import Any

from drgreen_poller.sandbox.world import World
from drgreen_poller.sandbox.world.model import (
    Client,
    Commission,
    HolderInfo,
    Order,
    Shipping,
    iso,
    iso_or_none,
    num,
)

Json = dict[str, Any]


def nft(holder: HolderInfo) -> Json | None:
    """The ``nft`` fragment: token id and owner wallet."""
    if holder.nft is None:
        return None
    return {"tokenId": holder.nft.token_id, "ownerId": holder.nft.owner_id}


def shipping(address: Shipping) -> Json:
    """A full shipping address."""
    return {
        "id": address.id,
        "address1": address.address1,
        "address2": address.address2,
        "landmark": address.landmark,
        "city": address.city,
        "state": address.state,
        "country": address.country,
        "countryCode": address.country_code,
        "postalCode": address.postal_code,
        "createdAt": iso(address.created_at),
    }


def logs(order_or_client: Order | Client, activity: str | None = None) -> list[Json]:
    return [
        {"activity": entry.activity, "createdAt": iso(entry.created_at)}
        for entry in order_or_client.logs
        if activity is None or entry.activity == activity
    ]


# --- orders ------------------------------------------------------------------------------------


def completed_payments(order: Order) -> list[Json]:
    """An order's ``transactions``: the methods of its COMPLETED transactions only."""
    return [{"method": t.method} for t in order.transactions if t.status == "COMPLETED"]


def order_totals(state: World, order: Order) -> tuple[float, float, float]:
    """Quantity, price and profit of an order at the strains' current prices (as the service)."""
    quantity = price = profit = 0.0
    for line in order.lines:
        strain = state.tables.strains[line.strain_id]
        quantity += line.quantity
        price += strain.retail_price * line.quantity
        profit += (strain.retail_price - strain.wholesale_price) * line.quantity
    return quantity, price, profit


def order_list_item(
    state: World, order: Order, *, with_note: bool = False, with_logs: bool = False
) -> Json:
    """An item of ``GET /dapp/orders`` (the only order shape with all three status fields)."""
    client = state.tables.clients[order.client_id]
    quantity, price, _ = order_totals(state, order)
    item: Json = {
        "id": order.id,
        "invoiceNumber": order.invoice_number,
        "orderStatus": order.order_status,
        "adminApproval": order.admin_approval,
        "paymentStatus": order.payment_status,
        "totalAmount": num(order.total_amount),
        "transactions": completed_payments(order),
        "createdAt": iso(order.created_at),
    }
    if with_note:
        item["rejectionNote"] = order.rejection_note
    if with_logs:
        item["orderLogs"] = logs(order)
    item.update(
        nft=nft(state.holders[order.holder]),
        client={"id": client.id, "firstName": client.first_name, "lastName": client.last_name},
        _count={"orderLines": len(order.lines)},
        totalQuantity=num(quantity),
        totalPrice=num(price),
    )
    return item


def order_recent_item(state: World, order: Order) -> Json:
    """An item of ``GET /dapp/orders/recent`` (has ``updatedAt``, no ``adminApproval``)."""
    client = state.tables.clients[order.client_id]
    quantity, price, _ = order_totals(state, order)
    addresses = [shipping(address) for address in client.shippings]
    return {
        "id": order.id,
        "createdAt": iso(order.created_at),
        "updatedAt": iso(order.updated_at),
        "paymentStatus": order.payment_status,
        "orderStatus": order.order_status,
        "client": {
            "id": client.id,
            "firstName": client.first_name,
            "lastName": client.last_name,
            "shippings": addresses,
        },
        "totalQuantity": num(quantity),
        "shippings": [dict(address) for address in addresses],
        "totalPrice": num(price),
    }


def _order_line(state: World, quantity: float, strain_id: str) -> Json:
    strain = state.tables.strains[strain_id]
    return {
        "quantity": num(quantity),
        "strain": {
            "id": strain.id,
            "name": strain.name,
            "imageUrl": strain.image_key,
            "description": strain.description,
            "wholeSalePrice": num(strain.wholesale_price),
            "retailPrice": num(strain.retail_price),
        },
        "productAmount": num(strain.retail_price * quantity),
        "productProfit": num((strain.retail_price - strain.wholesale_price) * quantity),
    }


def order_detail(state: World, order: Order) -> Json:
    """``orderDetails`` of ``GET /dapp/orders/{orderId}`` (no ``adminApproval`` unless switched)."""
    client = state.tables.clients[order.client_id]
    quantity, price, profit = order_totals(state, order)
    detail: Json = {
        "id": order.id,
        "createdAt": iso(order.created_at),
        "updatedAt": iso(order.updated_at),
        "invoiceNumber": order.invoice_number,
        "orderStatus": order.order_status,
        "paymentStatus": order.payment_status,
    }
    if state.settings.order_detail_admin_approval:
        detail.update(
            adminApproval=order.admin_approval,
            verifiedAt=iso_or_none(order.verified_at),
            rejectedAt=iso_or_none(order.rejected_at),
            rejectionNote=order.rejection_note,
        )
    detail.update(
        totalAmount=num(price),
        transactions=completed_payments(order),
        nft=nft(state.holders[order.holder]),
        client={"id": client.id, "shippings": [shipping(a) for a in client.shippings]},
        orderLines=[_order_line(state, line.quantity, line.strain_id) for line in order.lines],
        deliveryFee=num(order.delivery_fee),
        totalProfit=num(profit),
        totalOrdered=len(order.lines),
        totalQuantity=num(quantity),
    )
    return detail


def order_row(state: World, order: Order) -> Json:
    """The raw order row, as ``POST /dapp/orders`` returns it."""
    holder = state.holders[order.holder]
    return {
        "id": order.id,
        "orderStatus": order.order_status,
        "paymentStatus": order.payment_status,
        "adminApproval": order.admin_approval,
        "agentProfit": num(order.agent_profit),
        "totalAmount": num(order.total_amount),
        "invoiceNumber": order.invoice_number,
        "rejectionNote": order.rejection_note,
        "commissionPaid": order.commission_paid,
        "commissionTransactionHash": order.commission_transaction_hash,
        "verifiedAt": iso_or_none(order.verified_at),
        "rejectedAt": iso_or_none(order.rejected_at),
        "createdAt": iso(order.created_at),
        "updatedAt": iso(order.updated_at),
        "nftId": None if holder.nft is None else holder.nft.id,
        "clientId": order.client_id,
        "shippingId": order.shipping_id,
        "nonce": order.nonce,
    }


# --- commissions -------------------------------------------------------------------------------


def commission_item(state: World, commission: Commission) -> Json:
    """An item of ``GET /dapp/commissions``."""
    order = None if commission.order_id is None else state.tables.orders.get(commission.order_id)
    order_json: Json | None = None
    if order is not None:
        client = state.tables.clients[order.client_id]
        order_json = {
            "id": order.id,
            "agentProfit": num(order.agent_profit),
            "totalAmount": num(order.total_amount),
            "orderStatus": order.order_status,
            "orderLogs": logs(order, "Delivered"),
            "client": {
                "id": client.id,
                "firstName": client.first_name,
                "lastName": client.last_name,
                "email": client.email,
            },
            "totalQuantity": num(order_totals(state, order)[0]),
        }
    return {
        "id": commission.id,
        "amountInDollar": num(commission.amount_in_dollar),
        "amountInEth": None if commission.amount_in_eth is None else num(commission.amount_in_eth),
        "userId": commission.user_id,
        "paymentStatus": commission.payment_status,
        "createdAt": iso(commission.created_at),
        "updatedAt": iso(commission.updated_at),
        "order": order_json,
        "isPayable": order is None or order.order_status == "DELIVERED",
    }
