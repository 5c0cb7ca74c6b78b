"""systemd's notification protocol (``sd_notify``): READY, WATCHDOG, STOPPING, STATUS.

Owns only the datagram to ``$NOTIFY_SOCKET``; outside systemd it does nothing. It decides
nothing about *when* to notify (the daemon does: WATCHDOG only while its loops tick).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

NOTIFY_ENV = "NOTIFY_SOCKET"
WATCHDOG_ENV = "WATCHDOG_USEC"


class Notifier:
    """Sends state lines to systemd when run under ``Type=notify``; silent otherwise."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get(NOTIFY_ENV, "")
        # An abstract socket is written "@name" and means a leading NUL byte.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        watchdog_us = env.get(WATCHDOG_ENV, "")
        self.watchdog_s = int(watchdog_us) / 1e6 if watchdog_us.isdigit() else None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (e.g. ``"READY=1"``); False when not under systemd or on failure."""
        if not self._address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(lines).encode(), self._address)
        except OSError:
            return False
        return True
