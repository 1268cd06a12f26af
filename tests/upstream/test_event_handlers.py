"""Event handlers end to end: a real hubbub app and a real handler HTTP server, both in this process."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hubbub.api.app import UPSTREAM_KEY, create_app
from hubbub.config import ServiceConfig
from hubbub.settings import EventHandler, HubSettings, StaticSettings
from tests.support.proxy import cuttable_proxy

KEY, KEY2 = "primary-key-0123456789-0123456789", "secondary-key-0123456789-012345678"
JSON = "json.webpubsub.azure.v1"

Responder = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Handler:
    """A user's event-handler server: records requests, answers what the test says."""

    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    responders: dict[str, Responder] = field(default_factory=dict)
    allowed_origin: str = "*"
    events: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return web.Response(headers={"WebHook-Allowed-Origin": self.allowed_origin})
        event = request.headers["ce-eventName"]
        self.requests.append((event, dict(request.headers), await request.read()))
        self.events.put_nowait(event)
        responder = self.responders.get(event)
        return await responder(request) if responder else web.Response(status=204)

    def last(self, event: str) -> tuple[dict[str, str], bytes]:
        return next((h, b) for e, h, b in reversed(self.requests) if e == event)


@dataclass
class Env:
    settings: StaticSettings
    handler: Handler
    base: str
    handler_url: str
    http: aiohttp.ClientSession
    app: web.Application

    def configure(self, **kw: Any) -> None:
        handler = EventHandler(
            url_template=self.handler_url + "/{hub}/{event}",
            user_event_pattern=kw.pop("pattern", "*"),
            system_events=kw.pop("system", ("connect", "connected", "disconnected")),
        )
        self.settings.put(HubSettings("chat", (handler,), **kw))

    def url(self, hub: str = "chat", **claims: Any) -> str:
        aud = f"http://localhost/client/hubs/{hub}"
        token = jwt.encode({"aud": aud, "exp": time.time() + 60, **claims}, KEY, algorithm="HS256")
        return f"{self.base}/client/hubs/{hub}?access_token={token}"

    async def connect(
        self, url: str | None = None, protocols: tuple[str, ...] = (JSON,)
    ) -> aiohttp.ClientWebSocketResponse:
        ws = await self.http.ws_connect(url or self.url(sub="u1"), protocols=protocols)
        return ws


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    handler = Handler()
    handler_app = web.Application()
    handler_app.router.add_route("*", "/{tail:.*}", handler.handle)
    handler_server = TestServer(handler_app, host="127.0.0.1")
    await handler_server.start_server()
    settings = StaticSettings()
    app = create_app(ServiceConfig(access_keys=(KEY, KEY2)), store=settings)
    app[UPSTREAM_KEY].timeout = 1.0
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        yield Env(
            settings,
            handler,
            f"http://127.0.0.1:{server.port}",
            f"http://127.0.0.1:{handler_server.port}",
            http,
            app,
        )
    await server.close()
    await handler_server.close()


async def recv(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return dict(orjson.loads(msg.data))


async def test_lazy_auth_connect_assigns_user_groups_roles(env: Env) -> None:
    async def connect(request: web.Request) -> web.Response:
        body = await request.json()
        assert body["subprotocols"] == [JSON] and "access_token" not in body["claims"]
        return web.json_response(
            {"userId": "bob", "groups": ["g"], "roles": ["webpubsub.sendToGroup"]},
            headers={"ce-connectionState": "state-1"},
        )

    env.handler.responders["connect"] = connect
    env.configure(anonymous_connect=True)
    ws = await env.connect(f"{env.base}/client/hubs/chat?name=bob")
    connected = await recv(ws)
    assert connected["userId"] == "bob"
    connect_body = orjson.loads(env.handler.last("connect")[1])
    assert connect_body["query"]["name"] == ["bob"]
    await ws.send_json({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "hi", "ackId": 1})
    got = [await recv(ws), await recv(ws)]
    assert {"type": "ack", "ackId": 1, "success": True} in got
    assert any(m.get("fromUserId") == "bob" and m.get("data") == "hi" for m in got)
    assert await asyncio.wait_for(env.handler.events.get(), 5) == "connect"
    assert await asyncio.wait_for(env.handler.events.get(), 5) == "connected"
    headers = env.handler.last("connected")[0]
    assert headers["ce-connectionState"] == "state-1" and headers["ce-userId"] == "bob"
    await ws.close()
    assert await asyncio.wait_for(env.handler.events.get(), 5) == "disconnected"


async def test_anonymous_denied_without_policy(env: Env) -> None:
    env.configure()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await env.connect(f"{env.base}/client/hubs/chat")
    assert info.value.status == 401


@pytest.mark.parametrize(("status", "expected"), [(401, 401), (403, 403), (400, 400), (500, 500), (418, 500)])
async def test_connect_rejection_status(env: Env, status: int, expected: int) -> None:
    async def reject(_: web.Request) -> web.Response:
        return web.Response(status=status, text="go away")

    env.handler.responders["connect"] = reject
    env.configure()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await env.connect()
    assert info.value.status == expected
    assert "connected" not in [e for e, _, _ in env.handler.requests]


async def test_signature_headers_and_disconnected_reason(env: Env) -> None:
    env.configure()
    ws = await env.connect()
    cid = (await recv(ws))["connectionId"]
    await ws.close()
    for _ in range(3):
        await asyncio.wait_for(env.handler.events.get(), 5)
    headers = env.handler.last("connected")[0]
    sigs = [hmac.new(k.encode(), cid.encode(), hashlib.sha256).hexdigest() for k in (KEY, KEY2)]
    assert headers["ce-signature"] == f"sha256={sigs[0]},sha256={sigs[1]}"
    assert headers["ce-hub"] == "chat" and headers["ce-connectionId"] == cid
    assert headers["ce-subprotocol"] == JSON and headers["WebHook-Request-Origin"] == "localhost"


async def test_user_event_reply_ack_and_state(env: Env) -> None:
    async def message(request: web.Request) -> web.Response:
        assert request.content_type == "text/plain"
        text = await request.text()
        state = request.headers.get("ce-connectionState", "")
        return web.json_response({"echo": text, "state": state}, headers={"ce-connectionState": "s2"})

    env.handler.responders["echo"] = message
    env.configure()
    ws = await env.connect()
    await recv(ws)
    for ack_id in (1, 2):
        await ws.send_json(
            {"type": "event", "event": "echo", "dataType": "text", "data": "hey", "ackId": ack_id}
        )
        reply, ack = await recv(ws), await recv(ws)
        assert reply["dataType"] == "json" and reply["data"]["echo"] == "hey"
        assert ack == {"type": "ack", "ackId": ack_id, "success": True}
    assert reply["data"]["state"] == "s2"  # the state set by the first reply came back on the second call
    await ws.close()


async def test_user_event_failures_are_invocation_failed(env: Env) -> None:
    async def fail(_: web.Request) -> web.Response:
        return web.Response(status=500)

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(status=204)

    async def huge(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * (1024 * 1024 + 1), content_type="application/octet-stream")

    async def garbage(_: web.Request) -> web.Response:
        return web.Response(body=b"{nope", content_type="application/json")

    env.handler.responders.update(fail=fail, slow=slow, huge=huge, garbage=garbage)
    env.configure(pattern="fail,slow,huge,garbage")
    ws = await env.connect()
    await recv(ws)
    expected = {
        "fail": "InvocationFailed",
        "slow": "InvocationFailed",
        "huge": "InvocationFailed",
        "garbage": "InvocationFailed",
        "unmatched": "InternalServerError",
    }
    for ack_id, (event, name) in enumerate(expected.items(), 1):
        await ws.send_json(
            {"type": "event", "event": event, "dataType": "text", "data": "x", "ackId": ack_id}
        )
        ack = await recv(ws)
        assert ack.get("ackId") == ack_id and ack["success"] is False, (event, ack)
        assert ack["error"]["name"] == name, event
    await ws.send_json({"type": "ping"})
    assert await recv(ws) == {"type": "pong"}  # the connection survived all of it
    await ws.close()


async def test_simple_client_message_reply(env: Env) -> None:
    async def message(request: web.Request) -> web.Response:
        data = await request.read()
        if request.content_type == "application/octet-stream":
            return web.Response(body=data[::-1], content_type="application/octet-stream")
        return web.Response(text=data.decode().upper())

    env.handler.responders["message"] = message
    env.configure()
    ws = await env.connect(protocols=())
    await ws.send_str("hello")
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "HELLO")
    await ws.send_bytes(b"\x01\x02")
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, b"\x02\x01")
    await ws.close()


async def test_validation_failure_blocks_events_with_clear_log(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.handler.allowed_origin = "somewhere-else.example"
    env.configure()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await env.connect()
    assert info.value.status == 500
    assert any(
        "AbuseProtectionResponseMissingAllowedOrigin" in r.getMessage() and "hub=chat" in r.getMessage()
        for r in caplog.records
    )
    assert env.handler.requests == []


async def test_handler_down_keeps_other_paths_flowing(env: Env) -> None:
    env.settings.put(HubSettings("chat", (EventHandler("http://127.0.0.1:9/{event}", "*", ("connected",)),)))
    ws = await env.connect(env.url(sub="u", role=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]))
    await recv(ws)
    await ws.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
    assert (await recv(ws))["success"] is True
    await ws.send_json({"type": "event", "event": "e", "dataType": "text", "data": "x", "ackId": 2})
    assert (await recv(ws))["error"]["name"] == "InvocationFailed"
    await ws.close()


async def test_failed_connected_call_leaves_connection_whole(env: Env) -> None:
    async def boom(_: web.Request) -> web.Response:
        return web.Response(status=500)

    env.handler.responders["connected"] = boom
    env.configure()
    # another hub whose handler is down must not disturb this one
    env.settings.put(HubSettings("other", (EventHandler("http://127.0.0.1:9/{event}", "*", ("connect",)),)))
    other = env.url("other", sub="x")
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await env.connect(other)
    assert info.value.status == 500
    ws = await env.connect(env.url(sub="u", role=["webpubsub.joinLeaveGroup"]))
    await recv(ws)
    assert await asyncio.wait_for(env.handler.events.get(), 5) == "connect"
    assert await asyncio.wait_for(env.handler.events.get(), 5) == "connected"
    await ws.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
    assert (await recv(ws))["success"] is True  # registered and working despite the failed `connected`
    await ws.close()
    assert await asyncio.wait_for(env.handler.events.get(), 5) == "disconnected"


async def test_reliable_disconnected_only_when_the_session_ends() -> None:
    """A dropped reliable connection fires `disconnected` once, when its session expires, not at the drop."""
    handler = Handler()
    handler_app = web.Application()
    handler_app.router.add_route("*", "/{tail:.*}", handler.handle)
    handler_server = TestServer(handler_app, host="127.0.0.1")
    await handler_server.start_server()
    settings = StaticSettings()
    url = f"http://127.0.0.1:{handler_server.port}/{{hub}}/{{event}}"
    settings.put(HubSettings("chat", (EventHandler(url, "", ("connected", "disconnected")),)))
    app = create_app(ServiceConfig(access_keys=(KEY,), reliable_retention_seconds=1.0), store=settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    token = jwt.encode(
        {"aud": "http://localhost/client/hubs/chat", "exp": time.time() + 60}, KEY, algorithm="HS256"
    )
    try:
        with cuttable_proxy(server.port) as proxy:
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(
                    f"http://127.0.0.1:{proxy.port}/client/hubs/chat?access_token={token}",
                    protocols=("json.reliable.webpubsub.azure.v1",),
                )
                await recv(ws)
                assert await asyncio.wait_for(handler.events.get(), 5) == "connected"
                assert await asyncio.to_thread(proxy.cut) == 1
                with pytest.raises(TimeoutError):  # retained: no `disconnected` yet
                    await asyncio.wait_for(handler.events.get(), 0.5)
                assert await asyncio.wait_for(handler.events.get(), 5) == "disconnected"
                await ws.close()
        await asyncio.sleep(0.2)
        assert [e for e, _, _ in handler.requests].count("disconnected") == 1
    finally:
        await server.close()
        await handler_server.close()


async def test_user_events_of_a_connection_in_order_over_kept_alive_connections(env: Env) -> None:
    peers: set[Any] = set()

    async def echo(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        state = request.headers.get("ce-connectionState", "")
        return web.Response(text=(await request.text()) + state, headers={"ce-connectionState": "é"})

    env.handler.responders["echo"] = echo
    env.configure(pattern="echo", system=())
    ws = await env.connect()
    await recv(ws)
    for i in range(20):  # all sent at once: processed and answered one after another
        await ws.send_json({"type": "event", "event": "echo", "dataType": "text", "data": f"m{i}"})
    replies = [(await recv(ws))["data"] for _ in range(20)]
    assert replies == ["m0"] + [f"m{i}é" for i in range(1, 20)]  # the state round-trips in UTF-8
    assert len(peers) == 1  # one keep-alive connection carried them all
    await ws.close()
