"""``drgreen-poller -c CONFIG --log-format json run`` for the reliability suite: its TOML file
(holders' key files and the sink's secret beside it), starts, SIGKILL and SIGTERM, and its output
read back for crashes. It must not reach into the daemon's internals: only files and processes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.reliability.harness import CLI, CLOCK, STOP_TIMEOUT_S
from tests.reliability.receiver import Receiver
from tests.reliability.sandbox_process import Keys

# Log events written only when something crashed at a loop boundary.
CRASH_LOG_EVENTS = ("poll_crashed", "delivery_attempt_crashed", "state_database_failed")


# Order and KYC tiers every ``interval``; backoff never longer than one interval, so "recovery
# within one interval of the fault ending" is what an operator with this file would expect.
CONFIG_TEMPLATE = """
[daemon]
state_path = "state.db"
http_listen = ""
first_sync = "{first_sync}"

[api]
base_url = "{base_url}"
timeout = "{api_timeout}"
requests_per_second = 50
burst = 20

{holders}
[schedule]
active_orders = "{interval}"
stale_orders = "{interval}"
pending_kyc = "{interval}"
commissions = "1h"
strains = "1h"
jitter = 0.1
backoff_base = "0.5s"
backoff_max = "{interval}"
{schedule_extra}

[delivery]
retry_schedule = ["0s", "0.5s", "1s", "2s", "5s", "10s"]

[[sinks]]
name = "store"
kind = "webhook"
url = "{url}"
secret_file = "store.whsec"
events = [{patterns}]
"""
HOLDER_TEMPLATE = """[[holders]]
name = "{name}"
api_key_file = "{name}.api_key"
secret_key_file = "{name}.secret_key"
strain_countries = []
"""


def write_config(
    directory: Path,
    *,
    base_url: str,
    holders: Iterable[Keys],
    receiver: Receiver,
    events: Iterable[str],
    first_sync: str = "seed",
    interval: str = "1s",
    api_timeout: str = "5s",
    schedule_extra: str = "",
) -> Path:
    """A daemon config (``CONFIG_TEMPLATE``) with the holders' key files and the sink's secret."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "store.whsec").write_text(receiver.secret + "\n")
    tables = []
    for keys in holders:
        (directory / f"{keys.name}.api_key").write_text(keys.api_key + "\n")
        (directory / f"{keys.name}.secret_key").write_text(keys.secret_key + "\n")
        tables.append(HOLDER_TEMPLATE.format(name=keys.name))
    path = directory / "config.toml"
    text = CONFIG_TEMPLATE.format(
        first_sync=first_sync, base_url=base_url, api_timeout=api_timeout,
        holders="\n".join(tables), interval=interval, schedule_extra=schedule_extra,
        url=receiver.url, patterns=", ".join(f'"{p}"' for p in events),
    )  # fmt: skip
    path.write_text(text)
    return path


def shows_a_crash(line: str) -> bool:
    """Whether an output line shows a crash (see ``Daemon.troubles``)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return "Traceback" in line
    if not isinstance(entry, dict):
        return "Traceback" in line
    return "exception" in entry or entry.get("event") in CRASH_LOG_EVENTS


class Daemon:
    """``drgreen-poller -c CONFIG --log-format json run``, restartable; all output in one file."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log_path = config.with_name("daemon.log")
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.starts = 0
        self._up_s = 0.0  # the runtime of the runs that ended

    async def start(self) -> None:
        """Start a new run (the previous one must have ended)."""
        assert not self.running, "the daemon is already running"
        with self.log_path.open("ab") as log:
            log.write(f'{{"harness": "run {self.starts + 1}"}}\n'.encode())
            log.flush()
            self.process = await asyncio.create_subprocess_exec(
                CLI, "-c", str(self.config), "--log-format", "json", "run",
                stdout=log, stderr=subprocess.STDOUT, cwd=self.config.parent,
            )  # fmt: skip
        self.started_at = CLOCK.monotonic()
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def uptime(self) -> float:
        """Seconds the daemon has been running, over all its runs."""
        current = CLOCK.monotonic() - self.started_at if self.running else 0.0
        return self._up_s + current

    def _ended(self) -> None:
        self._up_s += CLOCK.monotonic() - self.started_at

    async def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            self._ended()
        await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM and wait for the exit (SIGKILL after ``STOP_TIMEOUT_S``); the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            self._ended()
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                await self.kill()
        assert self.process.returncode is not None
        return self.process.returncode

    def output(self) -> str:
        """Everything every run printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines printed so far (lines torn by SIGKILL are skipped)."""
        lines = []
        for line in self.output().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def troubles(self) -> list[str]:
        """Lines that show a crash: a traceback (printed, or a JSON line's ``exception``) or a
        loop-boundary failure."""
        return [line for line in self.output().splitlines() if shows_a_crash(line)]
