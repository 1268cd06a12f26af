"""Raw WebSocket clients on the protobuf subprotocols against a real hubbub process.

No official Python client speaks protobuf, so frames are built and parsed with
the protobuf library (the message classes of :mod:`hubbub.protocols.protobuf_v1`).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
import websocket
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from hubbub.protocols.protobuf_v1 import AnyMessage, DownstreamMessage, MessageData, UpstreamMessage
from tests.support.server import DEV_KEY, Server

pytestmark = pytest.mark.interop

PROTOBUF = "protobuf.webpubsub.azure.v1"
PROTOBUF_RELIABLE = "protobuf.reliable.webpubsub.azure.v1"
JSON = "json.webpubsub.azure.v1"
ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


def connect(server: Server, hub: str, user: str, protocol: str) -> websocket.WebSocket:
    aud = f"http://localhost:{server.port}/client/hubs/{hub}"
    token = jwt.encode({"aud": aud, "exp": time.time() + 600, "sub": user, "role": ROLES}, DEV_KEY, "HS256")
    ws = websocket.WebSocket()
    ws.connect(
        f"ws://localhost:{server.port}/client/hubs/{hub}?access_token={token}", subprotocols=[protocol]
    )
    ws.settimeout(5)
    assert ws.getsubprotocol() == protocol
    return ws


def recv_pb(ws: websocket.WebSocket) -> Any:
    opcode, data = ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_BINARY
    return DownstreamMessage.FromString(data)


def recv_json(ws: websocket.WebSocket) -> dict[str, Any]:
    opcode, data = ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_TEXT
    return dict(json.loads(data))


def send_pb(ws: websocket.WebSocket, **fields: Any) -> None:
    ws.send_binary(UpstreamMessage(**fields).SerializeToString())


def join(ws: websocket.WebSocket, group: str, ack_id: int) -> None:
    send_pb(ws, join_group_message=UpstreamMessage.JoinGroupMessage(group=group, ack_id=ack_id))
    ack = recv_pb(ws).ack_message
    assert (ack.ack_id, ack.success) == (ack_id, True)


def send_to_group(ws: websocket.WebSocket, group: str, data: Any, ack_id: int) -> None:
    message = UpstreamMessage.SendToGroupMessage(group=group, data=data, ack_id=ack_id, no_echo=True)
    send_pb(ws, send_to_group_message=message)
    ack = recv_pb(ws).ack_message
    assert (ack.ack_id, ack.success) == (ack_id, True)


def connected(ws: websocket.WebSocket) -> Any:
    message = recv_pb(ws)
    assert message.system_message.WhichOneof("message") == "connected_message"
    return message.system_message.connected_message


def test_protobuf_clients_and_cross_protocol(server: Server, hub: str) -> None:
    alice = connect(server, hub, "alice", PROTOBUF)
    bob = connect(server, hub, "bob", PROTOBUF)
    jay = connect(server, hub, "jay", JSON)
    try:
        hello = connected(alice)
        assert hello.connection_id and hello.user_id == "alice" and hello.reconnection_token == ""
        assert connected(bob).user_id == "bob"
        assert recv_json(jay)["event"] == "connected"

        join(alice, "g", 1)
        join(bob, "g", 1)
        jay.send(json.dumps({"type": "joinGroup", "group": "g", "ackId": 1}))
        assert recv_json(jay) == {"type": "ack", "ackId": 1, "success": True}

        # a repeated ack id is acked as a Duplicate failure
        send_pb(alice, join_group_message=UpstreamMessage.JoinGroupMessage(group="g", ack_id=1))
        ack = recv_pb(alice).ack_message
        assert (ack.success, ack.error.name) == (False, "Duplicate")

        # protobuf -> protobuf and protobuf -> json
        send_to_group(alice, "g", MessageData(text_data="hé"), 2)
        send_to_group(alice, "g", MessageData(binary_data=b"\x00\xff"), 3)
        send_to_group(alice, "g", MessageData(json_data='{"n":[1,2]}'), 4)
        got = [recv_pb(bob).data_message for _ in range(3)]
        assert [(getattr(m, "from"), m.group) for m in got] == [("group", "g")] * 3
        assert [m.data for m in got] == [
            MessageData(text_data="hé"),
            MessageData(binary_data=b"\x00\xff"),
            MessageData(json_data='{"n":[1,2]}'),
        ]
        assert not any(m.HasField("sequence_id") for m in got)
        frames = [recv_json(jay) for _ in range(3)]
        assert [(f["from"], f["group"], f["fromUserId"]) for f in frames] == [("group", "g", "alice")] * 3
        assert [(f["dataType"], f["data"]) for f in frames] == [
            ("text", "hé"),
            ("binary", "AP8="),
            ("json", {"n": [1, 2]}),
        ]

        # json -> protobuf, including a protobuf Any
        thing = AnyMessage(type_url="type.googleapis.com/demo.Thing", value=b"\x08\x01")
        any_b64 = base64.b64encode(thing.SerializeToString()).decode()
        for ack_id, (data_type, data) in enumerate([("json", {"x": 1}), ("protobuf", any_b64)], start=2):
            frame = {"type": "sendToGroup", "group": "g", "dataType": data_type, "data": data}
            jay.send(json.dumps({**frame, "noEcho": True, "ackId": ack_id}))
            assert recv_json(jay) == {"type": "ack", "ackId": ack_id, "success": True}
        for ws in (alice, bob):
            first, second = recv_pb(ws).data_message, recv_pb(ws).data_message
            assert first.data == MessageData(json_data='{"x":1}')
            assert second.data.protobuf_data.SerializeToString() == thing.SerializeToString()

        # a server message (REST) comes from "server", without a group
        service = WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub)
        service.send_to_all({"from": "rest"})
        for ws in (alice, bob):
            m = recv_pb(ws).data_message
            assert (getattr(m, "from"), m.HasField("group")) == ("server", False)
            assert json.loads(m.data.json_data) == {"from": "rest"}
        assert recv_json(jay)["from"] == "server"

        # a text frame is a protocol violation: the connection is closed with 1008
        alice.send("not protobuf")
        frame = alice.recv_frame()
        assert frame.opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame.data[:2], "big") == 1008
    finally:
        for ws in (alice, bob, jay):
            ws.close()


def test_reliable_protobuf_sequence_ids(server: Server, hub: str) -> None:
    rel = connect(server, hub, "rel", PROTOBUF_RELIABLE)
    pub = connect(server, hub, "pub", PROTOBUF)
    try:
        hello = connected(rel)
        assert hello.connection_id and hello.user_id == "rel" and hello.reconnection_token
        connected(pub)
        join(rel, "g", 1)
        for i, text in enumerate(["a", "b", "c"], start=1):
            send_to_group(pub, "g", MessageData(text_data=text), i)
        got = [recv_pb(rel).data_message for _ in range(3)]
        assert [(m.sequence_id, m.group, m.data.text_data) for m in got] == [
            (1, "g", "a"),
            (2, "g", "b"),
            (3, "g", "c"),
        ]
        send_pb(rel, sequence_ack_message=UpstreamMessage.SequenceAckMessage(sequence_id=3))
        send_to_group(pub, "g", MessageData(binary_data=b"\x01"), 4)
        m = recv_pb(rel).data_message
        assert (m.sequence_id, m.data.binary_data) == (4, b"\x01")
    finally:
        rel.close()
        pub.close()
