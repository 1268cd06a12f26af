"""Issue #4 acceptance: reliable clients lose nothing across many abrupt TCP drops.

A group stream of 10,000 messages flows through the REST API while a proxy between the client and
hubbub resets the client's TCP connection at random moments (at least 100 times). The official
clients, on their default reliable protocol, must resume the same connection every time and receive
every message exactly once, in order.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from azure.messaging.webpubsubclient import WebPubSubClient, WebPubSubClientCredential
from azure.messaging.webpubsubclient.models import CallbackType
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.support.proxy import CuttableProxy, cuttable_proxy
from tests.support.server import Server

pytestmark = [
    pytest.mark.interop,
    # the Python client's sequence-ack thread dies with ConnectionResetError when its socket is reset
    # under it (it starts a new one on every resume); that is the SDK's thread, not ours
    pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
]

MESSAGES = 10_000
DROPS = 100
NODE_DIR = Path(__file__).parent / "node"


def stream_with_drops(service: WebPubSubServiceClient, proxy: CuttableProxy, seed: int) -> int:
    """Publish MESSAGES group messages; cut the client's TCP connection DROPS times meanwhile."""
    rng = random.Random(seed)
    cut_at = sorted(rng.sample(range(50, MESSAGES - 50), DROPS))
    drops = 0
    for i in range(MESSAGES):
        service.send_to_group("g", f"m{i}", content_type="text/plain")
        if drops < DROPS and i == cut_at[drops]:
            deadline = time.monotonic() + 30
            # cut once the client is back and settled (50 ms: well past the handshake on loopback)
            while proxy.cut(min_age=0.05) == 0:
                assert time.monotonic() < deadline, f"client did not come back after drop {drops}"
                time.sleep(0.01)
            drops += 1
    return drops


def proxied_url(service: WebPubSubServiceClient, server: Server, proxy: CuttableProxy) -> str:
    url = str(service.get_client_access_token(user_id="r", groups=["g"])["url"])
    return url.replace(f":{server.port}/", f":{proxy.port}/")


def test_python_client_exactly_once_in_order(server: Server, hub: str) -> None:
    service = WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub)
    with cuttable_proxy(server.port) as proxy:
        client = WebPubSubClient(
            credential=WebPubSubClientCredential(lambda: proxied_url(service, server, proxy)),
            reconnect_retry_total=0,
        )
        received: queue.Queue[Any] = queue.Queue()
        connected: list[str] = []
        # the SDK runs every callback on a new thread, so the app may see them in any order: the order
        # under test is the stream's, i.e. the sequence ids the service stamped
        client.subscribe(CallbackType.GROUP_MESSAGE, lambda e: received.put((e.sequence_id, e.data)))
        client.subscribe(CallbackType.CONNECTED, lambda e: connected.append(e.connection_id))
        client.open()
        try:
            drops = stream_with_drops(service, proxy, seed=os.getpid())
            got: list[tuple[int, str]] = []
            deadline = time.monotonic() + 60
            while len(got) < MESSAGES and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    got.append(received.get(timeout=0.5))
            assert drops == DROPS
            expected = [f"m{i}" for i in range(MESSAGES)]
            data = [d for _, d in got]
            missing = sorted(set(expected) - set(data), key=lambda m: int(m[1:]))
            assert not missing, f"lost {len(missing)}: {missing[:10]}"
            assert len(data) == len(set(data)) == MESSAGES, f"duplicates among {len(data)} received"
            # in order: the i-th message of the stream carries sequence id i + 1, exactly once
            assert sorted(got) == [(i + 1, f"m{i}") for i in range(MESSAGES)]
            with contextlib.suppress(queue.Empty):
                pytest.fail(f"unexpected extra message {received.get(timeout=0.5)!r}")
            assert len(connected) == 1  # always resumed, never a new connection
            assert service.connection_exists(connected[0])
        finally:
            client.close()


@pytest.mark.node
def test_js_client_exactly_once_in_order(server: Server, hub: str) -> None:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir():
        pytest.skip("node or tests/interop/node/node_modules missing (run `make node-deps`)")
    service = WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub)
    with cuttable_proxy(server.port) as proxy:
        token_url = proxied_url(service, server, proxy)
        proc = subprocess.Popen(
            ["node", str(NODE_DIR / "reliable_drops.mjs")],
            env={**os.environ, "CLIENT_URL": token_url, "EXPECTED": str(MESSAGES)},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "READY"
            result_box: list[str] = []
            reader = threading.Thread(target=lambda: result_box.append(proc.stdout.read()))  # type: ignore[union-attr]
            reader.start()
            drops = stream_with_drops(service, proxy, seed=os.getpid() + 1)
            reader.join(120)
            assert proc.wait(30) == 0, result_box
            result = json.loads(result_box[0].strip().splitlines()[-1])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    assert drops == DROPS
    assert result["count"] == MESSAGES and result["inOrder"] is True and result["duplicates"] == 0
    assert result["connections"] == 1, result  # resumed every time
