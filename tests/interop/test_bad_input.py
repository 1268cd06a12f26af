"""Bad input at the client endpoint and the REST API, answered as Azure answers it."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import jwt
import orjson
import pytest
import requests
import websocket
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.server import DEV_KEY, Server

pytestmark = pytest.mark.interop
JSON_V1 = "json.webpubsub.azure.v1"


def client_url(server: Server, hub: str, **claims: object) -> str:
    body = {"aud": f"http://localhost:{server.port}/client/hubs/{hub}", "exp": time.time() + 600, **claims}
    token = jwt.encode(body, DEV_KEY, algorithm="HS256")
    return f"ws://localhost:{server.port}/client/hubs/{hub}?access_token={token}"


def connect(url: str, protocol: str | None = JSON_V1) -> websocket.WebSocket:
    ws = websocket.WebSocket()
    ws.connect(url, subprotocols=[protocol] if protocol else None, timeout=5)
    return ws


def recv_json(ws: websocket.WebSocket) -> dict[str, object]:
    return dict(json.loads(ws.recv()))


def close_code(ws: websocket.WebSocket) -> int:
    """Read until the server's close frame; return its code (the socket is then shut)."""
    try:
        while True:
            frame = ws.recv_frame()
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(frame.data[:2], "big")
    finally:
        ws.shutdown()


@pytest.fixture
def live(server: Server, hub: str) -> Iterator[websocket.WebSocket]:
    """A bystander connection that must survive every bad input of a test."""
    ws = connect(client_url(server, hub, role=["webpubsub.joinLeaveGroup"]))
    assert recv_json(ws)["event"] == "connected"
    yield ws
    ws.send(json.dumps({"type": "ping"}))
    assert recv_json(ws) == {"type": "pong"}
    ws.close()


def expect_http_status(url: str, status: int, **kw: object) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        connect(url, **kw)  # type: ignore[arg-type]
    assert info.value.status_code == status


class TestHandshake:
    def test_bad_tokens_are_401(self, server: Server, hub: str, live: websocket.WebSocket) -> None:
        base = f"ws://localhost:{server.port}/client/hubs/{hub}"
        aud = f"http://localhost:{server.port}/client/hubs/{hub}"
        expired = jwt.encode({"aud": aud, "exp": time.time() - 3600}, DEV_KEY, algorithm="HS256")
        wrong_aud = jwt.encode({"aud": aud + "x", "exp": time.time() + 60}, DEV_KEY, algorithm="HS256")
        wrong_key = jwt.encode({"aud": aud, "exp": time.time() + 60}, "another key" * 4, algorithm="HS256")
        header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        claims = base64.urlsafe_b64encode(orjson.dumps({"aud": aud, "exp": time.time() + 60})).rstrip(b"=")
        alg_none = f"{header}.{claims.decode()}."
        for token in (expired, wrong_aud, wrong_key, alg_none, "garbage"):
            expect_http_status(f"{base}?access_token={token}", 401)
        expect_http_status(base, 401)

    def test_token_in_authorization_header(self, server: Server, hub: str) -> None:
        url = client_url(server, hub, sub="hdr")
        base, token = url.split("?access_token=")
        ws = websocket.WebSocket()
        ws.connect(base, subprotocols=[JSON_V1], header=[f"Authorization: Bearer {token}"], timeout=5)
        assert recv_json(ws)["userId"] == "hdr"
        ws.close()

    def test_hub_in_query(self, server: Server, hub: str) -> None:
        url = client_url(server, hub).replace(f"/client/hubs/{hub}?", f"/client/?hub={hub}&")
        ws = connect(url)
        assert recv_json(ws)["event"] == "connected"
        ws.close()

    def test_invalid_hub_is_400(self, server: Server) -> None:
        expect_http_status(f"ws://localhost:{server.port}/client/hubs/1bad", 400)

    def test_subprotocol_echoed(self, server: Server, hub: str) -> None:
        ws = connect(client_url(server, hub), protocol="my.custom")
        assert ws.getsubprotocol() == "my.custom"
        ws.close()


class TestFrames:
    def test_oversized_frame_closes_1009(self, server: Server, hub: str, live: websocket.WebSocket) -> None:
        ws = connect(client_url(server, hub))
        recv_json(ws)
        ws.send(json.dumps({"type": "event", "event": "e", "dataType": "text", "data": "x" * (1024 * 1024)}))
        assert close_code(ws) == 1009

    @pytest.mark.parametrize("frame", ["not json", "[]", '{"type":"joinGroup"}', '{"type":"sendToGroup"}'])
    def test_malformed_closes_1008(
        self, server: Server, hub: str, live: websocket.WebSocket, frame: str
    ) -> None:
        ws = connect(client_url(server, hub))
        recv_json(ws)
        ws.send(frame)
        assert close_code(ws) == 1008

    def test_unknown_type_with_ack_id(self, server: Server, hub: str) -> None:
        ws = connect(client_url(server, hub))
        recv_json(ws)
        ws.send(json.dumps({"type": "somethingNew", "ackId": 9}))
        ack = recv_json(ws)
        assert ack["ackId"] == 9 and ack["success"] is False
        ws.send(json.dumps({"type": "somethingNew"}))  # ignored, connection stays
        ws.send(json.dumps({"type": "ping"}))
        assert recv_json(ws) == {"type": "pong"}
        ws.close()

    def test_duplicate_ack_id(self, server: Server, hub: str) -> None:
        ws = connect(client_url(server, hub, role=["webpubsub.joinLeaveGroup"]))
        recv_json(ws)
        ws.send(json.dumps({"type": "joinGroup", "group": "g", "ackId": 1}))
        assert recv_json(ws) == {"type": "ack", "ackId": 1, "success": True}
        ws.send(json.dumps({"type": "joinGroup", "group": "g", "ackId": 1}))
        ack = recv_json(ws)
        assert ack["success"] is False and ack["error"]["name"] == "Duplicate"  # type: ignore[index]
        ws.close()

    def test_event_without_handler(self, server: Server, hub: str) -> None:
        ws = connect(client_url(server, hub))
        recv_json(ws)
        ws.send(json.dumps({"type": "event", "event": "e", "dataType": "text", "data": "x", "ackId": 2}))
        ack = recv_json(ws)
        assert ack["success"] is False and ack["error"]["name"] == "InternalServerError"  # type: ignore[index]
        ws.send(
            json.dumps(
                {
                    "type": "invoke",
                    "invocationId": "i1",
                    "target": "event",
                    "event": "e",
                    "dataType": "text",
                    "data": "x",
                }
            )
        )
        response = recv_json(ws)
        assert response["type"] == "invokeResponse" and response["invocationId"] == "i1"
        assert response["success"] is False
        ws.close()

    def test_simple_client_frame_without_handler_closes(self, server: Server, hub: str) -> None:
        ws = connect(client_url(server, hub), protocol=None)
        ws.send("hello")
        assert close_code(ws) == 1011

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        st.one_of(
            st.binary(max_size=200),
            st.text(max_size=200),
            st.dictionaries(
                st.sampled_from(["type", "group", "ackId", "data", "dataType", "event"]),
                st.one_of(
                    st.none(),
                    st.integers(),
                    st.text(max_size=20),
                    st.sampled_from(["joinGroup", "sendToGroup", "event", "ping", "text", "json", "binary"]),
                ),
                max_size=6,
            ).map(json.dumps),
        )
    )
    def test_arbitrary_frames(self, server: Server, live: websocket.WebSocket, data: bytes | str) -> None:
        hub = "fuzz"
        ws = connect(client_url(server, hub, role=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]))
        recv_json(ws)
        if isinstance(data, bytes):
            ws.send_binary(data)
        else:
            ws.send(data)
        ws.send(json.dumps({"type": "ping"}))
        # either the connection answers the ping (after any acks) or it was closed with a policy code
        while True:
            frame = ws.recv_frame()
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                assert int.from_bytes(frame.data[:2], "big") in (1008, 1009)
                assert b"Traceback" not in frame.data
                ws.shutdown()
                break
            if frame.opcode == websocket.ABNF.OPCODE_TEXT and json.loads(frame.data) == {"type": "pong"}:
                ws.close()
                break


class TestRest:
    def test_bad_filter_400_with_position(self, server: Server, hub: str) -> None:
        service = WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub)
        from azure.core.exceptions import HttpResponseError

        with pytest.raises(HttpResponseError) as info:
            service.send_to_all("x", content_type="text/plain", filter="userId eq 'a' and")
        assert info.value.status_code == 400
        assert "position" in str(info.value.message)

    def test_unauthenticated_and_bad_content_type(self, server: Server, hub: str) -> None:
        url = f"http://localhost:{server.port}/api/hubs/{hub}/:send?api-version=2024-12-01"
        r = requests.post(url, data=b"x", headers={"Content-Type": "text/plain"}, timeout=5)
        assert r.status_code == 401 and r.headers["x-ms-error-code"]
        token = jwt.encode({"aud": url, "exp": time.time() + 60}, DEV_KEY, algorithm="HS256")
        auth = {"Authorization": f"Bearer {token}"}
        r = requests.post(url, data=b"x", headers={**auth, "Content-Type": "image/png"}, timeout=5)
        assert r.status_code == 400 and r.json()["code"]
        r = requests.post(url, data=b"{", headers={**auth, "Content-Type": "application/json"}, timeout=5)
        assert r.status_code == 400
        r = requests.post(
            url, data=b"x" * (1024 * 1024 + 1), headers={**auth, "Content-Type": "text/plain"}, timeout=5
        )
        assert r.status_code == 413

    def test_invalid_names(self, server: Server) -> None:
        service = WebPubSubServiceClient.from_connection_string(server.connection_string, hub="1bad")
        from azure.core.exceptions import HttpResponseError

        with pytest.raises(HttpResponseError) as info:
            service.send_to_all("x", content_type="text/plain")
        assert info.value.status_code == 400

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        path=st.text(alphabet="abcgrousnetcp:/%?&=._-", max_size=60),
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]),
        body=st.binary(max_size=100),
    )
    def test_arbitrary_requests(self, server: Server, path: str, method: str, body: bytes) -> None:
        url = f"http://localhost:{server.port}/api/hubs/h/{path}"
        token = jwt.encode({"aud": url, "exp": time.time() + 60}, DEV_KEY, algorithm="HS256")
        r = requests.request(
            method,
            url,
            data=body,
            timeout=5,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert r.status_code < 500
        assert b"Traceback" not in r.content
