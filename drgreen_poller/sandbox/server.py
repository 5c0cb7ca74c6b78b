"""``run_sandbox``: serve a seeded sandbox on a TCP port until cancelled.

Owns the server's life (bind, announce, serve, clean up) and its one-line JSON announcement.
It must not parse command lines or configure logging: the CLI does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import TextIO

from aiohttp import web

from drgreen_poller.clock import Clock
from drgreen_poller.sandbox.app import API_PREFIX, create_app
from drgreen_poller.sandbox.control import CONTROL_PREFIX
from drgreen_poller.sandbox.seed import seed_demo
from drgreen_poller.sandbox.state import SandboxState
from drgreen_poller.sandbox.story import run_story

# A wildcard address accepts connections on loopback, which is the address to tell clients.
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104


def base_host(host: str) -> str:
    """How a URL names ``host`` (wildcards become loopback; IPv6 literals get brackets)."""
    named = _WILDCARDS.get(host, host)
    try:
        is_v6 = ipaddress.ip_address(named).version == 6
    except ValueError:
        is_v6 = False
    return f"[{named}]" if is_v6 else named


def _say(out: TextIO, text: str) -> None:
    out.write(f"story: {text}\n")
    out.flush()


async def _bind(runner: web.AppRunner, host: str, port: int) -> int:
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OSError(exc.errno, f"the sandbox cannot listen on {host}:{port}: {reason}") from exc
    bound = runner.addresses[0]
    return int(bound[1])


async def run_sandbox(
    host: str,
    port: int,
    *,
    out: TextIO,
    clock: Clock | None = None,
    ready: asyncio.Event | None = None,
    state: SandboxState | None = None,
    speed: float | None = None,
) -> None:
    """Serve a sandbox (seeded with ``seed_demo``) on ``host:port`` until cancelled.

    The first line written to ``out`` is one JSON object: ``base_url``, ``api_key``,
    ``secret_key`` (the demo holder's pair) and ``control_url``.

    Args:
        host: the address to bind (``127.0.0.1``; ``0.0.0.0`` is announced as loopback).
        port: the port; 0 picks a free one.
        out: where the announcement goes (flushed at once).
        clock: the sandbox's clock (the system clock by default).
        ready: set once the announcement is written.
        state: serve this world instead of a new one (it is still seeded with the demo holder);
            ``clock`` is then ignored.
        speed: also run the automatic story (``story.run_story``) for the demo holder at this
            speed, writing one ``story: ...`` line per step to ``out``.

    Raises:
        OSError: the address cannot be bound (e.g. the port is in use); the message says which.
    """
    world = state if state is not None else SandboxState(clock)
    holder = seed_demo(world)
    runner = web.AppRunner(create_app(world), access_log=None)
    await runner.setup()
    try:
        bound_port = await _bind(runner, host, port)
        origin = f"http://{base_host(host)}:{bound_port}"
        announcement = {
            "base_url": origin + API_PREFIX,
            "api_key": holder.credentials.api_key,
            "secret_key": holder.credentials.secret_key,
            "control_url": origin + CONTROL_PREFIX,
        }
        out.write(json.dumps(announcement) + "\n")
        out.flush()
        if ready is not None:
            ready.set()
        if speed is None:
            await asyncio.Event().wait()  # serve until cancelled
        else:
            await run_story(world, holder, speed=speed, on_step=lambda text: _say(out, text))
    finally:
        await runner.cleanup()
