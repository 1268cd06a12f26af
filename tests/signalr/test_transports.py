"""The client endpoint in process: negotiate, the three transports, handshake and hub-protocol rules,
keep-alive and timeouts, bad input, CORS."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from hubbub.signalr import protocol_msgpack as pm
from hubbub.signalr.connection import SignalRConnection
from hubbub.signalr.messages import Completion, Invocation
from hubbub.signalr.service import NO_UPSTREAM

from .conftest import KEY2, Env, Starter

pytestmark = pytest.mark.timeout(30)

ALL_TRANSPORTS = [
    {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
    {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
    {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
]


def records(data: str | bytes) -> list[dict[str, Any]]:
    raw = data.encode() if isinstance(data, str) else data
    return [orjson.loads(r) for r in raw.split(b"\x1e") if r]


async def next_record(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    (record,) = records(msg.data)
    return record


async def rest_send(env: Env, hub: str, path: str, *args: Any) -> None:
    r = await env.rest("POST", f"{hub}{path}", {"target": "newMessage", "arguments": list(args)})
    assert r.status == 202


# --- negotiate ------------------------------------------------------------------------------------


async def test_negotiate_v1(env: Env, hub: str) -> None:
    body = await env.negotiate(hub, "alice")
    assert set(body) == {"negotiateVersion", "connectionId", "connectionToken", "availableTransports"}
    assert body["negotiateVersion"] == 1
    assert body["connectionId"] != body["connectionToken"]
    assert len(body["connectionId"]) == 22
    assert body["availableTransports"] == ALL_TRANSPORTS


async def test_negotiate_v0_uses_the_connection_id_as_token(env: Env, hub: str) -> None:
    body = await env.negotiate(hub, version=None)
    assert set(body) == {"connectionId", "availableTransports"}
    ws = await env.ws(hub, token=body["connectionId"])
    await ws.send_str('{"protocol":"json","version":1}\x1e')
    assert (await ws.receive(timeout=5)).data == "{}\x1e"


async def test_negotiate_versions(env: Env, hub: str) -> None:
    assert (await env.negotiate(hub, version="7"))["negotiateVersion"] == 1
    for bad, error in (
        ("x", "The client requested an invalid protocol version 'x'"),
        ("-1", "The client requested version '-1', but the server does not support this version."),
    ):
        async with env.http.post(
            f"{env.base}/client/negotiate?hub={hub}&negotiateVersion={bad}", headers=env.auth(hub)
        ) as r:
            assert r.status == 200
            assert await r.json() == {"error": error}


async def test_negotiate_rejections(env: Env, hub: str) -> None:
    url = f"{env.base}/client/negotiate?hub={hub}&negotiateVersion=1"
    async with env.http.post(url) as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    for token in (env.token(hub, key="not-the-key"), env.token("otherhub")):
        async with env.http.post(url, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 401, await r.text()
    async with env.http.post(f"{url}&access_token={env.token(hub)}") as r:
        assert r.status == 200  # the token may also come in the query
    async with env.http.post(f"{url}", headers={"Authorization": f"Bearer {env.token(hub, key=KEY2)}"}) as r:
        assert r.status == 200  # secondary key
    async with env.http.post(f"{env.base}/client/negotiate?hub=1bad", headers=env.auth(hub)) as r:
        assert r.status == 400
    async with env.http.get(url, headers=env.auth(hub)) as r:
        assert r.status == 405


async def test_transport_restriction_claim(env: Env, hub: str) -> None:
    async with env.http.post(
        f"{env.base}/client/negotiate?hub={hub}&negotiateVersion=1",
        headers=env.auth(hub, **{"asrs.s.htt": 4}),
    ) as r:
        body = await r.json()
    assert body["availableTransports"] == [ALL_TRANSPORTS[2]]
    url = f"{env.base}/client/?hub={hub}&id={body['connectionToken']}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await env.http.ws_connect(url, headers=env.auth(hub, **{"asrs.s.htt": 4}))
    assert info.value.status == 404


# --- WebSockets -------------------------------------------------------------------------------------


async def test_websocket_json_roundtrip(env: Env, hub: str) -> None:
    ws, _ = await env.connect(hub, "alice")
    await rest_send(env, hub, "/:send", "hello", {"n": 1})
    assert await next_record(ws) == {"type": 1, "target": "newMessage", "arguments": ["hello", {"n": 1}]}
    await ws.send_str('{"type":1,"invocationId":"7","target":"broadcast","arguments":["x"]}\x1e')
    assert await next_record(ws) == {"type": 3, "invocationId": "7", "error": NO_UPSTREAM}
    await ws.close()


async def test_websocket_messagepack(env: Env, hub: str) -> None:
    body = await env.negotiate(hub, "bob")
    ws = await env.ws(hub, "bob", body["connectionToken"])
    # the handshake and a first message in one frame; the server answers in binary frames
    await ws.send_bytes(b'{"protocol":"messagepack","version":1}\x1e' + pm.encode(Invocation("t", [1], "1")))
    reply = await ws.receive(timeout=5)
    assert reply.type is aiohttp.WSMsgType.BINARY
    assert reply.data == b"{}\x1e"
    completion = await ws.receive(timeout=5)
    assert pm.MsgpackReader(1000).feed(completion.data)[0].message == Completion.failed("1", NO_UPSTREAM)
    await rest_send(env, hub, "/users/bob/:send", "x", 2)
    msg = await ws.receive(timeout=5)
    assert msg.data == pm.encode(Invocation("newMessage", ["x", 2]))
    await ws.close()


async def test_websocket_without_id(env: Env, hub: str) -> None:
    ws = await env.ws(hub, "carol")  # what pysignalr / signalrcore do after the app's negotiate
    await ws.send_str('{"protocol":"json",')
    await ws.send_str('"version":1}\x1e')  # a handshake split across frames
    assert (await ws.receive(timeout=5)).data == "{}\x1e"
    await rest_send(env, hub, "/users/carol/:send", 3)
    assert (await next_record(ws))["arguments"] == [3]


async def test_websocket_id_rules(env: Env, hub: str) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await env.ws(hub, token="unknown")
    assert info.value.status == 404
    body = await env.negotiate(hub, "dave")
    first = await env.ws(hub, "dave", body["connectionToken"])
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await env.ws(hub, "dave", body["connectionToken"])
    assert info.value.status == 409
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await env.ws(hub, "eve", (await env.negotiate(hub, "dave"))["connectionToken"])
    assert info.value.status == 403  # another user's connection
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await env.http.ws_connect(f"{env.base}/client/?hub={hub}&id={body['connectionToken']}")
    assert info.value.status == 401
    await first.close()


@pytest.mark.parametrize(
    ("handshake", "error"),
    [
        ('{"protocol":"foo","version":1}', "The protocol 'foo' is not supported."),
        ('{"protocol":"json","version":3}', "The server does not support version 3 of the 'json' protocol."),
        (
            '{"protocol":"json"}',
            "An unexpected error occurred during connection handshake. Missing required property 'version'.",
        ),
        (
            "not json",
            "An unexpected error occurred during connection handshake. "
            "Error reading JSON: the message is not valid JSON.",
        ),
    ],
)
async def test_bad_handshake(env: Env, hub: str, handshake: str, error: str) -> None:
    ws, other = await env.ws(hub), (await env.connect(hub, "bystander"))[0]
    await ws.send_str(handshake + "\x1e")
    assert records((await ws.receive(timeout=5)).data) == [{"error": error}]
    closing = await ws.receive(timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE
    assert closing.data == 1000
    await rest_send(env, hub, "/:send", "others unaffected")
    assert (await next_record(other))["arguments"] == ["others unaffected"]


async def test_handshake_timeout(start: Starter, hub: str) -> None:
    env = await start(handshake_timeout_seconds=0.3, sweep_seconds=0.05)
    ws = await env.ws(hub)
    assert records((await ws.receive(timeout=5)).data) == [{"error": "Handshake was canceled."}]
    assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.CLOSE
    body = await env.negotiate(hub)  # negotiated, never connected: forgotten too
    await asyncio.sleep(0.5)
    assert env.service.by_token(body["connectionToken"]) is None


@pytest.mark.parametrize(
    "record",
    [
        b'{"type":1,"target":"t"}',
        b'{"type":"x"}',
        b"[1,2]",
        b"{oops",
    ],
)
async def test_malformed_message_closes_with_an_error(env: Env, hub: str, record: bytes) -> None:
    ws, cid = await env.connect(hub, "alice")
    await ws.send_bytes(record + b"\x1e")
    close = await next_record(ws)
    assert close["type"] == 7
    assert close["error"].startswith("Connection closed with an error. ")
    assert "allowReconnect" not in close
    assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.CLOSE
    assert (await env.rest("HEAD", f"{hub}/connections/{cid}")).status == 404


async def test_oversized_messages(start: Starter, hub: str) -> None:
    env = await start(max_message_bytes=1000)
    ws, _ = await env.connect(hub)
    await ws.send_str('{"type":1,"target":"t","arguments":["' + "x" * 1200 + '"]}\x1e')
    close = await next_record(ws)
    assert close == {
        "type": 7,
        "error": "Connection closed with an error. The maximum message size of 1000B was exceeded.",
    }
    ws, _ = await env.connect(hub)
    await ws.send_str("x" * 3000)  # over twice the limit in one frame: the WebSocket layer refuses it
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert msg.data == 1009


async def test_streaming_and_other_messages(env: Env, hub: str) -> None:
    ws, _ = await env.connect(hub)
    await ws.send_str(
        '{"type":4,"invocationId":"s1","target":"t","arguments":[]}\x1e'
        '{"type":1,"invocationId":"s2","target":"t","arguments":[],"streamIds":["a"]}\x1e'
        '{"type":1,"target":"t","arguments":[],"streamIds":["b"]}\x1e'
        '{"type":2,"invocationId":"a","item":1}\x1e{"type":3,"invocationId":"a"}\x1e'
        '{"type":5,"invocationId":"s1"}\x1e{"type":6}\x1e{"type":8,"sequenceId":1}\x1e{"type":42}\x1e'
        '{"type":1,"target":"fire-and-forget","arguments":[]}\x1e'
    )
    error = "Client streaming is not supported in serverless mode."
    assert await next_record(ws) == {"type": 3, "invocationId": "s1", "error": error}
    assert await next_record(ws) == {"type": 3, "invocationId": "s2", "error": error}
    await rest_send(env, hub, "/:send", "still open")
    assert (await next_record(ws))["arguments"] == ["still open"]


async def test_client_close_message_ends_the_connection(env: Env, hub: str) -> None:
    ws, cid = await env.connect(hub)
    await ws.send_str('{"type":7}\x1e')
    assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.CLOSE
    assert (await env.rest("HEAD", f"{hub}/connections/{cid}")).status == 404


async def test_keepalive_pings(start: Starter, hub: str) -> None:
    env = await start(keepalive_seconds=0.2, sweep_seconds=0.05)
    ws, _ = await env.connect(hub)
    assert await next_record(ws) == {"type": 6}
    body = await env.negotiate(hub)
    mp = await env.ws(hub, token=body["connectionToken"])
    await mp.send_bytes(b'{"protocol":"messagepack","version":1}\x1e')
    assert (await mp.receive(timeout=5)).data == b"{}\x1e"
    assert (await mp.receive(timeout=5)).data == b"\x02\x91\x06"


async def test_client_timeout(start: Starter, hub: str) -> None:
    env = await start(client_timeout_seconds=0.4, sweep_seconds=0.05)
    silent, cid = await env.connect(hub)
    chatty, cid2 = await env.connect(hub)

    async def ping() -> None:
        for _ in range(12):
            await chatty.send_str('{"type":6}\x1e')
            await asyncio.sleep(0.1)

    pinger = asyncio.create_task(ping())
    close = await next_record(silent)
    assert close == {
        "type": 7,
        "error": "Client timeout elapsed without receiving a message from the client.",
    }
    await pinger
    assert (await env.rest("HEAD", f"{hub}/connections/{cid2}")).status == 200
    assert (await env.rest("HEAD", f"{hub}/connections/{cid}")).status == 404


async def test_hooks_and_invocation_handler(env: Env, hub: str) -> None:
    seen: list[tuple[str, Any]] = []
    env.service.on_connected.append(lambda c: seen.append(("connected", c.id)))
    env.service.on_disconnected.append(lambda c, e: seen.append(("disconnected", (c.id, e))))

    async def handler(connection: SignalRConnection, message: Invocation, raw: bytes) -> None:
        seen.append(("invoke", (message.target, raw)))
        if message.invocation_id:
            connection.push(Completion.ok(message.invocation_id, message.arguments[0] * 2))

    env.service.invocation_handler = handler
    ws, cid = await env.connect(hub, "alice")
    await ws.send_str('{"type":1,"invocationId":"1","target":"double","arguments":[21]}\x1e')
    assert await next_record(ws) == {"type": 3, "invocationId": "1", "result": 42}
    await ws.close()
    for _ in range(50):
        if len(seen) == 3:
            break
        await asyncio.sleep(0.02)
    assert seen == [
        ("connected", cid),
        ("invoke", ("double", b'{"type":1,"invocationId":"1","target":"double","arguments":[21]}')),
        ("disconnected", (cid, None)),
    ]


async def test_shutdown_sends_close_with_reconnect(start: Starter, hub: str) -> None:
    env = await start()
    ws, _ = await env.connect(hub)
    await env.service.close()
    close = await next_record(ws)
    assert close == {"type": 7, "error": "Service is shutting down", "allowReconnect": True}
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert msg.data == 1001


# --- Server-Sent Events -------------------------------------------------------------------------------


async def read_event(stream: aiohttp.StreamReader) -> bytes:
    lines = []
    while True:
        line = await asyncio.wait_for(stream.readline(), 5)
        if line in (b"\r\n", b"\n"):
            if lines:
                return b"\n".join(lines)
            continue
        if line.startswith(b"data: "):
            lines.append(line[6:].rstrip(b"\r\n"))


async def test_server_sent_events(env: Env, hub: str) -> None:
    body = await env.negotiate(hub, "sse")
    url = f"{env.base}/client/?hub={hub}&id={body['connectionToken']}"
    headers = {**env.auth(hub, "sse"), "Accept": "text/event-stream", "Origin": "http://app.example"}
    async with env.http.get(url, headers=headers) as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"] == "text/event-stream"
        assert stream.headers["Access-Control-Allow-Origin"] == "http://app.example"
        assert stream.headers["Access-Control-Allow-Credentials"] == "true"
        post = await env.http.post(
            url, data=b'{"protocol":"json","version":1}\x1e', headers=env.auth(hub, "sse")
        )
        assert post.status == 200
        assert await read_event(stream.content) == b"{}\x1e"
        await rest_send(env, hub, "/users/sse/:send", "over sse")
        assert records(await read_event(stream.content)) == [
            {"type": 1, "target": "newMessage", "arguments": ["over sse"]}
        ]
        post = await env.http.post(
            url,
            data=b'{"type":1,"invocationId":"9","target":"t","arguments":[]}\x1e',
            headers=env.auth(hub, "sse"),
        )
        assert records(await read_event(stream.content)) == [
            {"type": 3, "invocationId": "9", "error": NO_UPSTREAM}
        ]
        assert (
            await env.rest("DELETE", f"{hub}/connections/{body['connectionId']}?reason=done")
        ).status == 200
        assert records(await read_event(stream.content)) == [
            {"type": 7, "error": "done", "allowReconnect": True}
        ]
        assert await asyncio.wait_for(stream.content.read(), 5) == b""


async def test_server_sent_events_refuse_messagepack_and_second_streams(env: Env, hub: str) -> None:
    body = await env.negotiate(hub)
    url = f"{env.base}/client/?hub={hub}&id={body['connectionToken']}"
    headers = {**env.auth(hub), "Accept": "text/event-stream"}
    async with env.http.get(url, headers=headers):
        async with env.http.get(url, headers=headers) as second:
            assert second.status == 409
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await env.http.ws_connect(url, headers=env.auth(hub))
        assert info.value.status == 400  # "Cannot change transports mid-connection"


async def test_server_sent_events_messagepack_handshake(env: Env, hub: str) -> None:
    body = await env.negotiate(hub)
    url = f"{env.base}/client/?hub={hub}&id={body['connectionToken']}"
    async with env.http.get(url, headers={**env.auth(hub), "Accept": "text/event-stream"}) as stream:
        await env.http.post(url, data=b'{"protocol":"messagepack","version":1}\x1e', headers=env.auth(hub))
        assert records(await read_event(stream.content)) == [
            {
                "error": "Cannot use the 'messagepack' protocol on the current transport. "
                "The transport does not support 'Binary' transfer format."
            }
        ]


async def test_post_rules(env: Env, hub: str) -> None:
    base = f"{env.base}/client/?hub={hub}"
    async with env.http.post(base, data=b"x", headers=env.auth(hub)) as r:
        assert r.status == 400
    async with env.http.post(f"{base}&id=nope", data=b"x", headers=env.auth(hub)) as r:
        assert r.status == 404
    body = await env.negotiate(hub)
    async with env.http.post(f"{base}&id={body['connectionToken']}", data=b"x", headers=env.auth(hub)) as r:
        assert r.status == 400  # no transport yet
    ws = await env.ws(hub, token=body["connectionToken"])
    async with env.http.post(f"{base}&id={body['connectionToken']}", data=b"x", headers=env.auth(hub)) as r:
        assert r.status == 405
    await ws.close()


# --- long polling ---------------------------------------------------------------------------------------


async def test_long_polling(start: Starter, hub: str) -> None:
    env = await start(long_poll_seconds=0.3)
    body = await env.negotiate(hub, "lp")
    url = f"{env.base}/client/?hub={hub}&id={body['connectionToken']}"
    auth = env.auth(hub, "lp")

    async def poll() -> tuple[int, bytes]:
        async with env.http.get(f"{url}&_=1", headers=auth) as r:
            return r.status, await r.read()

    assert await poll() == (200, b"")  # the first poll completes the setup at once
    async with env.http.post(url, data=b'{"protocol":"json","version":1}\x1e', headers=auth) as r:
        assert r.status == 200
    assert await poll() == (200, b"{}\x1e")
    assert await poll() == (200, b"")  # held, then timed out empty
    pending = asyncio.create_task(poll())
    await asyncio.sleep(0.05)
    await rest_send(env, hub, "/users/lp/:send", "lp!")
    status, data = await pending
    assert status == 200
    assert records(data) == [{"type": 1, "target": "newMessage", "arguments": ["lp!"]}]
    # a newer poll ends a pending one with 204
    older = asyncio.create_task(poll())
    await asyncio.sleep(0.05)
    newer = asyncio.create_task(poll())
    assert (await older)[0] == 204
    await newer
    # REST close: the Close message, then 204
    assert (await env.rest("DELETE", f"{hub}/connections/{body['connectionId']}?reason=bye")).status == 200
    assert records((await poll())[1]) == [{"type": 7, "error": "bye", "allowReconnect": True}]
    assert await poll() == (204, b"")


async def test_long_polling_messagepack_and_delete(env: Env, hub: str) -> None:
    body = await env.negotiate(hub)
    url = f"{env.base}/client/?hub={hub}&id={body['connectionToken']}"
    auth = env.auth(hub)
    async with env.http.get(url, headers=auth) as r:
        assert r.status == 200
    await env.http.post(url, data=b'{"protocol":"messagepack","version":1}\x1e' + pm.PING, headers=auth)
    async with env.http.get(url, headers=auth) as r:
        assert await r.read() == b"{}\x1e"
    pending = asyncio.create_task(env.http.get(url, headers=auth))
    await asyncio.sleep(0.05)
    async with env.http.delete(url, headers=auth) as r:
        assert r.status == 202
    response = await pending
    assert response.status == 204
    response.release()
    assert (await env.rest("HEAD", f"{hub}/connections/{body['connectionId']}")).status == 404
    async with env.http.delete(url, headers=auth) as r:
        assert r.status == 404


async def test_long_polling_bad_handshake_is_delivered(env: Env, hub: str) -> None:
    body = await env.negotiate(hub)
    url = f"{env.base}/client/?hub={hub}&id={body['connectionToken']}"
    auth = env.auth(hub)
    await env.http.get(url, headers=auth)
    await env.http.post(url, data=b'{"protocol":"xml","version":1}\x1e', headers=auth)
    async with env.http.get(url, headers=auth) as r:
        assert records(await r.read()) == [{"error": "The protocol 'xml' is not supported."}]
    async with env.http.get(url, headers=auth) as r:
        assert r.status == 204


async def test_oversized_post(start: Starter, hub: str) -> None:
    env = await start(max_message_bytes=100)
    body = await env.negotiate(hub)
    url = f"{env.base}/client/?hub={hub}&id={body['connectionToken']}"
    await env.http.get(url, headers=env.auth(hub))
    async with env.http.post(url, data=b"x" * 101, headers=env.auth(hub)) as r:
        assert r.status == 413


# --- CORS -----------------------------------------------------------------------------------------------


async def test_cors_preflight_and_responses(env: Env, hub: str) -> None:
    headers = {
        "Origin": "https://chat.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, x-requested-with, x-signalr-user-agent",
    }
    async with env.http.options(
        f"{env.base}/client/negotiate?hub={hub}&negotiateVersion=1", headers=headers
    ) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "https://chat.example"
        assert r.headers["Access-Control-Allow-Credentials"] == "true"
        assert r.headers["Access-Control-Allow-Methods"] == "POST"
        assert r.headers["Access-Control-Allow-Headers"] == headers["Access-Control-Request-Headers"]
    async with env.http.post(
        f"{env.base}/client/negotiate?hub={hub}&negotiateVersion=1",
        headers={**env.auth(hub), "Origin": "https://chat.example"},
    ) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "https://chat.example"
        assert r.headers["Access-Control-Allow-Credentials"] == "true"
    async with env.http.post(f"{env.base}/client/negotiate?hub={hub}", headers={"Origin": "https://x"}) as r:
        assert r.status == 401
        assert r.headers["Access-Control-Allow-Origin"] == "https://x"  # errors are readable by the page too
