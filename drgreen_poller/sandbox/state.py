"""``SandboxState``: the whole in-memory Dr Green world, driven in-process or by the control API.

Composes the rule layers (world → catalogue → clients → carts → commissions → orders →
lifecycle) into one object. Pure Python: no aiohttp, no I/O; time comes from the injected clock
and ids from a seeded generator, so a run is reproducible.
"""

from __future__ import annotations

from drgreen_poller.sandbox.lifecycle import OrderLifecycle


class SandboxState(OrderLifecycle):
    """The sandbox world.

    Build it with ``SandboxState(clock=None, *, seed=0)`` (the system clock by default).

    Holders: ``create_holder``, ``holder``, ``holders`` (a dict by name), ``revoke_holder_key``,
    ``restore_holder_key``.
    Catalogue: ``create_strain``, ``update_strain``, ``set_strain_location``, ``remove_strain``,
    ``strain``, ``catalogue``.
    Clients: ``create_client``, ``client``, ``holder_clients``, ``verify_client_kyc``,
    ``approve_client``, ``reject_client``, ``activate_client``, ``deactivate_client``,
    ``patch_client``.
    Orders: ``create_order``, ``create_orders``, ``checkout``, ``order``, ``holder_orders``,
    ``approve_order``, ``reject_order``, ``pay_order``, ``unpay_order``, ``fail_payment``,
    ``refund_order``, ``set_payment_status``, ``process_order``, ``ship_order``,
    ``deliver_order``, ``cancel_order``, ``patch_order``.
    Carts: ``cart_add``/``cart_remove`` (with Dr Green's checks), ``fill_cart`` (without).
    Commissions: ``accrue_commission``, ``pay_commission``, ``commission``,
    ``order_commission``, ``holder_commissions``, ``set_eth_rate``.
    Sandbox: ``settings``/``update_settings``, ``add_fault``/``remove_fault``/``clear_faults``
    (and ``faults.active()``), ``request_counts``/``reset_request_counts``, ``reset``.

    Every method that changes an entity bumps its ``updatedAt``. Methods raise
    ``UnknownEntity`` (404), ``InvalidInput`` (400) or ``StateConflict`` (409), all
    ``SandboxError``s; ``checkout`` raises ``ServiceRefusal`` with Dr Green's own answer.
    """
