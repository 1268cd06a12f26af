"""Group streams (spec §4.8) against a real `hubbub serve`: publisher replies and what readers get.

The messages are the JSON shapes of Azure's subprotocol reference and of the JS client's
stream publisher/reader (`stream`, `streamData`, `streamEnd`; `streamAck`, `streamNack`,
`streamClosed`; group messages with a `stream` object).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import jwt
import pytest
import websocket

from tests.support.server import DEV_KEY, Server

pytestmark = pytest.mark.interop

ROLES = ["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup"]


def connect(
    server: Server,
    hub: str,
    *,
    roles: list[str] | None = None,
    protocol: str = "json.webpubsub.azure.v1",
    query: str = "",
) -> tuple[websocket.WebSocket, dict[str, Any]]:
    aud = f"http://localhost:{server.port}/client/hubs/{hub}"
    claims: dict[str, Any] = {"aud": aud, "exp": time.time() + 300, "sub": "u1"}
    if roles:
        claims["role"] = roles
    token = jwt.encode(claims, DEV_KEY, algorithm="HS256")
    ws = websocket.WebSocket()
    ws.connect(
        f"ws://localhost:{server.port}/client/hubs/{hub}?access_token={token}{query}",
        subprotocols=[protocol],
        timeout=10,
    )
    connected = json.loads(ws.recv())
    assert connected["event"] == "connected"
    return ws, connected


def send(ws: websocket.WebSocket, **msg: Any) -> None:
    ws.send(json.dumps(msg))


def recv(ws: websocket.WebSocket) -> dict[str, Any]:
    while True:
        msg: dict[str, Any] = json.loads(ws.recv())
        if msg.get("type") != "ack":
            return msg


def join(ws: websocket.WebSocket, group: str, ack_id: int = 1) -> None:
    send(ws, type="joinGroup", group=group, ackId=ack_id)
    assert json.loads(ws.recv()) == {"type": "ack", "ackId": ack_id, "success": True}


def test_stream_fragments_reach_the_group_and_are_acked(server: Server, hub: str) -> None:
    reader, _ = connect(server, hub, roles=ROLES)
    publisher, _ = connect(server, hub, roles=ROLES)
    join(reader, "g")
    send(
        publisher,
        type="sendToGroup",
        group="g",
        noEcho=True,
        stream={"streamId": "s1", "idleTimeoutMs": 15000},
    )
    assert recv(publisher) == {"type": "streamAck", "streamId": "s1", "expectedSequenceId": 1}
    send(publisher, type="streamData", streamId="s1", streamSequenceId=1, dataType="text", data="chunk-1")
    assert recv(publisher) == {"type": "streamAck", "streamId": "s1", "expectedSequenceId": 2}
    send(publisher, type="streamData", streamId="s1")  # keepalive: no answer, nothing delivered
    send(publisher, type="streamData", streamId="s1", streamSequenceId=2, dataType="json", data={"n": 2})
    assert recv(publisher) == {"type": "streamAck", "streamId": "s1", "expectedSequenceId": 3}
    send(publisher, type="streamEnd", streamId="s1")
    assert recv(publisher) == {"type": "streamClosed", "streamId": "s1"}

    base = {"type": "message", "from": "group", "group": "g", "fromUserId": "u1"}
    assert recv(reader) == {
        **base,
        "dataType": "text",
        "data": "chunk-1",
        "stream": {"streamId": "s1", "streamSequenceId": 1},
    }
    assert recv(reader) == {
        **base,
        "dataType": "json",
        "data": {"n": 2},
        "stream": {"streamId": "s1", "streamSequenceId": 2},
    }
    assert recv(reader) == {
        **base,
        "dataType": "text",
        "data": "",
        "stream": {"streamId": "s1", "streamSequenceId": 3, "endOfStream": True},
    }
    # the stream is gone: more data is answered with StreamNotFound
    send(publisher, type="streamData", streamId="s1", streamSequenceId=3, dataType="text", data="late")
    closed = recv(publisher)
    assert closed["type"] == "streamClosed" and closed["error"]["name"] == "StreamNotFound"
    reader.close()
    publisher.close()


def test_stream_errors_answered_as_azure_does(server: Server, hub: str) -> None:
    publisher, _ = connect(server, hub, roles=ROLES)
    no_roles, _ = connect(server, hub)
    send(no_roles, type="sendToGroup", group="g", stream={"streamId": "x"})
    assert recv(no_roles)["error"]["name"] == "Forbidden"
    send(publisher, type="sendToGroup", group="g", stream={"streamId": "s"})
    assert recv(publisher)["type"] == "streamAck"
    send(publisher, type="sendToGroup", group="g", stream={"streamId": "s"})
    dup = recv(publisher)
    assert dup["type"] == "streamClosed" and dup["error"]["name"] == "BadRequest"
    # the refused duplicate start did not close the open stream
    send(publisher, type="streamData", streamId="s", streamSequenceId=2, dataType="text", data="gap")
    nack = recv(publisher)
    assert nack["type"] == "streamNack" and nack["name"] == "InvalidSequenceId"
    assert nack["expectedSequenceId"] == 1
    send(publisher, type="streamData", streamId="s", streamSequenceId=1, dataType="text", data="one")
    assert recv(publisher) == {"type": "streamAck", "streamId": "s", "expectedSequenceId": 2}
    send(publisher, type="streamData", streamId="s", streamSequenceId=1, dataType="text", data="one")
    assert recv(publisher) == {
        "type": "streamAck",
        "streamId": "s",
        "expectedSequenceId": 2,
    }  # resent: not again
    send(publisher, type="streamEnd", streamId="s", error={"message": "boom", "userErrorCode": "E42"})
    assert recv(publisher) == {"type": "streamClosed", "streamId": "s"}
    # a malformed stream message breaks the protocol like any other: the service closes the client
    send(publisher, type="streamData", streamSequenceId=1, data="no stream id")
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        for _ in range(5):
            publisher.recv()
    no_roles.close()


def test_readers_get_user_errors_idle_timeouts_and_cancellations(server: Server, hub: str) -> None:
    reader, _ = connect(server, hub, roles=ROLES)
    publisher, _ = connect(server, hub, roles=ROLES)
    join(reader, "g")
    send(publisher, type="sendToGroup", group="g", noEcho=True, stream={"streamId": "u"})
    send(publisher, type="streamEnd", streamId="u", error={"message": "boom", "userErrorCode": "E42"})
    end = recv(reader)["stream"]
    assert end == {
        "streamId": "u",
        "streamSequenceId": 1,
        "endOfStream": True,
        "error": {"name": "UserError", "message": "boom", "userErrorCode": "E42"},
    }

    send(
        publisher,
        type="sendToGroup",
        group="g",
        noEcho=True,
        stream={"streamId": "idle", "idleTimeoutMs": 300},
    )
    assert recv(publisher)["type"] == "streamAck"  # of "u"; its streamClosed and the ack of "idle" follow
    closed = recv(publisher)
    while closed["type"] != "streamClosed" or closed["streamId"] != "idle":
        closed = recv(publisher)
    assert closed["error"]["name"] == "IdleTimeout"
    end = recv(reader)["stream"]
    assert end["streamId"] == "idle" and end["endOfStream"] is True and end["error"]["name"] == "IdleTimeout"

    send(publisher, type="sendToGroup", group="g", noEcho=True, stream={"streamId": "c"})
    send(publisher, type="streamData", streamId="c", streamSequenceId=1, dataType="text", data="x")
    assert recv(reader)["data"] == "x"
    publisher.close()  # the publisher's session ends: its open stream is cancelled for the readers
    end = recv(reader)["stream"]
    assert end == {
        "streamId": "c",
        "streamSequenceId": 2,
        "endOfStream": True,
        "error": {"name": "Cancelled", "message": "The publisher's connection closed"},
    }
    reader.close()


def test_stream_survives_a_reliable_reconnect_without_duplicates(server: Server, hub: str) -> None:
    reliable = "json.reliable.webpubsub.azure.v1"
    reader, _ = connect(server, hub, roles=ROLES)
    publisher, hello = connect(server, hub, roles=ROLES, protocol=reliable)
    join(reader, "g")
    send(publisher, type="sendToGroup", group="g", noEcho=True, stream={"streamId": "r"})
    assert recv(publisher)["type"] == "streamAck"
    for n in (1, 2):
        send(publisher, type="streamData", streamId="r", streamSequenceId=n, dataType="text", data=f"c{n}")
        assert recv(publisher)["expectedSequenceId"] == n + 1
    publisher.sock.shutdown(socket.SHUT_RDWR)  # the network drops: no close frame
    publisher.sock.close()
    query = (
        f"&awps_connection_id={hello['connectionId']}&awps_reconnection_token={hello['reconnectionToken']}"
    )
    for _ in range(50):
        try:
            again, hello2 = connect(server, hub, roles=ROLES, protocol=reliable, query=query)
            break
        except websocket.WebSocketBadStatusException:
            time.sleep(0.1)
    assert hello2["connectionId"] == hello["connectionId"]
    # the client replays what it thinks is unacknowledged; the service acks it again, delivers once
    send(again, type="streamData", streamId="r", streamSequenceId=2, dataType="text", data="c2")
    assert recv(again) == {"type": "streamAck", "streamId": "r", "expectedSequenceId": 3}
    send(again, type="streamData", streamId="r", streamSequenceId=3, dataType="text", data="c3")
    assert recv(again) == {"type": "streamAck", "streamId": "r", "expectedSequenceId": 4}
    assert [recv(reader)["data"] for _ in range(3)] == ["c1", "c2", "c3"]
    again.close()
    reader.close()
