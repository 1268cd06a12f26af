"""Helpers for the SignalR binding tests: a ``hubbub func start`` process with known keys, the upstream
requests the service sends, and upstream tokens minted exactly as the service side is specified to."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from tests.support.server import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_KEY = "signalr-system-key-0123456789-0123456789"
MASTER_KEY = "master-key-0123456789-0123456789-0123456789"


def write_keys(keys_dir: Path) -> None:
    """The host's key file with known master and ``signalr_extension`` keys (the host's own format)."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    entry = {"encrypted": False}
    data = {
        "masterKey": {"name": "master", "value": MASTER_KEY, **entry},
        "functionKeys": [{"name": "default", "value": "host-default-key-0123456789", **entry}],
        "systemKeys": [{"name": "signalr_extension", "value": SYSTEM_KEY, **entry}],
    }
    (keys_dir / "host.json").write_text(json.dumps(data), encoding="utf-8")


@dataclass
class FuncHost:
    port: int
    process: subprocess.Popen[str]
    output: list[str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook(self) -> str:
        return f"{self.base_url}/runtime/webhooks/signalr"

    @property
    def webhook_with_key(self) -> str:
        return f"{self.webhook}?code={SYSTEM_KEY}"

    def log(self) -> str:
        return "\n".join(self.output)


@contextlib.contextmanager
def func_start(
    app_root: Path, keys_dir: Path, env: Mapping[str, str], port: int | None = None
) -> Iterator[FuncHost]:
    """``python -m hubbub func start`` on ``app_root`` (a real process), its output collected."""
    port = port or free_port()
    write_keys(keys_dir)
    cmd = [sys.executable, "-m", "hubbub", "func", "start", "--script-root", str(app_root)]
    cmd += ["--port", str(port), "--keys-dir", str(keys_dir)]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line.rstrip("\n"))

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    host = FuncHost(port, proc, output)
    try:
        try:
            wait_for_port(port, timeout=30)
        except TimeoutError:
            raise AssertionError("functions host did not start:\n" + host.log()) from None
        yield host
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def signature(connection_id: str, *keys: str) -> str:
    return ",".join(
        "sha256=" + hmac.new(k.encode(), connection_id.encode(), hashlib.sha256).hexdigest().upper()
        for k in keys
    )


def upstream_headers(
    key: str,
    *,
    hub: str = "chat",
    category: str = "messages",
    event: str = "echo",
    connection_id: str = "conn-1",
    user_id: str | None = "alice",
    claims: str | None = None,
    query: str | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    """The headers the service sends upstream (digest §4.2)."""
    headers = {
        "X-ASRS-Connection-Id": connection_id,
        "X-ASRS-Hub": hub,
        "X-ASRS-Category": category,
        "X-ASRS-Event": event,
        "X-ASRS-Signature": signature(connection_id, key),
        "Content-Type": content_type,
    }
    if user_id:
        headers["X-ASRS-User-Id"] = user_id
    if claims:
        headers["X-ASRS-User-Claims"] = claims
    if query:
        headers["X-ASRS-Client-Query"] = query
    return headers


def invocation(target: str, *arguments: Any, invocation_id: str | None = "1") -> bytes:
    message: dict[str, Any] = {"type": 1, "target": target, "arguments": list(arguments)}
    if invocation_id is not None:
        message["invocationId"] = invocation_id
    return json.dumps(message).encode()


def upstream_token(
    key: str,
    audience: str,
    *,
    issuer: str = "http://localhost:8888",
    lifetime: int = 3600,
    issued: int | None = None,
    not_before: int | None = None,
) -> str:
    """The upstream ``Authorization`` token as specified for the service: HS256 over the AccessKey's
    UTF-8 bytes, ``iss`` the endpoint, ``aud`` the Resource, ``iat``/``nbf``, ``exp`` = iat + lifetime."""
    now = int(time.time()) if issued is None else issued
    claims = {
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "nbf": now if not_before is None else not_before,
        "exp": now + lifetime,
    }
    return jwt.encode(claims, key, algorithm="HS256")


async def stop_pysignalr(client: Any, task: asyncio.Task[Any]) -> None:
    """Stop a ``pysignalr`` client's ``run()`` task and close its WebSocket.

    Cancelling ``run()`` leaves the connection of its ``async for … in connect()`` loop to the garbage
    collector (an unclosed-transport warning); closing it ourselves keeps the test deterministic.
    """
    ws = getattr(getattr(client, "_transport", None), "_ws", None)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    ws = ws or getattr(getattr(client, "_transport", None), "_ws", None)
    if ws is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 5)


__all__ = [
    "MASTER_KEY",
    "SYSTEM_KEY",
    "FuncHost",
    "func_start",
    "invocation",
    "signature",
    "stop_pysignalr",
    "upstream_headers",
    "upstream_token",
    "write_keys",
]
