"""Free ports for the tests: one place that asks the kernel for a port nothing listens on.

Owns ``free_port``, shared by the suite and the PostgreSQL rig (tests/pg.py), so it imports
nothing of either. It must not hold the port: a test that needs one taken binds its own socket.
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` nothing listens on now: for a server to take, or for a connection
    that is refused."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
