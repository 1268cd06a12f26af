"""A real ``redis-server`` per test session, and hubbub cluster nodes (real processes) on it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.support.server import Server, free_port, run_server, wait_for_port


def require_redis_server() -> str:
    """The ``redis-server`` binary; skip when it is missing and we cannot install it (not root).

    As root, ``make test`` installs it first, so a missing binary there is a failure, not a skip.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        if os.geteuid() == 0:
            pytest.fail(
                "redis-server is not installed: `make test` installs it (apt-get install redis-server)"
            )
        pytest.skip("redis-server is not installed (and we are not root to install it)")
    return binary


@dataclass
class RedisServer:
    """``redis-server`` on 127.0.0.1, no persistence; can be stopped and started on the same port."""

    binary: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="hubbub-redis-"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.workdir,
            "--loglevel",
            "warning",
        ]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, timeout=10)

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, down_seconds: float = 0.5) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def flushall(self) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            client.flushall()
        finally:
            client.close()


@contextlib.contextmanager
def run_redis() -> Iterator[RedisServer]:
    server = RedisServer(require_redis_server())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@contextlib.contextmanager
def run_cluster(redis_url: str, size: int = 3, *extra: str, prefix: str = "n") -> Iterator[list[Server]]:
    """``size`` ``hubbub serve --redis`` processes (node ids n0, n1, ...) on free loopback ports."""
    with contextlib.ExitStack() as stack:
        nodes = [
            stack.enter_context(run_server("--redis", redis_url, "--node-id", f"{prefix}{i}", *extra))
            for i in range(size)
        ]
        for node in nodes:
            wait_healthy(node)
        yield nodes


def wait_healthy(node: Server, timeout: float = 20.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{node.endpoint}/api/health", timeout=2).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"node on port {node.port} did not become healthy within {timeout}s")
