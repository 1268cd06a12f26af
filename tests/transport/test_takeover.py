"""The takeover after the upgrade (transport/websocket.py ``ClientEndpoint._take_over``): aiohttp
answers the handshake, then the socket belongs to a ``ClientConnection`` and nothing of aiohttp's
per-connection machinery is left; close codes and graceful shutdown stay as before.

The real application runs in-process on a real socket; the client is a raw socket speaking
RFC 6455 by hand, so it can send what a well-behaved client library never would.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import struct

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hubbub.api.app import NODE_KEY, create_app
from hubbub.auth import DEV_ACCESS_KEY, client_audience, mint_client_token
from hubbub.config import ServiceConfig
from tests.transport.test_frames import client_frame

HUB = "takeover"
PROTOCOL = "json.webpubsub.azure.v1"


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, server: TestServer, extra: bytes = b"") -> RawClient:
        endpoint = f"http://127.0.0.1:{server.port}"
        token = mint_client_token(DEV_ACCESS_KEY, client_audience(endpoint, HUB), user_id="u")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /client/hubs/{HUB}?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n"
            ).encode()
            + extra  # frames sent right behind the upgrade request, before any answer
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert f"sec-websocket-protocol: {PROTOCOL}".encode() in head.lower()
        client = cls(reader, writer)
        connected = orjson.loads((await client.frame())[1])
        assert connected["event"] == "connected"
        return client

    async def frame(self) -> tuple[int, bytes]:
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), 30)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def close_frame(self) -> tuple[int, bytes]:
        while True:
            opcode, payload = await self.frame()
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0], payload[2:]

    async def eof(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 30) == b""

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def close(self) -> None:
        self.writer.close()


def sessions(server: TestServer) -> int:
    node = server.app[NODE_KEY]
    return sum(len(hub.connections) for hub in node.hubs.values())


async def eventually(check: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)


async def test_aiohttp_lets_go_of_the_connection(server: TestServer) -> None:
    client = await RawClient.connect(server)
    web_server = server.runner.server
    assert isinstance(web_server, web.Server)
    await eventually(lambda: not web_server.connections)  # the request handler left
    gc.collect()
    leftovers = [o for o in gc.get_objects() if type(o).__name__ in ("RequestHandler", "WebSocketResponse")]
    assert leftovers == []
    client.send(client_frame(b'{"type":"ping"}'))  # and the connection still works
    assert orjson.loads((await client.frame())[1]) == {"type": "pong"}
    client.send(client_frame(struct.pack("!H", 1000), 0x8))
    assert await client.close_frame() == (1000, b"")
    assert await client.eof()
    await eventually(lambda: sessions(server) == 0)
    client.close()


async def test_frames_sent_with_the_upgrade_request_are_read(server: TestServer) -> None:
    client = await RawClient.connect(server, extra=client_frame(b'{"type":"ping"}'))
    assert orjson.loads((await client.frame())[1]) == {"type": "pong"}
    client.close()


async def test_fragments_with_a_ping_in_between(server: TestServer) -> None:
    client = await RawClient.connect(server)
    client.send(client_frame(b'{"type":', 0x1, fin=False))
    client.send(client_frame(b"are you there", 0x9))
    client.send(client_frame(b'"ping"}', 0x0))
    assert await client.frame() == (0xA, b"are you there")
    assert orjson.loads((await client.frame())[1]) == {"type": "pong"}
    client.close()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (client_frame(b'{"type":"ping"}', mask=b""), 1002),
        (client_frame(b"\xff\xfe"), 1007),
        (client_frame(b"x" * (1024 * 1024 + 1), 0x2), 1009),
        (client_frame(b"", 0x5), 1002),
    ],
    ids=["unmasked", "bad UTF-8", "too big", "bad opcode"],
)
async def test_protocol_errors_end_the_connection(server: TestServer, data: bytes, code: int) -> None:
    client = await RawClient.connect(server)
    client.send(data)
    assert (await client.close_frame())[0] == code
    assert await client.eof()
    await eventually(lambda: sessions(server) == 0)
    client.close()


async def test_a_client_that_vanishes_is_detached(server: TestServer) -> None:
    client = await RawClient.connect(server)
    assert sessions(server) == 1
    client.writer.transport.abort()
    await eventually(lambda: sessions(server) == 0)


async def test_graceful_shutdown_says_disconnected_and_closes_1001() -> None:
    server = TestServer(create_app(ServiceConfig()), host="127.0.0.1")
    await server.start_server()
    client = await RawClient.connect(server)

    async def answer() -> tuple[dict[str, object], tuple[int, bytes]]:
        disconnected = orjson.loads((await client.frame())[1])
        close = await client.close_frame()
        client.send(client_frame(struct.pack("!H", 1001), 0x8))  # the client answers the close
        return disconnected, close

    answering = asyncio.create_task(answer())
    started = asyncio.get_running_loop().time()
    await server.close()
    disconnected, (code, reason) = await answering
    assert disconnected == {"type": "system", "event": "disconnected", "message": "Service is shutting down"}
    assert code == 1001 and reason == b"Service is shutting down"
    assert await client.eof()
    assert asyncio.get_running_loop().time() - started < 4  # it did not wait for the timeout
    client.close()


async def test_graceful_shutdown_drops_clients_that_do_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hubbub.transport.websocket.SHUTDOWN_TIMEOUT", 0.3)
    server = TestServer(create_app(ServiceConfig()), host="127.0.0.1")
    await server.start_server()
    client = await RawClient.connect(server)
    await server.close()
    assert (await client.close_frame())[0] == 1001
    assert await client.eof()
    client.close()
