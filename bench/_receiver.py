"""The bench's loopback webhook receiver, run in a process of its own by ``_common.receiver()``.

Answers 204 to every POST after reading its body, and counts POSTs, distinct ``webhook-id``s and
the first and last arrival (monotonic clock, which Linux shares between processes). It verifies
nothing and keeps no bodies: the bench measures the sender, so the receiver must stay cheap.
Its control routes: ``POST /_bench/reset`` and ``GET /_bench/stats?until=N&timeout=S``.
On start it prints one JSON line, ``{"port": N}``; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys

from aiohttp import web

from drgreen_poller.clock import SystemClock

CLOCK = SystemClock()


class Counter:
    """The counts since the last reset, and a way to wait for the n-th distinct id."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.posts = 0
        self.ids: set[str] = set()
        self.first_s: float | None = None
        self.last_s: float | None = None
        self.target = 0
        self.reached = asyncio.Event()

    async def receive(self, request: web.Request) -> web.Response:
        await request.read()
        now = CLOCK.monotonic()
        self.posts += 1
        self.ids.add(request.headers.get("webhook-id", ""))
        if self.first_s is None:
            self.first_s = now
        self.last_s = now
        if self.target and len(self.ids) >= self.target:
            self.reached.set()
        return web.Response(status=204)

    async def clear(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(status=204)

    async def stats(self, request: web.Request) -> web.Response:
        self.target = int(request.query.get("until", "0"))
        if self.target and len(self.ids) < self.target:
            self.reached.clear()
            with contextlib.suppress(TimeoutError):  # the caller sees the count fall short
                await asyncio.wait_for(self.reached.wait(), float(request.query["timeout"]))
        answer = {
            "posts": self.posts,
            "distinct": len(self.ids),
            "first_s": self.first_s,
            "last_s": self.last_s,
        }
        return web.json_response(answer)


async def main() -> None:
    counter = Counter()
    app = web.Application()
    app.router.add_post("/_bench/reset", counter.clear)
    app.router.add_get("/_bench/stats", counter.stats)
    app.router.add_post("/{tail:.*}", counter.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps({"port": port}), flush=True)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
