"""Connection failures in words: each kind met for real on 127.0.0.1, as an operator reads it."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from drgreen_poller.http_failures import Failure, address, describe
from tests.ports import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
TIMEOUT_S = 0.3


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    """Start raw TCP servers on 127.0.0.1 (optionally TLS); returns the port of each."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _failure(url: str) -> Failure:
    """What a GET of ``url`` failed with, in words."""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url) as response,
        ):
            await response.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        return describe(exc, address(url), TIMEOUT_S)
    raise AssertionError("the request did not fail")


def _self_signed(directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=36500))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (directory / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "c.pem", directory / "k.pem")
    return context


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    await reader.read()  # until the client gives up
    writer.close()


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    writer.close()


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # linger 0: the kernel answers with RST


def _answer(data: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(data)
        await writer.drain()
        writer.close()

    return handler


class TestDescribe:
    async def test_refused(self) -> None:
        """Nobody listening: 'cannot connect to HOST:PORT: connection refused'."""
        port = free_port()
        failure = await _failure(f"http://127.0.0.1:{port}/")
        assert failure == Failure(
            "connection refused", f"cannot connect to 127.0.0.1:{port}: connection refused"
        )

    async def test_unknown_host(self) -> None:
        """A name that does not resolve says it could not connect and the resolver's reason."""
        failure = await _failure("http://no-such-host.invalid:8799/")
        assert failure.kind == "name not resolved"
        assert failure.message.startswith("cannot connect to no-such-host.invalid:8799: ")
        assert "Error" not in failure.message

    async def test_timeout(self, serve: Callable[..., Awaitable[int]]) -> None:
        """No answer in time: from where, and how long we waited."""
        port = await serve(_silent)
        failure = await _failure(f"http://127.0.0.1:{port}/")
        assert failure == Failure("timeout", f"no answer from 127.0.0.1:{port} within 0.3 s")

    async def test_untrusted_certificate(
        self, serve: Callable[..., Awaitable[int]], tmp_path: Path
    ) -> None:
        """A certificate the client does not trust is a TLS failure naming the reason."""
        port = await serve(_answer(b"HTTP/1.1 204 No Content\r\n\r\n"), _self_signed(tmp_path))
        failure = await _failure(f"https://127.0.0.1:{port}/")
        assert failure == Failure(
            "TLS failure",
            f"cannot connect to 127.0.0.1:{port}: TLS certificate self-signed certificate",
        )

    async def test_tls_to_a_plain_server(self, serve: Callable[..., Awaitable[int]]) -> None:
        """https to a server that speaks plain HTTP fails the handshake, said in words."""
        port = await serve(_answer(b"HTTP/1.1 400 Bad Request\r\n\r\n"))
        failure = await _failure(f"https://127.0.0.1:{port}/")
        assert failure.kind in ("TLS failure", "connection reset by peer")
        assert failure.message.startswith(f"cannot connect to 127.0.0.1:{port}: ")
        assert "Error" not in failure.message

    async def test_reset(self, serve: Callable[..., Awaitable[int]]) -> None:
        """A connection reset mid-request says it was lost and why."""
        port = await serve(_reset)
        failure = await _failure(f"http://127.0.0.1:{port}/")
        assert failure == Failure(
            "connection reset by peer",
            f"connection to 127.0.0.1:{port} lost: connection reset by peer",
        )

    async def test_hang_up(self, serve: Callable[..., Awaitable[int]]) -> None:
        """A server closing without an answer says just that."""
        port = await serve(_hang_up)
        failure = await _failure(f"http://127.0.0.1:{port}/")
        assert failure == Failure(
            "disconnected", f"127.0.0.1:{port} closed the connection without answering"
        )

    async def test_cut_off(self, serve: Callable[..., Awaitable[int]]) -> None:
        """An answer shorter than its Content-Length was cut off."""
        port = await serve(_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc"))
        failure = await _failure(f"http://127.0.0.1:{port}/")
        assert failure == Failure("answer cut off", f"the answer from 127.0.0.1:{port} was cut off")

    async def test_not_http(self, serve: Callable[..., Awaitable[int]]) -> None:
        """Something that is not HTTP on the port is named as such."""
        port = await serve(_answer(b"SSH-2.0-OpenSSH\r\n\r\n"))
        failure = await _failure(f"http://127.0.0.1:{port}/")
        assert failure.kind == "not HTTP"
        assert failure.message.startswith(f"127.0.0.1:{port} did not answer in HTTP (bad status")

    async def test_missing_unix_socket(self, tmp_path: Path) -> None:
        """A socket path with nothing behind it names the path and the reason."""
        path = tmp_path / "hook.sock"
        connector = aiohttp.UnixConnector(path=str(path))
        try:
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.get("http://store.local/"),
            ):
                pass
        except aiohttp.ClientError as exc:
            failure = describe(exc, f"unix socket {path}", TIMEOUT_S)
        assert failure.message == f"cannot connect to unix socket {path}: no such file or directory"

    def test_anything_else(self) -> None:
        """Any other client error still says where the request went, then aiohttp's words."""
        failure = describe(aiohttp.InvalidURL("http://[::1"), "[::1]:80", TIMEOUT_S)
        assert failure == Failure("request failed", "request to [::1]:80 failed: http://[::1")


class TestAddress:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("http://127.0.0.1:8799/api/v1", "127.0.0.1:8799"),
            ("https://api.drgreen.example/api/v1", "api.drgreen.example:443"),
            ("http://[::1]:8080/x", "[::1]:8080"),
        ],
    )
    def test_host_and_port(self, url: str, expected: str) -> None:
        """host:port as typed, the scheme's port filled in, IPv6 in brackets."""
        assert address(url) == expected
