"""Sinks against real receivers, files and programs: headers, signatures, failures, durability."""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from drgreen_poller import USER_AGENT
from drgreen_poller.config import DeliveryConfig, Secret
from drgreen_poller.config_sinks import CommandSinkConfig, FileSinkConfig, WebhookSinkConfig
from drgreen_poller.sinks import CommandSink, FileSink, WebhookSink
from drgreen_poller.webhook_signing import sign_hex, verify_webhook
from tests.fakes import WebhookReceiver, start

SECRET = "whsec_" + base64.b64encode(b"a" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"b" * 32).decode()
NOW = datetime(2026, 11, 23, 10, 0, 3, 512000, tzinfo=UTC)
BODY = '{"id":"evt_1","type":"order.approved","note":"Zoë"}'.encode()
DELIVERY = DeliveryConfig(timeout_s=5)


def _webhook(
    url: str,
    *secrets: str,
    signature: str = "standard",
    timeout_s: float | None = None,
    unix_socket: Path | None = None,
) -> WebhookSink:
    config = WebhookSinkConfig(
        name="store",
        url=url,
        secrets=tuple(Secret(s, "test") for s in (secrets or (SECRET,))),
        signature="standard" if signature == "standard" else "hmac-sha256-hex",
        timeout_s=timeout_s,
        unix_socket=unix_socket,
    )
    return WebhookSink(config, DELIVERY)


class TestWebhookSink:
    async def test_standard_webhooks_headers(
        self, webhook_receiver: tuple[WebhookReceiver, str]
    ) -> None:
        """webhook-id, integer-second timestamp, v1 signature over the exact bytes sent."""
        hook, url = webhook_receiver
        sink = _webhook(url)
        outcome = await sink.deliver("evt_1", "order.approved", BODY, NOW)
        await sink.close()
        assert outcome.ok
        assert outcome.status == 204
        [request] = hook.received
        assert request.body == BODY
        assert request.headers["webhook-id"] == "evt_1"
        assert request.headers["webhook-timestamp"] == str(int(NOW.timestamp()))
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"] == USER_AGENT
        assert request.headers["x-event-type"] == "order.approved"
        assert verify_webhook(
            [SECRET], msg_id="evt_1", timestamp=request.headers["webhook-timestamp"],
            signature_header=request.headers["webhook-signature"], body=request.body,
            now_s=NOW.timestamp(),
        )  # fmt: skip

    async def test_rotation_signs_with_every_secret(
        self, webhook_receiver: tuple[WebhookReceiver, str]
    ) -> None:
        """Two secrets: two v1 entries separated by one space, each verifying alone."""
        hook, url = webhook_receiver
        sink = _webhook(url, OLD_SECRET, SECRET)
        await sink.deliver("evt_1", "order.approved", BODY, NOW)
        await sink.close()
        header = hook.received[0].headers["webhook-signature"]
        assert header.count(" ") == 1
        assert all(part.startswith("v1,") for part in header.split(" "))
        for secret in (OLD_SECRET, SECRET):
            assert verify_webhook(
                [secret], msg_id="evt_1", timestamp=str(int(NOW.timestamp())),
                signature_header=header, body=BODY, now_s=NOW.timestamp(),
            )  # fmt: skip

    async def test_hex_scheme(self, webhook_receiver: tuple[WebhookReceiver, str]) -> None:
        """signature = "hmac-sha256-hex": X-Signature sha256=<hex> and X-Timestamp instead."""
        hook, url = webhook_receiver
        sink = _webhook(url, signature="hmac-sha256-hex")
        await sink.deliver("evt_1", "order.approved", BODY, NOW)
        await sink.close()
        headers = hook.received[0].headers
        assert headers["x-signature"] == sign_hex(SECRET, BODY)
        assert headers["x-timestamp"] == str(int(NOW.timestamp()))
        assert "webhook-signature" not in headers

    async def test_failure_keeps_status_excerpt_and_hint(
        self, webhook_receiver: tuple[WebhookReceiver, str]
    ) -> None:
        """A 503 is a failed attempt with its status, the answer's first bytes and Retry-After."""
        hook, url = webhook_receiver
        hook.fail_next, hook.retry_after = 1, "120"
        sink = _webhook(url)
        outcome = await sink.deliver("evt_1", "order.approved", BODY, NOW)
        await sink.close()
        assert (outcome.ok, outcome.status, outcome.excerpt) == (False, 503, "try later")
        assert outcome.retry_after_s == 120

    async def test_redirect_is_not_followed(self) -> None:
        """A redirect is a failed attempt; the Location is never visited."""
        visited: list[str] = []

        async def moved(request: web.Request) -> web.Response:
            visited.append(request.path)
            raise web.HTTPFound("/elsewhere")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", moved)
        server = await start(app)
        sink = _webhook(str(server.make_url("/hook")))
        outcome = await sink.deliver("evt_1", "order.approved", BODY, NOW)
        await sink.close()
        await server.close()
        assert (outcome.ok, outcome.status) == (False, 302)
        assert visited == ["/hook"]

    async def test_timeout(self, webhook_receiver: tuple[WebhookReceiver, str]) -> None:
        """A receiver slower than the sink's timeout is a failed attempt classed "timeout"."""
        hook, url = webhook_receiver
        hook.hang_next = 1
        sink = _webhook(url, timeout_s=0.2)
        outcome = await sink.deliver("evt_1", "order.approved", BODY, NOW)
        await sink.close()
        assert (outcome.ok, outcome.error_class) == (False, "timeout")

    async def test_connection_refused(self) -> None:
        """Nobody listening is a failed attempt saying so in words, not an aiohttp class."""
        sink = _webhook("http://127.0.0.1:9/hook")
        outcome = await sink.deliver("evt_1", "order.approved", BODY, NOW)
        await sink.close()
        assert not outcome.ok
        assert outcome.error_class == "connection refused"
        assert outcome.excerpt == "cannot connect to 127.0.0.1:9: connection refused"

    async def test_unix_socket(self, tmp_path: Path) -> None:
        """With unix_socket set, the request travels over the socket."""
        hook = WebhookReceiver()
        runner = web.AppRunner(hook.app)
        await runner.setup()
        path = tmp_path / "hook.sock"
        await web.UnixSite(runner, str(path)).start()
        sink = _webhook("http://store.local/events", unix_socket=path)
        outcome = await sink.deliver("evt_1", "order.approved", BODY, NOW)
        await sink.close()
        await runner.cleanup()
        assert outcome.ok
        assert hook.received[0].headers["host"] == "store.local"


class TestFileSink:
    async def test_json_lines_fsynced(self, tmp_path: Path) -> None:
        """One event per line, exactly the bytes given, readable after sync; file is 0600."""
        path = tmp_path / "out" / "events.jsonl"
        sink = FileSink(FileSinkConfig(name="audit", path=path))
        for number in range(3):
            body = json.dumps({"id": f"evt_{number}"}).encode()
            assert (await sink.deliver(f"evt_{number}", "x", body, NOW)).ok
        await sink.sync()
        await sink.close()
        lines = path.read_bytes().splitlines()
        assert [json.loads(line)["id"] for line in lines] == ["evt_0", "evt_1", "evt_2"]
        assert oct(path.stat().st_mode & 0o777) == "0o600"

    async def test_torn_last_line_is_cut_at_open(self, tmp_path: Path) -> None:
        """After a crash mid-write, the partial last line is removed before appending."""
        path = tmp_path / "events.jsonl"
        path.write_bytes(b'{"id":"evt_0"}\n{"id":"evt_1","ty')
        sink = FileSink(FileSinkConfig(name="audit", path=path))
        await sink.deliver("evt_1", "x", b'{"id":"evt_1"}', NOW)
        await sink.close()
        assert path.read_bytes() == b'{"id":"evt_0"}\n{"id":"evt_1"}\n'

    async def test_unwritable_is_a_failed_attempt(self, tmp_path: Path) -> None:
        """A path that cannot be written is a failed attempt with the error, not an exception."""
        (tmp_path / "blocked").write_text("a file, not a directory")
        sink = FileSink(FileSinkConfig(name="audit", path=tmp_path / "blocked" / "x"))
        outcome = await sink.deliver("evt_1", "x", b"{}", NOW)
        assert not outcome.ok
        assert outcome.error_class in {"ENOTDIR", "EEXIST"}


class TestCommandSink:
    @staticmethod
    def _sink(code: str, timeout_s: float = 5) -> CommandSink:
        config = CommandSinkConfig(
            name="cmd", command=(sys.executable, "-c", code), timeout_s=timeout_s
        )
        return CommandSink(config, DELIVERY)

    async def test_event_on_stdin_and_env(self, tmp_path: Path) -> None:
        """The program gets the event on stdin and its id and type in the environment."""
        out = tmp_path / "got.json"
        code = (
            "import os, sys, json; json.dump({'stdin': sys.stdin.read(),"
            " 'id': os.environ['DRGREEN_EVENT_ID'], 'type': os.environ['DRGREEN_EVENT_TYPE']},"
            f" open({str(out)!r}, 'w'))"
        )
        assert (await self._sink(code).deliver("evt_1", "order.paid", BODY, NOW)).ok
        assert json.loads(out.read_text()) == {
            "stdin": BODY.decode(),
            "id": "evt_1",
            "type": "order.paid",
        }

    async def test_non_zero_exit_keeps_stderr(self) -> None:
        """Exit 3 is a failed attempt with the exit code and the start of stderr."""
        code = "import sys; sys.stderr.write('store database locked'); sys.exit(3)"
        outcome = await self._sink(code).deliver("evt_1", "x", BODY, NOW)
        assert (outcome.ok, outcome.error_class) == (False, "exit 3")
        assert outcome.excerpt == "store database locked"

    async def test_timeout_kills(self) -> None:
        """A program that outlives the timeout is killed and the attempt fails as a timeout."""
        code = "import time; time.sleep(30)"
        outcome = await self._sink(code, timeout_s=0.3).deliver("evt_1", "x", BODY, NOW)
        assert (outcome.ok, outcome.error_class) == (False, "timeout")

    async def test_missing_program(self) -> None:
        """A program that does not exist is a failed attempt saying so in words."""
        config = CommandSinkConfig(name="cmd", command=("/nonexistent/notify",))
        outcome = await CommandSink(config, DELIVERY).deliver("evt_1", "x", BODY, NOW)
        assert (outcome.ok, outcome.error_class) == (False, "cannot run")
        assert outcome.excerpt == "cannot run /nonexistent/notify: no such file or directory"


SHORT_WRITE_SCRIPT = """
import asyncio, json, resource, signal, sys
from datetime import UTC, datetime
from pathlib import Path
from drgreen_poller.config_sinks import CommandSinkConfig, FileSinkConfig, WebhookSinkConfig
from drgreen_poller.sinks import FileSink

path = Path(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)           # report EFBIG instead of dying
_, HARD = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (100, HARD))  # the "disk" holds 100 bytes

async def main():
    sink = FileSink(FileSinkConfig(name="audit", path=path))
    now = datetime.now(UTC)
    first = await sink.deliver("evt_1", "x", b'{"id":"evt_1","pad":"' + b"a" * 40 + b'"}', now)
    second = await sink.deliver("evt_2", "x", b'{"id":"evt_2","pad":"' + b"b" * 60 + b'"}', now)
    resource.setrlimit(resource.RLIMIT_FSIZE, (HARD, HARD))   # space again
    third = await sink.deliver("evt_2", "x", b'{"id":"evt_2","pad":"' + b"b" * 60 + b'"}', now)
    await sink.close()
    print(json.dumps([first.ok, second.ok, second.error_class, third.ok]))

asyncio.run(main())
"""


class TestFileSinkShortWrite:
    async def test_a_partial_line_is_taken_back(self, tmp_path: Path) -> None:
        """A write cut short (file size limit) is undone, so the retry leaves only whole lines."""
        import asyncio
        import sys

        path = tmp_path / "events.jsonl"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SHORT_WRITE_SCRIPT, str(path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 0, err.decode()
        first, second, error, third = json.loads(out)
        assert (first, second, third) == (True, False, True)
        assert error in {"short write", "EFBIG"}
        lines = path.read_bytes().splitlines()
        assert [json.loads(line)["id"] for line in lines] == ["evt_1", "evt_2"]
