"""The official Python client on its default protocol (json.reliable.webpubsub.azure.v1)."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import Any

import pytest
from azure.messaging.webpubsubclient import WebPubSubClient, WebPubSubClientCredential
from azure.messaging.webpubsubclient.models import CallbackType, WebPubSubDataType
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.support.proxy import cuttable_proxy
from tests.support.server import Server

pytestmark = [
    pytest.mark.interop,
    # the Python client's sequence-ack thread dies with ConnectionResetError when its socket goes away
    # under it (it starts a new one on every resume); that is the SDK's thread, not ours
    pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
]


def test_recovers_same_connection_without_loss(server: Server, hub: str) -> None:
    service = WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub)
    with cuttable_proxy(server.port) as proxy:

        def url() -> str:
            token = service.get_client_access_token(user_id="r", groups=["g"])["url"]
            return str(token).replace(f":{server.port}/", f":{proxy.port}/")

        client = WebPubSubClient(credential=WebPubSubClientCredential(url), reconnect_retry_total=0)
        received: queue.Queue[Any] = queue.Queue()
        connected: list[str] = []
        client.subscribe(CallbackType.GROUP_MESSAGE, received.put)
        client.subscribe(CallbackType.CONNECTED, lambda e: connected.append(e.connection_id))
        client.open()
        try:
            stop = threading.Event()
            sent: list[str] = []

            def publish() -> None:
                i = 0
                while not stop.is_set() and i < 300:
                    service.send_to_group("g", f"m{i}", content_type="text/plain")
                    sent.append(f"m{i}")
                    i += 1
                    time.sleep(0.005)

            publisher = threading.Thread(target=publish)
            publisher.start()
            for _ in range(3):
                time.sleep(0.3)
                deadline = time.monotonic() + 10
                while proxy.cut(min_age=0.05) == 0:  # wait until the client has recovered, then cut again
                    assert time.monotonic() < deadline, "the client did not come back"
                    time.sleep(0.05)
            publisher.join(30)
            got: list[tuple[int, str]] = []
            deadline = time.monotonic() + 20
            while len(got) < len(sent) and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    event = received.get(timeout=0.5)
                    got.append((event.sequence_id, event.data))
            # every message exactly once, in stream order (the SDK runs callbacks on separate threads, so
            # the order under test is the sequence ids the service stamped)
            assert sorted(got) == [(i + 1, m) for i, m in enumerate(sent)]
            assert len(connected) == 1  # recovery keeps the connection (no second `connected` callback)
            assert service.connection_exists(connected[0])
        finally:
            client.close()


def test_unknown_session_gets_1008_and_client_reconnects_fresh(server: Server, hub: str) -> None:
    service = WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub)
    client = WebPubSubClient(
        credential=WebPubSubClientCredential(lambda: service.get_client_access_token()["url"]),
        reconnect_retry_total=0,
    )
    client.open()
    try:
        client.send_event  # noqa: B018 - the client is up
        assert client.is_connected()
    finally:
        client.close()
    import websocket  # websocket-client, what the SDK uses underneath

    ws = websocket.WebSocket()
    url = f"ws://localhost:{server.port}/client/hubs/{hub}?awps_connection_id=nope&awps_reconnection_token=x"
    ws.connect(url, subprotocols=["json.reliable.webpubsub.azure.v1"])
    opcode, data = ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(data[:2], "big") == 1008
    ws.close()


def test_sequence_ids_and_send_to_group(server: Server, hub: str) -> None:
    service = WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub)
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    client = WebPubSubClient(
        credential=WebPubSubClientCredential(lambda: service.get_client_access_token(roles=roles)["url"])
    )
    got: queue.Queue[Any] = queue.Queue()
    client.subscribe(CallbackType.GROUP_MESSAGE, got.put)
    client.open()
    try:
        client.join_group("g")
        for i in range(5):
            client.send_to_group("g", f"m{i}", WebPubSubDataType.TEXT)
        messages = [got.get(timeout=5) for _ in range(5)]
        assert sorted((m.sequence_id, m.data) for m in messages) == [(i + 1, f"m{i}") for i in range(5)]
    finally:
        client.close()
