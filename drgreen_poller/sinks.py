"""Where events go: the ``Sink`` protocol and the webhook, JSON Lines file and command sinks.

A sink takes one event (its exact JSON bytes) and reports an ``Outcome``; ``sync`` makes what
it accepted durable before the worker records it as delivered. Sinks know nothing about retries,
ordering or SQLite (``delivery.py`` and the store do), and never log an event's body.
"""

from __future__ import annotations

import asyncio
import errno
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import aiohttp
import structlog

from drgreen_poller import USER_AGENT
from drgreen_poller.config import DeliveryConfig
from drgreen_poller.config_sinks import (
    CommandSinkConfig,
    FileSinkConfig,
    SinkConfig,
    WebhookSinkConfig,
)
from drgreen_poller.http_failures import address, describe
from drgreen_poller.responses import parse_retry_after
from drgreen_poller.webhook_signing import sign_hex, webhook_key, webhook_signature

log = structlog.get_logger(__name__)

# How much of a receiver's answer is kept in the attempt log.
EXCERPT_BYTES = 256


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt went: ``ok``, or why not (HTTP status, error class, the answer's start)."""

    ok: bool
    status: int | None = None
    error_class: str | None = None
    excerpt: str | None = None
    retry_after_s: float | None = None


class Sink(Protocol):
    name: str

    async def deliver(self, event_id: str, event_type: str, body: bytes, now: datetime) -> Outcome:
        """Hand one event over; never raises for a delivery failure (returns it instead)."""
        ...

    async def sync(self) -> None:
        """Make every accepted event durable (called before they are recorded as delivered)."""
        ...

    async def close(self) -> None: ...


def _excerpt(data: bytes) -> str | None:
    return data[:EXCERPT_BYTES].decode("utf-8", errors="replace") if data else None


class WebhookSink:
    """HTTP POST, signed the Standard Webhooks way (or ``sha256=`` hex), redirects not followed.

    Args:
        config: the ``[[sinks]]`` table (url, secrets, signature scheme, timeout, unix_socket).
        delivery: the ``[delivery]`` table (default timeout, concurrency).
    """

    def __init__(self, config: WebhookSinkConfig, delivery: DeliveryConfig) -> None:
        self.name = config.name
        self._url = config.url
        self._secrets = [secret.value for secret in config.secrets]
        self._scheme = config.signature
        # Decoded once, not for every signature (config validation has checked them).
        self._keys = (
            [webhook_key(secret) for secret in self._secrets] if self._scheme == "standard" else []
        )
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_s or delivery.timeout_s)
        self._unix_socket = config.unix_socket
        self._where = (
            f"unix socket {self._unix_socket}" if self._unix_socket else address(self._url)
        )
        self._limit = delivery.concurrency
        self._session: aiohttp.ClientSession | None = None

    def headers(self, event_id: str, event_type: str, body: bytes, now: datetime) -> dict[str, str]:
        """The request headers; the signature covers exactly ``body``."""
        timestamp = int(now.timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Event-Type": event_type,
            "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
        }
        if self._scheme == "standard":
            headers["webhook-signature"] = webhook_signature(self._keys, event_id, timestamp, body)
        else:
            headers["X-Signature"] = sign_hex(self._secrets[0], body)
            headers["X-Timestamp"] = str(timestamp)
        return headers

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector: aiohttp.BaseConnector = (
                aiohttp.UnixConnector(path=str(self._unix_socket), limit=self._limit)
                if self._unix_socket
                else aiohttp.TCPConnector(limit=self._limit)
            )
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def deliver(self, event_id: str, event_type: str, body: bytes, now: datetime) -> Outcome:
        headers = self.headers(event_id, event_type, body, now)
        try:
            async with self._client().post(
                self._url, data=body, headers=headers, allow_redirects=False
            ) as response:
                answer = await response.content.read(EXCERPT_BYTES)
                status = response.status
                hint = parse_retry_after(response.headers.get("Retry-After"), now)
        except (TimeoutError, aiohttp.ClientError) as exc:
            failure = describe(exc, self._where, self._timeout.total or 0)
            return Outcome(False, error_class=failure.kind, excerpt=failure.message)
        return Outcome(200 <= status < 300, status, None, _excerpt(answer), hint)

    async def sync(self) -> None:
        return None  # a 2xx is the receiver's promise; nothing of ours to flush

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class FileSink:
    """Appends one JSON line per event; fsync per batch; a torn last line is cut off at open."""

    def __init__(self, config: FileSinkConfig) -> None:
        self.name = config.name
        self.path = config.path
        self._fd: int | None = None
        self._dirty = False

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            _cut_torn_tail(fd)
            self._fd = fd
        return self._fd

    async def deliver(self, event_id: str, event_type: str, body: bytes, now: datetime) -> Outcome:
        line = body + b"\n"
        size: int | None = None
        try:
            fd = self._open()
            size = os.lseek(fd, 0, os.SEEK_END)
            written = os.write(fd, line)  # one write: lines never interleave
        except OSError as exc:
            self._undo(size)
            return Outcome(False, error_class=errno.errorcode.get(exc.errno or 0, "OSError"),
                           excerpt=exc.strerror)  # fmt: skip
        if written != len(line):
            self._undo(size)  # a partial line must not stay for the retry to follow
            return Outcome(False, error_class="short write")
        self._dirty = True
        return Outcome(True)

    def _undo(self, size: int | None) -> None:
        """Cut the file back to ``size`` after a failed write (best effort)."""
        fd = self._fd
        if fd is None or size is None:
            return
        try:
            os.ftruncate(fd, size)
        except OSError:
            self._fd = None
            os.close(fd)  # reopened, and its torn tail cut, at the next attempt

    async def sync(self) -> None:
        if self._fd is not None and self._dirty:
            await asyncio.to_thread(os.fsync, self._fd)
            self._dirty = False

    async def close(self) -> None:
        if self._fd is not None:
            await self.sync()
            os.close(self._fd)
            self._fd = None


def _cut_torn_tail(fd: int) -> None:
    """If the file does not end with a newline (a crash mid-write), cut back to the last one."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    chunk = 64 * 1024
    end = size
    while end > 0:
        start = max(0, end - chunk)
        block = os.pread(fd, end - start, start)
        cut = block.rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, start + cut + 1)
            return
        end = start
    os.ftruncate(fd, 0)


class CommandSink:
    """Runs a program per event, the event JSON on stdin; exit 0 is success.

    The program also gets ``DRGREEN_EVENT_ID`` and ``DRGREEN_EVENT_TYPE`` in its environment.
    """

    def __init__(self, config: CommandSinkConfig, delivery: DeliveryConfig) -> None:
        self.name = config.name
        self.argv = config.command
        self.timeout_s = config.timeout_s or delivery.timeout_s

    async def deliver(self, event_id: str, event_type: str, body: bytes, now: datetime) -> Outcome:
        env = {**os.environ, "DRGREEN_EVENT_ID": event_id, "DRGREEN_EVENT_TYPE": event_type}
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            return Outcome(
                False, error_class="cannot run", excerpt=f"cannot run {self.argv[0]}: {reason}"
            )
        try:
            async with asyncio.timeout(self.timeout_s):
                _, stderr = await process.communicate(body)
        except TimeoutError:
            process.kill()
            await process.wait()
            return Outcome(False, error_class="timeout")
        except asyncio.CancelledError:
            process.kill()  # the daemon is stopping: leave no program behind
            raise
        if process.returncode == 0:
            return Outcome(True)
        excerpt = _excerpt(stderr)
        log.warning(
            "command_sink_failed", sink=self.name, exit_code=process.returncode, stderr=excerpt
        )
        return Outcome(False, error_class=f"exit {process.returncode}", excerpt=excerpt)

    async def sync(self) -> None:
        return None

    async def close(self) -> None:
        return None


def build_sinks(sinks: tuple[SinkConfig, ...], delivery: DeliveryConfig) -> dict[str, Sink]:
    """One ``Sink`` per ``[[sinks]]`` table, by name."""
    built: dict[str, Sink] = {}
    for config in sinks:
        if isinstance(config, WebhookSinkConfig):
            built[config.name] = WebhookSink(config, delivery)
        elif isinstance(config, FileSinkConfig):
            built[config.name] = FileSink(config)
        else:
            built[config.name] = CommandSink(config, delivery)
    return built
