"""`pysignalr` (PyPI), unmodified, against the SignalR service in process: both ways a Python client gets
there (the app's negotiate answering ``{url, accessToken}``, or the service's own negotiate), with the JSON
and the MessagePack protocols."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage
from pysignalr.protocol.json import JSONProtocol
from pysignalr.protocol.messagepack import MessagepackProtocol

from hubbub.signalr.tokens import client_url, mint_client_token

from .conftest import KEY, Env

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def app_url(env: Env, hub: str) -> AsyncIterator[str]:
    """A functions-style app whose ``POST /api/negotiate`` answers ``{url, accessToken}`` for user 'py'."""

    async def negotiate(_: web.Request) -> web.Response:
        token = mint_client_token(KEY, client_url("http://localhost", hub), user_id="py")
        return web.json_response({"url": f"{env.base}/client/?hub={hub}", "accessToken": token})

    app = web.Application()
    app.router.add_post("/api/negotiate", negotiate)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}/api"
    await server.close()


@contextlib.asynccontextmanager
async def running(client: SignalRClient) -> AsyncIterator[None]:
    opened = asyncio.Event()

    async def on_open() -> None:
        opened.set()

    client.on_open(on_open)
    task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(opened.wait(), 5)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def protocols() -> list[Any]:
    return [pytest.param(JSONProtocol, id="json"), pytest.param(MessagepackProtocol, id="messagepack")]


async def exercise(env: Env, hub: str, client: SignalRClient, user: str) -> None:
    received: asyncio.Queue[list[Any]] = asyncio.Queue()
    errors: asyncio.Queue[str] = asyncio.Queue()

    async def on_message(args: list[Any]) -> None:
        received.put_nowait(args)

    async def on_error(message: CompletionMessage) -> None:
        errors.put_nowait(str(message.error))

    client.on("newMessage", on_message)
    client.on_error(on_error)
    async with running(client):
        for path in ("/:send", f"/users/{user}/:send"):
            r = await env.rest(
                "POST", f"{hub}{path}", {"target": "newMessage", "arguments": [path, {"n": 1}]}
            )
            assert r.status == 202
            assert await asyncio.wait_for(received.get(), 5) == [path, {"n": 1}]

        completions: asyncio.Queue[CompletionMessage] = asyncio.Queue()

        async def on_completion(message: CompletionMessage) -> None:
            completions.put_nowait(message)

        await client.send("broadcast", ["hello"], on_invocation=on_completion)
        completion = await asyncio.wait_for(completions.get(), 5)
        assert completion.error == "Invocation failed, no upstream is configured for this hub."
        assert completion.error == await asyncio.wait_for(errors.get(), 5)


@pytest.mark.parametrize("protocol", protocols())
async def test_through_the_app_negotiate(env: Env, hub: str, app_url: str, protocol: Any) -> None:
    # pysignalr follows {url, accessToken}: a WebSocket to /client/?hub= with no id, token in a header
    await exercise(env, hub, SignalRClient(app_url, protocol=protocol()), "py")


@pytest.mark.parametrize("protocol", protocols())
async def test_through_the_service_negotiate(env: Env, hub: str, protocol: Any) -> None:
    # negotiate version 0 (pysignalr sends no negotiateVersion): the connection id is the transport id
    client = SignalRClient(
        f"{env.base}/client/?hub={hub}", protocol=protocol(), headers=env.auth(hub, "direct")
    )
    await exercise(env, hub, client, "direct")
