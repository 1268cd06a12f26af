"""The SignalR bindings end to end: a real ``hubbub serve`` with SignalR whose upstream (``*/*/*``, with the
``ManagedIdentity`` token) points at a real ``hubbub func start``, and ``pysignalr`` clients (JSON and
MessagePack) that negotiate through the app's ``signalRConnectionInfo`` function.

The hub method ``act`` puts its argument (a list of output items) into a ``signalR`` output binding, so the
clients drive every message kind and group action and check what arrives; a broadcast "fence" after
each step shows that nothing else was delivered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import jwt
import pytest
from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage
from pysignalr.protocol.json import JSONProtocol
from pysignalr.protocol.messagepack import MessagepackProtocol

from tests.functions.signalr_support import SYSTEM_KEY, FuncHost, func_start, stop_pysignalr
from tests.functions.support import write_app
from tests.support.server import DEV_KEY, Server, free_port, run_server, wait_for_port

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

HUB = "bind"
AUDIENCE = "api://hubbub-bindings"
WAIT_S = 20.0
UNCONVERTIBLE = "Unable to convert JObject to valid output binding type, check parameters."

APP = """
import json

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
HUB = "bind"


@app.route(route="negotiate", methods=["POST"])
@app.generic_input_binding(arg_name="info", type="signalRConnectionInfo", hubName=HUB,
                           userId="{headers.x-test-user}")
def negotiate(req: func.HttpRequest, info: str) -> func.HttpResponse:
    return func.HttpResponse(info, mimetype="application/json")


@app.route(route="claims/negotiate", methods=["POST"])
@app.generic_input_binding(arg_name="info", type="signalRConnectionInfo", hub_name=HUB,
                           connection_string_setting="AzureSignalRConnectionString",
                           idToken="{headers.x-test-id-token}", claimTypeList=["role", "aud"])
def negotiate_claims(req: func.HttpRequest, info: str) -> func.HttpResponse:
    return func.HttpResponse(info, mimetype="application/json")


@app.route(route="principal/negotiate", methods=["POST"])
@app.generic_input_binding(arg_name="info", type="signalRConnectionInfo", hubName=HUB,
                           userId="{headers.x-ms-client-principal-id}")
def negotiate_principal(req: func.HttpRequest, info: str) -> func.HttpResponse:
    body = {"info": json.loads(info), "principal": req.headers.get("x-ms-client-principal-id")}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.route(route="send", methods=["POST"])
@app.generic_output_binding(arg_name="out", type="signalR", hubName=HUB)
def send(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    out.set(req.get_body().decode())
    return func.HttpResponse("sent")


@app.generic_trigger(arg_name="invocation", type="signalRTrigger", hubName=HUB, category="messages",
                     event="whoami")
def whoami(invocation: str):
    context = json.loads(invocation)
    authorized = any(k.lower() == "authorization" for k in context["Headers"])
    return {"ConnectionId": context["ConnectionId"], "UserId": context["UserId"], "auth": authorized}


@app.generic_trigger(arg_name="invocation", type="signalRTrigger", hubName=HUB, category="messages",
                     event="act", parameterNames=["items"])
@app.generic_output_binding(arg_name="out", type="signalR", hubName=HUB)
def act(invocation: str, out: func.Out[str]):
    out.set(json.dumps(json.loads(invocation)["Arguments"][0]))
    return "done"


@app.generic_trigger(arg_name="invocation", type="signalRTrigger", hubName=HUB, category="connections",
                     event="connected")
@app.generic_output_binding(arg_name="out", type="signalR", hubName=HUB)
def connected(invocation: str, out: func.Out[str]):
    context = json.loads(invocation)
    out.set(json.dumps({"target": "joined", "arguments": [context["UserId"]]}))
"""


class Stack:
    def __init__(self, service: Server, host: FuncHost, signalr_port: int) -> None:
        self.service, self.host, self.signalr_port = service, host, signalr_port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("sigbind")
    app_root = write_app(folder / "app", {"function_app.py": APP})
    signalr_port, func_port = free_port(), free_port()
    template = {
        "UrlTemplate": f"http://127.0.0.1:{func_port}/runtime/webhooks/signalr?code={SYSTEM_KEY}",
        "HubPattern": "*",
        "CategoryPattern": "*",
        "EventPattern": "*",
        "Auth": {"Type": "ManagedIdentity", "ManagedIdentity": {"Resource": AUDIENCE}},
    }
    settings = folder / "settings.json"
    settings.write_text(json.dumps({"UpstreamSettings": {"Templates": [template]}}), encoding="utf-8")
    connection = f"Endpoint=http://localhost;Port={signalr_port};AccessKey={DEV_KEY};Version=1.0;"
    env = {
        "AzureSignalRConnectionString": connection,
        "HubbubSignalRUpstreamTokenRequired": "true",  # every upstream call must carry a valid token
        "HubbubSignalRUpstreamAudience": AUDIENCE,
    }
    with (
        run_server("--signalr-port", str(signalr_port), "--signalr-settings", str(settings)) as service,
        func_start(app_root, folder / "keys", env, port=func_port) as host,
    ):
        wait_for_port(signalr_port)
        yield Stack(service, host, signalr_port)


class Client:
    """A ``pysignalr`` client that negotiates through the app as ``user``."""

    def __init__(self, stack: Stack, user: str, protocol: Any) -> None:
        self.user = user
        self.client = SignalRClient(
            f"{stack.host.base_url}/api", protocol=protocol, headers={"x-test-user": user}
        )
        self.inbox: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.joined: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.opened = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

        async def on_m(args: list[Any]) -> None:
            self.inbox.put_nowait(args)

        async def on_joined(args: list[Any]) -> None:
            self.joined.put_nowait(args)

        async def on_open() -> None:
            self.opened.set()

        async def on_error(_: CompletionMessage) -> None:  # pysignalr needs one; invoke() reads the error
            pass

        self.client.on("m", on_m)
        self.client.on_error(on_error)
        self.client.on("joined", on_joined)
        self.client.on_open(on_open)

    async def start(self) -> None:
        self.task = asyncio.create_task(self.client.run())
        await asyncio.wait_for(self.opened.wait(), WAIT_S)

    async def stop(self) -> None:
        if self.task is not None:
            await stop_pysignalr(self.client, self.task)

    async def invoke(self, method: str, *args: Any) -> CompletionMessage:
        done: asyncio.Future[CompletionMessage] = asyncio.get_running_loop().create_future()

        async def on_completion(message: CompletionMessage) -> None:
            if not done.done():
                done.set_result(message)

        await self.client.send(method, list(args), on_invocation=on_completion)
        return await asyncio.wait_for(done, WAIT_S)

    async def next(self) -> list[Any]:
        return await asyncio.wait_for(self.inbox.get(), WAIT_S)


@pytest.fixture
async def pair(stack: Stack) -> AsyncIterator[tuple[Client, Client]]:
    alice = Client(stack, "alice", JSONProtocol())
    bob = Client(stack, "bob", MessagepackProtocol())
    try:
        await alice.start()
        await bob.start()
        yield alice, bob
    finally:
        await alice.stop()
        await bob.stop()


def message(*arguments: Any, **route: str) -> dict[str, Any]:
    return {"target": "m", "arguments": list(arguments), **route}


async def act(client: Client, *items: dict[str, Any]) -> None:
    completion = await client.invoke("act", list(items))
    assert completion.error is None, completion.error
    assert completion.result == "done"


async def received(client: Client, *expected: list[Any]) -> None:
    for item in expected:
        assert await client.next() == item


async def test_every_message_kind_and_group_action(pair: tuple[Client, Client]) -> None:
    alice, bob = pair
    who_a, who_b = (await alice.invoke("whoami")).result, (await bob.invoke("whoami")).result
    assert who_a["UserId"] == "alice" and who_b["UserId"] == "bob"
    assert who_a["auth"] is True  # the upstream request carried the (verified, required) token
    a_id, b_id = who_a["ConnectionId"], who_b["ConnectionId"]
    # the connections category: 'connected' ran and its output reached alice
    while await asyncio.wait_for(alice.joined.get(), WAIT_S) != ["bob"]:
        pass

    await act(alice, message("all", {"n": 1}))
    await received(alice, ["all", {"n": 1}])
    await received(bob, ["all", {"n": 1}])

    await act(alice, message("to-bob", userId="bob"), message("fence-1"))
    await received(alice, ["fence-1"])
    await received(bob, ["to-bob"], ["fence-1"])

    await act(bob, message("to-alice", connectionId=a_id), message("fence-2"))
    await received(alice, ["to-alice"], ["fence-2"])
    await received(bob, ["fence-2"])

    await act(
        alice,
        {"action": "add", "groupName": "g", "connectionId": b_id},
        message("g-1", groupName="g"),
        {"action": "remove", "groupName": "g", "connectionId": b_id},
        message("g-2", groupName="g"),
        message("fence-3"),
    )
    await received(alice, ["fence-3"])
    await received(bob, ["g-1"], ["fence-3"])

    await act(
        bob,
        {"Action": "Add", "GroupName": "u", "UserId": "alice"},  # names and values are case-insensitive
        message("u-1", groupName="u"),
        {"action": "remove", "groupName": "u", "userId": "alice"},
        message("u-2", groupName="u"),
        {"action": "add", "groupName": "u", "userId": "alice"},
        {"action": "add", "groupName": "v", "userId": "alice"},
        message("v-1", groupName="v"),
        {"action": "removeAll", "userId": "alice"},
        message("u-3", groupName="u"),
        message("v-2", groupName="v"),
        message("fence-4"),
    )
    await received(alice, ["u-1"], ["v-1"], ["fence-4"])
    await received(bob, ["fence-4"])

    # removeAll is for users: with a connection id it does nothing (as the extension does); a message
    # needs no arguments
    await act(
        alice,
        {"action": "add", "groupName": "h", "connectionId": a_id},
        {"action": "removeAll", "connectionId": a_id},
        message("h-1", groupName="h"),
        {"target": "m", "groupName": "h"},
        message("fence-5"),
    )
    await received(alice, ["h-1"], [], ["fence-5"])
    await received(bob, ["fence-5"])


@pytest.mark.parametrize(
    ("items", "error"),
    [
        ([{"foo": 1}], UNCONVERTIBLE),
        ([{"target": "m", "arguments": "not a list"}], UNCONVERTIBLE),
        ([{"target": None, "action": None}], UNCONVERTIBLE),
        ([{"action": "add", "groupName": "g"}], "ConnectionId and UserId cannot be null or empty together"),
        ([{"action": "join", "groupName": "g", "userId": "u"}], UNCONVERTIBLE),  # not an action
        ([{"action": "add", "userId": "u"}], "'groupName' is required"),
        ([message("ok"), 5], UNCONVERTIBLE),
    ],
)
async def test_bad_output_items_fail_the_invocation(
    pair: tuple[Client, Client], items: list[Any], error: str
) -> None:
    alice, _ = pair
    completion = await alice.invoke("act", items)
    assert completion.error is not None and error in completion.error
    await act(alice, message("after"))  # nothing of the bad batch was sent
    assert await alice.next() == ["after"]


async def test_output_from_an_http_function(stack: Stack, pair: tuple[Client, Client]) -> None:
    alice, bob = pair
    items = [message("from-http", userId="alice"), message("everyone")]
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.host.base_url}/api/send", data=json.dumps(items)) as r,
    ):
        assert r.status == 200, await r.text()
    await received(alice, ["from-http"], ["everyone"])
    await received(bob, ["everyone"])


async def test_connection_info_with_id_token_claims(stack: Stack) -> None:
    id_token = jwt.encode(
        {"role": "admin", "aud": "mine", "other": "x"},
        "the app's own key, at least 32 bytes long",
        algorithm="HS256",
    )
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{stack.host.base_url}/api/claims/negotiate", headers={"x-test-id-token": f"Bearer {id_token}"}
        ) as r,
    ):
        assert r.status == 200
        info = await r.json()
    assert info["url"] == f"http://localhost:{stack.signalr_port}/client/?hub={HUB}"
    claims = jwt.decode(
        info["accessToken"], DEV_KEY, algorithms=["HS256"], audience=f"http://localhost/client/?hub={HUB}"
    )
    assert claims["role"] == "admin" and claims["asrs.u.aud"] == "mine"  # listed; aud renamed
    assert "other" not in claims and "asrs.s.uid" not in claims
    # the service accepts it: negotiate with the token as the browser client would
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://localhost:{stack.signalr_port}/client/negotiate?hub={HUB}&negotiateVersion=1",
            headers={"Authorization": f"Bearer {info['accessToken']}"},
        ) as r,
    ):
        assert r.status == 200
        assert (await r.json())["negotiateVersion"] == 1


async def test_connection_info_for_the_signed_in_user(stack: Stack) -> None:
    """``userId: "{headers.x-ms-client-principal-id}"``: the App Service Authentication principal."""
    base = stack.host.base_url
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # cookies for an IP
        # not signed in: a client's own principal header is stripped, so the expression fails
        async with http.post(
            f"{base}/api/principal/negotiate", headers={"x-ms-client-principal-id": "forged"}
        ) as r:
            assert r.status == 500
        form = {"name": "erin", "redirect": "/api/index"}
        async with http.post(f"{base}/.auth/login/aad/callback", data=form, allow_redirects=False) as r:
            assert r.status in (302, 303), await r.text()
        async with http.post(f"{base}/api/principal/negotiate") as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
    principal = answer["principal"]
    assert principal and principal != "forged"
    claims = jwt.decode(
        answer["info"]["accessToken"],
        DEV_KEY,
        algorithms=["HS256"],
        audience=f"http://localhost/client/?hub={HUB}",
    )
    assert claims["asrs.s.uid"] == principal
