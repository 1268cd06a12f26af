"""Keepalive (transport/connection.py ``Keepalive``): one timer per interval pings every connection;
a connection silent for a whole interval after a ping is dropped; client pings are answered.

The real application runs in-process (keepalive interval 1 s) on a real socket; the clients are
aiohttp WebSocket clients with automatic pong answers turned off, so the test sees every ping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from hubbub.api.app import create_app
from hubbub.auth import DEV_ACCESS_KEY, client_audience, mint_client_token
from hubbub.config import ServiceConfig

HUB = "keepalive"


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    server = TestServer(create_app(ServiceConfig(keepalive_seconds=1.0)), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def connect(server: TestServer, http: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
    endpoint = f"http://127.0.0.1:{server.port}"
    token = mint_client_token(DEV_ACCESS_KEY, client_audience(endpoint, HUB))
    ws = await http.ws_connect(
        f"{endpoint}/client/hubs/{HUB}?access_token={token}",
        protocols=("json.webpubsub.azure.v1",),
        autoping=False,
    )
    assert orjson.loads(await ws.receive_str(timeout=30))["event"] == "connected"
    return ws


async def test_a_client_that_answers_pings_stays_connected(server: TestServer) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await connect(server, http)
        for _ in range(4):  # four intervals: each brings a ping, each ping is answered
            msg = await ws.receive(timeout=30)
            assert msg.type is aiohttp.WSMsgType.PING
            await ws.pong(msg.data)
        assert not ws.closed
        await ws.close()


async def test_a_silent_client_is_dropped(server: TestServer) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await connect(server, http)
        pings = 0
        while True:  # never answer: after the first unanswered interval the server drops us
            msg = await ws.receive(timeout=30)
            if msg.type is not aiohttp.WSMsgType.PING:
                break
            pings += 1
            assert pings < 5, "a silent client was still connected after 5 keepalive intervals"
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


async def test_client_pings_are_answered_and_count_as_activity(server: TestServer) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await connect(server, http)
        for i in range(12):  # ~3 s of client pings, never a pong: the pings keep the connection alive
            await ws.ping(b"p%d" % i)
            while True:
                msg = await ws.receive(timeout=30)
                if msg.type is aiohttp.WSMsgType.PONG:
                    assert msg.data == b"p%d" % i
                    break
                assert msg.type is aiohttp.WSMsgType.PING  # the server's own, left unanswered
            await asyncio.sleep(0.2)
        assert not ws.closed
        await ws.close()
