"""Start a real ``hubbub serve`` process for interop tests (no in-process shortcuts)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

DEV_KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    port: int
    access_key: str
    process: subprocess.Popen[bytes]

    @property
    def endpoint(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def connection_string(self) -> str:
        return f"Endpoint=http://localhost;Port={self.port};AccessKey={self.access_key};Version=1.0;"


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"hubbub did not listen on {port} within {timeout}s")


@contextlib.contextmanager
def run_server(*extra: str, access_key: str = DEV_KEY, env: dict[str, str] | None = None) -> Iterator[Server]:
    port = free_port()
    if "--data-dir" not in extra:  # never touch the user's real settings from a test
        extra = ("--data-dir", ":memory:", *extra)
    if "--signalr-port" not in extra:  # many servers run at once in tests: no fixed SignalR port
        extra = ("--signalr-port", "0", *extra)
    cmd = [sys.executable, "-m", "hubbub", "serve", "--port", str(port), "--access-key", access_key, *extra]
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})})
    try:
        wait_for_port(port)
        yield Server(port=port, access_key=access_key, process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
