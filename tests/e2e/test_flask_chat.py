"""The tutorial's Flask chat app (``samples/flask-chat``), unchanged, against a real ``hubbub serve``.

Everything runs as a user would run it: hubbub as ``python -m hubbub serve``, the hub configured with
``python -m hubbub hub create ...`` (the ``az webpubsub hub create`` line of the tutorial), the sample as a
Flask dev server, and the chat clients as plain WebSocket clients doing what ``public/index.html`` /
``public/lazy-auth.html`` do: no subprotocol, text frames out, JSON text frames in.

Variant (a): ``server.py`` — ``/negotiate?id=`` hands out a token URL; ``connected`` and ``message``
events; every message is broadcast as ``{"from": userId, "message": text}``.
Variant (b): ``server_lazy_auth.py`` — anonymous connect to ``/client/hubs/Sample_ChatApp?id=<user>``;
the ``connect`` event handler answers ``{"userId": id}``, and that user id is the broadcast's ``from``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from tests.support.server import Server, free_port, run_server, wait_for_port

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "samples" / "flask-chat"
HUB = "Sample_ChatApp"
SYSTEM_REPLY = {"from": "system", "message": "message handled by server"}

flask = pytest.importorskip("flask", reason="the sample needs Flask: pip install Flask")


@dataclass
class Chat:
    """hubbub + the sample app, both real processes."""

    hubbub: Server
    app_port: int
    app_log: Path
    clients: list[websocket.WebSocket] = field(default_factory=list)

    @property
    def app_url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}"

    def log_text(self) -> str:
        return self.app_log.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the sample's output:\n{self.log_text()}")

    def open(self, url: str) -> websocket.WebSocket:
        """``new WebSocket(url)``: no subprotocol, so a simple WebSocket client (spec §4.9)."""
        ws = websocket.create_connection(url, timeout=10)
        self.clients.append(ws)
        return ws

    def connect_like_index_html(self, user: str) -> websocket.WebSocket:
        res = requests.get(f"{self.app_url}/negotiate", params={"id": user}, timeout=10)
        assert res.status_code == 200, res.text
        return self.open(res.json()["url"])

    def connect_like_lazy_auth_html(self, user: str | None) -> websocket.WebSocket:
        query = f"?id={user}" if user is not None else ""
        return self.open(f"ws://localhost:{self.hubbub.port}/client/hubs/{HUB}{query}")


def hub_create(server: Server, *args: str) -> dict[str, Any]:
    """``hubbub hub create --hub Sample_ChatApp ...`` with the connection string in the environment."""
    env = {**os.environ, "WebPubSubConnectionString": server.connection_string}
    cmd = [sys.executable, "-m", "hubbub", "hub", "create", "--hub", HUB, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return dict(json.loads(proc.stdout))


@contextlib.contextmanager
def run_sample(script: str, hub_args: Callable[[int], list[str]], tmp: Path) -> Iterator[Chat]:
    with run_server("--data-dir", ":memory:") as server:
        port = free_port()
        log = tmp / f"{script}.log"
        env = {
            **os.environ,
            "WebPubSubConnectionString": server.connection_string,
            "PYTHONUNBUFFERED": "1",
        }
        # `flask run` serves the module's `app` exactly as `python server.py` would, on a free port.
        cmd = [sys.executable, "-m", "flask", "--app", script, "run", "--port", str(port)]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=SAMPLE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT)
        chat = Chat(server, port, log)
        try:
            wait_for_port(port)
            created = hub_create(server, *hub_args(port))
            assert created["name"] == HUB
            yield chat
        finally:
            for ws in chat.clients:
                with contextlib.suppress(Exception):
                    ws.close()
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def receive_json(ws: websocket.WebSocket, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The next ``count`` frames, each a JSON text frame (what ``JSON.parse(event.data)`` needs)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        ws.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            opcode, data = ws.recv_data()
        except websocket.WebSocketTimeoutException:
            raise AssertionError(f"only {len(got)} of {count} messages arrived: {got}") from None
        assert opcode == websocket.ABNF.OPCODE_TEXT, (opcode, data)
        got.append(json.loads(data))
    return got


def assert_quiet(ws: websocket.WebSocket, wait: float = 0.3) -> None:
    ws.settimeout(wait)
    with pytest.raises(websocket.WebSocketTimeoutException):
        extra = ws.recv()
        pytest.fail(f"unexpected extra message {extra!r}")


def handler_args(*system_events: str, anonymous: bool = False) -> Callable[[int], list[str]]:
    def args(port: int) -> list[str]:
        words = [f"url-template=http://localhost:{port}/eventhandler", "user-event-pattern=*"]
        words += [f"system-event={e}" for e in system_events]
        return ["--event-handler", *words] + (["--allow-anonymous", "true"] if anonymous else [])

    return args


# -- variant (a): /negotiate + connected + message ---------------------------------------------------


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chat]:
    with run_sample("server", handler_args("connected"), tmp_path_factory.mktemp("chat")) as c:
        yield c


@pytest.fixture
def fresh(chat: Chat) -> Iterator[Chat]:
    """The module's chat, with every client of the test closed afterwards."""
    yield chat
    for ws in chat.clients:
        with contextlib.suppress(Exception):
            ws.close()
    chat.clients.clear()


def test_sample_does_not_import_hubbub() -> None:
    scripts = sorted(SAMPLE_DIR.glob("*.py"))
    assert [p.name for p in scripts] == ["server.py", "server_lazy_auth.py"]
    for path in scripts:
        for line in path.read_text(encoding="utf-8").splitlines():
            assert not line.lstrip().startswith(("import hubbub", "from hubbub")), (path, line)


def test_page_and_negotiate(fresh: Chat) -> None:
    page = requests.get(f"{fresh.app_url}/index.html", timeout=10)
    assert page.status_code == 200 and "fetch(`/negotiate?id=${id}`)" in page.text
    assert "new WebSocket(data.url)" in page.text  # no subprotocol argument: a simple client

    assert requests.get(f"{fresh.app_url}/negotiate", timeout=10).status_code == 400
    url = requests.get(f"{fresh.app_url}/negotiate", params={"id": "alice"}, timeout=10).json()["url"]
    assert url.startswith(f"ws://localhost:{fresh.hubbub.port}/client/hubs/{HUB}?access_token=")


def test_connected_event_reaches_the_app(fresh: Chat) -> None:
    fresh.connect_like_index_html("dora")
    fresh.wait_for_log("dora connected")


def test_broadcast_reaches_everyone(fresh: Chat) -> None:
    users = ["alice", "bob", "carol"]
    sockets = {u: fresh.connect_like_index_html(u) for u in users}
    for u in users:
        fresh.wait_for_log(f"{u} connected")  # everyone is in before the first broadcast

    sockets["alice"].send("hello from alice")
    # alice: the broadcast and the handler's 200 reply ("returned message is also received by the client")
    got = receive_json(sockets["alice"], 2)
    assert sorted(got, key=str) == sorted(
        [{"from": "alice", "message": "hello from alice"}, SYSTEM_REPLY], key=str
    )
    for u in ("bob", "carol"):
        assert receive_json(sockets[u], 1) == [{"from": "alice", "message": "hello from alice"}]
        assert_quiet(sockets[u])  # the reply goes to the sender only

    # everyone talks; everyone hears everyone (order per sender is preserved)
    for u in users:
        sockets[u].send(f'{u}: 你好 & "quotes"')
    for u in users:
        got = receive_json(sockets[u], len(users) + 1)
        assert got.count(SYSTEM_REPLY) == 1
        broadcasts = [m for m in got if m != SYSTEM_REPLY]
        assert sorted(broadcasts, key=lambda m: m["from"]) == [
            {"from": s, "message": f'{s}: 你好 & "quotes"'} for s in users
        ]


def test_client_without_negotiated_token_is_refused(fresh: Chat) -> None:
    """Variant (a) does not allow anonymous connect: a bare URL gets 401 at the handshake."""
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        fresh.connect_like_lazy_auth_html("mallory")
    assert exc.value.status_code == 401


# -- variant (b): lazy auth, the connect event assigns the user id ----------------------------------


@pytest.fixture(scope="module")
def lazy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chat]:
    args = handler_args("connected", "connect", anonymous=True)
    with run_sample("server_lazy_auth", args, tmp_path_factory.mktemp("lazy")) as c:
        yield c


@pytest.fixture
def fresh_lazy(lazy: Chat) -> Iterator[Chat]:
    yield lazy
    for ws in lazy.clients:
        with contextlib.suppress(Exception):
            ws.close()
    lazy.clients.clear()


def test_lazy_page_connects_directly(fresh_lazy: Chat) -> None:
    page = requests.get(f"{fresh_lazy.app_url}/lazy-auth.html", timeout=10)
    assert page.status_code == 200
    assert "/client/hubs/Sample_ChatApp?id=${id}" in page.text and "fetch(" not in page.text


def test_lazy_auth_user_id_comes_from_connect_handler(fresh_lazy: Chat) -> None:
    users = ["erin", "frank", "grace"]
    sockets = {u: fresh_lazy.connect_like_lazy_auth_html(u) for u in users}
    # the connect handler saw the client's query; connected carries the user id it assigned
    fresh_lazy.wait_for_log("Reading from request body query: {'id': ['erin']}")
    deadline = time.monotonic() + 10
    while fresh_lazy.log_text().count("azure.webpubsub.sys.connected") < len(users):
        assert time.monotonic() < deadline, fresh_lazy.log_text()
        time.sleep(0.05)

    for u in users:
        sockets[u].send(f"I am {u}")
    for u in users:
        got = receive_json(sockets[u], len(users))  # this variant's handler answers 204: no reply
        assert sorted(got, key=lambda m: m["from"]) == [{"from": s, "message": f"I am {s}"} for s in users]
        assert_quiet(sockets[u])


def test_lazy_auth_missing_id_is_rejected_with_401(fresh_lazy: Chat) -> None:
    """The handler answers ``401 missing user id``; the client's handshake gets 401 (spec §6.2)."""
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        fresh_lazy.connect_like_lazy_auth_html(None)
    assert exc.value.status_code == 401
    fresh_lazy.wait_for_log("Reading from request body query: {}")
