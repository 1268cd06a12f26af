"""``hubbub demo signalr``'s wiring, and the SignalR chat room sample driven by a Python client.

The demo's preparation runs as ``hubbub demo signalr`` runs it (in this process, on free ports instead
of :7071/:8888): the sample is loaded, the upstream settings file it writes starts a real
``hubbub serve``, and a ``pysignalr`` client signs in through the sample's ``login`` and ``negotiate``
and broadcasts (the upstream token is required by the demo's settings, so the call only works when
the service's token verifies)."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage

from hubbub.functions.demo import SIGNALR_SAMPLE_DIR, prepare_signalr_demo
from hubbub.functions.signalr import AUDIENCE_SETTING, REQUIRED_SETTING
from tests.functions.signalr_support import stop_pysignalr
from tests.support.server import DEV_KEY, free_port, run_server, wait_for_port

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]
WAIT_S = 20.0


async def _login(base: str, user: str) -> str:
    async with aiohttp.ClientSession() as http, http.post(f"{base}/api/login", json={"username": user}) as r:
        assert r.status == 200, await r.text()
        token: str = (await r.json())["token"]
        return token


async def test_demo_signalr_wires_the_sample(tmp_path: Path) -> None:
    signalr_port, func_port = free_port(), free_port()
    connection = f"Endpoint=http://localhost;Port={signalr_port};AccessKey={DEV_KEY};Version=1.0;"
    demo = await prepare_signalr_demo(connection, port=func_port, keys_dir=tmp_path / "keys")
    assert demo is not None
    try:
        host = demo.host
        assert host.config.root == SIGNALR_SAMPLE_DIR
        assert host.options.settings[REQUIRED_SETTING] == "true"
        settings = json.loads(demo.settings_path.read_text())
        (template,) = settings["UpstreamSettings"]["Templates"]
        assert template["UrlTemplate"] == host.signalr_webhook
        assert template["UrlTemplate"].startswith(
            f"http://localhost:{func_port}/runtime/webhooks/signalr?code="
        )
        resource = template["Auth"]["ManagedIdentity"]["Resource"]
        assert template["Auth"]["Type"] == "ManagedIdentity"
        assert resource == host.options.settings[AUDIENCE_SETTING] == f"http://localhost:{func_port}"
        with run_server("--signalr-port", str(signalr_port), "--signalr-settings", str(demo.settings_path)):
            wait_for_port(signalr_port)
            assert await demo.start() is host
            token = await _login(host.base_url, "alice")
            await _broadcast_as(host.base_url, token)
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{host.base_url}/api/negotiate") as r,
            ):
                assert r.status == 500  # the idToken expression names a header the request lacks
            forged = jwt.encode(
                {"nameid": "mallory", "admin": True, "exp": 2**40}, "k" * 32, algorithm="HS256"
            )
            for authorization, status in [("Bearer forged", 500), (f"Bearer {forged}", 401)]:
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(
                        f"{host.base_url}/api/negotiate", headers={"Authorization": authorization}
                    ) as r,
                ):
                    # not a JWT: the binding cannot read it (500); one the app did not sign: 401
                    assert r.status == status
    finally:
        await demo.host.close()
        demo.discard()
    assert not demo.settings_path.exists()


async def test_the_demo_signalr_command(tmp_path: Path) -> None:
    """``hubbub demo signalr`` as a process (free ports; its data dir, keys included, in ``tmp_path``)."""
    ports = [free_port() for _ in range(3)]
    cmd = [sys.executable, "-m", "hubbub", "demo", "signalr", "--data-dir", ":memory:"]
    cmd += ["--port", str(ports[0]), "--signalr-port", str(ports[1]), "--functions-port", str(ports[2])]
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "may broadcast" in line:
                ready.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert await asyncio.to_thread(ready.wait, 30), "\n".join(lines)
        base = f"http://localhost:{ports[2]}"
        assert f"  open {base}/api/index in two browser windows (or one private window);" in lines
        await _broadcast_as(base, await _login(base, "alice"))
        assert (tmp_path / "hubbub" / "functions").is_dir()  # the keys went to the data dir
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 15)
        reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0, "\n".join(lines)
    settings = next(
        line.split("upstream: ", 1)[1].split(" (", 1)[0] for line in lines if "  upstream: " in line
    )
    assert settings.endswith("settings.json") and not Path(settings).exists()  # removed at exit


async def _broadcast_as(base: str, token: str) -> None:
    client = SignalRClient(f"{base}/api", headers={"Authorization": f"Bearer {token}"})
    messages: asyncio.Queue[list[Any]] = asyncio.Queue()
    opened = asyncio.Event()

    async def on_message(args: list[Any]) -> None:
        messages.put_nowait(args)

    async def on_open() -> None:
        opened.set()

    async def on_error(_: CompletionMessage) -> None:
        pass

    client.on("newMessage", on_message)
    client.on_open(on_open)
    client.on_error(on_error)
    task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(opened.wait(), WAIT_S)
        done: asyncio.Future[CompletionMessage] = asyncio.get_running_loop().create_future()

        async def on_completion(message: CompletionMessage) -> None:
            done.set_result(message)

        await client.send("broadcast", ["hello from python"], on_invocation=on_completion)
        completion = await asyncio.wait_for(done, WAIT_S)
        assert completion.error is None, completion.error
        (message,) = await asyncio.wait_for(messages.get(), WAIT_S)
        assert message["Sender"] == "alice" and message["Text"] == "hello from python"
    finally:
        await stop_pysignalr(client, task)


def test_the_sample_imports_nothing_from_hubbub() -> None:
    files = list(SIGNALR_SAMPLE_DIR.rglob("*.py"))
    assert files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n == "hubbub" or n.startswith("hubbub.") for n in names), f"{path} imports {names}"
    for path in SIGNALR_SAMPLE_DIR.iterdir():
        if path.suffix in (".py", ".html", ".json"):
            assert "hubbub" not in path.read_text().lower().replace("hubbub func start", ""), path
