"""``signalRTrigger`` through a real ``hubbub func start`` process, fed the upstream requests the SignalR
service sends (digest §4.2-4.4): the validation order and status codes of §5.5, signatures, both
categories, the ``InvocationContext`` a Python function gets, ``parameterNames`` as binding data (here
feeding a ``signalRConnectionInfo`` input), the return value as the Completion result (JSON and
MessagePack), the v1 ``function.json`` model, and the upstream ``Authorization`` token check."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import msgpack  # type: ignore[import-untyped]
import pytest

from tests.functions.signalr_support import (
    MASTER_KEY,
    SYSTEM_KEY,
    FuncHost,
    func_start,
    invocation,
    signature,
    upstream_headers,
    upstream_token,
)
from tests.functions.support import HOST_JSON, KEY, OTHER_KEY, write_app

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

CONNECTION = f"Endpoint=http://localhost;Port=8888;AccessKey={KEY};Version=1.0;"
AUDIENCE = "api://hubbub-tests"

APP = """
import json
import os
import pathlib

import azure.functions as func

app = func.FunctionApp()
RECORD = pathlib.Path(os.environ["SIGNALR_TEST_RECORD"])


@app.generic_trigger(arg_name="invocation", type="signalRTrigger", hubName="chat", category="messages",
                     event="echo", parameterNames=["first", "second"],
                     connectionStringSetting="AzureSignalRConnectionString")
def echo(invocation: str):
    return json.loads(invocation)


@app.generic_trigger(arg_name="invocation", type="signalRTrigger", hubName="chat", category="messages",
                     event="fail")
def fail(invocation: str):
    raise ValueError("boom: " + json.loads(invocation)["Arguments"][0])


@app.generic_trigger(arg_name="invocation", type="signalRTrigger", hubName="chat", category="messages",
                     event="value", parameterNames=["kind"])
def value(invocation: str):
    kind = json.loads(invocation)["Arguments"][0]
    values = {"text": "hi", "number": 4.5, "true": True, "list": [1, "a"], "bytes": b"\\x00\\x01",
              "dict": {"a": 1}}
    return values.get(kind)


@app.generic_trigger(arg_name="invocation", type="signalRTrigger", hubName="chat", category="messages",
                     event="raw", data_type=func.DataType.BINARY)
def raw(invocation: bytes):
    return [type(invocation).__name__, json.loads(invocation)["Event"]]


@app.generic_trigger(arg_name="invocation", type="signalRTrigger", hubName="chat", category="messages",
                     event="whoIs", parameterNames=["name"])
@app.generic_input_binding(arg_name="info", type="signalRConnectionInfo", hubName="chat", userId="{name}")
def who_is(invocation: str, info: str):
    return json.loads(info)


@app.generic_trigger(arg_name="invocation", type="signalRTrigger", hubName="chat", category="connections",
                     event="connected")
def connected(invocation: str):
    context = json.loads(invocation)
    (RECORD / ("connected-" + context["ConnectionId"])).write_text(invocation)
    if context["ConnectionId"].startswith("deny"):
        raise PermissionError("not you")


@app.generic_trigger(arg_name="invocation", type="signalRTrigger", hubName="chat", category="connections",
                     event="disconnected")
def disconnected(invocation: str):
    context = json.loads(invocation)
    (RECORD / ("disconnected-" + context["ConnectionId"])).write_text(invocation)
    raise RuntimeError("a failing disconnected function still answers 200")
"""

V1_FUNCTION = {
    "scriptFile": "__init__.py",
    "bindings": [
        {
            "type": "signalRTrigger",
            "name": "invocation",
            "hubName": "chat",
            "category": "messages",
            "event": "sum",
            "parameterNames": ["a", "b"],
            "connectionStringSetting": "AzureSignalRConnectionString",
            "direction": "in",
        },
        {"type": "signalR", "name": "out", "hubName": "chat", "direction": "out"},
    ],
}
V1_NEGOTIATE = {
    "scriptFile": "__init__.py",
    "bindings": [
        {
            "authLevel": "function",
            "type": "httpTrigger",
            "direction": "in",
            "name": "req",
            "methods": ["post"],
        },
        {"type": "http", "direction": "out", "name": "$return"},
        {
            "type": "signalRConnectionInfo",
            "name": "connectionInfo",
            "hubName": "serverless",
            "connectionStringSetting": "AzureSignalRConnectionString",
            "userId": "{query.userid}",
            "direction": "in",
        },
    ],
}
V1_NEGOTIATE_CODE = """
import azure.functions as func


def main(req: func.HttpRequest, connectionInfo) -> func.HttpResponse:
    return func.HttpResponse(connectionInfo)
"""
V1_CODE = """
import json


def main(invocation: str, out) -> int:
    a, b = json.loads(invocation)["Arguments"]
    return a + b
"""


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("record")


@pytest.fixture(scope="module")
def app_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sigapp") / "app"
    return write_app(root, {"function_app.py": APP})


def _env(record: Path, **extra: str) -> dict[str, str]:
    return {
        "AzureSignalRConnectionString": f"Endpoint=http://localhost;Port=8888;AccessKey={KEY};Version=1.0;",
        "SIGNALR_TEST_RECORD": str(record),
        **extra,
    }


@pytest.fixture(scope="module")
def host(app_root: Path, record: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuncHost]:
    with func_start(app_root, tmp_path_factory.mktemp("keys"), _env(record)) as running:
        yield running


@pytest.fixture(scope="module")
def strict_host(app_root: Path, record: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuncHost]:
    """The same app with the upstream token required and its audience configured."""
    env = _env(record, HubbubSignalRUpstreamTokenRequired="true", HubbubSignalRUpstreamAudience=AUDIENCE)
    with func_start(app_root, tmp_path_factory.mktemp("keys-strict"), env) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes, aiohttp.typedefs.LooseHeaders]:
    async with http.post(url, data=body, headers=headers) as r:
        return r.status, await r.read(), r.headers


def completion_of(body: bytes) -> dict[str, Any]:
    assert body.endswith(b"\x1e"), body
    message: dict[str, Any] = json.loads(body[:-1])
    return message


# --- validation order (§5.5) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": None}, 415),
        ({"Content-Type": "text/plain", "X-ASRS-Hub": ""}, 415),  # content type first
        ({"X-ASRS-Hub": ""}, 400),
        ({"X-ASRS-Category": ""}, 400),
        ({"X-ASRS-Event": ""}, 400),
        ({"X-ASRS-Event": "", "X-ASRS-Signature": "sha256=00"}, 400),
        ({"X-ASRS-Event": None}, 500),  # an absent header is an exception, not a 400
        ({"X-ASRS-Event": "nobody"}, 404),
        ({"X-ASRS-Event": "nobody", "X-ASRS-Signature": "sha256=00"}, 404),  # lookup before signature
        ({"X-ASRS-Hub": "otherhub"}, 404),
        ({"X-ASRS-Category": "connections", "X-ASRS-Event": "echo"}, 404),
        ({"X-ASRS-Connection-Id": None}, 500),
        ({"X-ASRS-Signature": "sha256=00"}, 401),
        ({"X-ASRS-Signature": None}, 401),
        ({"X-ASRS-Signature": signature("conn-1", OTHER_KEY)}, 401),
        ({"X-ASRS-Signature": signature("conn-1", OTHER_KEY, KEY)}, 200),  # either key of the list
        ({"X-ASRS-Signature": signature("conn-1", KEY).lower()}, 200),  # hex case-insensitive
        ({"X-ASRS-Signature": "sha256=AA, " + signature("conn-1", KEY)}, 200),  # entries are trimmed
        ({"X-ASRS-Hub": "CHAT", "X-ASRS-Event": "ECHO"}, 200),  # dispatch is case-insensitive
        ({"Content-Type": "application/json; charset=utf-8"}, 200),
    ],
)
async def test_validation_order(
    http: aiohttp.ClientSession, host: FuncHost, change: dict[str, str | None], status: int
) -> None:
    headers = upstream_headers(KEY, event="echo")
    for name, value in change.items():
        headers.pop(name, None)
        if value is not None:
            headers[name] = value
    body = invocation("ECHO" if headers.get("X-ASRS-Event") == "ECHO" else "echo", "a", "b")
    got, text, _ = await post(http, host.webhook_with_key, headers, body)
    assert got == status, (text, host.log()[-2000:])


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json", "not valid JSON"),
        (b"[1]", "not a JSON object"),
        (json.dumps({"type": 1, "target": "other", "arguments": []}).encode(), "is not the event"),
        (json.dumps({"type": 3, "invocationId": "1"}).encode(), "not an invocation"),
        (json.dumps({"type": 1, "target": "echo", "arguments": {"a": 1}}).encode(), "must be an array"),
    ],
)
async def test_unreadable_bodies_are_500_before_the_signature(
    http: aiohttp.ClientSession, host: FuncHost, body: bytes, why: str
) -> None:
    headers = upstream_headers(KEY, event="echo")
    headers["X-ASRS-Signature"] = "sha256=00"  # would be 401: the body is read first
    status, text, _ = await post(http, host.webhook_with_key, headers, body)
    assert status == 500
    assert why in text.decode()


async def test_parameter_names_must_match_the_arguments(http: aiohttp.ClientSession, host: FuncHost) -> None:
    headers = upstream_headers(KEY, event="echo")
    status, text, _ = await post(http, host.webhook_with_key, headers, invocation("echo", "only one"))
    assert (status, text.decode()) == (
        500,
        "The function 'echo' expects 2 arguments (first, second) but the invocation has 1.",
    )
    # binding happens when the function runs: after the signature check
    headers["X-ASRS-Signature"] = "sha256=00"
    assert (await post(http, host.webhook_with_key, headers, invocation("echo", "only one")))[0] == 401


async def test_the_system_key_is_required(http: aiohttp.ClientSession, host: FuncHost) -> None:
    headers = upstream_headers(KEY, event="echo")
    body = invocation("echo", "a", "b")
    assert (await post(http, host.webhook, headers, body))[0] == 401
    assert (await post(http, host.webhook + "?code=wrong", headers, body))[0] == 401
    assert (await post(http, host.webhook, {**headers, "x-functions-key": SYSTEM_KEY}, body))[0] == 200
    assert (await post(http, host.webhook + f"?code={MASTER_KEY}", headers, body))[0] == 200
    # an extension nobody registered
    url = f"{host.base_url}/runtime/webhooks/nothing?code={MASTER_KEY}"
    assert (await post(http, url, headers, body))[0] == 404


# --- messages -------------------------------------------------------------------------------------


async def test_invocation_context_and_completion(http: aiohttp.ClientSession, host: FuncHost) -> None:
    headers = upstream_headers(
        KEY,
        event="echo",
        connection_id="conn-ctx",
        claims="nameid: alice, admin: true, role: a, role: b, broken",
        query="?hub=chat&x=1&x=2&name=J%C3%BCrgen",
    )
    headers["X-Custom"] = "v"
    status, body, _ = await post(
        http, host.webhook_with_key, headers, invocation("echo", "one", {"two": 2}, invocation_id="42")
    )
    assert status == 200
    message = completion_of(body)
    assert message["type"] == 3 and message["invocationId"] == "42" and "error" not in message
    context = message["result"]
    assert " ".join(context) == "Arguments Error Category Event Hub ConnectionId UserId Headers Query Claims"
    assert context["Arguments"] == ["one", {"two": 2}]
    assert context["Error"] is None
    assert (context["Category"], context["Event"], context["Hub"]) == ("messages", "echo", "chat")
    assert (context["ConnectionId"], context["UserId"]) == ("conn-ctx", "alice")
    assert context["Claims"] == {"nameid": "alice", "admin": "true", "role": "a"}  # first value wins
    assert context["Query"] == {"hub": "chat", "x": "1,2", "name": "Jürgen"}
    sent = {k.lower(): v for k, v in context["Headers"].items()}
    assert sent["x-custom"] == "v" and sent["x-asrs-connection-id"] == "conn-ctx"
    assert "content-type" not in sent and "content-length" not in sent  # content headers are not there


async def test_return_values_become_the_completion_result(
    http: aiohttp.ClientSession, host: FuncHost
) -> None:
    expected = {
        "text": "hi",
        "number": 4.5,
        "true": 1,  # the worker sends booleans as int
        "list": [1, "a"],
        "bytes": "AAE=",  # a byte array, as JSON gives it
        "dict": {"a": 1},
        "none": None,  # no return value: a null result
    }
    for kind, result in expected.items():
        status, body, _ = await post(
            http, host.webhook_with_key, upstream_headers(KEY, event="value"), invocation("value", kind)
        )
        assert status == 200
        assert completion_of(body) == {"type": 3, "invocationId": "1", "result": result}


async def test_a_function_error_is_a_completion_error(http: aiohttp.ClientSession, host: FuncHost) -> None:
    status, body, _ = await post(
        http, host.webhook_with_key, upstream_headers(KEY, event="fail"), invocation("fail", "x")
    )
    assert status == 200
    assert completion_of(body) == {"type": 3, "invocationId": "1", "error": "boom: x"}
    # without an invocation id nobody waits: an empty 200 either way
    for event in ("fail", "echo"):
        args = ("x",) if event == "fail" else ("a", "b")
        status, body, _ = await post(
            http,
            host.webhook_with_key,
            upstream_headers(KEY, event=event),
            invocation(event, *args, invocation_id=None),
        )
        assert (status, body) == (200, b"")


async def test_messagepack_invocations_get_messagepack_completions(
    http: aiohttp.ClientSession, host: FuncHost
) -> None:
    headers = upstream_headers(KEY, event="value", content_type="application/x-msgpack")
    body = msgpack.packb([1, {}, "9", "value", ["list"], []])
    status, answer, _ = await post(http, host.webhook_with_key, headers, body)
    assert status == 200
    assert answer[0] == len(answer) - 1  # the VarInt length prefix (short message: one byte)
    assert msgpack.unpackb(answer[1:]) == [3, {}, "9", 3, [1, "a"]]
    headers = upstream_headers(KEY, event="fail", content_type="application/x-msgpack")
    status, answer, _ = await post(
        http, host.webhook_with_key, headers, msgpack.packb([1, {}, "10", "fail", ["m"], []])
    )
    assert msgpack.unpackb(answer[1:]) == [3, {}, "10", 1, "boom: m"]


async def test_binary_data_type_gets_bytes(http: aiohttp.ClientSession, host: FuncHost) -> None:
    status, body, _ = await post(
        http, host.webhook_with_key, upstream_headers(KEY, event="raw"), invocation("raw")
    )
    assert status == 200
    assert completion_of(body)["result"] == ["bytes", "raw"]


async def test_parameter_names_feed_binding_expressions(http: aiohttp.ClientSession, host: FuncHost) -> None:
    """``userId: "{name}"`` of a ``signalRConnectionInfo`` input resolves to the invocation's argument."""
    status, body, _ = await post(
        http, host.webhook_with_key, upstream_headers(KEY, event="whoIs"), invocation("whoIs", "carol")
    )
    assert status == 200
    info = completion_of(body)["result"]
    assert info["url"] == "http://localhost:8888/client/?hub=chat"
    claims = jwt.decode(
        info["accessToken"], KEY, algorithms=["HS256"], audience="http://localhost/client/?hub=chat"
    )
    assert claims["asrs.s.uid"] == "carol"
    assert claims["exp"] - claims["iat"] == 3600


# --- connections ----------------------------------------------------------------------------------


def _recorded(record: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((record / name).read_text())
    return data


async def test_connected_and_disconnected(http: aiohttp.ClientSession, host: FuncHost, record: Path) -> None:
    url = host.webhook_with_key
    headers = upstream_headers(KEY, category="connections", event="connected", connection_id="c-ok")
    assert (await post(http, url, headers, b'{"type":10}'))[:2] == (200, b"")
    assert _recorded(record, "connected-c-ok")["Category"] == "connections"
    context = _recorded(record, "connected-c-ok")
    assert context["Arguments"] is None
    assert (context["Claims"], context["Query"]) == (None, None)  # no such headers: null, as in the extension
    # a connected function that raises: 403
    headers = upstream_headers(KEY, category="connections", event="connected", connection_id="deny-1")
    assert (await post(http, url, headers, b'{"type":10}'))[0] == 403
    # disconnected: the error travels in the context; the function's own failure is not the service's
    headers = upstream_headers(KEY, category="connections", event="disconnected", connection_id="c-gone")
    status, _, _ = await post(http, url, headers, b'{"Type":11,"Error":"transport closed"}')
    assert status == 200
    context = _recorded(record, "disconnected-c-gone")
    assert (context["Event"], context["Error"]) == ("disconnected", "transport closed")
    headers = upstream_headers(KEY, category="connections", event="disconnected", connection_id="c-clean")
    assert (await post(http, url, headers, b'{"type":11}'))[0] == 200
    assert _recorded(record, "disconnected-c-clean")["Error"] is None
    headers = upstream_headers(KEY, category="connections", event="disconnected", connection_id="c-bad")
    assert (await post(http, url, headers, b'{"type":1}'))[0] == 500


# --- the upstream Authorization token -------------------------------------------------------------


async def test_upstream_token_is_checked_when_present(http: aiohttp.ClientSession, host: FuncHost) -> None:
    headers = upstream_headers(KEY, event="echo")
    body = invocation("echo", "a", "b")
    now = int(time.time())
    good = upstream_token(KEY, "http://127.0.0.1")
    cases = {
        f"Bearer {good}": 200,  # no audience configured: any aud
        f"bearer {upstream_token(OTHER_KEY, 'x')}": 401,  # another key
        f"Bearer {upstream_token(KEY, 'x', issued=now - 7200)}": 401,  # expired
        f"Bearer {upstream_token(KEY, 'x', not_before=now + 600)}": 401,  # not yet valid
        f"Bearer {good[:-2]}": 401,  # tampered
        "Bearer ": 401,
        f"Basic {good}": 401,
        f"Bearer {jwt.encode({'aud': 'x'}, KEY, algorithm='HS256')}": 401,  # no exp
    }
    for authorization, status in cases.items():
        got = (await post(http, host.webhook_with_key, {**headers, "Authorization": authorization}, body))[0]
        assert got == status, authorization
    # a little clock skew is fine
    skewed = upstream_token(KEY, "x", issued=now - 3600 - 10)
    assert (await post(http, host.webhook_with_key, {**headers, "Authorization": f"Bearer {skewed}"}, body))[
        0
    ] == 200


async def test_upstream_token_required_with_audience(
    http: aiohttp.ClientSession, strict_host: FuncHost
) -> None:
    headers = upstream_headers(KEY, event="echo")
    body = invocation("echo", "a", "b")
    url = strict_host.webhook_with_key
    assert (await post(http, url, headers, body))[0] == 401  # no token
    for token, status in [
        (upstream_token(KEY, AUDIENCE), 200),
        (upstream_token(KEY, "api://someone-else"), 401),
        (upstream_token(OTHER_KEY, AUDIENCE), 401),
    ]:
        assert (await post(http, url, {**headers, "Authorization": f"Bearer {token}"}, body))[0] == status
    status, answer, _ = await post(
        http, url, {**headers, "Authorization": f"Bearer {upstream_token(KEY, AUDIENCE)}"}, body
    )
    assert completion_of(answer)["result"]["Arguments"] == ["a", "b"]
    # the checks keep their order: a bad signature is 401 whatever the token
    bad = {
        **headers,
        "X-ASRS-Signature": "sha256=00",
        "Authorization": f"Bearer {upstream_token(KEY, AUDIENCE)}",
    }
    assert (await post(http, url, bad, body))[0] == 401


# --- the v1 model ---------------------------------------------------------------------------------


async def test_v1_function_json(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    root = write_app(
        tmp_path / "v1app",
        {
            "Sum/function.json": V1_FUNCTION,
            "Sum/__init__.py": V1_CODE,
            "negotiate/function.json": V1_NEGOTIATE,
            "negotiate/__init__.py": V1_NEGOTIATE_CODE,
        },
        host_json=HOST_JSON,
    )
    env = {"AzureSignalRConnectionString": CONNECTION}
    with func_start(root, tmp_path / "keys", env) as v1:
        status, body, _ = await post(
            http, v1.webhook_with_key, upstream_headers(KEY, event="sum"), invocation("sum", 2, 3)
        )
        assert status == 200, v1.log()
        assert completion_of(body)["result"] == 5
        assert "Sum: signalRTrigger (hub chat, messages sum)" in v1.log()
        # the QuickStartServerless shape: httpTrigger + signalRConnectionInfo (v1 names), $return
        url = f"{v1.base_url}/api/negotiate?userid=dave"
        async with http.post(url, headers={"x-functions-key": MASTER_KEY}) as r:
            assert r.status == 200, v1.log()
            info = await r.json(content_type=None)
        assert info["url"] == "http://localhost:8888/client/?hub=serverless"
        claims = jwt.decode(
            info["accessToken"], KEY, algorithms=["HS256"], audience="http://localhost/client/?hub=serverless"
        )
        assert claims["asrs.s.uid"] == "dave"
