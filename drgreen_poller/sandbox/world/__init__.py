"""The sandbox world: state and rules of a simulated Dr Green backend, pure Python.

Owns the entities (``model``), their input conversions (``inputs``), the variant switches
(``settings``, here because rules read them: the payment vocabulary decides what "paid" is),
the shared ``tables`` and the parts composed over them (``catalogue``, ``clients``,
``profiles``, ``carts``, ``managers``, ``commissions``, ``orders``, ``lifecycle``,
``reports``, ``nfts`` over the key data of ``tokens``), with ``World`` as their root. It must
not import aiohttp, ``dapp/`` or ``control/``: time comes from the injected clock and ids from
a seeded generator, so a run is reproducible.
"""

from drgreen_poller.sandbox.world.root import World

__all__ = ["World"]
