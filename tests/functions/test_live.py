"""The Web PubSub bindings against a real ``hubbub serve``: negotiate, connect rejection, every output action.

The service is a separate process configured as a user would (``python -m hubbub hub create ...`` with
``WebPubSubConnectionString``); the functions host runs in this process; clients are raw WebSockets
speaking ``json.webpubsub.azure.v1``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hubbub.functions.host import FunctionsHost
from tests.functions.support import running_host, write_app
from tests.support.server import Server, run_server

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

JSON = "json.webpubsub.azure.v1"

APP = """
    import json
    import azure.functions as func

    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="negotiate")
    @app.generic_input_binding(arg_name="connection", type="webPubSubConnection", hub="%TEST_HUB%",
                               userId="{query.userid}")
    def negotiate(req: func.HttpRequest, connection: str) -> func.HttpResponse:
        return func.HttpResponse(connection, mimetype="application/json")

    @app.route(route="act", methods=["POST"])
    @app.generic_output_binding(arg_name="actions", type="webPubSub", hub="%TEST_HUB%")
    def act(req: func.HttpRequest, actions: func.Out[str]) -> func.HttpResponse:
        actions.set(req.get_body().decode())
        return func.HttpResponse("done")

    @app.route(route="act-object", methods=["POST"])
    @app.generic_output_binding(arg_name="actions", type="webPubSub", hub="%TEST_HUB%")
    async def act_object(req: func.HttpRequest, actions: func.Out[str]) -> str:
        actions.set(req.get_json())  # a dict or list, not JSON text
        return "done"

    @app.generic_trigger(arg_name="request", type="webPubSubTrigger", hub="%TEST_HUB%", eventName="connect",
                         eventType="system")
    def connect(request: str):
        user = json.loads(request)["connectionContext"]["userId"]
        if user == "mallory":
            return {"code": "unauthorized", "errorMessage": "not you"}
        if user == "eve":
            return {"code": "userError", "errorMessage": "bad"}
        if user == "crash":
            raise RuntimeError("connect blew up")
        return None
"""


@pytest.fixture(scope="module")
def service() -> Iterator[Server]:
    with run_server() as srv:
        yield srv


@pytest.fixture
async def live(tmp_path: Path, service: Server) -> AsyncIterator[tuple[FunctionsHost, str]]:
    hub = "h" + uuid.uuid4().hex[:10]
    settings = {"WebPubSubConnectionString": service.connection_string, "TEST_HUB": hub}
    async with running_host(
        write_app(tmp_path / "liveapp", {"function_app.py": APP}), settings=settings
    ) as host:
        assert host.errors == []
        await hub_create(service, hub, host.webpubsub_webhook, "system-event=connect")
        yield host, hub


async def hub_create(service: Server, hub: str, url: str, *words: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "hubbub",
        "hub",
        "create",
        "--hub",
        hub,
        "--event-handler",
        f"url-template={url}",
    ]
    env = {**os.environ, "WebPubSubConnectionString": service.connection_string}
    done = await asyncio.to_thread(subprocess.run, [*cmd, *words], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


class Client:
    """A raw ``json.webpubsub.azure.v1`` WebSocket client."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, connected: dict[str, Any]) -> None:
        self.ws = ws
        self.connection_id: str = connected["connectionId"]
        self.user_id: str | None = connected.get("userId")
        self.ack_id = 0

    async def next(self, timeout: float = 5.0) -> Any:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return json.loads(msg.data)
        return msg.type

    async def quiet(self, timeout: float = 0.3) -> None:
        with pytest.raises(asyncio.TimeoutError):
            got = await self.ws.receive(timeout=timeout)
            pytest.fail(f"unexpected frame {got}")

    async def join(self, group: str) -> dict[str, Any]:
        self.ack_id += 1
        await self.ws.send_json({"type": "joinGroup", "group": group, "ackId": self.ack_id})
        ack: dict[str, Any] = await self.next()
        assert ack["type"] == "ack" and ack["ackId"] == self.ack_id, ack
        return ack


async def negotiate(http: aiohttp.ClientSession, host: FunctionsHost, user: str) -> dict[str, str]:
    async with http.get(f"{host.base_url}/api/negotiate", params={"userid": user}) as r:
        assert r.status == 200, await r.text()
        info: dict[str, str] = await r.json()
        return info


async def connect(http: aiohttp.ClientSession, host: FunctionsHost, user: str) -> Client:
    info = await negotiate(http, host, user)
    ws = await http.ws_connect(info["url"], protocols=[JSON])
    first = json.loads((await ws.receive(timeout=5)).data)
    assert first["type"] == "system" and first["event"] == "connected"
    return Client(ws, first)


async def act(http: aiohttp.ClientSession, host: FunctionsHost, actions: Any, as_object: bool = False) -> int:
    if as_object:
        async with http.post(f"{host.base_url}/api/act-object", json=actions) as r:
            return r.status
    async with http.post(f"{host.base_url}/api/act", data=json.dumps(actions)) as r:
        return r.status


async def test_negotiate_gives_a_working_url(live: tuple[FunctionsHost, str]) -> None:
    host, hub = live
    async with aiohttp.ClientSession() as http:
        info = await negotiate(http, host, "alice")
        port = host.options.settings["WebPubSubConnectionString"].split("Port=")[1].split(";")[0]
        assert info["baseUrl"] == f"ws://localhost:{port}/client/hubs/{hub}"
        assert info["url"] == f"{info['baseUrl']}?access_token={info['accessToken']}"
        alice = await connect(http, host, "alice")
        assert alice.user_id == "alice"


@pytest.mark.parametrize(("user", "status"), [("mallory", 401), ("eve", 400), ("crash", 500)])
async def test_connect_rejected_by_a_function_reaches_the_client(
    live: tuple[FunctionsHost, str], user: str, status: int
) -> None:
    host, _ = live
    async with aiohttp.ClientSession() as http:
        info = await negotiate(http, host, user)
        with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
            await http.ws_connect(info["url"], protocols=[JSON])
        assert raised.value.status == status


async def test_send_actions(live: tuple[FunctionsHost, str]) -> None:
    host, _ = live
    async with aiohttp.ClientSession() as http:
        a, b = await connect(http, host, "alice"), await connect(http, host, "bob")
        assert await act(http, host, {"actionName": "sendToAll", "data": "hi all", "dataType": "text"}) == 200
        for c in (a, b):
            assert await c.next() == {
                "type": "message",
                "from": "server",
                "dataType": "text",
                "data": "hi all",
            }
        action = {
            "actionName": "SendToAllAction",
            "data": '{"x":1}',
            "dataType": "json",
            "excluded": [a.connection_id],
        }
        assert await act(http, host, action) == 200
        assert await b.next() == {"type": "message", "from": "server", "dataType": "json", "data": {"x": 1}}
        await a.quiet()
        buffer = {"type": "Buffer", "data": [104, 105]}
        assert (
            await act(
                http,
                host,
                {"actionName": "sendToUser", "userId": "bob", "data": buffer, "dataType": "binary"},
            )
            == 200
        )
        assert (await b.next())["data"] == "aGk="  # binary arrives base64 in the JSON subprotocol
        await act(
            http, host, {"actionName": "sendToConnection", "connectionId": a.connection_id, "data": "just a"}
        )
        assert (await a.next())["data"] == "just a"
        await b.quiet()
        # several actions in one value, as a list object (not JSON text)
        many = [{"actionName": "sendToAll", "data": "one"}, {"actionName": "sendToAll", "data": "two"}]
        assert await act(http, host, many, as_object=True) == 200
        for c in (a, b):
            assert [(await c.next())["data"], (await c.next())["data"]] == ["one", "two"]
        # the 2021 beta form
        assert (
            await act(http, host, {"operationKind": "sendToAll", "message": "legacy", "dataType": "text"})
            == 200
        )
        assert (await b.next())["data"] == "legacy"


async def test_group_actions(live: tuple[FunctionsHost, str]) -> None:
    host, _ = live
    async with aiohttp.ClientSession() as http:
        a, b = await connect(http, host, "alice"), await connect(http, host, "bob")
        await act(
            http, host, {"actionName": "addConnectionToGroup", "connectionId": a.connection_id, "group": "g"}
        )
        await act(http, host, {"actionName": "addUserToGroup", "userId": "bob", "group": "g"})
        send = {"actionName": "sendToGroup", "group": "g", "data": "to g", "dataType": "text"}
        await act(http, host, send)
        for c in (a, b):
            got = await c.next()
            assert got["data"] == "to g"
        await act(http, host, {**send, "excluded": [b.connection_id]})
        assert (await a.next())["data"] == "to g"
        await b.quiet()
        await act(
            http,
            host,
            {"actionName": "removeConnectionFromGroup", "connectionId": a.connection_id, "group": "g"},
        )
        await act(http, host, send)
        assert (await b.next())["data"] == "to g"
        await a.quiet()
        await act(http, host, {"actionName": "removeUserFromGroup", "userId": "bob", "group": "g"})
        await act(http, host, {"actionName": "addUserToGroup", "userId": "bob", "group": "h"})
        await act(http, host, {"actionName": "removeUserFromAllGroups", "userId": "bob"})
        await act(http, host, send)
        await act(http, host, {**send, "group": "h"})
        await b.quiet()


async def test_permission_actions(live: tuple[FunctionsHost, str]) -> None:
    host, _ = live
    async with aiohttp.ClientSession() as http:
        a = await connect(http, host, "alice")
        assert (await a.join("g"))["success"] is False
        grant = {
            "actionName": "grantPermission",
            "connectionId": a.connection_id,
            "permission": "joinLeaveGroup",
            "targetName": "g",
        }
        assert await act(http, host, grant) == 200
        assert (await a.join("g"))["success"] is True
        assert (await a.join("other"))["success"] is False
        assert await act(http, host, {**grant, "actionName": "revokePermission"}) == 200
        assert (await a.join("g"))["success"] is False


async def test_close_actions(live: tuple[FunctionsHost, str]) -> None:
    host, _ = live
    async with aiohttp.ClientSession() as http:
        a, b, c = [await connect(http, host, u) for u in ("alice", "bob", "carol")]
        await act(
            http,
            host,
            {"actionName": "closeClientConnection", "connectionId": a.connection_id, "reason": "bye a"},
        )
        got = await a.next()
        assert got == {"type": "system", "event": "disconnected", "message": "bye a"}
        await act(
            http, host, {"actionName": "addConnectionToGroup", "connectionId": b.connection_id, "group": "g"}
        )
        await act(http, host, {"actionName": "closeGroupConnections", "group": "g", "reason": "group bye"})
        assert (await b.next())["message"] == "group bye"
        d = await connect(http, host, "dave")
        action = {"actionName": "closeAllConnections", "excluded": [d.connection_id], "reason": "all bye"}
        await act(http, host, action)
        assert (await c.next())["message"] == "all bye"
        await d.quiet()


@pytest.mark.parametrize(
    "action",
    [
        {"actionName": "noSuchAction"},
        {"data": "no name"},
        {"actionName": "sendToAll", "data": {"not": "a string"}},
        {"actionName": "sendToAll", "data": "x", "dataType": "binary"},
        {"actionName": "sendToGroup", "data": "x"},
        {"actionName": "addConnectionToGroup", "connectionId": "no-such-connection", "group": "g"},
        "not json at all",
    ],
)
async def test_bad_actions_fail_the_invocation(live: tuple[FunctionsHost, str], action: Any) -> None:
    host, _ = live
    async with aiohttp.ClientSession() as http:
        if isinstance(action, str):
            async with http.post(f"{host.base_url}/api/act", data=action) as r:
                assert r.status == 500
        else:
            assert await act(http, host, action) == 500
