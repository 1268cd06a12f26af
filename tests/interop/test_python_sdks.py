"""The official Python SDKs, unmodified, against a real `hubbub serve` process."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.messaging.webpubsubclient import WebPubSubClient, WebPubSubClientCredential
from azure.messaging.webpubsubclient.models import (
    CallbackType,
    SendMessageError,
    WebPubSubDataType,
    WebPubSubProtocolType,
)
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.support.server import Server

pytestmark = pytest.mark.interop

ALL_ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met within timeout")


class Recorder:
    """Collects every callback of a WebPubSubClient."""

    def __init__(self, client: WebPubSubClient) -> None:
        self.group: queue.Queue[Any] = queue.Queue()
        self.server: queue.Queue[Any] = queue.Queue()
        self.disconnected: queue.Queue[Any] = queue.Queue()
        self.connected = threading.Event()
        self.connection_id: str | None = None
        client.subscribe(CallbackType.GROUP_MESSAGE, self.group.put)
        client.subscribe(CallbackType.SERVER_MESSAGE, self.server.put)
        client.subscribe(CallbackType.DISCONNECTED, self.disconnected.put)
        client.subscribe(CallbackType.CONNECTED, self._on_connected)

    def _on_connected(self, e: Any) -> None:
        self.connection_id = e.connection_id
        self.connected.set()


@pytest.fixture
def service(server: Server, hub: str) -> WebPubSubServiceClient:
    return WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub)


@pytest.fixture
def make_client(service: WebPubSubServiceClient) -> Iterator[Callable[..., tuple[WebPubSubClient, Recorder]]]:
    clients: list[WebPubSubClient] = []

    def make(
        user_id: str | None = None,
        roles: list[str] | None = None,
        groups: list[str] | None = None,
        protocol: WebPubSubProtocolType = WebPubSubProtocolType.JSON,
    ) -> tuple[WebPubSubClient, Recorder]:
        def url() -> str:
            token = service.get_client_access_token(user_id=user_id, roles=roles, groups=groups)
            return str(token["url"])

        client = WebPubSubClient(
            credential=WebPubSubClientCredential(url),
            protocol_type=protocol,
            reconnect_retry_total=0,
            message_retry_total=0,
            ack_timeout=5,
            start_timeout=5,
        )
        recorder = Recorder(client)
        client.open()
        assert recorder.connected.wait(5)
        clients.append(client)
        return client, recorder

    yield make
    for c in clients:
        c.close()


def test_connected_message_carries_ids(make_client: Any) -> None:
    _, rec = make_client(user_id="alice")
    assert rec.connection_id


def test_send_to_all_text_json_binary(service: WebPubSubServiceClient, make_client: Any) -> None:
    _, rec = make_client(user_id="u1")
    service.send_to_all("hello", content_type="text/plain")
    service.send_to_all({"a": 1})
    service.send_to_all(b"\x00\x01", content_type="application/octet-stream")
    got = [rec.server.get(timeout=5) for _ in range(3)]
    # the SDK runs each callback on its own thread: compare without order
    by_type = {m.data_type: m.data for m in got}
    assert by_type[WebPubSubDataType.TEXT] == "hello"
    assert by_type[WebPubSubDataType.JSON] == {"a": 1}
    assert bytes(by_type[WebPubSubDataType.BINARY]) == b"\x00\x01"


def test_client_group_roundtrip_and_no_echo(make_client: Any) -> None:
    a, rec_a = make_client(user_id="a", roles=ALL_ROLES)
    b, rec_b = make_client(user_id="b", roles=ALL_ROLES)
    a.join_group("room")
    b.join_group("room")
    a.send_to_group("room", "hi", WebPubSubDataType.TEXT)
    msg = rec_b.group.get(timeout=5)
    assert (msg.group, msg.from_user_id, msg.data) == ("room", "a", "hi")
    assert rec_a.group.get(timeout=5).data == "hi"  # echo by default
    a.send_to_group("room", {"x": [1, 2]}, WebPubSubDataType.JSON, no_echo=True)
    assert rec_b.group.get(timeout=5).data == {"x": [1, 2]}
    with pytest.raises(queue.Empty):
        rec_a.group.get(timeout=0.5)


def test_permissions_enforced(make_client: Any) -> None:
    client, _ = make_client(user_id="nobody")
    with pytest.raises(SendMessageError) as info:
        client.join_group("g1")
    assert info.value.error_detail.name == "Forbidden"
    with pytest.raises(SendMessageError) as info:
        client.send_to_group("g1", "x", WebPubSubDataType.TEXT)
    assert info.value.error_detail.name == "Forbidden"


def test_scoped_roles(make_client: Any) -> None:
    client, _ = make_client(roles=["webpubsub.joinLeaveGroup.allowed", "webpubsub.sendToGroups.chat-*"])
    client.join_group("allowed")
    with pytest.raises(SendMessageError):
        client.join_group("other")
    client.send_to_group("chat-1", "ok", WebPubSubDataType.TEXT)
    with pytest.raises(SendMessageError):
        client.send_to_group("chat.1", "no", WebPubSubDataType.TEXT)


def test_group_user_connection_operations(service: WebPubSubServiceClient, make_client: Any) -> None:
    _, rec = make_client(user_id="u1")
    cid = rec.connection_id
    assert service.connection_exists(cid)
    assert not service.connection_exists("nope")
    assert service.user_exists("u1")
    assert not service.user_exists("u2")
    assert not service.group_exists("g")
    service.add_connection_to_group("g", cid)
    assert service.group_exists("g")
    service.send_to_group("g", "to group", content_type="text/plain")
    msg = rec.group.get(timeout=5)
    assert (msg.group, msg.data, msg.from_user_id) == ("g", "to group", None)
    members = list(service.list_connections(group="g"))
    assert [(m.connection_id, m.user_id) for m in members] == [(cid, "u1")]
    service.remove_connection_from_group("g", cid)
    assert not service.group_exists("g")
    service.add_user_to_group("g2", "u1")
    assert service.group_exists("g2")
    service.remove_user_from_group("g2", "u1")
    assert not service.group_exists("g2")
    service.add_user_to_group("g3", "u1")
    service.remove_user_from_all_groups("u1")
    assert not service.group_exists("g3")
    service.add_connection_to_group("g4", cid)
    service.remove_connection_from_all_groups(cid)
    assert not service.group_exists("g4")
    service.send_to_user("u1", "to user", content_type="text/plain")
    assert rec.server.get(timeout=5).data == "to user"
    service.send_to_connection(cid, "to conn", content_type="text/plain")
    assert rec.server.get(timeout=5).data == "to conn"


def test_add_unknown_connection_to_group_is_404(service: WebPubSubServiceClient) -> None:
    with pytest.raises(ResourceNotFoundError):
        service.add_connection_to_group("g", "no-such-connection")


def test_filters_and_excluded(service: WebPubSubServiceClient, make_client: Any) -> None:
    _, r1 = make_client(user_id="u1")
    _, r2 = make_client(user_id="u2")
    service.send_to_all("only u2", content_type="text/plain", filter="userId eq 'u2'")
    assert r2.server.get(timeout=5).data == "only u2"
    service.send_to_all("not u2", content_type="text/plain", excluded=[r2.connection_id])
    assert r1.server.get(timeout=5).data == "not u2"
    with pytest.raises(queue.Empty):
        r1.server.get(timeout=0.3)
    with pytest.raises(queue.Empty):
        r2.server.get(timeout=0.3)
    with pytest.raises(HttpResponseError) as info:
        service.send_to_all("x", content_type="text/plain", filter="userId eq")
    assert info.value.status_code == 400


def test_permission_grant_check_revoke(service: WebPubSubServiceClient, make_client: Any) -> None:
    client, rec = make_client(user_id="p")
    cid = rec.connection_id
    assert not service.has_permission("joinLeaveGroup", cid, target_name="g")
    service.grant_permission("joinLeaveGroup", cid, target_name="g")
    assert service.has_permission("joinLeaveGroup", cid, target_name="g")
    client.join_group("g")
    service.revoke_permission("joinLeaveGroup", cid, target_name="g")
    assert not service.has_permission("joinLeaveGroup", cid, target_name="g")
    with pytest.raises(SendMessageError):
        client.leave_group("g")


def test_close_connection_with_reason(service: WebPubSubServiceClient, make_client: Any) -> None:
    _, rec = make_client(user_id="c")
    service.close_connection(rec.connection_id, reason="bye now")
    event = rec.disconnected.get(timeout=5)
    assert event.message == "bye now"
    wait_for(lambda: not service.connection_exists(rec.connection_id))


def test_close_all_user_group(service: WebPubSubServiceClient, make_client: Any) -> None:
    _, r1 = make_client(user_id="x", groups=["g"])
    _, r2 = make_client(user_id="y")
    _, r3 = make_client(user_id="z")
    service.close_group_connections("g", reason="group")
    assert r1.disconnected.get(timeout=5).message == "group"
    service.close_user_connections("y", reason="user")
    assert r2.disconnected.get(timeout=5).message == "user"
    service.close_all_connections(reason="all")
    assert r3.disconnected.get(timeout=5).message == "all"


def test_paging(service: WebPubSubServiceClient, make_client: Any) -> None:
    ids = {make_client(user_id=f"u{i}", groups=["big"])[1].connection_id for i in range(5)}
    pages = list(service.list_connections(group="big", maxpagesize=2).by_page())
    assert [len(p) for p in pages] == [2, 2, 1]
    assert {m.connection_id for p in pages for m in p} == ids
    assert len(list(service.list_connections(group="big", top=3))) == 3


def test_send_event_without_handler_gets_the_service_error(make_client: Any) -> None:
    client, _ = make_client(user_id="e")
    with pytest.raises(SendMessageError) as info:
        client.send_event("nobody-listens", "x", WebPubSubDataType.TEXT)
    assert info.value.error_detail.name == "InternalServerError"
