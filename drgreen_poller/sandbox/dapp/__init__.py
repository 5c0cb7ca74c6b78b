"""The simulated Dr Green API under ``/api/v1``: what a store's signed requests meet.

Owns routing (``routes``), the guard and body parser (``guard``), the gateway that applies
faults (``gateway``), the traffic (``traffic``: active faults in ``faults``, request counts in
``counters``), answers and error shapes (``replies``), query validation (``validation``), the
handlers (``orders``, ``clients``, ``catalogue``) with their wire shapes (``records``,
``client_records``, ``strain_records``, ``client_dto``), and the request pipeline (``app``).
It imports ``world/`` only (plus the project's ``signing``); the variant ``settings`` live in
``world/`` because the world's rules read them too. It must not import ``control/``.
"""
