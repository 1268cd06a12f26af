"""The SignalR REST API in process: every operation on both path families, status codes, error headers."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgpack  # type: ignore[import-untyped]
import orjson
import pytest

from hubbub.signalr import protocol_json as pj
from hubbub.signalr import protocol_msgpack as pm
from hubbub.signalr.messages import Invocation
from hubbub.signalr.tokens import mint_client_token, verify_client_token

from .conftest import KEY, Env, Starter

pytestmark = pytest.mark.timeout(30)

V = "?api-version=2022-06-01"


async def expect(ws: aiohttp.ClientWebSocketResponse, *arguments: Any) -> None:
    msg = await ws.receive(timeout=5)
    assert orjson.loads(msg.data.rstrip("\x1e")) == {"type": 1, "target": "m", "arguments": list(arguments)}


async def nothing(ws: aiohttp.ClientWebSocketResponse) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=0.2)


def message(*arguments: Any) -> dict[str, Any]:
    return {"target": "m", "arguments": list(arguments)}


@pytest.mark.parametrize("v1", [False, True])
async def test_sends(env: Env, hub: str, v1: bool) -> None:
    a, a_id = await env.connect(hub, "alice")
    b, b_id = await env.connect(hub, "bob")
    q = "" if v1 else V

    async def post(path: str, *args: Any, extra: str = "") -> None:
        r = await env.rest("POST", f"{hub}{path}{q}{extra}", message(*args), v1=v1)
        assert r.status == 202

    await post("" if v1 else "/:send", "all")
    await expect(a, "all")
    await expect(b, "all")
    await post("/users/alice" if v1 else "/users/alice/:send", "user")
    await expect(a, "user")
    await post(f"/connections/{b_id}" if v1 else f"/connections/{b_id}/:send", "conn")
    await expect(b, "conn")
    assert (await env.rest("PUT", f"{hub}/groups/g/connections/{a_id}{q}", v1=v1)).status == 200
    assert (await env.rest("PUT", f"{hub}/connections/{b_id}/groups/g{q}", v1=v1)).status == 200
    await post("/groups/g" if v1 else "/groups/g/:send", "group")
    await expect(a, "group")
    await expect(b, "group")
    sep = "&" if q else "?"
    await post("/groups/g" if v1 else "/groups/g/:send", "excl", extra=f"{sep}excluded={a_id}&excluded=x")
    await expect(b, "excl")
    await post("" if v1 else "/:send", "excl2", extra=f"{sep}excluded={b_id}")
    await expect(a, "excl2")
    # unknown targets are accepted and go nowhere
    await post("/users/nobody/:send", "none")
    await post("/connections/nope/:send", "none")
    await post("/groups/empty/:send", "none")
    await nothing(a)
    await nothing(b)


async def test_optional_send_suffix_on_the_new_path_and_pascal_case(env: Env, hub: str) -> None:
    a, _ = await env.connect(hub, "alice")
    assert (await env.rest("POST", f"{hub}/users/alice{V}", {"Target": "m", "Arguments": [1]})).status == 202
    await expect(a, 1)
    assert (await env.rest("POST", f"{hub}/:send{V}", {"target": "m"})).status == 202  # no arguments
    await expect(a)
    assert (await env.rest("POST", f"{hub}/:send{V}", {"target": "m", "arguments": None})).status == 202
    await expect(a)


@pytest.mark.parametrize("v1", [False, True])
async def test_existence_checks(env: Env, hub: str, v1: bool) -> None:
    _, cid = await env.connect(hub, "alice")
    q = "" if v1 else V
    assert (await env.rest("PUT", f"{hub}/groups/g/connections/{cid}{q}", v1=v1)).status == 200
    for method in ("HEAD", "GET"):
        for path in (
            f"connections/{cid}",
            "users/alice",
            "groups/g",
            "users/alice/groups/g",
            "groups/g/users/alice",
        ):
            r = await env.rest(method, f"{hub}/{path}{q}", v1=v1)
            assert r.status == 200, (method, path)
        for path, code in (
            ("connections/nope", "Warning.Connection.NotExisted"),
            ("users/bob", "Warning.User.NotExisted"),
            ("groups/other", "Warning.Group.NotExisted"),
            ("users/alice/groups/other", "Info.User.NotInGroup"),
            ("groups/other/users/alice", "Info.User.NotInGroup"),
        ):
            r = await env.rest(method, f"{hub}/{path}{q}", v1=v1)
            assert r.status == 404, (method, path)
            assert r.headers["x-ms-error-code"] == code
            if method == "GET":
                body = orjson.loads(await r.read())
                assert body["code"] == code


async def test_connection_groups(env: Env, hub: str) -> None:
    a, cid = await env.connect(hub, "alice")
    r = await env.rest("PUT", f"{hub}/groups/g/connections/unknown{V}")
    assert r.status == 404
    assert r.headers["x-ms-error-code"] == "Error.Connection.NotExisted"
    for group in ("g1", "g2"):
        assert (await env.rest("PUT", f"{hub}/groups/{group}/connections/{cid}{V}")).status == 200
    assert (await env.rest("DELETE", f"{hub}/groups/g1/connections/{cid}{V}")).status == 200
    assert (await env.rest("HEAD", f"{hub}/groups/g1{V}")).status == 404
    assert (await env.rest("HEAD", f"{hub}/groups/g2{V}")).status == 200
    assert (await env.rest("DELETE", f"{hub}/connections/{cid}/groups{V}")).status == 200
    assert (await env.rest("HEAD", f"{hub}/groups/g2{V}")).status == 404
    assert (await env.rest("DELETE", f"{hub}/connections/nope/groups/g1{V}")).status == 200  # idempotent
    await nothing(a)


@pytest.mark.parametrize("v1", [False, True])
async def test_user_groups(env: Env, hub: str, v1: bool) -> None:
    q = "" if v1 else V
    a1, _ = await env.connect(hub, "alice")
    r = await env.rest("PUT", f"{hub}/users/alice/groups/g{q}", v1=v1)
    assert r.status == (202 if v1 else 200)
    a2, _ = await env.connect(hub, "alice")  # a later connection of the user joins too
    assert (await env.rest("POST", f"{hub}/groups/g/:send{V}", message("both"))).status == 202
    await expect(a1, "both")
    await expect(a2, "both")
    r = await env.rest("DELETE", f"{hub}/groups/g/users/alice{q}", v1=v1)
    assert r.status == (202 if v1 else 204)
    assert (await env.rest("HEAD", f"{hub}/users/alice/groups/g{q}", v1=v1)).status == 404
    assert (await env.rest("PUT", f"{hub}/groups/x/users/alice{q}", v1=v1)).status == (202 if v1 else 200)
    assert (await env.rest("PUT", f"{hub}/users/alice/groups/y{q}", v1=v1)).status == (202 if v1 else 200)
    r = await env.rest("DELETE", f"{hub}/users/alice/groups{q}", v1=v1)
    assert r.status == (200 if v1 else 204)
    for group in ("x", "y"):
        assert (await env.rest("HEAD", f"{hub}/users/alice/groups/{group}{q}", v1=v1)).status == 404
        assert (await env.rest("HEAD", f"{hub}/groups/{group}{q}", v1=v1)).status == 404
    await nothing(a1)


async def test_user_group_ttl(start: Starter, hub: str) -> None:
    env = await start(sweep_seconds=0.05)
    a, _ = await env.connect(hub, "alice")
    assert (await env.rest("PUT", f"{hub}/users/alice/groups/g{V}&ttl=1")).status == 200
    assert (await env.rest("HEAD", f"{hub}/groups/g{V}")).status == 200
    await asyncio.sleep(1.3)
    assert (await env.rest("HEAD", f"{hub}/users/alice/groups/g{V}")).status == 404
    assert (await env.rest("HEAD", f"{hub}/groups/g{V}")).status == 404
    assert (await env.rest("PUT", f"{hub}/users/alice/groups/g{V}&ttl=-1")).status == 400
    await nothing(a)


@pytest.mark.parametrize("v1", [False, True])
async def test_close_operations(env: Env, hub: str, v1: bool) -> None:
    q = "" if v1 else V
    sep = "&" if q else "?"

    async def closed(ws: aiohttp.ClientWebSocketResponse, reason: str | None) -> None:
        close = orjson.loads((await ws.receive(timeout=5)).data.rstrip("\x1e"))
        expected: dict[str, Any] = {"type": 7, "allowReconnect": True}
        if reason:
            expected["error"] = reason
        assert close == expected
        assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.CLOSE

    a, a_id = await env.connect(hub, "alice")
    r = await env.rest("DELETE", f"{hub}/connections/{a_id}{q}{sep}reason=bye", v1=v1)
    assert r.status == (202 if v1 else 200)
    await closed(a, "bye")
    assert (await env.rest("DELETE", f"{hub}/connections/{a_id}{q}", v1=v1)).status in (200, 202)
    if v1:
        return  # the :closeConnections operations exist on the new path family only
    u1, _ = await env.connect(hub, "u")
    u2, u2_id = await env.connect(hub, "u")
    assert (await env.rest("POST", f"{hub}/users/u/:closeConnections{V}&excluded={u2_id}")).status == 204
    await closed(u1, None)
    g, g_id = await env.connect(hub)
    assert (await env.rest("PUT", f"{hub}/groups/g/connections/{g_id}{V}")).status == 200
    assert (await env.rest("POST", f"{hub}/groups/g/:closeConnections{V}&reason=group")).status == 204
    await closed(g, "group")
    rest_, _ = await env.connect(hub)
    assert (await env.rest("POST", f"{hub}/:closeConnections{V}&reason=all")).status == 204
    await closed(u2, "all")
    await closed(rest_, "all")


async def test_multi_protocol_body(env: Env, hub: str) -> None:
    j, _ = await env.connect(hub, "j")
    m, _ = await env.connect(hub, "m", protocol="messagepack")
    body = msgpack.packb(
        {
            "json": pj.encode(Invocation("m", ["from json entry"])),
            "messagepack": pm.encode(Invocation("m", ["mp"])),
        }
    )
    r = await env.rest("POST", f"{hub}/:send{V}", body, headers={"Content-Type": "application/octet-stream"})
    assert r.status == 202
    await expect(j, "from json entry")
    assert (await m.receive(timeout=5)).data == pm.encode(Invocation("m", ["mp"]))
    body = msgpack.packb({"messagepack": pm.encode(Invocation("m", [b"\x01"]))})
    r = await env.rest("POST", f"{hub}/:send{V}", body, headers={"Content-Type": "application/octet-stream"})
    assert r.status == 202
    await expect(j, "AQ==")


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"", {"Content-Type": "application/json"}, 400),
        (b"[1]", {"Content-Type": "application/json"}, 400),
        (b"{bad", {"Content-Type": "application/json"}, 400),
        (b'{"arguments":[]}', {"Content-Type": "application/json"}, 400),
        (b'{"target":""}', {"Content-Type": "application/json"}, 400),
        (b'{"target":"t","arguments":{}}', {"Content-Type": "application/json"}, 400),
        (b'{"target":"t"}', {"Content-Type": "text/plain"}, 415),
        (b'{"target":"t"}', {"Content-Type": "application/x-msgpack"}, 415),
        (b"\xc1", {"Content-Type": "application/octet-stream"}, 400),
    ],
)
async def test_bad_send_bodies(env: Env, hub: str, body: bytes, headers: dict[str, str], status: int) -> None:
    r = await env.rest("POST", f"{hub}/:send{V}", body, headers=headers)
    assert r.status == status
    error = orjson.loads(await r.read())
    assert r.headers["x-ms-error-code"] == error["code"]
    assert isinstance(error["message"], str)


async def test_body_without_content_type_is_json(env: Env, hub: str) -> None:
    a, _ = await env.connect(hub)
    url = f"{env.base}/api/hubs/{hub}/:send{V}"
    token = mint_client_token(KEY, url.replace(env.base, "http://localhost"))
    async with env.http.post(
        url,
        data=b'{"target":"m","arguments":[5]}',
        headers={"Authorization": f"Bearer {token}"},
        skip_auto_headers=["Content-Type"],
    ) as r:
        assert r.status == 202
    await expect(a, 5)


async def test_oversized_body(start: Starter, hub: str) -> None:
    env = await start(max_rest_body_bytes=100)
    r = await env.rest("POST", f"{hub}/:send{V}", message("x" * 200))
    assert r.status == 413


async def test_authentication(env: Env, hub: str) -> None:
    url = f"{env.base}/api/hubs/{hub}/:send{V}"
    body = orjson.dumps(message())
    json = {"Content-Type": "application/json"}
    async with env.http.post(url, data=body, headers=json) as r:
        assert r.status == 401
        assert r.headers["x-ms-error-code"] == "Unauthorized"
    for aud in (
        f"http://localhost/api/hubs/{hub}/:send",  # docs convention: no query
        # the SDK's: with the query, without the port
        f"https://example.service.signalr.net/api/hubs/{hub}/:send?api-version=2022-06-01",
    ):
        token = mint_client_token(KEY, aud)
        async with env.http.post(url, data=body, headers={**json, "Authorization": f"Bearer {token}"}) as r:
            assert r.status == 202, aud
    for token in (
        mint_client_token(KEY, f"http://localhost/api/hubs/{hub}/users/x"),
        mint_client_token("k2", url),
    ):
        async with env.http.post(url, data=body, headers={**json, "Authorization": f"Bearer {token}"}) as r:
            assert r.status == 401


async def test_routing_errors(env: Env, hub: str) -> None:
    assert (await env.rest("POST", f"{hub}/nothing/here{V}", message())).status == 404
    r = await env.rest("PATCH", f"{hub}/:send{V}", message())
    assert r.status == 405
    assert "POST" in r.headers["Allow"]
    assert (await env.rest("POST", f"1bad/:send{V}", message())).status == 400
    long_group = "g" * 1025
    assert (await env.rest("POST", f"{hub}/groups/{long_group}/:send{V}", message())).status == 400
    for path in ("/api/health", "/api/v1/health"):
        async with env.http.get(env.base + path) as r:
            assert r.status == 200
        async with env.http.head(env.base + path) as r:
            assert r.status == 200


async def test_application_prefix(env: Env) -> None:
    a, _ = await env.connect("app_chat", "alice")
    assert (
        await env.rest("POST", "chat/users/alice/:send?application=App&api-version=2022-06-01", message(1))
    ).status == 202
    await expect(a, 1)


async def test_hub_names_are_case_insensitive(env: Env, hub: str) -> None:
    a, _ = await env.connect(hub.upper(), "alice")
    assert (await env.rest("POST", f"{hub.lower()}/:send{V}", message("ci"))).status == 202
    await expect(a, "ci")


async def test_generate_token(env: Env, hub: str) -> None:
    r = await env.rest("POST", f"{hub}/:generateToken?api-version=2022-11-01&userId=zed&minutesToExpire=5")
    assert r.status == 200
    token = orjson.loads(await r.read())["token"]
    identity = verify_client_token(token, [KEY], hub)
    assert identity.user_id == "zed"
    assert identity.claims["exp"] - identity.claims["iat"] == 300
    assert (await env.rest("POST", f"{hub}/:generateToken{V}&minutesToExpire=0")).status == 400
