"""systemd notifications over a real unix datagram socket."""

from __future__ import annotations

import socket
from pathlib import Path

from drgreen_poller.systemd import Notifier


class TestNotifier:
    def test_sends_state_lines(self, tmp_path: Path) -> None:
        """Under systemd, READY and STATUS arrive in one datagram on NOTIFY_SOCKET."""
        address = str(tmp_path / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind(address)
            notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"})
            assert notifier.enabled
            assert notifier.watchdog_s == 30
            assert notifier.notify("READY=1", "STATUS=polling")
            assert listener.recv(1024) == b"READY=1\nSTATUS=polling"

    def test_silent_outside_systemd(self) -> None:
        """Without NOTIFY_SOCKET nothing is sent and nothing fails."""
        notifier = Notifier({})
        assert not notifier.enabled
        assert notifier.watchdog_s is None
        assert not notifier.notify("READY=1")

    def test_gone_socket_is_not_fatal(self, tmp_path: Path) -> None:
        """A socket that vanished makes notify return False, not raise."""
        assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).notify("WATCHDOG=1")

    def test_abstract_address(self) -> None:
        """An abstract socket name (@name) is sent to with a leading NUL."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind("\0drgreen-poller-test")
            assert Notifier({"NOTIFY_SOCKET": "@drgreen-poller-test"}).notify("STOPPING=1")
            assert listener.recv(64) == b"STOPPING=1"
