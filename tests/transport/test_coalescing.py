"""Per-connection coalescing (transport/connection.py ``Coalescer``): frames handed to one connection
within one event-loop iteration are written together at its end, in order, and never after a close
frame.

The real application runs in-process on a real socket; the client is a plain aiohttp WebSocket client.
"""

from __future__ import annotations

import aiohttp
import orjson
from aiohttp.test_utils import TestServer

from hubbub.api.app import NODE_KEY
from hubbub.auth import DEV_ACCESS_KEY, client_audience, mint_client_token
from hubbub.broker.base import Command, Op, Scope
from hubbub.core.node import Node
from hubbub.protocols.events import DataType, Payload

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
    # the memory broker applies a command synchronously: no await below really suspends
    for text in texts:
        await node.send(HUB, Scope.ALL, None, Payload(DataType.TEXT, text.encode()))


async def test_frames_of_one_iteration_arrive_complete_and_in_order(server: TestServer) -> None:
    node = server.app[NODE_KEY]
    async with aiohttp.ClientSession() as http:
        a, _ = await connect(server, http)
        b, _ = await connect(server, http)
        for rnd in range(3):  # several iterations: each one's first frame goes straight out
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
