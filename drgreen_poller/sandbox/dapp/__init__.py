"""The simulated Dr Green API under ``/api/v1``: what a store's signed requests meet.

Owns routing (``routes``), the guard and body parser (``guard``), the gateway that applies
faults (``gateway``; fault specs in ``faults``), the ``traffic`` (active faults and request
counts), answers and error shapes (``replies``), query validation (``validation``), the
handlers (``orders``, ``clients``, ``client_activity``, ``catalogue``, ``insights``,
``funnel``, ``nfts``) with their wire shapes and body DTOs (``records``, ``client_records``,
``strain_records``, ``client_dto``, ``client_edit_dto``), and the request pipeline (``app``).
The served routes are listed in ``routes.ROUTE_TABLE`` and in the README.
It imports ``world/`` only (+ ``canonical``, ``request_signing``): the variant ``settings`` live in
``world/`` because the world's rules read them too (the payment vocabulary decides what "paid"
is), while faults and counts describe requests, so they live here. It must not import
``control/``.
"""
