"""``drgreen-poller sandbox --port 0`` in its own process, started as an operator would, and
its control API (``/_sandbox``) over HTTP. It must not reach into the sandbox's internals.
"""

from __future__ import annotations

import json
import selectors
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp

from tests.reliability.harness import CLI, START_TIMEOUT_S, STOP_TIMEOUT_S


class SandboxProcess:
    """``drgreen-poller sandbox --port 0`` in its own process; its logs go to ``log_path``."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        self.control_url = ""

    def start(self) -> None:
        """Start it and read its ready line (base_url, control_url)."""
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(  # noqa: S603 (our own console script, fixed arguments)
            [CLI, "sandbox", "--port", "0"], stdout=subprocess.PIPE, stderr=self._log
        )
        assert self._process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            if not selector.select(START_TIMEOUT_S):
                self.stop()
                raise AssertionError(f"the sandbox printed no ready line; see {self.log_path}")
        ready = json.loads(self._process.stdout.readline())
        self.base_url, self.control_url = ready["base_url"], ready["control_url"]

    def stop(self) -> None:
        """SIGTERM, then wait (SIGKILL if it lingers)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()
        if self._log is not None:
            self._log.close()


class ControlError(AssertionError):
    """The control API refused a call the test expected to succeed."""


@dataclass(frozen=True, slots=True)
class Keys:
    """A sandbox holder's name and key pair."""

    name: str
    api_key: str
    secret_key: str


class Control:
    """The sandbox's control API (``/_sandbox``) over one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, control_url: str) -> None:
        self.session = session
        self.url = control_url

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One control call: its status and JSON answer."""
        async with self.session.request(method, self.url + path, json=body) as answer:
            return answer.status, await answer.json()

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        """A control call that must succeed (200 or 201); its JSON answer."""
        status, data = await self.call(method, path, body)
        if status not in (200, 201):
            raise ControlError(f"{method} {path} answered {status}: {data}")
        return data

    async def holder(self, name: str) -> Keys:
        """A new holder with a working key pair."""
        made = await self.ok("POST", "/holders", {"name": name})
        return Keys(name, made["api_key"], made["secret_key"])

    async def fault(self, spec: dict[str, Any]) -> int:
        """Inject a fault; its id."""
        fault_id: int = (await self.ok("POST", "/faults", spec))["id"]
        return fault_id

    async def fault_active(self, fault_id: int) -> bool:
        """Whether the fault can still fire (spent faults leave the list)."""
        faults = (await self.ok("GET", "/faults"))["faults"]
        return any(f["id"] == fault_id for f in faults)

    async def request_log(self, holder: str) -> list[dict[str, Any]]:
        """The sandbox's recent requests of one holder: ``{t, at, holder, endpoint, status}``."""
        log: list[dict[str, Any]] = (await self.ok("GET", f"/requests?holder={holder}"))["log"]
        return log
