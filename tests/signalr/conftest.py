"""An in-process SignalR app (aiohttp test server) with raw HTTP / WebSocket helpers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hubbub.signalr.app import SIGNALR_SERVICE_KEY, create_signalr_app
from hubbub.signalr.config import SignalRConfig
from hubbub.signalr.service import SignalRService
from hubbub.signalr.tokens import client_url, mint_client_token
from hubbub.store import SettingsBackend

KEY, KEY2 = "signalr-primary-key-0123456789-0123456789", "signalr-secondary-key-0123456789-012345678"
RS = b"\x1e"


@dataclass
class Env:
    base: str
    http: aiohttp.ClientSession
    service: SignalRService

    def token(self, hub: str, user: str | None = None, key: str = KEY, **claims: Any) -> str:
        return mint_client_token(key, client_url("http://localhost", hub), user_id=user, claims=claims)

    def auth(self, hub: str, user: str | None = None, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(hub, user, **claims)}"}

    async def negotiate(self, hub: str, user: str | None = None, version: str | None = "1") -> dict[str, Any]:
        query = f"?hub={hub}" + (f"&negotiateVersion={version}" if version is not None else "")
        async with self.http.post(f"{self.base}/client/negotiate{query}", headers=self.auth(hub, user)) as r:
            assert r.status == 200, await r.text()
            body: dict[str, Any] = await r.json()
            return body

    async def ws(
        self, hub: str, user: str | None = None, token: str | None = None
    ) -> aiohttp.ClientWebSocketResponse:
        url = f"{self.base}/client/?hub={hub}" + (f"&id={token}" if token else "")
        return await self.http.ws_connect(url, headers=self.auth(hub, user), autoping=True)

    async def connect(
        self, hub: str, user: str | None = None, protocol: str = "json"
    ) -> tuple[aiohttp.ClientWebSocketResponse, str]:
        """Negotiate, open a WebSocket, complete the handshake; return (socket, connection id)."""
        body = await self.negotiate(hub, user)
        ws = await self.ws(hub, user, body["connectionToken"])
        await ws.send_str(orjson.dumps({"protocol": protocol, "version": 1}).decode() + "\x1e")
        reply = await ws.receive(timeout=5)
        assert reply.data in ("{}\x1e", b"{}\x1e"), reply
        return ws, body["connectionId"]

    async def rest(
        self, method: str, path: str, body: Any = None, *, v1: bool = False, **kw: Any
    ) -> aiohttp.ClientResponse:
        prefix = "/api/v1/hubs/" if v1 else "/api/hubs/"
        url = f"{self.base}{prefix}{path}"
        token = mint_client_token(KEY, url.replace(self.base, "http://localhost"))
        headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
        if body is not None and not isinstance(body, bytes):
            body = orjson.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        response = await self.http.request(method, url, data=body, headers=headers, **kw)
        await response.read()
        return response


Starter = Callable[..., Awaitable[Env]]


@pytest.fixture
async def start() -> AsyncIterator[Starter]:
    """``await start(**SignalRConfig fields)`` runs a SignalR app in this process."""
    servers: list[TestServer] = []
    sessions: list[aiohttp.ClientSession] = []

    async def run(store: SettingsBackend | None = None, **settings: Any) -> Env:
        config = SignalRConfig(access_keys=(KEY, KEY2), **settings)
        app = create_signalr_app(config, store=store)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Env(f"http://127.0.0.1:{server.port}", http, app[SIGNALR_SERVICE_KEY])

    yield run
    for http in sessions:
        await http.close()
    for server in servers:
        await server.close()
    await asyncio.sleep(0)


@pytest.fixture
async def env(start: Starter) -> Env:
    return await start()


@pytest.fixture
def hub() -> str:
    return "h" + uuid.uuid4().hex[:10]


# --- a real upstream HTTP server in process ---------------------------------------------------------

Responder = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


@dataclass
class Upstream:
    url: str
    calls: asyncio.Queue[tuple[str, dict[str, str], bytes]] = field(default_factory=asyncio.Queue)
    responders: dict[str, Responder] = field(default_factory=dict)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream("")

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        event = request.headers["X-ASRS-Event"]
        state.calls.put_nowait((request.path_qs, dict(request.headers), body))
        responder = state.responders.get(event)
        return await responder(request, body) if responder else web.Response(status=200)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.url = f"http://127.0.0.1:{server.port}"
    yield state
    await server.close()


async def call(upstream: Upstream, event: str) -> tuple[str, dict[str, str], bytes]:
    while True:
        path, headers, body = await asyncio.wait_for(upstream.calls.get(), 5)
        if headers["X-ASRS-Event"] == event:
            return path, headers, body
