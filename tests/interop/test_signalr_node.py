"""The official SignalR JavaScript client (`@microsoft/signalr` + `@microsoft/signalr-protocol-msgpack`),
unmodified, against a real `hubbub serve` process.

The tests are Node test-runner files ``tests/interop/node/signalr*.test.mjs``; this module runs each with
``node --test`` and passes the SignalR connection string in ``HUBBUB_SIGNALR_CONNECTION_STRING``. Install the
packages with ``make node-deps`` (``npm install`` in ``tests/interop/node``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import free_port, run_server, wait_for_port

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE_MODULES = NODE_DIR / "node_modules"
TEST_FILES = sorted(p.name for p in NODE_DIR.glob("signalr*.test.mjs"))
NODE = shutil.which("node")
TIMEOUT_S = 240

pytestmark = [
    pytest.mark.interop,
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="`node` (Node.js >= 20) is not on PATH"),
    pytest.mark.skipif(
        not (NODE_MODULES / "@microsoft" / "signalr").is_dir()
        or not (NODE_MODULES / "@microsoft" / "signalr-protocol-msgpack").is_dir(),
        reason=f"npm packages missing: run `make node-deps` (npm install in {NODE_DIR})",
    ),
    pytest.mark.timeout(TIMEOUT_S + 30),
]


#: hubs whose events go upstream (to the server signalr_upstream.test.mjs runs on UPSTREAM_PORT)
UPSTREAM_HUBS = "upchat,upchat2"


@pytest.fixture(scope="module")
def signalr_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    port, upstream_port = free_port(), free_port()
    settings = tmp_path_factory.mktemp("signalr") / "settings.json"
    template = {
        "UrlTemplate": f"http://127.0.0.1:{upstream_port}/runtime/webhooks/signalr?code=k",
        "HubPattern": UPSTREAM_HUBS,
        "CategoryPattern": "*",
        "EventPattern": "*",
    }
    settings.write_text(json.dumps({"UpstreamSettings": {"Templates": [template]}}), encoding="utf-8")
    with run_server("--signalr-port", str(port), "--signalr-settings", str(settings)) as server:
        wait_for_port(port)
        cs = f"Endpoint=http://localhost;Port={port};AccessKey={server.access_key};Version=1.0;"
        yield cs, upstream_port


@pytest.mark.parametrize("test_file", TEST_FILES)
def test_signalr_node_file(signalr_server: tuple[str, int], test_file: str) -> None:
    assert NODE is not None
    connection_string, upstream_port = signalr_server
    env = {
        **os.environ,
        "HUBBUB_SIGNALR_CONNECTION_STRING": connection_string,
        "HUBBUB_SIGNALR_UPSTREAM_PORT": str(upstream_port),
        "NO_COLOR": "1",
        "FORCE_COLOR": "0",
    }
    env.pop("NODE_OPTIONS", None)
    cmd = [NODE, "--test", "--test-reporter=spec", test_file]
    try:
        proc = subprocess.run(
            cmd,
            cwd=NODE_DIR,
            env=env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = "".join(x if isinstance(x, str) else (x or b"").decode() for x in (exc.stdout, exc.stderr))
        pytest.fail(f"`{' '.join(cmd)}` did not finish within {TIMEOUT_S}s\n{out}")
    output = proc.stdout + ("\n--- stderr ---\n" + proc.stderr if proc.stderr.strip() else "")
    if proc.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` exited with {proc.returncode}:\n{output}", pytrace=False)
    assert "# skipped 0" in proc.stdout or "skipped 0" in proc.stdout, output
    print(output)


def test_signalr_node_files_exist() -> None:
    assert TEST_FILES, f"no signalr*.test.mjs files in {NODE_DIR}"
