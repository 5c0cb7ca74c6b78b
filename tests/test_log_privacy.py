"""No secret and no customer data in the daemon's output at any level, and no third-party flood.

The real daemon (``drgreen-poller run`` at ``log_level = "debug"``) polls a sandbox running in
its own process and delivers to a webhook receiver, with known keys, a known webhook secret and
customers whose names, e-mails, phone numbers, addresses and medical answers are distinctive;
afterwards all of its stdout and stderr is searched for each of them.
"""

from __future__ import annotations

import asyncio
import json
import signal
from asyncio.subprocess import DEVNULL, PIPE
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drgreen_poller.api import ApiSettings
from drgreen_poller.clock import SystemClock
from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.store_client import StoreClient
from drgreen_poller.webhook_signing import generate_webhook_secret
from tests.cli_run import CLI
from tests.fakes import WebhookReceiver, start
from tests.waiting import eventually

WHSEC = generate_webhook_secret()
CLOCK = SystemClock()
# Loggers of libraries: nothing of theirs below WARNING may reach the output.
THIRD_PARTY = ("aiosqlite", "asyncio", "aiohttp", "apscheduler", "urllib3")
# Lines beside the one per poll, per upstream request and per delivery attempt (start, stop).
OTHER_LINES_MAX = 10


def _identity(n: int) -> dict[str, str]:
    return {
        "firstName": f"Quillonah{n}",
        "lastName": f"Vexbridge{n}",
        "email": f"quillonah.vexbridge{n}@privacy-probe.example",
        "phoneCode": "+44",
        "phoneCountryCode": "GB",
        "contactNumber": f"79115550{n}3",
    }


ADDRESS = {
    "address1": "17 Zephyrine Mews",
    "city": "Brackenholt",
    "state": "Wexmoorshire",
    "country": "United Kingdom",
    "countryCode": "GBR",
    "postalCode": "ZX9 4QQ",
}
SIGNED_UP: dict[str, Any] = {
    **_identity(9),
    "shipping": ADDRESS,
    "medicalRecord": {
        "dob": "1961-07-19",
        "gender": "Female",
        "medicalConditions": ["anxiety"],
        "otherMedicalCondition": "Florimbic tremor",
        "medicinesTreatments": [],
        "medicalHistory0": False,
        "medicalHistory13": "never",
        "medicalHistory14": ["never"],
    },
}


@dataclass
class Daemon:
    """A ``run`` subprocess whose stdout and stderr are collected line by line."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), 30)
        await asyncio.gather(*self.readers)
        return code


async def _collect(stream: asyncio.StreamReader | None, into: list[str]) -> None:
    assert stream is not None
    async for line in stream:
        into.append(line.decode(errors="replace"))


@pytest.fixture
async def sandbox() -> AsyncIterator[dict[str, str]]:
    """``drgreen-poller sandbox`` in its own process; its ready line (base_url, key pair)."""
    process = await asyncio.create_subprocess_exec(
        *CLI, "sandbox", "--port", "0", stdout=PIPE, stderr=DEVNULL
    )
    assert process.stdout is not None
    try:
        ready: dict[str, str] = json.loads(await asyncio.wait_for(process.stdout.readline(), 20))
        yield ready
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 20)


def _write_config(directory: Path, ready: dict[str, str], hook_url: str) -> Path:
    (directory / "demo.api_key").write_text(ready["api_key"])
    (directory / "demo.secret_key").write_text(ready["secret_key"])
    (directory / "hook.whsec").write_text(WHSEC)
    path = directory / "config.toml"
    path.write_text(
        f"""
[daemon]
state_path = "state.db"
log_level = "debug"
log_format = "json"
http_listen = ""
first_sync = "emit"

[api]
base_url = "{ready["base_url"]}"
requests_per_second = 200
burst = 20

[[holders]]
name = "demo"
api_key_file = "demo.api_key"
secret_key_file = "demo.secret_key"

[schedule]
active_orders = "0.3s"
stale_orders = "0.3s"
pending_kyc = "0.3s"
commissions = "0.3s"
strains = "0.3s"
jitter = 0

[[sinks]]
name = "hook"
kind = "webhook"
url = "{hook_url}"
secret_file = "hook.whsec"

[[sinks]]
name = "audit"
kind = "file"
path = "events.jsonl"
"""
    )
    return path


def _types_for(hook: WebhookReceiver, ids: set[str]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for delivery in hook.received:
        event: dict[str, Any] = delivery.event
        if event["resource"]["id"] in ids:
            seen.setdefault(event["resource"]["id"], set()).add(event["type"])
    return seen


async def _customers(session: aiohttp.ClientSession, ready: dict[str, str]) -> list[str]:
    """Three customers made by the control API and one signed up through the DAPP API."""
    control = ready["control_url"]
    ids = []
    for n in range(3):
        async with session.post(f"{control}/holders/demo/clients", json=_identity(n)) as reply:
            assert reply.status == 201, await reply.text()
            ids.append((await reply.json())["id"])
    credentials = ApiCredentials(ready["api_key"], ready["secret_key"])
    api = StoreClient(session, ApiSettings(ready["base_url"]), credentials, CLOCK, holder="demo")
    ids.append(await api.create_client(SIGNED_UP))
    async with session.post(f"{control}/holders/demo/orders", json={"clientId": ids[0]}) as reply:
        assert reply.status == 201, await reply.text()
    return ids


def _needles(ready: dict[str, str]) -> list[str]:
    """Every secret (whole, and a middle slice) and every personal value that must not appear."""
    secrets = [ready["api_key"], ready["secret_key"], WHSEC]
    needles = secrets + [s[20:60] for s in secrets] + [WHSEC.removeprefix("whsec_")]
    for identity in [*(_identity(n) for n in range(3)), _identity(9)]:
        needles += [identity[k] for k in ("firstName", "lastName", "email", "contactNumber")]
    needles += [ADDRESS[k] for k in ("address1", "city", "state", "postalCode")]
    needles += ["1961-07-19", "Florimbic"]
    return [n.lower() for n in needles]


class TestDebugLogs:
    @pytest.mark.timeout(120)
    async def test_no_secret_no_customer_data_no_flood(
        self, sandbox: dict[str, str], tmp_path: Path
    ) -> None:
        """At debug, a run that polled and delivered these customers logs none of their data."""
        hook = WebhookReceiver()
        server = await start(hook.app)
        config = _write_config(tmp_path, sandbox, str(server.make_url("/events")))
        process = await asyncio.create_subprocess_exec(
            *CLI, "-c", str(config), "run", stdout=PIPE, stderr=PIPE
        )
        daemon = Daemon(process)
        daemon.readers = [
            asyncio.create_task(_collect(process.stdout, daemon.lines)),
            asyncio.create_task(_collect(process.stderr, daemon.lines)),
        ]
        try:
            async with aiohttp.ClientSession() as session:
                await self._play(session, sandbox, hook)
                code = await daemon.stop()
                requests = await _upstream_requests(session, sandbox)
        finally:
            if process.returncode is None:
                process.kill()
                await daemon.stop()
            await server.close()
        assert code == 0
        output = "".join(daemon.lines).lower()
        leaked = [needle for needle in _needles(sandbox) if needle in output]
        assert leaked == []
        filed = len((tmp_path / "events.jsonl").read_text().splitlines())
        self._assert_no_flood(daemon.lines, requests + len(hook.received) + filed)

    @staticmethod
    async def _play(
        session: aiohttp.ClientSession, sandbox: dict[str, str], hook: WebhookReceiver
    ) -> None:
        """Customers sign up, pass KYC and are approved; wait until each event was delivered."""
        ids = set(await _customers(session, sandbox))
        await eventually(
            lambda: len(_types_for(hook, ids)) == 4,
            what="client.created x4",
            timeout_s=30.0,
            step_s=0.05,
        )
        for client_id in ids:
            for action in ("verify-kyc", "approve"):
                url = f"{sandbox['control_url']}/clients/{client_id}/{action}"
                async with session.post(url) as reply:
                    assert reply.status == 200, await reply.text()
        await eventually(
            lambda: all("client.kyc.completed" in t for t in _types_for(hook, ids).values()),
            what="client.kyc.completed x4",
            timeout_s=30.0,
            step_s=0.05,
        )

    @staticmethod
    def _assert_no_flood(lines: list[str], work: int) -> None:
        """No library line below WARNING; about one line per poll, request or delivery."""
        records = [json.loads(line) for line in lines]
        chatter = [
            r
            for r in records
            if str(r.get("logger", "")).startswith(THIRD_PARTY) and r["level"] in ("debug", "info")
        ]
        assert chatter == []
        polls = sum(1 for r in records if r["event"] == "poll_finished")
        assert polls > 0
        assert len(records) <= polls + work + OTHER_LINES_MAX, (len(records), polls, work)


async def _upstream_requests(session: aiohttp.ClientSession, ready: dict[str, str]) -> int:
    """How many Dr Green requests the sandbox has served (the daemon's, and ours)."""
    async with session.get(f"{ready['control_url']}/requests") as reply:
        total: int = (await reply.json())["total"]
    return total
