"""``samples/serverless-chat`` end to end, and ``hubbub demo``'s wiring of it.

Everything as a user runs it: ``hubbub serve``; ``hubbub func start --script-root samples/serverless-chat``
(a separate process); the hub's event handler set with ``hubbub hub create`` to the host's
``/runtime/webhooks/webpubsub?code=<system key>``; two users who sign in through ``/.auth/login/aad``
(the link of the page), negotiate and connect with raw WebSockets — alice as the page does (no
subprotocol), bob with ``json.webpubsub.azure.v1``.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from hubbub.functions.demo import SAMPLE_DIR, start_demo
from hubbub.hub_cli import admin_request
from tests.support.server import Server, free_port, run_server, wait_for_port

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
JSON = "json.webpubsub.azure.v1"


@pytest.mark.parametrize("sample", ["serverless-chat", "notifications"])
def test_samples_import_nothing_from_hubbub(sample: str) -> None:
    files = list((SAMPLES / sample).rglob("*.py"))
    assert files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n == "hubbub" or n.startswith("hubbub.") for n in names), f"{path} imports {names}"
        assert "hubbub" not in path.read_text().lower().replace("hubbub func start", "")


@pytest.fixture
def service() -> Iterator[Server]:
    with run_server() as srv:
        yield srv


@contextlib.contextmanager
def func_start(service: Server, keys_dir: Path) -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "hubbub", "func", "start", "--script-root", str(SAMPLE_DIR)]
    env = {**os.environ, "WebPubSubConnectionString": service.connection_string}
    proc = subprocess.Popen([*cmd, "--port", str(port), "--keys-dir", str(keys_dir)], env=env)
    try:
        wait_for_port(port)
        yield f"http://localhost:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class User:
    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http, self.ws = http, ws

    async def texts(self, n: int) -> list[str]:
        """The next ``n`` messages as the page shows them (the data of JSON-protocol messages)."""
        out = []
        for _ in range(n):
            msg = await self.ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            if self.ws.protocol == JSON:
                frame = json.loads(msg.data)
                assert frame["type"] == "message" and frame["from"] == "server", frame
                out.append(frame["data"])
            else:
                out.append(msg.data)
        return out

    async def quiet(self) -> None:
        with pytest.raises(asyncio.TimeoutError):
            await self.ws.receive(timeout=0.3)


@contextlib.asynccontextmanager
async def sign_in(base: str, name: str, protocol: str | None) -> AsyncIterator[User]:
    """What the page does: follow its login link, sign in, reload with ?authenticated=true, negotiate."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/index") as r:
            page = await r.text()
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
            assert "/.auth/login/aad?post_login_redirect_url=/api/index?authenticated=true" in page
        async with http.get(
            f"{base}/.auth/login/aad?post_login_redirect_url=/api/index?authenticated=true"
        ) as r:
            assert r.status == 200 and "/.auth/login/aad/callback" in await r.text()
        form = {"name": name, "redirect": "/api/index?authenticated=true"}
        async with http.post(f"{base}/.auth/login/aad/callback", data=form) as r:
            assert r.status == 200 and str(r.url).endswith("/api/index?authenticated=true")
        async with http.get(f"{base}/api/negotiate") as r:
            assert r.status == 200, await r.text()
            url = (await r.json())["url"]
        ws = await http.ws_connect(url, protocols=[protocol] if protocol else ())
        if protocol == JSON:
            connected = json.loads((await ws.receive(timeout=5)).data)
            assert connected["event"] == "connected" and connected["userId"] == name
        try:
            yield User(http, ws)
        finally:
            await ws.close()


async def chat(base: str) -> None:
    async with sign_in(base, "alice", None) as alice, sign_in(base, "bob", JSON) as bob:
        await alice.ws.send_str("hi")
        assert sorted(await alice.texts(2)) == ["[SYSTEM] ack", "[alice] hi"]
        assert await bob.texts(1) == ["[alice] hi"]
        await bob.ws.send_json({"type": "event", "event": "message", "dataType": "text", "data": "yo"})
        assert sorted(await bob.texts(2)) == ["[SYSTEM] ack", "[bob] yo"]
        assert await alice.texts(1) == ["[bob] yo"]
        await alice.quiet()
        await bob.quiet()


async def test_serverless_chat_end_to_end(service: Server, tmp_path: Path) -> None:
    with func_start(service, tmp_path / "keys") as base:
        system_keys = json.loads((tmp_path / "keys" / "host.json").read_text())["systemKeys"]
        key = next(k["value"] for k in system_keys if k["name"] == "webpubsub_extension")
        cmd = [sys.executable, "-m", "hubbub", "hub", "create", "--hub", "simplechat", "--event-handler"]
        words = [f"url-template={base}/runtime/webhooks/webpubsub?code={key}", "user-event-pattern=*"]
        env = {**os.environ, "WebPubSubConnectionString": service.connection_string}
        done = await asyncio.to_thread(
            subprocess.run, [*cmd, *words], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        await chat(base)
        async with aiohttp.ClientSession() as http, http.get(f"{base}/api/negotiate") as r:
            assert r.status == 500  # not signed in: {headers.x-ms-client-principal-name} does not resolve


async def test_demo_wiring(
    service: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # the demo keeps its keys in the data dir
    host = await start_demo(service.connection_string, port=free_port())
    assert host is not None
    try:
        assert f"open {host.base_url}/api/index" in capsys.readouterr().out
        hub = await asyncio.to_thread(admin_request, service.connection_string, "GET", "simplechat")
        handlers = hub["properties"]["eventHandlers"]
        assert handlers == [
            {
                "urlTemplate": host.webpubsub_webhook,
                "userEventPattern": "message",
                "systemEvents": [],
                "auth": {"type": "None"},
            }
        ]
        assert "?code=" in host.webpubsub_webhook and str(tmp_path) in str(host.keys.directory)
        await chat(host.base_url)
    finally:
        await host.close()
