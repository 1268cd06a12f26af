"""Issue #7 acceptance: reliable sessions survive the loss of their node (kill -9).

Three ``hubbub serve --redis`` processes and a real redis-server. The official Python client and
``@azure/web-pubsub-client`` (Node), each on its default reliable protocol, reach node A through a TCP
front (a :class:`~tests.support.proxy.CuttableProxy` whose target the test switches to node B, as a load
balancer's health check would). A publisher sends 10,000 group messages through node C's REST API;
node A is killed with SIGKILL mid-stream. The clients resume on node B with the same connection id and
receive every message exactly once, in order. Also: a reliable session nobody resumes ends after the
retention time with exactly one ``disconnected`` event cluster-wide, and a session suspended on a live
node moves to the node its client comes back to.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
import websocket
from azure.messaging.webpubsubclient import WebPubSubClient, WebPubSubClientCredential
from azure.messaging.webpubsubclient.models import CallbackType
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.cluster.conftest import EventHandler, client_url, rest, wait_until
from tests.support.cluster import RedisServer, run_cluster, run_redis
from tests.support.proxy import CuttableProxy, cuttable_proxy
from tests.support.server import Server

pytestmark = [
    pytest.mark.interop,
    # the Python client's sequence-ack thread dies with ConnectionResetError when its socket is reset
    # under it (it starts a new one on every resume); that is the SDK's thread, not ours
    pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
]

MESSAGES = 10_000
KILL_AT = 3_000
#: messages published after the kill before the test waits for the clients to be back (they are kept
#: in Redis meanwhile; the reliable buffer limit, 1,000, bounds what a session may miss)
GAP = 300
RELIABLE = "json.reliable.webpubsub.azure.v1"
NODE_DIR = Path(__file__).parents[1] / "interop" / "node"


def owner(redis_server: RedisServer, hub: str, connection_id: str) -> str | None:
    """The node that holds a connection according to Redis ("" = none, None = no such connection)."""
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    try:
        value = client.hget(f"hubbub:hub:{hub.lower()}:conn:{connection_id}", "n")
    finally:
        client.close()
    return None if value is None else bytes(value).decode()


def front_url(service: WebPubSubServiceClient, front: CuttableProxy) -> str:
    url = str(service.get_client_access_token(user_id="r", groups=["g"])["url"])
    port = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
    return url.replace(f":{port}/", f":{front.port}/")


@contextlib.contextmanager
def js_client(url: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """tests/interop/node/reliable_drops.mjs: counts group messages, prints one JSON summary."""
    if shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir():
        pytest.skip("node or tests/interop/node/node_modules missing (run `make node-deps`)")
    proc = subprocess.Popen(
        ["node", str(NODE_DIR / "reliable_drops.mjs")],
        env={**os.environ, "CLIENT_URL": url, "EXPECTED": str(MESSAGES)},
        stdout=subprocess.PIPE,
        text=True,
    )
    out: list[str] = []
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        yield proc, out
        reader.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_kill_9_reliable_clients_resume_on_another_node_exactly_once_in_order(hub: str) -> None:
    with run_redis() as redis_server, run_cluster(redis_server.url, 3) as nodes:
        a, b, c = nodes
        service = WebPubSubServiceClient.from_connection_string(c.connection_string, hub=hub)
        with cuttable_proxy(a.port) as front:
            client = WebPubSubClient(
                credential=WebPubSubClientCredential(lambda: front_url(service, front)),
                reconnect_retry_total=0,
            )
            received: queue.Queue[tuple[int, str]] = queue.Queue()
            connected: list[str] = []
            client.subscribe(CallbackType.GROUP_MESSAGE, lambda e: received.put((e.sequence_id, e.data)))
            client.subscribe(CallbackType.CONNECTED, lambda e: connected.append(e.connection_id))
            client.open()
            try:
                with js_client(front_url(service, front)) as (proc, out):
                    members = rest(c, "GET", hub, "/groups/g/connections").json()["value"]
                    ids = sorted(m["connectionId"] for m in members)
                    assert len(ids) == 2 and connected[0] in ids
                    assert all(owner(redis_server, hub, cid) == "n0" for cid in ids)
                    for i in range(MESSAGES):
                        service.send_to_group("g", f"m{i}", content_type="text/plain")
                        if i == KILL_AT:
                            front.target_port = b.port  # the load balancer sends new connections to B
                            a.process.kill()  # SIGKILL mid-stream
                            a.process.wait()
                        elif i == KILL_AT + GAP:
                            for cid in ids:  # resumed on B (through the front), same connection id
                                wait_until(lambda cid=cid: owner(redis_server, hub, cid) == "n1", timeout=40)  # type: ignore[misc]
                    got: list[tuple[int, str]] = []
                    deadline = time.monotonic() + 30
                    while len(got) < MESSAGES and time.monotonic() < deadline:
                        with contextlib.suppress(queue.Empty):
                            got.append(received.get(timeout=0.5))
                    assert proc.wait(30) == 0, out
                    result = json.loads(out[0].strip().splitlines()[-1])
                data = [d for _, d in got]
                expected = [f"m{i}" for i in range(MESSAGES)]
                missing = sorted(set(expected) - set(data), key=lambda m: int(m[1:]))
                assert not missing, f"python client lost {len(missing)}: {missing[:10]}"
                assert len(data) == len(set(data)) == MESSAGES, f"duplicates among {len(data)} received"
                # in order: the i-th message of the stream carries sequence id i + 1, exactly once
                assert sorted(got) == [(i + 1, f"m{i}") for i in range(MESSAGES)]
                with contextlib.suppress(queue.Empty):
                    pytest.fail(f"unexpected extra message {received.get(timeout=0.5)!r}")
                assert connected == [connected[0]]  # always resumed, never a new connection
                assert result["count"] == MESSAGES and result["inOrder"] is True, result
                assert result["duplicates"] == 0 and result["connections"] == 1, result
                for cid in ids:
                    assert owner(redis_server, hub, cid) == "n1"
                    assert rest(c, "HEAD", hub, f"/connections/{cid}").status_code == 200
            finally:
                client.close()


class RawReliable:
    """A raw ``json.reliable.webpubsub.azure.v1`` client (no SDK): it never acks, never reconnects."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.WebSocket()
        self.ws.connect(url, subprotocols=[RELIABLE], timeout=15)
        hello = json.loads(self.ws.recv())
        assert hello["event"] == "connected", hello
        self.id: str = hello["connectionId"]
        self.token: str = hello["reconnectionToken"]

    def frames(self, count: int) -> list[dict[str, Any]]:
        return [json.loads(self.ws.recv()) for _ in range(count)]

    def drop(self) -> None:
        """Vanish without a close frame (the TCP connection is reset)."""
        sock = self.ws.sock
        assert sock is not None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def resume_url(node: Server, hub: str, connection_id: str, token: str) -> str:
    return (
        f"ws://localhost:{node.port}/client/hubs/{hub}"
        f"?awps_connection_id={quote(connection_id)}&awps_reconnection_token={quote(token)}"
    )


def handler_config(tmp_path: Path, hub: str, events: EventHandler) -> Path:
    config = tmp_path / "hubs.toml"
    config.write_text(
        f"[hubs.{hub}]\n[[hubs.{hub}.event_handlers]]\n"
        f'url_template = "http://127.0.0.1:{events.port}/{{event}}"\n'
        'system_events = ["connected", "disconnected"]\n',
        encoding="utf-8",
    )
    return config


@pytest.mark.flaky(reruns=1)
def test_reliable_session_of_a_dead_node_ends_once_after_the_retention(
    hub: str, event_handler: EventHandler, tmp_path: Path
) -> None:
    retention = 4.0
    config = handler_config(tmp_path, hub, event_handler)
    extra = ("--config", str(config), "--reliable-retention", str(retention))
    with run_redis() as redis_server, run_cluster(redis_server.url, 3, *extra) as nodes:
        a, b, c = nodes
        reliable = [
            RawReliable(client_url(a, hub, sub=f"r{i}", **{"webpubsub.group": ["g"]})) for i in range(2)
        ]
        plain = websocket.create_connection(
            client_url(a, hub, sub="p"), subprotocols=["json.webpubsub.azure.v1"]
        )
        plain_id = json.loads(plain.recv())["connectionId"]
        every = [r.id for r in reliable] + [plain_id]
        wait_until(lambda: sorted(event_handler.of("connected")) == sorted(every), timeout=10)
        assert rest(c, "POST", hub, "/groups/g/:send", data="before").status_code == 202
        for r in reliable:
            assert r.frames(1)[0]["data"] == "before"

        a.process.kill()
        a.process.wait()
        killed = time.monotonic()
        # the plain connection is gone with its node; the reliable sessions wait for their clients
        wait_until(lambda: rest(b, "HEAD", hub, f"/connections/{plain_id}").status_code == 404, timeout=15)
        wait_until(
            lambda: event_handler.of("disconnected") == [plain_id], timeout=10
        )  # sent after the removal
        for r in reliable:
            assert rest(b, "HEAD", hub, f"/connections/{r.id}").status_code == 200
            assert owner(redis_server, hub, r.id) == ""
        listed = {v["connectionId"] for v in rest(c, "GET", hub, "/groups/g/connections").json()["value"]}
        assert listed == {r.id for r in reliable}

        for r in reliable:  # retention over: gone everywhere, one `disconnected` each, cluster-wide
            wait_until(
                lambda r=r: rest(c, "HEAD", hub, f"/connections/{r.id}").status_code == 404, timeout=30
            )  # type: ignore[misc]
        assert time.monotonic() - killed >= retention
        assert rest(b, "HEAD", hub, "/groups/g").status_code == 404
        time.sleep(2.5)  # both survivors ran their checks a few more times
        assert sorted(event_handler.of("disconnected")) == sorted(every)
        for r in reliable:  # too late to resume
            late = websocket.create_connection(resume_url(b, hub, r.id, r.token), subprotocols=[RELIABLE])
            opcode, data = late.recv_data(control_frame=True)
            assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(data[:2], "big") == 1008
            late.close()


@pytest.mark.flaky(reruns=1)
def test_suspended_session_on_a_live_node_moves_to_the_node_it_resumes_on(
    hub: str, event_handler: EventHandler, tmp_path: Path
) -> None:
    config = handler_config(tmp_path, hub, event_handler)
    with run_redis() as redis_server, run_cluster(redis_server.url, 3, "--config", str(config)) as nodes:
        a, b, c = nodes
        r = RawReliable(client_url(a, hub, sub="r", **{"webpubsub.group": ["g"]}))
        wait_until(lambda: event_handler.of("connected") == [r.id], timeout=10)
        for i in range(3):
            assert rest(c, "POST", hub, "/groups/g/:send", data=f"m{i}").status_code == 202
        assert [f["sequenceId"] for f in r.frames(3)] == [1, 2, 3]
        r.drop()
        wait_until(lambda: rest(a, "HEAD", hub, f"/connections/{r.id}").status_code == 200)
        for i in range(3, 6):  # kept by node A's suspended session
            assert rest(c, "POST", hub, "/groups/g/:send", data=f"m{i}").status_code == 202
        time.sleep(0.5)

        back = websocket.create_connection(
            resume_url(b, hub, r.id, r.token), subprotocols=[RELIABLE], timeout=15
        )
        hello = json.loads(back.recv())
        assert hello["event"] == "connected" and hello["connectionId"] == r.id
        # nothing was acknowledged: everything is resent, with the same sequence ids
        replayed = [json.loads(back.recv()) for _ in range(6)]
        assert [(f["sequenceId"], f["data"]) for f in replayed] == [(i + 1, f"m{i}") for i in range(6)]
        assert owner(redis_server, hub, r.id) == "n1"
        back.send(json.dumps({"type": "sequenceAck", "sequenceId": 6}))
        assert rest(a, "POST", hub, "/groups/g/:send", data="after").status_code == 202
        after = json.loads(back.recv())
        assert (after["sequenceId"], after["data"]) == (7, "after")
        assert event_handler.of("disconnected") == []
        back.close()  # a normal closure ends the session: one `disconnected`, from node B
        wait_until(lambda: event_handler.of("disconnected") == [r.id], timeout=10)
        assert rest(c, "HEAD", hub, f"/connections/{r.id}").status_code == 404
        time.sleep(1.0)
        assert event_handler.of("disconnected") == [r.id]


@pytest.mark.flaky(reruns=1)
def test_graceful_shutdown_hands_reliable_sessions_to_the_other_nodes(
    hub: str, event_handler: EventHandler, tmp_path: Path
) -> None:
    config = handler_config(tmp_path, hub, event_handler)
    with run_redis() as redis_server, run_cluster(redis_server.url, 3, "--config", str(config)) as nodes:
        a, b, c = nodes
        r = RawReliable(client_url(a, hub, sub="r", **{"webpubsub.group": ["g"]}))
        wait_until(lambda: event_handler.of("connected") == [r.id], timeout=10)
        assert rest(c, "POST", hub, "/groups/g/:send", data="m0").status_code == 202
        assert [(f["sequenceId"], f["data"]) for f in r.frames(1)] == [(1, "m0")]
        a.process.terminate()  # SIGTERM: a graceful stop
        opcode, data = r.ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(data[:2], "big") == 1001
        a.process.wait(timeout=15)
        assert owner(redis_server, hub, r.id) == ""  # released, not ended
        assert rest(c, "POST", hub, "/groups/g/:send", data="m1").status_code == 202
        back = websocket.create_connection(
            resume_url(b, hub, r.id, r.token), subprotocols=[RELIABLE], timeout=15
        )
        assert json.loads(back.recv())["connectionId"] == r.id
        got = [json.loads(back.recv()) for _ in range(2)]
        assert [(f["sequenceId"], f["data"]) for f in got] == [(1, "m0"), (2, "m1")]
        assert owner(redis_server, hub, r.id) == "n1"
        time.sleep(1.0)
        assert event_handler.of("disconnected") == []
        back.close()
        wait_until(lambda: event_handler.of("disconnected") == [r.id], timeout=10)
