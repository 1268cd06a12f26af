"""Helpers for functions-host tests: write an app folder, run a host in this process, sign CloudEvents."""

from __future__ import annotations

import contextlib
import json
import textwrap
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from hubbub.functions.host import FunctionsHost, HostOptions
from hubbub.upstream.cloudevents import event_headers
from tests.support.server import DEV_KEY, free_port

HOST_JSON = {"version": "2.0", "extensionBundle": {"id": "Microsoft.Azure.Functions.ExtensionBundle"}}
KEY = "functions-test-key-0123456789-0123456789-abc"
OTHER_KEY = "another-key-0123456789-0123456789-0123456789"


def connection_string(port: int = 8080, key: str = KEY, host: str = "localhost") -> str:
    return f"Endpoint=http://{host};Port={port};AccessKey={key};Version=1.0;"


def write_app(
    root: Path,
    files: Mapping[str, Any],
    host_json: Mapping[str, Any] | None = None,
    values: Mapping[str, str] | None = None,
    host_section: Mapping[str, Any] | None = None,
) -> Path:
    """An app folder: ``files`` maps relative paths to text (dedented) or JSON-able objects."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "host.json").write_text(json.dumps(host_json or HOST_JSON))
    if values is not None or host_section is not None:
        local = {"IsEncrypted": False, "Values": dict(values or {}), "Host": dict(host_section or {})}
        (root / "local.settings.json").write_text(json.dumps(local))
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = textwrap.dedent(content) if isinstance(content, str) else json.dumps(content)
        path.write_text(text)
    return root


@contextlib.asynccontextmanager
async def running_host(
    root: Path, keys_dir: Path | None = None, **options: Any
) -> AsyncIterator[FunctionsHost]:
    """A functions host on a free port, in this process (keys kept next to the app, not in ~)."""
    opts = HostOptions(
        root, port=free_port(), keys_dir=keys_dir or root.parent / f"{root.name}-keys", **options
    )
    host = FunctionsHost(opts)
    host.load()
    await host.start()
    try:
        yield host
    finally:
        await host.close()


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def ce_headers(
    event: str,
    *,
    hub: str = "chat",
    kind: str = "sys",
    connection_id: str | None = None,
    user_id: str | None = "alice",
    keys: tuple[str, ...] = (KEY,),
    origin: str = "localhost",
    content_type: str = "application/json; charset=utf-8",
    state: str | None = None,
    subprotocol: str | None = None,
) -> dict[str, str]:
    """The headers hubbub itself sends an event handler (``hubbub.upstream.cloudevents``)."""
    return event_headers(
        kind=kind,
        event=event,
        hub=hub,
        connection_id=connection_id or f"conn-{uuid.uuid4().hex[:8]}",
        user_id=user_id,
        origin=origin,
        keys=keys,
        event_id=uuid.uuid4().hex,
        time="2024-01-01T00:00:00Z",
        subprotocol=subprotocol,
        connection_state=state,
        content_type=content_type,
    )


__all__ = [
    "DEV_KEY",
    "HOST_JSON",
    "KEY",
    "OTHER_KEY",
    "ce_headers",
    "client",
    "connection_string",
    "running_host",
    "write_app",
]
