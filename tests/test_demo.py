"""The demo as a user sees it on a terminal: each step's own lines under it, one printer."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import pty
import re
import struct
import termios

import pytest

from drgreen_poller.demo import DaemonLines
from tests.cli_run import CLI

# Every line the demo prints, by kind: the story's own, a webhook the receiver heard, a
# daemon log line told as part of the story.
TITLE = re.compile(r"^[A-Z].*:$")
WEBHOOK = re.compile(r"^  webhook (ok|FAILING) +evt_[a-z0-9]+: [a-z_.]+ +\S")
DAEMON = re.compile(r"^  daemon  (warning|error) [a-z_]+  \S+=")
OPENING = ("Dr Green sandbox on ", "The daemon polls every second", "Summary: ")


def _sections(text: str) -> dict[str, list[str]]:
    """The story's steps: each title with the lines printed under it."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if TITLE.match(line):
            current = sections.setdefault(line, [])
        elif line.startswith("  "):
            current.append(line)
    return sections


async def _demo_on_a_terminal() -> tuple[int, str]:
    """Run ``drgreen-poller demo`` with stdout and stderr on one pseudo-terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    process = await asyncio.create_subprocess_exec(*CLI, "demo", stdout=slave, stderr=slave)
    os.close(slave)
    text = await asyncio.to_thread(_read_all, master)
    code = await asyncio.wait_for(process.wait(), 10)
    return code, text.replace("\r\n", "\n")


def _read_all(master: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the demo has exited and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return b"".join(chunks).decode()


class TestDemoOnATerminal:
    @pytest.mark.timeout(90)
    async def test_each_step_shows_its_own_lines_and_nothing_interleaves(self) -> None:
        """On a terminal every line is the story's; the hiccup step shows the 503s, the refused
        delivery and its retry; every other step shows its events."""
        code, text = await _demo_on_a_terminal()
        assert code == 0, text
        lines = [line for line in text.splitlines() if line]
        strays = [
            line
            for line in lines
            if not (
                TITLE.match(line)
                or WEBHOOK.match(line)
                or DAEMON.match(line)
                or line.startswith(OPENING)
            )
        ]
        assert strays == []  # no log line of another format, no traceback, no half line
        sections = _sections(text)
        assert all(sections.values()), [title for title, shown in sections.items() if not shown]
        hiccup = next(shown for title, shown in sections.items() if "hiccups" in title)
        assert any(re.match(r"  daemon  warning poll_failed .*HTTP 503", line) for line in hiccup)
        assert any("FAILING" in line and "order.rejected" in line for line in hiccup)
        assert any("delivery_attempt_failed" in line for line in hiccup)
        assert any(line.startswith("  webhook ok ") and "order.rejected" in line for line in hiccup)
        delivered = next(shown for title, shown in sections.items() if "delivered" in title)
        assert any("order.shipped" in line and "(inferred)" in line for line in delivered)
        for kind in (
            "client.kyc.completed",
            "order.created",
            "order.paid",
            "commission.accrued",
            "order.delivered",
            "strain.updated",
        ):
            assert f" {kind} " in text
        assert "still waiting" not in text
        assert "every signature verified" in text


class TestDaemonLines:
    def test_a_json_line_becomes_a_story_line(self) -> None:
        """A log line written in pieces comes out once, whole, as ``daemon LEVEL EVENT k=v``."""
        out = io.StringIO()
        lines = DaemonLines(out)
        fields = {"tier": "strains", "error": "HTTP 503: Service Unavailable", "retry_in_s": 1.0}
        line = json.dumps({**fields, "event": "poll_failed", "level": "warning", "timestamp": "t"})
        lines.write(line[:10])
        assert out.getvalue() == ""
        lines.write(line[10:] + "\n")
        assert out.getvalue() == (
            "  daemon  warning poll_failed  tier=strains"
            " error='HTTP 503: Service Unavailable' retry_in_s=1.0\n"
        )

    @pytest.mark.parametrize(
        ("written", "shown"),
        [
            ('{"event": "state_created", "level": "warning"}\n', ""),  # new by design
            ("a line that is not JSON\n", "  daemon  a line that is not JSON\n"),
            ("\n", ""),
        ],
    )
    def test_what_the_story_leaves_out_or_keeps(self, written: str, shown: str) -> None:
        """The demo's own new state is not news; a line that is not JSON is kept as it is."""
        out = io.StringIO()
        DaemonLines(out).write(written)
        assert out.getvalue() == shown

    def test_raw_keeps_the_json(self) -> None:
        """With ``--log-format json`` the lines are the JSON itself, still one printer."""
        out = io.StringIO()
        lines = DaemonLines(out, raw=True)
        line = '{"event": "poll_failed", "level": "warning"}'
        lines.write(line + "\n")
        lines.flush()
        assert out.getvalue() == line + "\n"
        assert not lines.isatty()  # so the lines are JSON for it to read, even on a terminal
