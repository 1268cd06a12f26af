"""The official npm SDKs (`@azure/web-pubsub`, `@azure/web-pubsub-client`), unmodified, against a
real `hubbub serve` process.

The tests themselves are Node test-runner files in ``tests/interop/node/*.test.mjs``; this module
runs each file with ``node --test`` (one pytest case per file, for clearer failures) and passes the
server's connection string in ``HUBBUB_CONNECTION_STRING``. Install the packages with
``make node-deps``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.server import Server

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE_MODULES = NODE_DIR / "node_modules"
# the SignalR client files have their own driver (test_signalr_node.py)
TEST_FILES = sorted(p.name for p in NODE_DIR.glob("*.test.mjs") if not p.name.startswith("signalr"))
NODE = shutil.which("node")
TIMEOUT_S = 180  # per file; each Node test has its own 30 s limit

pytestmark = [
    pytest.mark.interop,
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="`node` (Node.js >= 20) is not on PATH"),
    pytest.mark.skipif(
        not (NODE_MODULES / "@azure" / "web-pubsub").is_dir()
        or not (NODE_MODULES / "@azure" / "web-pubsub-client").is_dir(),
        reason=f"npm packages missing: run `make node-deps` (npm install in {NODE_DIR})",
    ),
    pytest.mark.timeout(TIMEOUT_S + 30),
]


def _node_major() -> int:
    assert NODE is not None
    out = subprocess.run([NODE, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    return int(out.strip().lstrip("v").split(".")[0])


@pytest.mark.parametrize("test_file", TEST_FILES)
def test_node_sdk_file(server: Server, test_file: str) -> None:
    assert NODE is not None
    if _node_major() < 20:
        pytest.skip("Node.js >= 20 is required for the built-in test runner features used here")
    env = {
        **os.environ,
        "HUBBUB_CONNECTION_STRING": server.connection_string,
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
        out = _text(exc.stdout) + _text(exc.stderr)
        pytest.fail(f"`{' '.join(cmd)}` did not finish within {TIMEOUT_S}s (leaked client?)\n{out}")
    output = proc.stdout + ("\n--- stderr ---\n" + proc.stderr if proc.stderr.strip() else "")
    if proc.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` exited with {proc.returncode}:\n{output}", pytrace=False)
    print(output)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def test_node_test_files_exist() -> None:
    assert TEST_FILES, f"no *.test.mjs files in {NODE_DIR}"
