"""The upstream HTTP client (``hubbub.upstream.http``) against real local HTTP servers.

Two kinds of server: an aiohttp app for ordinary answers, and a raw ``asyncio`` socket server that
writes exact bytes for the cases aiohttp would not produce (chunks in separate packets, bodies read
until close, interim answers, closing a keep-alive connection just as it is reused, garbage).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hubbub.upstream.http import HttpClient, HttpError, ResponseTooLarge

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def app_server(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


Conversation = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """Accepts connections; ``talk(reader, writer, connection_number)`` runs each one."""

    def __init__(self, talk: Conversation) -> None:
        self.talk = talk
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.talk(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


async def test_keep_alive_reuses_one_connection_and_sends_the_request_as_given() -> None:
    seen: list[tuple[Any, str, dict[str, str], bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(
            (
                request.transport.get_extra_info("peername"),
                request.method,
                dict(request.headers),
                await request.read(),
            )
        )
        return web.Response(text=f"n{len(seen)}", headers={"X-Twice": "a"})

    async with app_server(handler) as base:
        client = HttpClient()
        try:
            for i in range(1, 4):
                r = await client.request(
                    "POST", f"{base}/x/y?q=1", {"ce-type": "t", "Content-Type": "text/plain"}, b"hi", 5
                )
                assert (r.status, r.body) == (200, f"n{i}".encode())
                assert r.headers["content-type"].startswith("text/plain") and r.headers["x-twice"] == "a"
            r = await client.request("OPTIONS", base + "/v", {"WebHook-Request-Origin": "o"}, None, 5)
            assert r.status == 200
        finally:
            await client.close()
    assert len({peer for peer, _, _, _ in seen}) == 1  # one connection for all four requests
    _, method, headers, body = seen[0]
    assert (method, body, headers["ce-type"], headers["Content-Length"]) == ("POST", b"hi", "t", "2")
    assert headers["Host"] == base.removeprefix("http://")
    assert seen[3][1] == "OPTIONS" and seen[3][2]["WebHook-Request-Origin"] == "o"


async def test_handler_closing_the_connection_gets_a_new_one() -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await raw.read_request(reader)
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nc{n}".encode())
        await writer.drain()

    raw = RawServer(talk)
    async with raw as base:
        client = HttpClient()
        try:
            bodies = [(await client.request("POST", base, {}, b"", 5)).body for _ in range(3)]
        finally:
            await client.close()
    assert bodies == [b"c1", b"c2", b"c3"] and raw.connections == 3


async def test_http_1_0_answer_and_body_read_until_close() -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"part two")
        await writer.drain()

    raw = RawServer(talk)
    async with raw as base:
        client = HttpClient()
        try:
            for _ in range(2):
                r = await client.request("POST", base, {}, b"x", 5)
                assert (r.status, r.body) == (200, b"part one, part two")
        finally:
            await client.close()
    assert raw.connections == 2


async def test_chunked_answer_in_separate_packets() -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await raw.read_request(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                b"ce-connectionState: \xc3\xa9t\xc3\xa9\r\n\r\n"
            )
            for piece in (b"5\r\nhello\r\n", b"1\r\n \r\n", b"5\r\nworld\r\n", b"0\r\n\r\n"):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)

    raw = RawServer(talk)
    async with raw as base:
        client = HttpClient()
        try:
            for _ in range(2):
                r = await client.request("POST", base, {}, b"x", 5)
                assert r.body == b"hello world"
                assert r.headers["ce-connectionstate"] == "été"
        finally:
            await client.close()
    assert raw.connections == 1


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversize_answer(chunked: bool) -> None:
    async def handler(_: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=b"x" * 1001)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(_)
        for _i in range(11):
            await response.write(b"y" * 100)
        await response.write_eof()
        return response

    async with app_server(handler) as base:
        client = HttpClient(max_body=1000)
        try:
            with pytest.raises(ResponseTooLarge, match="larger than 1000 bytes"):
                await client.request("POST", base, {}, b"", 5)
        finally:
            await client.close()

        client = HttpClient(max_body=1001)
        try:
            if not chunked:
                assert len((await client.request("POST", base, {}, b"", 5)).body) == 1001
        finally:
            await client.close()


async def test_timeout_then_a_fresh_connection() -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            request = await raw.read_request(reader)
            if b"/slow" in request:
                await asyncio.sleep(30)
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")

    raw = RawServer(talk)
    async with raw as base:
        client = HttpClient()
        try:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await client.request("POST", base + "/slow", {}, b"", 0.3)
            assert 0.25 < time.monotonic() - started < 2
            r = await client.request("POST", base + "/fast", {}, b"", 5)
            assert (r.status, r.body) == (204, b"")
            assert client.connections() == 1
        finally:
            await client.close()
    assert raw.connections == 2  # the timed-out connection was not reused


async def test_timeout_while_connecting_counts_against_the_deadline() -> None:
    # a listening socket whose backlog is full never completes new handshakes
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                s = socket.socket()
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    s.connect(("127.0.0.1", port))
                fillers.append(s)
            client = HttpClient()
            try:
                started = time.monotonic()
                with pytest.raises(TimeoutError):
                    await client.request("POST", f"http://127.0.0.1:{port}/", {}, b"", 0.3)
                assert time.monotonic() - started < 2
                await asyncio.sleep(0.05)
                assert client.connections() == 0
            finally:
                await client.close()
        finally:
            for s in fillers:
                s.close()


async def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        client = HttpClient()
        try:
            with pytest.raises(HttpError, match=r"ConnectionRefusedError|Connect call failed"):
                await client.request("POST", f"http://127.0.0.1:{port}/", {}, b"", 5)
        finally:
            await client.close()


async def test_reused_connection_closed_by_the_handler_is_retried_once() -> None:
    """The keep-alive race: the handler closes an idle connection as the next request arrives."""

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await raw.read_request(reader)
        if n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            await writer.drain()
            await raw.read_request(reader)  # the reuse arrives, and the handler closes without answering
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
        await writer.drain()
        await asyncio.sleep(1)

    raw = RawServer(talk)
    async with raw as base:
        client = HttpClient()
        try:
            assert (await client.request("POST", base, {}, b"1", 5)).body == b"first"
            assert (await client.request("POST", base, {}, b"2", 5)).body == b"second"
        finally:
            await client.close()
    assert raw.connections == 2 and len(raw.requests) == 3


async def test_fresh_connection_closed_without_answer_is_not_retried() -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await raw.read_request(reader)

    raw = RawServer(talk)
    async with raw as base:
        client = HttpClient()
        try:
            with pytest.raises(HttpError, match="closed the connection without an answer"):
                await client.request("POST", base, {}, b"", 5)
        finally:
            await client.close()
    assert raw.connections == 1 and len(raw.requests) == 1


async def test_connection_closed_mid_answer() -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()

    raw = RawServer(talk)
    async with raw as base:
        client = HttpClient()
        try:
            with pytest.raises(HttpError, match="mid-answer"):
                await client.request("POST", base, {}, b"", 5)
        finally:
            await client.close()


async def test_interim_answer_redirect_not_followed_and_malformed_answers() -> None:
    answers = {
        b"/continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"/redirect": b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
        b"/garbage": b"NOT HTTP AT ALL\r\n\r\n",
        b"/two": b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    }

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            request = await raw.read_request(reader)
            writer.write(answers[request.split(b" ")[1]])
            await writer.drain()

    raw = RawServer(talk)
    async with raw as base:
        client = HttpClient()
        try:
            r = await client.request("POST", base + "/continue", {}, b"", 5)
            assert (r.status, r.body) == (200, b"ok")
            r = await client.request("POST", base + "/redirect", {}, b"", 5)
            assert (r.status, r.headers["location"]) == (302, "/elsewhere")
            with pytest.raises(HttpError, match="malformed"):
                await client.request("POST", base + "/garbage", {}, b"", 5)
            await client.request(
                "POST", base + "/two", {}, b"", 5
            )  # answered; the extra answer kills the connection
            await asyncio.sleep(0.05)
            r = await client.request("POST", base + "/continue", {}, b"", 5)
            assert r.body == b"ok"
        finally:
            await client.close()
    assert b"/elsewhere" not in b"".join(raw.requests)
    assert raw.connections == 3


async def test_gzip_answer_is_decoded_and_capped() -> None:
    async def handler(request: web.Request) -> web.Response:
        size = int(request.query["n"])
        return web.Response(body=gzip.compress(b"z" * size), headers={"Content-Encoding": "gzip"})

    async with app_server(handler) as base:
        client = HttpClient(max_body=1000)
        try:
            assert (await client.request("POST", base + "/?n=1000", {}, b"", 5)).body == b"z" * 1000
            with pytest.raises(ResponseTooLarge):
                await client.request("POST", base + "/?n=1001", {}, b"", 5)
        finally:
            await client.close()


async def test_bounded_pool_queues_requests() -> None:
    active = peak = 0

    async def handler(_: web.Request) -> web.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        return web.Response(text="ok")

    async with app_server(handler) as base:
        client = HttpClient(max_connections=2)
        try:
            results = await asyncio.gather(*(client.request("POST", base, {}, b"", 5) for _ in range(6)))
            assert [r.body for r in results] == [b"ok"] * 6
            assert client.connections() == 2 and peak == 2
            with pytest.raises(TimeoutError):  # waiting for a connection counts against the deadline
                await asyncio.gather(*(client.request("POST", base, {}, b"", 0.08) for _ in range(6)))
            await asyncio.sleep(0.1)
            assert client.connections() <= 2
            assert (
                len(await asyncio.gather(*(client.request("POST", base, {}, b"", 5) for _ in range(4)))) == 4
            )
        finally:
            await client.close()


async def test_idle_connections_are_closed() -> None:
    peers: list[Any] = []

    async def handler(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername"))
        return web.Response(text="ok")

    async with app_server(handler) as base:
        client = HttpClient(idle_seconds=0.1)
        try:
            await client.request("POST", base, {}, b"", 5)
            await client.request("POST", base, {}, b"", 5)
            await asyncio.sleep(0.35)
            await client.request("POST", base, {}, b"", 5)
        finally:
            await client.close()
    assert peers[0] == peers[1] != peers[2]


async def test_cancelled_request_does_not_leave_a_reusable_connection() -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            request = await raw.read_request(reader)
            if b"/slow" in request:
                await asyncio.sleep(0.2)
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nc{n}".encode())
            await writer.drain()

    raw = RawServer(talk)
    async with raw as base:
        client = HttpClient()
        try:
            task = asyncio.create_task(client.request("POST", base + "/slow", {}, b"", 5))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.3)  # the late answer must not be taken for the next request's
            assert (await client.request("POST", base + "/fast", {}, b"", 5)).body == b"c2"
            assert client.connections() == 1
        finally:
            await client.close()


async def test_bad_headers_and_urls_are_refused_before_sending() -> None:
    client = HttpClient()
    try:
        with pytest.raises(HttpError, match="line break"):
            await client.request("POST", "http://127.0.0.1:9/", {"ce-userId": "a\r\nX-Evil: 1"}, b"", 5)
        with pytest.raises(HttpError, match="invalid URL"):
            await client.request("POST", "ftp://example.com/", {}, b"", 5)
        with pytest.raises(HttpError, match="invalid URL"):
            await client.request("POST", "/relative", {}, b"", 5)
    finally:
        await client.close()


def _certificate(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key) made with `cryptography`."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_https_verifies_the_certificate(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    peers: list[Any] = []

    async def handler(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(text="secure")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        client = HttpClient(ssl_context=trusted)
        try:
            for _ in range(2):
                r = await client.request("POST", f"https://127.0.0.1:{port}/e", {}, b"x", 5)
                assert (r.status, r.body) == (200, b"secure")
        finally:
            await client.close()
        assert len(set(peers)) == 1
        client = HttpClient()  # the system's CAs do not know this certificate
        try:
            with pytest.raises(HttpError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.request("POST", f"https://127.0.0.1:{port}/e", {}, b"x", 5)
        finally:
            await client.close()
    finally:
        await runner.cleanup()
