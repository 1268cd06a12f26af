"""``@azure/web-pubsub-express`` (npm, unmodified) as the event handler of a real ``hubbub serve``.

The express app is ``node/express_handler.mjs``: ``handleConnect`` assigns userId/groups/roles and sets
connection state, ``onConnected``/``onDisconnected`` record, ``handleUserEvent`` echoes the data back
with its dataType (``res.success(data, dataType)``) and counts events in the connection state. It
records every callback; ``GET /log`` returns the records. The hub is configured with the CLI
(``hubbub hub create ... --event-handler url-template=... system-event=...``), as a user would.
Clients: the official Python client (``WebPubSubProtocolType.JSON``) and raw WebSockets.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from azure.messaging.webpubsubclient import WebPubSubClient, WebPubSubClientCredential
from azure.messaging.webpubsubclient.models import CallbackType, WebPubSubDataType, WebPubSubProtocolType
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.support.server import DEV_KEY, Server, free_port, run_server, wait_for_port

NODE_DIR = Path(__file__).resolve().parent / "node"
APP = NODE_DIR / "express_handler.mjs"
NODE = shutil.which("node")
HUB = "express_chat"
SECONDARY_KEY = "SECONDARYKEY0123456789SECONDARYKEY0123456789"
JSON_PROTOCOL = "json.webpubsub.azure.v1"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="`node` (Node.js >= 20) is not on PATH"),
    pytest.mark.skipif(
        not (NODE_DIR / "node_modules" / "@azure" / "web-pubsub-express").is_dir()
        or not (NODE_DIR / "node_modules" / "express").is_dir(),
        reason=f"npm packages missing: run `make node-deps` (npm install in {NODE_DIR})",
    ),
    pytest.mark.timeout(90),
]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout}s")


def signature(connection_id: str, *keys: str) -> list[str]:
    return [
        "sha256=" + hmac.new(k.encode(), connection_id.encode(), hashlib.sha256).hexdigest() for k in keys
    ]


@dataclass
class Express:
    hubbub: Server
    port: int
    out: Path
    service: WebPubSubServiceClient

    def log(self) -> list[dict[str, Any]]:
        res = requests.get(f"http://127.0.0.1:{self.port}/log", timeout=10)
        res.raise_for_status()
        return list(res.json())

    def records(self, kind: str, connection_id: str) -> list[dict[str, Any]]:
        return [r for r in self.log() if r["kind"] == kind and r["context"]["connectionId"] == connection_id]

    def wait_record(self, kind: str, connection_id: str, count: int = 1) -> list[dict[str, Any]]:
        return wait_for(  # type: ignore[no-any-return]
            lambda: (lambda rs: rs if len(rs) >= count else None)(self.records(kind, connection_id)),
            what=f"{count} '{kind}' record(s) for {connection_id}\n{self.out.read_text(errors='replace')}",
        )

    def token_url(self, user_id: str | None = None, **query: str | list[str]) -> str:
        url = str(self.service.get_client_access_token(user_id=user_id)["url"])
        for key, values in query.items():
            for value in [values] if isinstance(values, str) else values:
                url += f"&{key}={value}"
        return url


def hub_create(server: Server, *args: str) -> dict[str, Any]:
    env = {**os.environ, "WebPubSubConnectionString": server.connection_string}
    cmd = [sys.executable, "-m", "hubbub", "hub", "create", "--hub", HUB, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return dict(json.loads(proc.stdout))


@pytest.fixture(scope="module")
def express(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Express]:
    assert NODE is not None
    out = tmp_path_factory.mktemp("express") / "express.log"
    with run_server("--data-dir", ":memory:", "--secondary-key", SECONDARY_KEY) as server:
        port = free_port()
        env = {**os.environ, "PORT": str(port), "HUB": HUB}
        env.pop("NODE_OPTIONS", None)
        with out.open("wb") as sink:
            proc = subprocess.Popen(
                [NODE, APP.name], cwd=NODE_DIR, env=env, stdout=sink, stderr=subprocess.STDOUT
            )
        try:
            wait_for_port(port)
            created = hub_create(
                server,
                "--event-handler",
                f"url-template=http://127.0.0.1:{port}/eventhandler/{{event}}",
                "user-event-pattern=*",
                "system-event=connect",
                "system-event=connected",
                "system-event=disconnected",
            )
            assert created["properties"]["eventHandlers"][0]["systemEvents"] == [
                "connect",
                "connected",
                "disconnected",
            ]
            service = WebPubSubServiceClient.from_connection_string(server.connection_string, hub=HUB)
            yield Express(server, port, out, service)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Client:
    """The official Python client (JSON subprotocol), recording what it receives."""

    def __init__(self, url: str) -> None:
        self.server: queue.Queue[Any] = queue.Queue()
        self.group: queue.Queue[Any] = queue.Queue()
        self.connected = threading.Event()
        self.connection_id = ""
        self.user_id: str | None = None
        self.sdk = WebPubSubClient(
            credential=WebPubSubClientCredential(url),
            protocol_type=WebPubSubProtocolType.JSON,
            reconnect_retry_total=0,
            message_retry_total=0,
            ack_timeout=10,
            start_timeout=10,
        )
        self.sdk.subscribe(CallbackType.SERVER_MESSAGE, self.server.put)
        self.sdk.subscribe(CallbackType.GROUP_MESSAGE, self.group.put)
        self.sdk.subscribe(CallbackType.CONNECTED, self._on_connected)

    def _on_connected(self, e: Any) -> None:
        self.connection_id, self.user_id = e.connection_id, e.user_id
        self.connected.set()


@pytest.fixture
def client(express: Express) -> Iterator[Callable[..., Client]]:
    opened: list[Client] = []

    def make(url: str) -> Client:
        c = Client(url)
        c.sdk.open()
        assert c.connected.wait(10)
        opened.append(c)
        return c

    yield make
    for c in opened:
        with contextlib.suppress(Exception):
            c.sdk.close()


def test_connect_event_fields_and_response(express: Express, client: Callable[..., Client]) -> None:
    c = client(express.token_url(user_id="token-user", user="alice", group="room1", tag="t1"))
    # the user id from handleConnect's response wins over the token's
    assert c.user_id == "alice"
    (rec,) = express.wait_record("connect", c.connection_id)
    ctx = rec["context"]
    assert ctx["hub"] == HUB and ctx["eventName"] == "connect" and ctx["connectionId"] == c.connection_id
    assert ctx["userId"] == "token-user"  # ce-userId: the token's identity, before the handler spoke
    assert ctx["origin"] == "localhost"  # WebHook-Request-Origin: host only
    assert sorted(ctx["signature"].split(",")) == sorted(signature(c.connection_id, DEV_KEY, SECONDARY_KEY))
    assert ctx["states"] == {}  # no ce-connectionState on connect
    assert rec["query"]["user"] == ["alice"] and rec["query"]["tag"] == ["t1"]
    assert rec["query"]["group"] == ["room1"] and len(rec["query"]["access_token"]) == 1
    assert rec["queries"] == rec["query"]
    assert rec["claims"]["sub"] == ["token-user"]
    assert rec["subprotocols"] == [JSON_PROTOCOL]
    assert all(isinstance(v, list) for v in rec["headers"].values()), rec["headers"]
    assert rec["clientCertificates"] == []

    # groups from the response were joined
    express.service.send_to_group("room1", {"hello": "room1"})
    msg = c.group.get(timeout=10)
    assert (msg.group, msg.data) == ("room1", {"hello": "room1"})


def test_roles_from_connect_response_are_granted(express: Express, client: Callable[..., Client]) -> None:
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    a = client(express.token_url(user="rolly", role=roles))
    b = client(express.token_url(user="listener", group="g2"))
    a.sdk.join_group("g2")  # needs webpubsub.joinLeaveGroup, which only the handler granted
    a.sdk.send_to_group("g2", "from rolly", WebPubSubDataType.TEXT)
    msg = b.group.get(timeout=10)
    assert (msg.group, msg.from_user_id, msg.data) == ("g2", "rolly", "from rolly")


def test_connected_event_carries_user_and_state(express: Express, client: Callable[..., Client]) -> None:
    c = client(express.token_url(user="bob", tag="hello"))
    (rec,) = express.wait_record("connected", c.connection_id)
    ctx = rec["context"]
    assert ctx["eventName"] == "connected" and ctx["userId"] == "bob" and ctx["hub"] == HUB
    assert ctx["states"] == {"connectedBy": "express", "tag": "hello"}  # set by handleConnect
    assert sorted(ctx["signature"].split(",")) == sorted(signature(c.connection_id, DEV_KEY, SECONDARY_KEY))


@pytest.mark.parametrize(
    ("data_type", "content", "expected"),
    [
        (WebPubSubDataType.TEXT, "héllo", ("text", "héllo")),
        (WebPubSubDataType.JSON, {"a": [1, 2], "b": None}, ("json", {"a": [1, 2], "b": None})),
        (
            WebPubSubDataType.BINARY,
            memoryview(b"\x00\x01\xff"),
            ("binary", base64.b64encode(b"\x00\x01\xff").decode()),
        ),
    ],
)
def test_user_event_echo(
    express: Express,
    client: Callable[..., Client],
    data_type: WebPubSubDataType,
    content: Any,
    expected: tuple[str, Any],
) -> None:
    c = client(express.token_url(user="carol"))
    c.sdk.send_event("echo", content, data_type)  # acked (blocks until the ack arrives)
    (rec,) = express.wait_record("user", c.connection_id)
    assert rec["context"]["eventName"] == "echo" and rec["context"]["userId"] == "carol"
    assert (rec["dataType"], rec["data"]) == expected
    reply = c.server.get(timeout=10)
    assert reply.data_type == data_type
    want = bytes(content) if data_type == WebPubSubDataType.BINARY else content
    got = bytes(reply.data) if data_type == WebPubSubDataType.BINARY else reply.data
    assert got == want


def test_state_round_trips(express: Express, client: Callable[..., Client]) -> None:
    c = client(express.token_url(user="dave", tag="x"))
    for _ in range(3):
        c.sdk.send_event("tick", "t", WebPubSubDataType.TEXT)
        assert c.server.get(timeout=10).data == "t"
    c.sdk.send_event("whoami", "?", WebPubSubDataType.TEXT)
    who = c.server.get(timeout=10)
    # states as the handler saw them on the 4th event (after its own setState of count -> 4)
    assert who.data == {"userId": "dave", "states": {"connectedBy": "express", "tag": "x", "count": 4}}
    recs = express.wait_record("user", c.connection_id, 4)
    assert [r["context"]["states"].get("count") for r in recs] == [None, 1, 2, 3]
    assert all(r["context"]["states"]["tag"] == "x" for r in recs)

    c.sdk.close()
    (gone,) = express.wait_record("disconnected", c.connection_id)
    assert gone["context"]["states"] == {"connectedBy": "express", "tag": "x", "count": 4}


def test_disconnected_event(express: Express, client: Callable[..., Client]) -> None:
    c = client(express.token_url(user="erin"))
    express.wait_record("connected", c.connection_id)
    c.sdk.close()
    (rec,) = express.wait_record("disconnected", c.connection_id)
    ctx = rec["context"]
    assert ctx["eventName"] == "disconnected" and ctx["userId"] == "erin" and ctx["hub"] == HUB
    assert not rec["reason"]  # a normal close has no reason
    kinds = [r["kind"] for r in express.log() if r["context"]["connectionId"] == c.connection_id]
    assert kinds == ["connect", "connected", "disconnected"]


def test_rejected_connect_gives_client_401(express: Express) -> None:
    url = express.token_url(user="mallory", reject="1")
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        websocket.create_connection(url, timeout=10, subprotocols=[JSON_PROTOCOL])
    assert exc.value.status_code == 401
    rejected = wait_for(
        lambda: [r for r in express.log() if r["kind"] == "connect" and r["query"].get("reject") == ["1"]],
        what="the rejected connect reached handleConnect",
    )
    cid = rejected[0]["context"]["connectionId"]
    time.sleep(0.3)  # a rejected connection is never connected, so never disconnected either
    assert [r["kind"] for r in express.log() if r["context"]["connectionId"] == cid] == ["connect"]


def test_simple_websocket_client_message_event(express: Express) -> None:
    """A client without subprotocol: frames are ``message`` events; replies come back as frames."""
    url = express.token_url(user="frank")
    ws = websocket.create_connection(url, timeout=10)
    try:
        ws.send("plain text")
        assert ws.recv_data() == (websocket.ABNF.OPCODE_TEXT, b"plain text")
        ws.send_binary(b"\x00\xfe")
        assert ws.recv_data() == (websocket.ABNF.OPCODE_BINARY, b"\x00\xfe")
    finally:
        ws.close()
    recs = [r for r in express.log() if r["kind"] == "user" and r["context"]["userId"] == "frank"]
    assert [(r["context"]["eventName"], r["dataType"], r["data"]) for r in recs] == [
        ("message", "text", "plain text"),
        ("message", "binary", base64.b64encode(b"\x00\xfe").decode()),
    ]
    connects = [r for r in express.log() if r["kind"] == "connect" and r["query"].get("user") == ["frank"]]
    assert connects and connects[0]["subprotocols"] == []
