"""The daemon run in-process for the reload tests, and what they read back from it.

Owns ``Running`` (``run_daemon`` on a config file a test rewrites and reloads), the sink table
the tests write, and small reads of the sandbox, the log and the state database. Fixtures live
in ``tests/reload/conftest.py``; nothing here asserts a behaviour of its own.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, MutableMapping
from contextlib import closing
from pathlib import Path
from typing import Any

from drgreen_poller.clock import SystemClock
from drgreen_poller.config import load_config
from drgreen_poller.daemon import Controls, run_daemon
from drgreen_poller.sandbox import LocalSandbox
from tests.fakes import WebhookReceiver
from tests.waiting import eventually

CLOCK = SystemClock()
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def sink_toml(name: str, url: str) -> str:
    """A ``[[sinks]]`` table: a webhook sink for ``order.*`` signed with ``store.whsec``."""
    return f"""
[[sinks]]
name = "{name}"
kind = "webhook"
url = "{url}"
secret_file = "store.whsec"
events = ["order.*"]
"""


class Running:
    """``run_daemon`` in-process on a config file that a test rewrites and reloads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.controls = Controls()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        config = load_config(self.path)
        self.task = asyncio.create_task(
            run_daemon(config, CLOCK, self.controls, lambda: load_config(self.path))
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.task is not None
        self.controls.request_stop()
        await asyncio.wait_for(self.task, 5)

    async def until(self, check: Callable[[], bool], timeout_s: float = 5) -> None:
        assert self.task is not None
        await eventually(check, task=self.task, timeout_s=timeout_s)

    async def reload(self, logs: list[MutableMapping[str, Any]]) -> MutableMapping[str, Any]:
        """Ask for a reload and wait for its outcome line (``config_reloaded`` or the first
        ``config_reload_failed``)."""
        seen = len(logs)
        self.controls.reload.set()
        outcomes = {"config_reloaded", "config_reload_failed"}
        await self.until(lambda: any(e["event"] in outcomes for e in logs[seen:]))
        return next(e for e in logs[seen:] if e["event"] in outcomes)


def accepted_types(hook: WebhookReceiver) -> list[str]:
    """The types of the events ``hook`` accepted, in arrival order."""
    return [d.event["type"] for d in hook.accepted()]


def requests_of(box: LocalSandbox, holder: str) -> int:
    """How many requests the sandbox has had from ``holder``."""
    total: int = box.state.traffic.request_counts(holder)["total"]
    return total


def logged(logs: list[MutableMapping[str, Any]], event: str) -> bool:
    """Whether a line named ``event`` is among ``logs``."""
    return any(e["event"] == event for e in logs)


def marked_unauthorized(state: Path) -> bool:
    """Whether the database remembers holder "revoked" as refused (False before it exists)."""
    query = "SELECT unauthorized_since FROM holders WHERE name = 'revoked'"
    return _value(state, query) is not None


def _value(state: Path, query: str) -> Any:
    """The first column of the first row of ``query`` (None when none, or no database yet)."""
    if not state.exists():
        return None
    with closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
        row = db.execute(query).fetchone()
    return row[0] if row is not None else None
