"""``run_sandbox``: binding, the one-line announcement, serving signed calls, clean shutdown."""

from __future__ import annotations

import asyncio
import io
import json
import socket

import aiohttp
import pytest

from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.sandbox import SandboxState, run_sandbox
from drgreen_poller.sandbox.harness import SignedCaller
from drgreen_poller.sandbox.server import base_host


async def start(out: io.StringIO, state: SandboxState | None = None) -> asyncio.Task[None]:
    """Run the sandbox on a free loopback port and wait until it has announced itself."""
    ready = asyncio.Event()
    task = asyncio.ensure_future(run_sandbox("127.0.0.1", 0, out=out, ready=ready, state=state))
    await asyncio.wait_for(ready.wait(), timeout=5)
    return task


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel the sandbox and wait for its clean-up."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class TestRunSandbox:
    async def test_first_line_is_the_announcement(self) -> None:
        """The first line is one JSON object with the URLs and the demo key pair, then it serves."""
        out = io.StringIO()
        task = await start(out)
        try:
            first_line = out.getvalue().splitlines()[0]
            announced = json.loads(first_line)
            assert set(announced) == {"base_url", "api_key", "secret_key", "control_url"}
            assert announced["base_url"].startswith("http://127.0.0.1:")
            assert announced["base_url"].endswith("/api/v1")
            assert (
                announced["control_url"] == announced["base_url"][: -len("/api/v1")] + "/_sandbox"
            )
            creds = ApiCredentials(announced["api_key"], announced["secret_key"])
            async with aiohttp.ClientSession() as session:
                caller = SignedCaller(session, announced["base_url"], creds)
                answer = await caller.get("/dapp/orders", ("orderBy", "desc"), ("take", "2"))
                assert answer.status == 200
                assert len(answer.json()["data"]["orders"]) == 2
        finally:
            await stop(task)

    async def test_port_in_use_is_a_clear_oserror(self) -> None:
        """Binding a port that is taken raises an OSError naming the address."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
                await run_sandbox("127.0.0.1", port, out=io.StringIO())

    async def test_given_state_is_served_and_released(self) -> None:
        """A given world is seeded and served; after cancellation the port is free again."""
        state = SandboxState()
        out = io.StringIO()
        task = await start(out, state)
        port = int(json.loads(out.getvalue())["base_url"].split(":")[2].split("/")[0])
        assert "demo" in state.holders
        await stop(task)
        with socket.socket() as again:
            again.bind(("127.0.0.1", port))

    @pytest.mark.parametrize(
        ("host", "shown"),
        [
            ("0.0.0.0", "127.0.0.1"),  # noqa: S104 - the wildcard is the input under test
            ("::", "[::1]"),
            ("::1", "[::1]"),
            ("localhost", "localhost"),
        ],
    )
    def test_announced_host(self, host: str, shown: str) -> None:
        """Wildcard binds are announced as loopback and IPv6 literals get brackets."""
        assert base_host(host) == shown
