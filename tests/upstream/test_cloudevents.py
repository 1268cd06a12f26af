from __future__ import annotations

import hashlib
import hmac

import pytest

from hubbub.protocols.events import DataType, Payload
from hubbub.upstream.cloudevents import (
    ConnectResult,
    UpstreamError,
    check_connection_state,
    event_headers,
    parse_connect_response,
    reply_payload,
    signature,
    user_event_body,
)


def test_signature_per_key() -> None:
    expected = [hmac.new(k.encode(), b"conn1", hashlib.sha256).hexdigest() for k in ("k1", "k2")]
    assert signature(["k1", "k2"], "conn1") == f"sha256={expected[0]},sha256={expected[1]}"


def test_headers() -> None:
    h = event_headers(
        kind="sys",
        event="connect",
        hub="chat",
        connection_id="c1",
        user_id=None,
        origin="localhost",
        keys=["k"],
        event_id="id",
        time="2026-01-01T00:00:00Z",
    )
    assert h["ce-type"] == "azure.webpubsub.sys.connect"
    assert h["ce-awpsversion"] == "1.0" and h["ce-specversion"] == "1.0"
    assert h["ce-source"] == "/hubs/chat/client/c1"
    assert h["WebHook-Request-Origin"] == "localhost"
    assert "ce-userId" not in h and "ce-connectionState" not in h
    h = event_headers(
        kind="user",
        event="message",
        hub="chat",
        connection_id="c1",
        user_id="u",
        origin="o",
        keys=["k"],
        event_id="i",
        time="t",
        subprotocol="json.webpubsub.azure.v1",
        connection_state="s",
        content_type="text/plain; charset=utf-8",
    )
    assert h["ce-type"] == "azure.webpubsub.user.message"
    assert (h["ce-userId"], h["ce-subprotocol"], h["ce-connectionState"]) == (
        "u",
        "json.webpubsub.azure.v1",
        "s",
    )


@pytest.mark.parametrize(
    ("data_type", "ct"),
    [
        (DataType.TEXT, "text/plain; charset=utf-8"),
        (DataType.JSON, "application/json; charset=utf-8"),
        (DataType.BINARY, "application/octet-stream"),
    ],
)
def test_user_event_body(data_type: DataType, ct: str) -> None:
    assert user_event_body(Payload(data_type, b"x")) == (ct, b"x")


def test_connect_responses() -> None:
    assert parse_connect_response(204, None, b"") == ConnectResult()
    body = b'{"userId":"u","groups":["g"],"roles":["r"],"subprotocol":"json.webpubsub.azure.v1"}'
    assert parse_connect_response(200, "application/json", body) == ConnectResult(
        "u", ("g",), ("r",), "json.webpubsub.azure.v1"
    )
    for status in (400, 401, 403):
        with pytest.raises(UpstreamError) as info:
            parse_connect_response(status, "text/plain", b"nope")
        assert info.value.status == status and "nope" in info.value.message
    for status, body in (
        (500, b""),
        (302, b""),
        (200, b"garbage"),
        (200, b"[1]"),
        (200, b'{"groups":"g"}'),
        (200, b'{"userId":5}'),
        (200, b'{"subprotocol":""}'),
    ):
        with pytest.raises(UpstreamError) as info:
            parse_connect_response(status, "application/json", body)
        assert info.value.status == 500


def test_reply_payload_mapping() -> None:
    assert reply_payload(204, "text/plain", b"x") is None
    assert reply_payload(200, "text/plain", b"") is None
    assert reply_payload(200, "text/plain; charset=utf-8", b"hi") == Payload(DataType.TEXT, b"hi")
    assert reply_payload(200, "application/json", b'{"a":1}') == Payload(DataType.JSON, b'{"a":1}')
    assert reply_payload(200, "application/octet-stream", b"\x00") == Payload(DataType.BINARY, b"\x00")
    with pytest.raises(UpstreamError):
        reply_payload(200, "application/json", b"{")
    with pytest.raises(UpstreamError):
        reply_payload(200, "text/plain", b"\xff")


def test_connection_state_cap() -> None:
    assert check_connection_state("x" * 8192) == "x" * 8192
    with pytest.raises(UpstreamError):
        check_connection_state("x" * 8193)
