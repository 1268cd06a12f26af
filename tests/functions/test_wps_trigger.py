"""The ``webPubSubTrigger`` webhook and ``webPubSubContext`` input (CloudEvents signed as hubbub signs)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hubbub.functions.host import FunctionsHost
from tests.functions.support import KEY, OTHER_KEY, ce_headers, connection_string, running_host, write_app

NAMES = [
    "request",
    "connectionContext",
    "data",
    "dataType",
    "claims",
    "query",
    "reason",
    "subprotocols",
    "clientCertificates",
    "other",
]

APP = """
    import json
    import azure.functions as func

    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    SEEN = []
    NAMES = NAMES_LITERAL

    # one function per (event, parameter name), each on its own hub, recording what it receives
    for prefix, event_type, event_name in [("c", "system", "connect"), ("u", "user", "echo"),
                                           ("d", "system", "disconnected"), ("n", "system", "connected")]:
        for name in NAMES:
            ns = {"SEEN": SEEN}
            exec(f"def {prefix}_{name}({name}):\\n    SEEN.append(('{prefix}_{name}', {name}))\\n", ns)
            app.generic_trigger(arg_name=name, type="webPubSubTrigger", hub=f"{prefix}_{name}",
                                eventName=event_name, eventType=event_type)(ns[f"{prefix}_{name}"])

    @app.generic_trigger(arg_name="data", type="webPubSubTrigger", hub="bin", eventName="message",
                         eventType="user", data_type=func.DataType.BINARY)
    def binary(data: bytes):
        SEEN.append(("bin", data))

    @app.generic_trigger(arg_name="request", type="webPubSubTrigger", hub="resp", eventName="connect",
                         eventType="system")
    def resp_connect(request: str):
        r = json.loads(request)
        mode = r["query"].get("mode", ["ok"])[0]
        if mode == "reject":
            return {"code": "unauthorized", "errorMessage": "go away"}
        if mode == "usererror":
            return {"code": "UserError", "errorMessage": "bad"}
        if mode == "other":
            return {"code": "whatever", "errorMessage": "x"}
        if mode == "raise":
            raise RuntimeError("connect failed")
        if mode == "string":
            return json.dumps({"userId": "from-string"})
        if mode == "notjson":
            return "hello"
        if mode == "list":
            return [1]
        return {"userId": "u-" + r["connectionContext"]["userId"], "groups": ["g1"],
                "roles": ["webpubsub.joinLeaveGroup"], "states": {"counter": 1}, "extra": "dropped"}

    @app.generic_trigger(arg_name="request", type="webPubSubTrigger", hub="resp", eventName="message",
                         eventType="user")
    async def resp_message(request: str):
        text = json.loads(request)["data"]
        replies = {
            "binary": {"data": {"type": "Buffer", "data": [1, 2, 3]}, "dataType": "binary"},
            "json": {"data": '{"a":1}', "dataType": "json"},
            "nodatatype": {"data": "raw"},
            "object": {"data": {"a": 1}, "dataType": "json"},
            "state": {"data": "s", "dataType": "text", "states": {"b": 2}},
            "none": None,
            "legacy": {"message": "old", "dataType": "text"},
        }
        return replies.get(text, {"data": "ack " + text, "dataType": "text"})

    @app.generic_trigger(arg_name="request", type="webPubSubTrigger", hub="other_key", eventName="connect",
                         eventType="system", connections=["OtherConnection"])
    def other_key(request: str):
        return {"userId": "validated-by-other"}

    @app.route(route="wps/{event}", methods=["GET", "POST", "OPTIONS"])
    @app.generic_input_binding(arg_name="wpsContext", type="webPubSubContext")
    def wps_context(req: func.HttpRequest, wpsContext: str) -> func.HttpResponse:
        return func.HttpResponse(wpsContext, mimetype="application/json")
""".replace("NAMES_LITERAL", repr(NAMES))


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[FunctionsHost]:
    settings = {
        "WebPubSubConnectionString": connection_string(),
        "OtherConnection": connection_string(key=OTHER_KEY),
    }
    async with running_host(write_app(tmp_path / "wpsapp", {"function_app.py": APP}), settings=settings) as h:
        assert h.errors == []
        yield h


def seen(host: FunctionsHost) -> list[tuple[str, Any]]:
    assert host.app is not None
    result: list[tuple[str, Any]] = host.app.functions[0].func.__globals__["SEEN"]
    return result


async def post(
    host: FunctionsHost, headers: dict[str, str], body: bytes = b"{}", code: str | None = "system"
) -> tuple[int, dict[str, str], bytes]:
    params = {"code": host.keys.system_key("webpubsub_extension")} if code == "system" else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{host.base_url}/runtime/webhooks/webpubsub", params=params, headers=headers, data=body
        ) as r,
    ):
        return r.status, dict(r.headers), await r.read()


CONNECT_BODY = {
    "claims": {"sub": ["alice"], "role": ["a", "b"]},
    "query": {"mode": ["ok"], "x": ["1"]},
    "headers": {"User-Agent": ["test"]},
    "subprotocols": ["json.webpubsub.azure.v1"],
    "clientCertificates": [{"thumbprint": "abc", "content": "-----BEGIN CERTIFICATE-----"}],
}


@pytest.mark.parametrize("name", NAMES)
async def test_each_trigger_argument_name(host: FunctionsHost, name: str) -> None:
    state = base64.b64encode(json.dumps({"k": "v"}).encode()).decode()
    await post(
        host,
        ce_headers("connect", hub=f"c_{name}", connection_id="c1", state=state),
        json.dumps(CONNECT_BODY).encode(),
    )
    await post(
        host,
        ce_headers(
            "echo", hub=f"u_{name}", kind="user", connection_id="c2", content_type="text/plain; charset=utf-8"
        ),
        "héllo".encode(),
    )
    await post(host, ce_headers("disconnected", hub=f"d_{name}", connection_id="c3"), b'{"reason":"bye"}')
    await post(host, ce_headers("connected", hub=f"n_{name}", connection_id="c4"), b"{}")
    values = dict(seen(host))
    connect, user = values[f"c_{name}"], values[f"u_{name}"]
    disconnected, connected = values[f"d_{name}"], values[f"n_{name}"]

    def obj(value: Any) -> Any:
        assert isinstance(value, str), value  # objects arrive as JSON text
        return json.loads(value)

    if name == "request":
        req = obj(connect)
        assert req["claims"] == CONNECT_BODY["claims"] and req["query"] == CONNECT_BODY["query"]
        assert req["subprotocols"] == ["json.webpubsub.azure.v1"] and req["headers"] == {
            "User-Agent": ["test"]
        }
        ctx = req["connectionContext"]
        assert ctx["eventType"] == "system" and ctx["eventName"] == "connect" and ctx["hub"] == "c_request"
        assert ctx["connectionId"] == "c1" and ctx["userId"] == "alice" and ctx["origin"] == "localhost"
        assert ctx["states"] == {"k": "v"} and ctx["signature"].startswith("sha256=")
        assert ctx["headers"]["ce-connectionId"] == ["c1"]
        assert obj(user)["data"] == "héllo" and obj(user)["dataType"] == "text"
        assert obj(disconnected)["reason"] == "bye"
        assert set(obj(connected)) == {"connectionContext"}
    elif name == "connectionContext":
        assert obj(connect)["connectionId"] == "c1" and obj(user)["eventType"] == "user"
        assert obj(user)["eventName"] == "echo" and obj(disconnected)["connectionId"] == "c3"
        assert obj(connected)["eventName"] == "connected"
    elif name == "data":
        assert user == "héllo" and connect is None and disconnected is None
    elif name == "dataType":
        assert user == "text" and connect is None
    elif name in ("claims", "query", "subprotocols", "clientCertificates"):
        assert obj(connect) == CONNECT_BODY[name] and user is None and disconnected is None
    elif name == "reason":
        assert disconnected == "bye" and connect is None and user is None
    else:
        assert connect is None and user is None and disconnected is None and connected is None


async def test_binary_data(host: FunctionsHost) -> None:
    headers = ce_headers("message", hub="bin", kind="user", content_type="application/octet-stream")
    status, _, _ = await post(host, headers, b"\x00\xff")
    assert status == 200 and seen(host)[-1] == ("bin", b"\x00\xff")


@pytest.mark.parametrize(
    ("mode", "status", "body"),
    [
        ("reject", 401, b"go away"),
        ("usererror", 400, b"bad"),
        ("other", 500, b"x"),
        ("raise", 500, b"RuntimeError: connect failed"),
        ("notjson", 200, b""),
        ("list", 500, b"Invalid response: expected a JSON object"),
    ],
)
async def test_connect_errors(host: FunctionsHost, mode: str, status: int, body: bytes) -> None:
    payload = json.dumps({**CONNECT_BODY, "query": {"mode": [mode]}}).encode()
    got_status, _, got_body = await post(host, ce_headers("connect", hub="resp"), payload)
    assert (got_status, got_body) == (status, body)


async def test_connect_response_and_states(host: FunctionsHost) -> None:
    state = base64.b64encode(json.dumps({"old": True, "counter": 0}).encode()).decode()
    status, headers, body = await post(
        host, ce_headers("connect", hub="resp", state=state), json.dumps(CONNECT_BODY).encode()
    )
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {
        "userId": "u-alice",
        "groups": ["g1"],
        "subprotocol": None,
        "roles": ["webpubsub.joinLeaveGroup"],
    }
    assert json.loads(base64.b64decode(headers["ce-connectionState"])) == {"old": True, "counter": 1}
    payload = json.dumps({**CONNECT_BODY, "query": {"mode": ["string"]}}).encode()
    status, _, body = await post(host, ce_headers("connect", hub="resp"), payload)
    assert json.loads(body)["userId"] == "from-string"  # leniency: a JSON string return is read


@pytest.mark.parametrize(
    ("text", "content_type", "body"),
    [
        ("hi", "text/plain", b"ack hi"),
        ("binary", "application/octet-stream", b"\x01\x02\x03"),
        ("json", "application/json", b'{"a":1}'),
        ("nodatatype", "application/octet-stream", b"raw"),
        ("legacy", "text/plain", b"old"),
    ],
)
async def test_user_event_responses(host: FunctionsHost, text: str, content_type: str, body: bytes) -> None:
    headers = ce_headers("message", hub="resp", kind="user", content_type="text/plain")
    status, got_headers, got = await post(host, headers, text.encode())
    assert status == 200 and got_headers["Content-Type"] == content_type and got == body


async def test_user_event_edge_cases(host: FunctionsHost) -> None:
    headers = ce_headers("message", hub="resp", kind="user", content_type="text/plain")
    assert (await post(host, headers, b"none"))[::2] == (200, b"")
    status, _, body = await post(host, headers, b"object")
    assert status == 500 and body == b"Message data should be string, please stringify object."
    status, got_headers, _ = await post(host, headers, b"state")
    assert json.loads(base64.b64decode(got_headers["ce-connectionState"])) == {"b": 2}
    bad = ce_headers("message", hub="resp", kind="user", content_type="image/png")
    status, _, body = await post(host, bad, b"x")
    assert (
        status == 400
        and body == b"Message data only supports text, binary, json. Current value is: image/png"
    )


async def test_dispatch_errors_and_signatures(host: FunctionsHost) -> None:
    good = ce_headers("connect", hub="resp", keys=(KEY,))
    body = json.dumps(CONNECT_BODY).encode()
    assert (await post(host, good, body))[0] == 200
    assert (await post(host, good, body, code=None))[0] == 401  # the system key is required
    wrong_key = ce_headers("connect", hub="resp", keys=(OTHER_KEY,))
    assert (await post(host, wrong_key, body))[0] == 401
    either = ce_headers("connect", hub="resp", keys=(OTHER_KEY, KEY))
    assert (await post(host, either, body))[0] == 200
    tampered = {**good, "ce-signature": "sha256=" + "0" * 64}
    assert (await post(host, tampered, body))[0] == 401
    other_origin = ce_headers("connect", hub="resp", origin="elsewhere.example")
    assert (await post(host, other_origin, body))[0] == 401
    missing = {k: v for k, v in good.items() if k != "ce-eventName"}
    status, _, text = await post(host, missing, body)
    assert status == 400 and b"ce-eventName" in text
    assert (await post(host, ce_headers("connect", hub="no_such_hub"), body))[0] == 404
    unknown = ce_headers("nosuch", hub="resp", kind="user", content_type="text/plain")
    assert (await post(host, unknown, b"x"))[0] == 404
    # a function with its own 'connections' validates against those keys only
    assert (await post(host, ce_headers("connect", hub="other_key", keys=(OTHER_KEY,)), body))[0] == 200
    assert (await post(host, ce_headers("connect", hub="other_key", keys=(KEY,)), body))[0] == 401


async def test_abuse_protection(host: FunctionsHost) -> None:
    code = {"code": host.keys.system_key("webpubsub_extension")}
    url = f"{host.base_url}/runtime/webhooks/webpubsub"
    async with aiohttp.ClientSession() as http:
        async with http.options(url, params=code, headers={"WebHook-Request-Origin": "localhost"}) as r:
            assert r.status == 200 and r.headers["WebHook-Allowed-Origin"] == "localhost"
        async with http.get(
            url, params=code, headers={"WebHook-Request-Origin": "x.example, localhost"}
        ) as r:
            assert r.status == 200 and r.headers["WebHook-Allowed-Origin"] == "localhost"
        async with http.options(url, params=code, headers={"WebHook-Request-Origin": "evil.example"}) as r:
            assert r.status == 400
        async with http.options(url, headers={"WebHook-Request-Origin": "localhost"}) as r:
            assert r.status == 401


async def test_abuse_protection_without_connection_string(tmp_path: Path) -> None:
    root = write_app(tmp_path / "nocs", {"function_app.py": APP})
    async with running_host(root, enforce_keys=False) as h, aiohttp.ClientSession() as http:
        url = f"{h.base_url}/runtime/webhooks/webpubsub"
        async with http.options(url, headers={"WebHook-Request-Origin": "anything.example"}) as r:
            assert r.status == 200 and r.headers["WebHook-Allowed-Origin"] == "*"


async def test_webpubsub_context_input(host: FunctionsHost) -> None:
    url = f"{host.base_url}/api/wps/connect"
    body = json.dumps(CONNECT_BODY).encode()
    async with aiohttp.ClientSession() as http:
        async with http.options(url, headers={"WebHook-Request-Origin": "localhost"}) as r:
            ctx = await r.json()
            assert ctx["isPreflight"] and ctx["response"]["headers"] == {"WebHook-Allowed-Origin": ["*"]}
        async with http.post(url, headers=ce_headers("connect", hub="any"), data=body) as r:
            ctx = await r.json()
            assert not ctx["hasError"] and ctx["request"]["claims"] == CONNECT_BODY["claims"]
            assert ctx["request"]["connectionContext"]["hub"] == "any" and ctx["response"]["status"] == 200
        async with http.post(url, headers=ce_headers("connect", keys=(OTHER_KEY,)), data=body) as r:
            ctx = await r.json()
            assert ctx["hasError"] and ctx["errorMessage"] == "Signature validation failed."
            assert ctx["response"]["status"] == 401
        async with http.post(url, headers={"ce-hub": "x"}, data=body) as r:
            ctx = await r.json()
            assert ctx["hasError"] and ctx["response"]["status"] == 400
