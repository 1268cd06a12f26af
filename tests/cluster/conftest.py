"""A real redis-server and 3 ``hubbub serve --redis`` processes; raw WebSocket clients; raw REST.

REST calls are plain HTTP with a signed token (no SDK retries), so every status code the
test sees is the one a node answered.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import pytest
import requests
import websocket

from tests.support.cluster import RedisServer, run_cluster, run_redis
from tests.support.server import DEV_KEY, Server

JSON_V1 = "json.webpubsub.azure.v1"
API_VERSION = "2024-12-01"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with run_redis() as server:
        yield server


@pytest.fixture(scope="session")
def cluster(redis_server: RedisServer) -> Iterator[list[Server]]:
    """Three nodes shared by the non-destructive tests (each test uses its own hub)."""
    with run_cluster(redis_server.url, 3) as nodes:
        yield nodes


@pytest.fixture
def hub() -> str:
    return "hub" + uuid.uuid4().hex[:10]


def client_url(node: Server, hub: str, **claims: object) -> str:
    body = {"aud": f"http://localhost:{node.port}/client/hubs/{hub}", "exp": time.time() + 600, **claims}
    token = jwt.encode(body, DEV_KEY, algorithm="HS256")
    return f"ws://localhost:{node.port}/client/hubs/{hub}?access_token={token}"


class Client:
    """A ``json.webpubsub.azure.v1`` client; a thread collects everything the service sends."""

    def __init__(self, node: Server, hub: str, *, groups: list[str] | None = None, **claims: object) -> None:
        if groups:
            claims["webpubsub.group"] = groups
        self.node = node
        self.ws = websocket.WebSocket()
        self.ws.connect(client_url(node, hub, **claims), subprotocols=[JSON_V1], timeout=10)
        hello = json.loads(self.ws.recv())
        assert hello["event"] == "connected"
        self.id: str = hello["connectionId"]
        self.user: str | None = hello.get("userId")
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                opcode, data = self.ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    self.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                    return
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    with self._lock:
                        self.frames.append(json.loads(data))
        except (websocket.WebSocketException, OSError, ValueError):
            if self.close_code is None:
                self.close_code = -1

    def send(self, frame: dict[str, Any]) -> None:
        self.ws.send(json.dumps(frame))

    def messages(self) -> list[Any]:
        with self._lock:
            return [f["data"] for f in self.frames if f.get("type") == "message"]

    def acks(self) -> dict[int, bool]:
        with self._lock:
            return {f["ackId"]: f["success"] for f in self.frames if f.get("type") == "ack"}

    def system(self, event: str) -> list[dict[str, Any]]:
        with self._lock:
            return [f for f in self.frames if f.get("type") == "system" and f.get("event") == event]

    def close(self) -> None:
        with contextlib.suppress(websocket.WebSocketException, OSError):
            self.ws.close(timeout=2)
        self._thread.join(timeout=5)


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(node: Server, hub: str, *, groups: list[str] | None = None, **claims: object) -> Client:
        client = Client(node, hub, groups=groups, **claims)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def rest(
    node: Server,
    method: str,
    hub: str,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    data: str | bytes | None = None,
    json_body: Any = None,
    content_type: str = "text/plain",
) -> requests.Response:
    """One data-plane REST call to ``node`` (``path`` is below ``/api/hubs/{hub}``)."""
    url = f"{node.endpoint}/api/hubs/{quote(hub, safe='')}{path}"
    token = jwt.encode({"aud": url, "exp": time.time() + 300}, DEV_KEY, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}"}
    if data is not None:
        headers["Content-Type"] = content_type
    query = {"api-version": API_VERSION, **(params or {})}
    return requests.request(method, url, params=query, data=data, json=json_body, headers=headers, timeout=10)


def wait_until(check: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> float:
    """Poll ``check``; return how long it took (AssertionError after ``timeout``)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - started


@dataclass
class EventHandler:
    """An event-handler server (CloudEvents over HTTP) that records system events."""

    events: list[tuple[str, str]] = field(default_factory=list)  # (event name, connection id)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def of(self, event: str) -> list[str]:
        with self.lock:
            return [cid for name, cid in self.events if name == event]


@pytest.fixture
def event_handler() -> Iterator[EventHandler]:
    recorder = EventHandler()

    class Handler(BaseHTTPRequestHandler):
        def do_OPTIONS(self) -> None:  # abuse protection
            self.send_response(200)
            self.send_header("WebHook-Allowed-Origin", "*")
            self.end_headers()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with recorder.lock:
                recorder.events.append((self.headers["ce-eventName"], self.headers["ce-connectionId"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield recorder
    server.shutdown()
    server.server_close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A timeout that also covers the rerun of the flaky-marked tests here: pytest-timeout stops its timer
    at a test's first failure, so a hanging rerun would otherwise block the run (func_only: per attempt)."""
    here = Path(__file__).parent
    for item in items:
        if (
            here in item.path.parents
            and item.get_closest_marker("flaky")
            and not item.get_closest_marker("timeout")
        ):
            item.add_marker(pytest.mark.timeout(300, func_only=True))
