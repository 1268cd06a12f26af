"""The official SignalR JavaScript client (`@microsoft/signalr` + `@microsoft/signalr-protocol-msgpack`),
unmodified, against a real `hubbub serve` process.

The tests are Node test-runner files ``tests/interop/node/signalr*.test.mjs``; this module runs each with
``node --test`` and passes the SignalR connection string in ``HUBBUB_SIGNALR_CONNECTION_STRING``. Install the
packages with ``make node-deps`` (``npm install`` in ``tests/interop/node``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.node import NODE, NODE_DIR, missing_packages, run_node_test
from tests.support.server import free_port, run_server, wait_for_port

TEST_FILES = sorted(p.name for p in NODE_DIR.glob("signalr*.test.mjs"))
TIMEOUT_S = 240

pytestmark = [
    pytest.mark.interop,
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="`node` (Node.js >= 20) is not on PATH"),
    pytest.mark.skipif(
        missing_packages("@microsoft/signalr", "@microsoft/signalr-protocol-msgpack"),
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
    connection_string, upstream_port = signalr_server
    env = {
        "HUBBUB_SIGNALR_CONNECTION_STRING": connection_string,
        "HUBBUB_SIGNALR_UPSTREAM_PORT": str(upstream_port),
    }
    output = run_node_test(test_file, env, TIMEOUT_S)
    assert "skipped 0" in output, output
    print(output)


def test_signalr_node_files_exist() -> None:
    assert TEST_FILES, f"no signalr*.test.mjs files in {NODE_DIR}"
