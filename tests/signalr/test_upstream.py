"""Upstream: the pure rules, and a real upstream HTTP server in process receiving the service's calls."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web

from hubbub.errors import BadRequest
from hubbub.signalr import protocol_msgpack as pm
from hubbub.signalr.messages import Completion, Invocation
from hubbub.signalr.upstream import NO_MATCH
from hubbub.signalr.upstream_rules import (
    UpstreamTemplate,
    claims_header,
    client_query,
    match,
    parse_settings,
    signature,
)

from .conftest import KEY, KEY2, Env, Starter, Upstream, call

pytestmark = pytest.mark.timeout(30)

# --- pure rules ----------------------------------------------------------------------------------


def test_patterns_and_order() -> None:
    first = UpstreamTemplate(
        "http://a/{hub}/{category}/{event}", hub_pattern="chat, other", event_pattern="x,y"
    )
    fallback = UpstreamTemplate("http://b/")
    templates = (first, fallback)
    assert match(templates, "Chat", "messages", "x") is first
    assert match(templates, "chat", "messages", "z") is fallback
    assert match(templates, "third", "connections", "connected") is fallback
    assert match((first,), "third", "messages", "x") is None
    only_connections = UpstreamTemplate("http://c/", category_pattern="connections")
    assert match((only_connections,), "h", "messages", "m") is None


def test_url_placeholders_are_escaped() -> None:
    template = UpstreamTemplate("http://host.com/{hub}/api/{category}/{event}?code=k")
    assert template.url("chat", "messages", "a b/c") == "http://host.com/chat/api/messages/a%20b%2Fc?code=k"


def test_parse_settings_shapes() -> None:
    emulator = {
        "UpstreamSettings": {
            "Templates": [
                {
                    "UrlTemplate": "http://localhost:7071/runtime/webhooks/signalr",
                    "EventPattern": "*",
                    "HubPattern": "*",
                    "CategoryPattern": "*",
                }
            ]
        }
    }
    assert parse_settings(emulator) == (UpstreamTemplate("http://localhost:7071/runtime/webhooks/signalr"),)
    arm = {
        "properties": {
            "upstream": {
                "templates": [
                    {
                        "urlTemplate": "https://f/api/{event}",
                        "hubPattern": "chat",
                        "auth": {"type": "ManagedIdentity", "managedIdentity": {"resource": "api://x"}},
                    }
                ]
            }
        }
    }
    assert parse_settings(arm) == (
        UpstreamTemplate(
            "https://f/api/{event}", "chat", auth_type="ManagedIdentity", auth_resource="api://x"
        ),
    )
    assert parse_settings({}) == ()


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"templates": {}},
        {"templates": [1]},
        {"templates": [{"urlTemplate": "ftp://x"}]},
        {"templates": [{"hubPattern": "*"}]},
        {"templates": [{"urlTemplate": "http://x", "eventPattern": 5}]},
        {"templates": [{"urlTemplate": "http://x", "auth": {"type": "Magic"}}]},
    ],
)
def test_parse_settings_errors(doc: Any) -> None:
    with pytest.raises(BadRequest):
        parse_settings(doc)


def test_signature_for_every_key() -> None:
    expected = [
        "sha256=" + hmac.new(k.encode(), b"conn1", hashlib.sha256).hexdigest().upper() for k in (KEY, KEY2)
    ]
    assert signature("conn1", [KEY, KEY2]) == ",".join(expected)  # no space: the trigger splits on ','


def test_claims_header_and_query() -> None:
    claims = {"asrs.s.uid": "alice", "admin": True, "exp": 1700000000, "role": ["a", "b"]}
    assert claims_header(claims) == "asrs.s.uid: alice, admin: true, exp: 1700000000, role: a, role: b"
    assert client_query("hub=chat&id=secret&access_token=t&x=1") == "?hub=chat&x=1"
    assert client_query("id=secret") == ""


# --- end to end ------------------------------------------------------------------------------------


async def started(start: Starter, upstream: Upstream, **settings: Any) -> Env:
    template = UpstreamTemplate(
        upstream.url + "/{hub}/api/{category}/{event}",
        event_pattern="connected,disconnected,echo,slow,status,broken,quiet",
    )
    return await start(upstream=(template,), **settings)


async def record(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=5)
    result: dict[str, Any] = orjson.loads(msg.data.rstrip("\x1e"))
    return result


async def test_connected_and_disconnected(start: Starter, upstream: Upstream, hub: str) -> None:
    env = await started(start, upstream)
    token = env.token(hub, "alice", admin=True)
    async with env.http.post(
        f"{env.base}/client/negotiate?hub={hub}&negotiateVersion=1&access_token={token}"
    ) as r:
        body = await r.json()  # the connection's claims are those of the negotiate token
    url = f"{env.base}/client/?hub={hub}&id={body['connectionToken']}&access_token={token}&x=1"
    ws = await env.http.ws_connect(url)
    await ws.send_str('{"protocol":"json","version":1}\x1e')
    await ws.receive(timeout=5)
    path, headers, payload = await call(upstream, "connected")
    cid = body["connectionId"]
    assert path == f"/{hub}/api/connections/connected"
    assert payload == b'{"type":10}'
    assert headers["Content-Type"] == "application/json"
    assert headers["X-ASRS-Connection-Id"] == cid
    assert headers["X-ASRS-Hub"] == hub
    assert headers["X-ASRS-Category"] == "connections"
    assert headers["X-ASRS-User-Id"] == "alice"
    assert headers["X-ASRS-Signature"] == signature(cid, [KEY, KEY2])
    assert "admin: true" in headers["X-ASRS-User-Claims"].split(", ")
    assert "asrs.s.uid: alice" in headers["X-ASRS-User-Claims"].split(", ")
    assert headers["X-ASRS-Client-Query"] == f"?hub={hub}&x=1"
    assert "Authorization" not in headers
    await ws.close()
    path, headers, payload = await call(upstream, "disconnected")
    assert path == f"/{hub}/api/connections/disconnected"
    assert payload == b'{"type":11}'

    ws, cid = await env.connect(hub)  # anonymous; closed by the service with an error
    _, headers, _ = await call(upstream, "connected")
    assert "X-ASRS-User-Id" not in headers
    await ws.send_str('{"type":"bad"}\x1e')
    _, _, payload = await call(upstream, "disconnected")
    assert orjson.loads(payload)["type"] == 11
    assert orjson.loads(payload)["error"].startswith("Connection closed with an error.")


async def test_blocking_invocation_answers(start: Starter, upstream: Upstream, hub: str) -> None:
    env = await started(start, upstream)

    async def echo(request: web.Request, body: bytes) -> web.Response:
        invocation = orjson.loads(body)
        completion = {
            "type": 3,
            "invocationId": invocation["invocationId"],
            "result": invocation["arguments"],
        }
        return web.Response(body=orjson.dumps(completion) + b"\x1e")

    async def status(request: web.Request, body: bytes) -> web.Response:
        return web.Response(status=int(orjson.loads(body)["arguments"][0]))

    upstream.responders.update(echo=echo, status=status)
    ws, _ = await env.connect(hub, "alice")
    await call(upstream, "connected")
    raw = b'{"type":1,"invocationId":"1","target":"echo","arguments":["hi",2]}'
    await ws.send_bytes(raw + b"\x1e")
    assert await record(ws) == {"type": 3, "invocationId": "1", "result": ["hi", 2]}
    path, headers, body = await call(upstream, "echo")
    assert path == f"/{hub}/api/messages/echo"
    assert body == raw  # the client's record, verbatim, without the separator
    assert headers["Content-Type"] == "application/json"
    assert headers["X-ASRS-Category"] == "messages"
    for code, expected in ((200, {"type": 3, "invocationId": "s"}), (204, {"type": 3, "invocationId": "s"})):
        await ws.send_str(f'{{"type":1,"invocationId":"s","target":"status","arguments":[{code}]}}\x1e')
        assert await record(ws) == expected
    for code in (404, 500, 403):
        await ws.send_str(f'{{"type":1,"invocationId":"s","target":"status","arguments":[{code}]}}\x1e')
        assert await record(ws) == {
            "type": 3,
            "invocationId": "s",
            "error": f"Invocation failed, status code {code}",
        }
    await ws.send_str('{"type":1,"invocationId":"n","target":"unmatched","arguments":[]}\x1e')
    assert await record(ws) == {"type": 3, "invocationId": "n", "error": NO_MATCH}
    # non-blocking: sent upstream, never answered
    await ws.send_str('{"type":1,"target":"status","arguments":[500]}\x1e')
    await call(upstream, "status")
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=0.3)


async def test_messagepack_invocation(start: Starter, upstream: Upstream, hub: str) -> None:
    env = await started(start, upstream)

    async def echo(request: web.Request, body: bytes) -> web.Response:
        invocation = pm.decode_body(body)
        assert isinstance(invocation, Invocation) and invocation.invocation_id
        return web.Response(body=pm.encode(Completion.ok(invocation.invocation_id, invocation.arguments)))

    upstream.responders["echo"] = echo
    body = await env.negotiate(hub)
    ws = await env.ws(hub, token=body["connectionToken"])
    await ws.send_bytes(b'{"protocol":"messagepack","version":1}\x1e')
    await ws.receive(timeout=5)
    message = pm.encode(Invocation("echo", [b"\x00\x01", 7], "m1"))
    await ws.send_bytes(message)
    answer = await ws.receive(timeout=5)
    assert answer.type is aiohttp.WSMsgType.BINARY
    assert pm.MsgpackReader(1000).feed(answer.data)[0].message == Completion.ok("m1", [b"\x00\x01", 7])
    _, headers, sent = await call(upstream, "echo")
    assert headers["Content-Type"] == "application/x-msgpack"
    assert sent == message[1:]  # the body without its length prefix


async def test_connected_is_sent_before_the_first_invocation(
    start: Starter, upstream: Upstream, hub: str
) -> None:
    env = await started(start, upstream)

    async def slow_connected(request: web.Request, body: bytes) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response()

    upstream.responders["connected"] = slow_connected
    ws, _ = await env.connect(hub)
    await ws.send_str('{"type":1,"invocationId":"1","target":"quiet","arguments":[]}\x1e')
    assert await record(ws) == {"type": 3, "invocationId": "1"}
    first = await asyncio.wait_for(upstream.calls.get(), 5)
    second = await asyncio.wait_for(upstream.calls.get(), 5)
    assert [first[1]["X-ASRS-Event"], second[1]["X-ASRS-Event"]] == ["connected", "quiet"]


async def test_slow_upstream_keeps_the_connection(start: Starter, upstream: Upstream, hub: str) -> None:
    env = await started(start, upstream, client_timeout_seconds=0.3, sweep_seconds=0.05)

    async def slow(request: web.Request, body: bytes) -> web.Response:
        await asyncio.sleep(0.8)
        return web.Response(status=204)

    upstream.responders["slow"] = slow
    ws, _ = await env.connect(hub)
    await ws.send_str('{"type":1,"invocationId":"1","target":"slow","arguments":[]}\x1e{"type":6}\x1e')
    assert await record(ws) == {"type": 3, "invocationId": "1"}


async def test_upstream_down_and_timeout(start: Starter, hub: str) -> None:
    env = await start(upstream=(UpstreamTemplate("http://127.0.0.1:9/{event}"),))
    ws, _ = await env.connect(hub)
    await ws.send_str('{"type":1,"invocationId":"1","target":"x","arguments":[]}\x1e')
    assert await record(ws) == {"type": 3, "invocationId": "1", "error": "Invocation failed, status code 500"}


async def test_managed_identity_token(start: Starter, upstream: Upstream, hub: str) -> None:
    template = UpstreamTemplate(
        upstream.url + "/hook", auth_type="ManagedIdentity", auth_resource="api://func"
    )
    env = await start(upstream=(template,))
    ws, _ = await env.connect(hub)
    _, headers, _ = await call(upstream, "connected")
    scheme, token = headers["Authorization"].split(" ")
    assert scheme == "Bearer"
    assert jwt.decode(token, KEY, algorithms=["HS256"], audience="api://func")["aud"] == "api://func"
    await ws.close()
