"""A cluster on a Redis watched by Sentinel: ``--redis redis+sentinel://…/primary``. Real processes: a
primary, its replica, one Sentinel, two hubbub nodes. Killing the primary (kill -9) makes Sentinel promote
the replica; the nodes find it through Sentinel and carry on, with the client connections they had."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.cluster import RedisServer, require_redis_server, run_cluster, wait_healthy
from tests.support.server import free_port, run_server, wait_for_port

from .conftest import Client, rest, wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.flaky(reruns=1)]

PRIMARY_NAME = "hubbubprimary"


@contextlib.contextmanager
def _redis(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [require_redis_server(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def _base(port: int, workdir: str) -> tuple[str, ...]:
    return ("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir)


def _primary_port(sentinel_port: int) -> int | None:
    client = redis.Redis(host="127.0.0.1", port=sentinel_port, socket_timeout=2)
    try:
        address = client.execute_command("SENTINEL", "get-master-addr-by-name", PRIMARY_NAME)
        return int(address[1]) if address else None
    except redis.RedisError:
        return None
    finally:
        client.close()


def _replicas_known(sentinel_port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=sentinel_port, socket_timeout=2)
    try:
        return bool(client.execute_command("SENTINEL", "replicas", PRIMARY_NAME))
    except redis.RedisError:
        return False
    finally:
        client.close()


def test_nodes_follow_a_sentinel_failover_and_keep_their_clients() -> None:
    hub = "sentinel"
    primary_port, replica_port, sentinel_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="hubbub-sentinel-") as workdir, contextlib.ExitStack() as stack:
        dirs = [Path(workdir) / name for name in ("primary", "replica", "sentinel")]
        for d in dirs:
            d.mkdir()
        primary = stack.enter_context(_redis(*_base(primary_port, str(dirs[0]))))
        stack.enter_context(
            _redis(*_base(replica_port, str(dirs[1])), "--replicaof", "127.0.0.1", str(primary_port))
        )
        conf = dirs[2] / "sentinel.conf"  # Sentinel rewrites its file: a private copy
        conf.write_text(
            f"port {sentinel_port}\nbind 127.0.0.1\ndir {dirs[2]}\n"
            f"sentinel monitor {PRIMARY_NAME} 127.0.0.1 {primary_port} 1\n"
            f"sentinel down-after-milliseconds {PRIMARY_NAME} 1000\n"
            f"sentinel failover-timeout {PRIMARY_NAME} 10000\n",
            encoding="utf-8",
        )
        stack.enter_context(_redis(str(conf), "--sentinel"))
        for port in (primary_port, replica_port, sentinel_port):
            wait_for_port(port)
        wait_until(lambda: _replicas_known(sentinel_port), timeout=30)  # Sentinel found the replica

        url = f"redis+sentinel://127.0.0.1:{sentinel_port}/{PRIMARY_NAME}"
        first = stack.enter_context(run_server("--redis", url, "--node-id", "s0"))
        second = stack.enter_context(run_server("--redis", url, "--node-id", "s1"))
        for node in (first, second):
            wait_healthy(node)
        client = Client(first, hub)
        stack.callback(client.close)
        assert rest(second, "POST", hub, "/:send", data="before").status_code == 202
        wait_until(lambda: client.messages() == ["before"])

        primary.kill()  # the nodes lose Redis; Sentinel promotes the replica after ~1 s
        primary.wait()
        wait_until(lambda: _primary_port(sentinel_port) == replica_port, timeout=60)
        for node in (first, second):
            wait_healthy(node, timeout=30)

        def delivered() -> bool:  # 503 until the node has re-registered everything
            if rest(second, "POST", hub, "/:send", data="after").status_code != 202:
                time.sleep(0.2)
                return False
            return True

        wait_until(delivered, timeout=30)
        wait_until(lambda: "after" in client.messages(), timeout=10)
        # the presence moved with it: node 2 knows the client on node 1
        assert rest(second, "HEAD", hub, f"/connections/{client.id}").status_code == 200
        assert client.close_code is None


def test_the_database_in_the_url_holds_everything(redis_server: RedisServer) -> None:
    """``redis://…/5``: the presence the ordered writer keeps and the queries redis-py makes meet in db 5."""
    hub = "db5"
    with run_cluster(redis_server.url + "/5", 2, prefix="db5-") as (first, second):
        client = Client(first, hub)
        try:
            assert rest(second, "HEAD", hub, f"/connections/{client.id}").status_code == 200
            db5 = redis.Redis(host="127.0.0.1", port=redis_server.port, db=5)
            db0 = redis.Redis(host="127.0.0.1", port=redis_server.port, db=0)
            try:
                assert db5.exists(f"hubbub:hub:{hub}:conn:{client.id}")
                assert not db0.exists(f"hubbub:hub:{hub}:conn:{client.id}")
            finally:
                db5.close()
                db0.close()
        finally:
            client.close()
