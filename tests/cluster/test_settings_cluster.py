"""Settings in Redis (issue #7 scope 2): hub settings and SignalR upstream settings written through one
node (admin API, CLI) are used by another — 3 real ``hubbub serve --redis`` processes, a real
redis-server, real event-handler / upstream servers."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import websocket

from hubbub.hub_cli import admin_request
from hubbub.signalr.tokens import client_url as signalr_client_url
from hubbub.signalr.tokens import mint_client_token
from tests.support.cluster import RedisServer, run_redis, wait_healthy
from tests.support.server import DEV_KEY, Server, free_port, run_server, wait_for_port

from .conftest import Client, EventHandler, wait_until

pytestmark = [
    pytest.mark.timeout(120),
    # several processes, Redis and liveness timing on a loaded machine: one retry, as the other
    # cluster tests (a test that fails twice fails the run)
    pytest.mark.flaky(reruns=1),
]


@dataclass(frozen=True)
class Node:
    """A cluster node with Web PubSub on ``server.port`` and SignalR on ``signalr_port``."""

    server: Server
    signalr_port: int

    @property
    def signalr_connection_string(self) -> str:
        return f"Endpoint=http://localhost;Port={self.signalr_port};AccessKey={DEV_KEY};Version=1.0;"

    @property
    def signalr_endpoint(self) -> str:
        return f"http://localhost:{self.signalr_port}"


@contextlib.contextmanager
def run_nodes(redis_url: str, prefix: str, size: int = 3) -> Iterator[list[Node]]:
    """``size`` nodes with SignalR on (the shared ``cluster`` fixture runs them without SignalR)."""
    with contextlib.ExitStack() as stack:
        nodes = []
        for i in range(size):
            port = free_port()
            server = stack.enter_context(
                run_server("--redis", redis_url, "--node-id", f"{prefix}{i}", "--signalr-port", str(port))
            )
            nodes.append(Node(server, port))
        for node in nodes:
            wait_healthy(node.server)
            wait_for_port(node.signalr_port)
            wait_until(
                lambda n=node: requests.get(f"{n.signalr_endpoint}/api/health", timeout=2).status_code == 200,
                timeout=20,
            )
        yield nodes


@pytest.fixture(scope="module")
def nodes(redis_server: RedisServer) -> Iterator[list[Node]]:
    with run_nodes(redis_server.url, "set") as started:
        yield started


def cli(*args: str, connection_string: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WebPubSubConnectionString": connection_string}
    env.pop("AzureSignalRConnectionString", None)
    return subprocess.run(
        [sys.executable, "-m", "hubbub", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_hub_settings_written_through_node_1_are_used_by_node_3(
    nodes: list[Node], hub: str, event_handler: EventHandler
) -> None:
    first, _, third = nodes
    url = f"http://127.0.0.1:{event_handler.port}/{{event}}"
    properties = {"eventHandlers": [{"urlTemplate": url, "systemEvents": ["connected"]}]}
    admin_request(first.server.connection_string, "PUT", hub, properties)  # the admin API of node 1
    client = Client(third.server, hub)
    try:
        wait_until(lambda: client.id in event_handler.of("connected"), timeout=15)
        assert client.id not in event_handler.of("disconnected")
    finally:
        client.close()

    # the CLI against node 1 adds 'disconnected': node 3 follows
    done = cli(
        "hub",
        "update",
        "--hub",
        hub,
        "--event-handler",
        f"url-template={url}",
        "system-event=connected",
        "system-event=disconnected",
        connection_string=first.server.connection_string,
    )
    assert done.returncode == 0, done.stderr
    second_client = Client(third.server, hub)
    wait_until(lambda: second_client.id in event_handler.of("connected"), timeout=15)
    second_client.close()
    wait_until(lambda: second_client.id in event_handler.of("disconnected"), timeout=15)
    shown = admin_request(nodes[1].server.connection_string, "GET", hub)  # any node shows it
    assert shown["properties"]["eventHandlers"][0]["systemEvents"] == ["connected", "disconnected"]

    # deleted through node 2: node 3 stops calling the handler
    admin_request(nodes[1].server.connection_string, "DELETE", hub)
    marker = Client(third.server, hub)
    try:
        with pytest.raises(AssertionError):
            wait_until(lambda: marker.id in event_handler.of("connected"), timeout=1.5)
    finally:
        marker.close()


class Upstream:
    """A SignalR upstream (HTTP server thread) recording ``(path, X-ASRS-Connection-Id)`` per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with recorder.lock:
                    recorder.calls.append((self.path, self.headers["X-ASRS-Connection-Id"]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def paths_of(self, connection_id: str) -> list[str]:
        with self.lock:
            return [path for path, cid in self.calls if cid == connection_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def signalr_connect(node: Node, hub: str) -> tuple[websocket.WebSocket, str]:
    """Negotiate (v1) and open a JSON-protocol WebSocket on ``node``; (socket, connection id)."""
    token = mint_client_token(DEV_KEY, signalr_client_url("http://localhost", hub), user_id="u")
    negotiated = requests.post(
        f"{node.signalr_endpoint}/client/negotiate?hub={hub}&negotiateVersion=1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    ws = websocket.WebSocket()
    ws.connect(
        f"ws://127.0.0.1:{node.signalr_port}/client/?hub={hub}&id={negotiated['connectionToken']}",
        header=[f"Authorization: Bearer {token}"],
        timeout=10,
    )
    ws.send('{"protocol":"json","version":1}\x1e')
    assert ws.recv() == "{}\x1e"
    return ws, negotiated["connectionId"]


def test_signalr_upstream_written_through_node_1_is_used_by_node_3(nodes: list[Node]) -> None:
    first, second, third = nodes
    hub = "sr" + uuid.uuid4().hex[:10]
    upstream = Upstream()
    sockets: list[websocket.WebSocket] = []
    try:
        done = cli(
            "signalr",
            "upstream",
            "update",
            "--template",
            f"url-template={upstream.url}/one/{{event}}",
            f"hub-pattern={hub}",
            connection_string=first.signalr_connection_string,  # the SignalR port of node 1
        )
        assert done.returncode == 0, done.stderr
        ws, cid = signalr_connect(third, hub)
        sockets.append(ws)
        wait_until(lambda: upstream.paths_of(cid) == ["/one/connected"], timeout=15)

        # replaced through node 2's admin API (Web PubSub port): node 3 follows
        body = {"templates": [{"urlTemplate": upstream.url + "/two/{event}", "hubPattern": hub}]}
        admin_request(second.server.connection_string, "PUT", body=body, path="/api/admin/signalr/upstream")
        ws, cid = signalr_connect(third, hub)
        sockets.append(ws)
        wait_until(lambda: upstream.paths_of(cid) == ["/two/connected"], timeout=15)
        listed = cli("signalr", "upstream", "list", connection_string=third.server.connection_string)
        assert json.loads(listed.stdout)["templates"][0]["urlTemplate"] == upstream.url + "/two/{event}"
    finally:
        for ws in sockets:
            ws.close()
        cleared = cli("signalr", "upstream", "clear", connection_string=first.server.connection_string)
        assert cleared.returncode == 0, cleared.stderr
        upstream.close()


def test_config_file_of_a_new_node_reaches_the_running_ones(
    redis_server: RedisServer, nodes: list[Node], hub: str, event_handler: EventHandler, tmp_path: Path
) -> None:
    config = tmp_path / "hubbub.toml"
    config.write_text(
        f"[[hubs.{hub}.event_handlers]]\n"
        f'url_template = "http://127.0.0.1:{event_handler.port}/{{event}}"\n'
        'system_events = ["connected"]\n'
    )
    with run_server("--redis", redis_server.url, "--node-id", "setcfg", "--config", str(config)) as late:
        wait_healthy(late)
        client = Client(nodes[0].server, hub)  # a node started before the file was read
        try:
            wait_until(lambda: client.id in event_handler.of("connected"), timeout=15)
        finally:
            client.close()
    admin_request(nodes[0].server.connection_string, "DELETE", hub)


def test_settings_survive_a_restart_of_redis_without_persistence(
    hub: str, event_handler: EventHandler
) -> None:
    import redis

    with run_redis() as redis_server, run_nodes(redis_server.url, "wipe", size=2) as (first, second):
        url = f"http://127.0.0.1:{event_handler.port}/{{event}}"
        properties = {"eventHandlers": [{"urlTemplate": url, "systemEvents": ["connected"]}]}
        admin_request(first.server.connection_string, "PUT", hub, properties)
        upstream = {"templates": [{"urlTemplate": "http://127.0.0.1:9/{event}", "hubPattern": hub}]}
        admin_request(
            first.server.connection_string, "PUT", body=upstream, path="/api/admin/signalr/upstream"
        )

        redis_server.restart()  # comes back empty (--save '' --appendonly no)
        client = redis.Redis(host="127.0.0.1", port=redis_server.port)
        try:
            wait_until(lambda: client.hget("hubbub:settings:hubs", hub.lower()) is not None, timeout=30)
            assert client.get("hubbub:settings:signalr") is not None
        finally:
            client.close()
        for node in (first, second):
            wait_healthy(node.server)
        with run_server("--redis", redis_server.url, "--node-id", "wipe-late") as late:  # reads only Redis
            wait_healthy(late)
            shown = admin_request(late.connection_string, "GET", hub)
            assert shown["properties"]["eventHandlers"][0]["urlTemplate"] == url
            listed = admin_request(late.connection_string, "GET", path="/api/admin/signalr/upstream")
            assert listed == {
                "templates": [
                    {
                        "urlTemplate": "http://127.0.0.1:9/{event}",
                        "hubPattern": hub,
                        "categoryPattern": "*",
                        "eventPattern": "*",
                        "auth": {"type": "None"},
                    }
                ]
            }
            joined = Client(late, hub)
            try:
                wait_until(lambda: joined.id in event_handler.of("connected"), timeout=15)
            finally:
                joined.close()
