"""``hubbub serve --workers N``: one port served by N processes that share state through a broker.

Real processes only: ``hubbub serve --workers 2`` (with a private redis-server, or with ``--redis``),
plain WebSocket clients and plain HTTP REST calls. Which worker holds a socket is read from /proc
(the server side of each TCP connection is a file descriptor of exactly one worker).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
import websocket

from tests.support.cluster import require_redis_server, run_redis
from tests.support.server import DEV_KEY, Server, free_port, run_server

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")

JSON_V1 = "json.webpubsub.azure.v1"
ATTEMPTS = 64  # connections tried until each worker holds one (each lands on worker 1 with p = 1/2)


def workers_of(server: Server, count: int) -> list[int]:
    """The pids of the hubbub worker processes (children of the supervisor, not redis-server)."""
    deadline = time.monotonic() + 30
    while True:
        pid = server.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        found = [
            int(c)
            for c in children
            if b"hubbub" in Path(f"/proc/{c}/cmdline").read_bytes()
            and b"redis" not in Path(f"/proc/{c}/comm").read_bytes()
        ]
        if len(found) == count:
            return sorted(found)
        assert time.monotonic() < deadline, f"expected {count} workers, found {found}"
        time.sleep(0.1)


def owner(workers: list[int], server_port: int, client_port: int) -> int | None:
    """Which worker holds the server side of the loopback connection from ``client_port``."""
    wanted = f"0100007F:{server_port:04X} 0100007F:{client_port:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if f"{fields[1]} {fields[2]}" == wanted:
            inode = fields[9]
    if inode is None:
        return None
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
    return None


def on_each_worker(
    workers: list[int], connect: Callable[[], tuple[object, int]], port: int
) -> dict[int, object]:
    """Open connections with ``connect`` (-> (conn, local port)) until every worker holds one."""
    held: dict[int, object] = {}
    for _ in range(ATTEMPTS):
        conn, local_port = connect()
        pid = None
        deadline = time.monotonic() + 5
        while pid is None and time.monotonic() < deadline:  # the accept may lag the connect
            pid = owner(workers, port, local_port)
            if pid is None:
                time.sleep(0.02)
        if pid is not None and pid not in held:
            held[pid] = conn
        else:
            conn.close()  # type: ignore[attr-defined]
        if len(held) == len(workers):
            return held
    raise AssertionError(f"{ATTEMPTS} connections did not reach every worker: {sorted(held)}")


def ws_client(port: int, hub: str) -> tuple[websocket.WebSocket, int]:
    aud = f"http://localhost:{port}/client/hubs/{hub}"
    token = jwt.encode({"aud": aud, "exp": time.time() + 600}, DEV_KEY, algorithm="HS256")
    ws = websocket.WebSocket()
    ws.connect(
        f"ws://127.0.0.1:{port}/client/hubs/{hub}?access_token={token}", subprotocols=[JSON_V1], timeout=10
    )
    assert json.loads(ws.recv())["event"] == "connected"
    return ws, int(ws.sock.getsockname()[1])


def http_conn(port: int) -> tuple[http.client.HTTPConnection, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.connect()
    assert conn.sock is not None
    return conn, int(conn.sock.getsockname()[1])


def broadcast(conn: http.client.HTTPConnection, port: int, hub: str, text: str) -> None:
    path = f"/api/hubs/{hub}/:send?api-version=2024-12-01"
    token = jwt.encode(
        {"aud": f"http://127.0.0.1:{port}{path}", "exp": time.time() + 300}, DEV_KEY, algorithm="HS256"
    )
    conn.request(
        "POST", path, body=text, headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
    )
    response = conn.getresponse()
    response.read()
    assert response.status == 202, response.status


def receive_data(ws: websocket.WebSocket, timeout: float) -> str | None:
    ws.settimeout(timeout)
    try:
        while True:
            frame = json.loads(ws.recv())
            if frame.get("type") == "message":
                return str(frame["data"])
    except websocket.WebSocketTimeoutException:
        return None


def check_broadcasts_reach_every_worker(server: Server) -> None:
    port, hub = server.port, "w" + uuid.uuid4().hex[:10]
    workers = workers_of(server, 2)
    clients = on_each_worker(workers, lambda: ws_client(port, hub), port)
    senders = on_each_worker(workers, lambda: http_conn(port), port)
    try:
        # until every worker has subscribed to the broker, a broadcast may miss some: probe first
        deadline = time.monotonic() + 30
        probe = 0
        while True:
            probe += 1
            broadcast(senders[workers[0]], port, hub, f"probe {probe}")  # type: ignore[arg-type]
            got = [receive_data(ws, 1.0) for ws in clients.values()]  # type: ignore[arg-type]
            if all(g is not None for g in got):
                break
            assert time.monotonic() < deadline, "the workers never all received a broadcast"
        for ws in clients.values():  # drain late probes
            while receive_data(ws, 0.3) is not None:  # type: ignore[arg-type]
                pass
        for pid, conn in senders.items():  # a REST broadcast made to either worker reaches both
            text = f"from the REST call served by worker {pid}"
            broadcast(conn, port, hub, text)  # type: ignore[arg-type]
            for holder, ws in clients.items():
                assert receive_data(ws, 30) == text, f"client on worker {holder} missed {text!r}"  # type: ignore[arg-type]
    finally:
        for conn in [*clients.values(), *senders.values()]:
            with contextlib.suppress(Exception):
                conn.close()  # type: ignore[attr-defined]


def test_two_workers_with_a_private_redis(redis_binary: str) -> None:
    with run_server("--workers", "2") as server:
        check_broadcasts_reach_every_worker(server)


def test_two_workers_on_a_given_redis(redis_binary: str) -> None:
    with run_redis() as redis, run_server("--workers", "2", "--redis", redis.url) as server:
        check_broadcasts_reach_every_worker(server)


@pytest.fixture
def redis_binary() -> str:
    return require_redis_server()


def serve_status(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "hubbub", "serve", "--data-dir", ":memory:", "--signalr-port", "0", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})
    return done.returncode, done.stderr


def test_without_redis_and_without_redis_server_it_refuses(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "HUBBUB_REDIS": ""}  # no redis-server on PATH
    code, err = serve_status("--port", str(free_port()), "--workers", "2", env=env)
    assert code == 2
    assert "--workers needs a broker the workers share: pass --redis URL, or install redis-server" in err


@pytest.mark.parametrize("count", ["0", "65"])
def test_worker_count_is_bounded(count: str) -> None:
    code, err = serve_status("--port", str(free_port()), "--workers", count)
    assert code == 2 and "--workers must be between 1 and 64" in err


def test_a_fixed_port_is_required() -> None:
    code, err = serve_status("--port", "0", "--workers", "2")
    assert code == 2 and "--workers needs a fixed --port" in err


def test_when_a_worker_dies_the_others_are_stopped(redis_binary: str) -> None:
    with run_server("--workers", "2") as server:
        first, second = workers_of(server, 2)
        os.kill(first, 9)
        assert server.process.wait(timeout=60) == 1
        assert (
            not Path(f"/proc/{second}").exists()
            or b"hubbub" not in Path(f"/proc/{second}/cmdline").read_bytes()
        )
