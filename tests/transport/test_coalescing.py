"""Fan-out writing (transport/connection.py ``Coalescer``): held frames reach the client complete, in
order and never after a close frame; a busy loop carries several frames per send; publishers that can
wait are held back at ``DEPTH`` frames per connection; the slow-client limit still applies.

The real application runs in-process on a real socket and the client is a plain aiohttp WebSocket
client, except for the merging test, which counts sends on recording transports.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from hubbub.api.app import NODE_KEY
from hubbub.auth import DEV_ACCESS_KEY, client_audience, mint_client_token
from hubbub.broker.base import Command, Op, Scope
from hubbub.core.node import Node
from hubbub.core.session import Session
from hubbub.protocols import SIMPLE
from hubbub.protocols.events import DataType, Payload
from hubbub.transport.connection import CHUNK, DEPTH, ClientConnection
from tests.transport.test_frames import Harness, Transport

HUB = "coalesce"
PROTOCOL = "json.webpubsub.azure.v1"


async def connect(
    server: TestServer, http: aiohttp.ClientSession
) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    endpoint = f"http://127.0.0.1:{server.port}"
    token = mint_client_token(DEV_ACCESS_KEY, client_audience(endpoint, HUB), user_id="u")
    ws = await http.ws_connect(
        f"{endpoint}/client/hubs/{HUB}?access_token={token}", protocols=(PROTOCOL,), max_msg_size=0
    )
    connected = orjson.loads(await ws.receive_str(timeout=30))
    assert connected["event"] == "connected"
    return ws, str(connected["connectionId"])


async def broadcast_in_one_iteration(node: Node, texts: list[str]) -> None:
    # as commands come from a broker: the memory broker applies them synchronously, nothing waits
    for text in texts:
        await node.publish(
            Command(Op.SEND, HUB, Scope.ALL, None, payload=Payload(DataType.TEXT, text.encode()))
        )


async def test_frames_of_one_iteration_arrive_complete_and_in_order(server: TestServer) -> None:
    node = server.app[NODE_KEY]
    async with aiohttp.ClientSession() as http:
        a, _ = await connect(server, http)
        b, _ = await connect(server, http)
        for rnd in range(3):
            texts = [f"{rnd}-{i}" for i in range(300)]
            await broadcast_in_one_iteration(node, texts)
            for ws in (a, b):
                got = [orjson.loads(await ws.receive_str(timeout=30))["data"] for _ in texts]
                assert got == texts
        await a.close()
        await b.close()


async def test_held_frames_are_written_before_the_close_frame(server: TestServer) -> None:
    node = server.app[NODE_KEY]
    async with aiohttp.ClientSession() as http:
        ws, connection_id = await connect(server, http)
        texts = [f"m{i}" for i in range(50)]
        await broadcast_in_one_iteration(node, texts)
        await node.publish(Command(Op.CLOSE, HUB, Scope.CONNECTION, connection_id, reason="bye"))
        got = [orjson.loads(await ws.receive_str(timeout=30)) for _ in range(len(texts) + 1)]
        assert [m["data"] for m in got[:-1]] == texts
        assert got[-1] == {"type": "system", "event": "disconnected", "message": "bye"}
        close = await ws.receive(timeout=30)
        assert close.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1000


async def test_held_frames_count_toward_the_slow_client_limit(server: TestServer) -> None:
    node = server.app[NODE_KEY]
    count, size = 20, 1 << 20  # 20 MiB in one iteration: more than the 16 MiB a connection may have unsent
    async with aiohttp.ClientSession() as http:
        ws, _ = await connect(server, http)
        await broadcast_in_one_iteration(node, ["x" * size] * count)
        received = 0
        while received < count:  # all of them would mean the limit was not applied
            msg = await ws.receive(timeout=30)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            received += 1
        assert msg.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1008
        assert msg.extra == "SlowClient"


async def test_publishers_wait_while_a_connection_holds_depth_frames(server: TestServer) -> None:
    node = server.app[NODE_KEY]
    async with aiohttp.ClientSession() as http:
        ws, connection_id = await connect(server, http)
        session = node.session(HUB, connection_id)
        assert session is not None and isinstance(session.link, ClientConnection)
        conn = session.link
        texts = [f"m{i}" for i in range(DEPTH * 5)]
        most = 0
        for text in texts:  # as fast as a REST caller can: the memory broker applies it at once
            await node.send(HUB, Scope.ALL, None, Payload(DataType.TEXT, text.encode()))
            most = max(most, len(conn.held or ()))
        assert most == DEPTH - 1  # a send that made it DEPTH returned only after the frames were written
        got = [orjson.loads(await ws.receive_str(timeout=30))["data"] for _ in texts]
        assert got == texts and node.writable.is_set()
        await ws.close()


class CountingTransport(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sends: list[bytes] = []  # what each call handed over

    def write(self, data: bytes) -> None:
        self.sends.append(data)
        super().write(data)

    def writelines(self, data: list[bytes]) -> None:
        self.sends.append(b"".join(data))
        for d in data:
            Transport.write(self, d)


async def test_frames_added_while_a_round_is_under_way_ride_in_the_same_send() -> None:
    h = Harness()
    n = 4 * CHUNK
    conns = []
    for _ in range(n):
        transport = CountingTransport()
        conn = ClientConnection(h.ctx, transport)  # type: ignore[arg-type]
        conn.start(Session("hub", SIMPLE, conn), 60.0)
        conns.append((conn, transport))
    first, second = b"\x81\x01a", b"\x81\x01b"
    for conn, _ in conns:
        conn.hold(first)
    await asyncio.sleep(0)  # one step of the round: CHUNK connections written
    step = CHUNK
    assert sum(1 for _, t in conns if t.sends) == step
    for conn, _ in conns:
        conn.hold(second)
    while h.ctx.coalescer.held:
        await asyncio.sleep(0)
    sends = [t.sends for _, t in conns]
    assert sends == [[first, second]] * step + [[first + second]] * (n - step)


class BackedUpTransport(Transport):
    """A transport with 17 MiB it could not send yet."""

    def get_write_buffer_size(self) -> int:
        return 17 << 20


async def test_a_transport_over_its_high_water_mark_counts_toward_the_slow_client_limit() -> None:
    h = Harness()
    transport = BackedUpTransport()
    conn = ClientConnection(h.ctx, transport)  # type: ignore[arg-type]
    session = Session("hub", SIMPLE, conn)
    conn.start(session, 60.0)
    session.hold_frame(b"\x81\x01a")  # the transport has not paused us: its buffer is not asked
    assert not session.closed
    conn.pause_writing()
    session.hold_frame(b"\x81\x01b")
    assert session.closed
    await asyncio.sleep(0)
    close = transport.frames()[-1]
    assert close[0] == 0x8 and close[1][2:] == b"SlowClient"


class BrokenTransport(Transport):
    def write(self, data: bytes) -> None:
        raise RuntimeError("the handle is closed")


async def test_a_failed_write_stops_neither_the_writer_nor_the_publishers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    pairs = []
    for transport in (BrokenTransport(), Transport()):
        conn = ClientConnection(h.ctx, transport)  # type: ignore[arg-type]
        conn.start(Session("hub", SIMPLE, conn), 60.0)
        pairs.append((conn, transport))
    frames = [b"\x81\x01" + bytes([65 + i]) for i in range(DEPTH)]
    for data in frames:
        for conn, _ in pairs:
            conn.hold(data)
    assert h.ctx.coalescer.full == 2 and not h.node.writable.is_set()
    while h.ctx.coalescer.held:
        await asyncio.sleep(0)
    assert h.ctx.coalescer.full == 0 and h.node.writable.is_set()
    assert pairs[1][1].out == b"".join(frames)
    assert "the handle is closed" in caplog.text
