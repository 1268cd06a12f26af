"""The official npm SDKs (`@azure/web-pubsub`, `@azure/web-pubsub-client`), unmodified, against a
real `hubbub serve` process.

The tests themselves are Node test-runner files in ``tests/interop/node/*.test.mjs``; this module
runs each file with ``node --test`` (one pytest case per file, for clearer failures) and passes the
server's connection string in ``HUBBUB_CONNECTION_STRING``. Install the packages with
``make node-deps``.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.support.node import NODE, NODE_DIR, missing_packages, run_node_test
from tests.support.server import Server

# the SignalR client files have their own driver (test_signalr_node.py)
TEST_FILES = sorted(p.name for p in NODE_DIR.glob("*.test.mjs") if not p.name.startswith("signalr"))
TIMEOUT_S = 180  # per file; each Node test has its own 30 s limit

pytestmark = [
    pytest.mark.interop,
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="`node` (Node.js >= 20) is not on PATH"),
    pytest.mark.skipif(
        missing_packages("@azure/web-pubsub", "@azure/web-pubsub-client"),
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
    if _node_major() < 20:
        pytest.skip("Node.js >= 20 is required for the built-in test runner features used here")
    print(run_node_test(test_file, {"HUBBUB_CONNECTION_STRING": server.connection_string}, TIMEOUT_S))


def test_node_test_files_exist() -> None:
    assert TEST_FILES, f"no *.test.mjs files in {NODE_DIR}"
