"""json.webpubsub.azure.v1: golden bytes in both directions, no event loop."""

from __future__ import annotations

import base64
import contextlib
import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubbub.errors import ProtocolViolation
from hubbub.protocols import CODECS, SIMPLE, negotiate
from hubbub.protocols.events import (
    Ack,
    CancelInvocation,
    Connected,
    DataMessage,
    DataType,
    Disconnected,
    Invoke,
    JoinGroup,
    LeaveGroup,
    Payload,
    Ping,
    SendToGroup,
    SequenceAck,
    StreamAck,
    StreamClosed,
    StreamData,
    StreamEnd,
    StreamInfo,
    StreamNack,
    StreamStart,
    UnsupportedRequest,
    UserEvent,
)
from hubbub.protocols.json_v1 import JsonCodec, JsonReliableCodec

codec = JsonCodec()


def dec(obj: object) -> object:
    return codec.decode(orjson.dumps(obj), True)


class TestDecode:
    def test_join_leave(self) -> None:
        assert dec({"type": "joinGroup", "group": "g", "ackId": 1}) == JoinGroup("g", 1)
        assert dec({"type": "leaveGroup", "group": "g"}) == LeaveGroup("g", None)

    def test_send_to_group_data_types(self) -> None:
        assert dec({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "hé"}) == SendToGroup(
            "g", Payload(DataType.TEXT, "hé".encode())
        )
        assert dec({"type": "sendToGroup", "group": "g", "data": {"a": [1]}, "noEcho": True, "ackId": 7}) == (
            SendToGroup("g", Payload(DataType.JSON, b'{"a":[1]}'), 7, True)
        )
        raw = base64.b64encode(b"\x00\xff").decode()
        assert dec(
            {"type": "sendToGroup", "group": "g", "dataType": "binary", "data": raw}
        ).payload == Payload(DataType.BINARY, b"\x00\xff")
        assert dec(
            {"type": "sendToGroup", "group": "g", "dataType": "protobuf", "data": raw}
        ).payload == Payload(DataType.PROTOBUF, b"\x00\xff")

    def test_json_null_is_data(self) -> None:
        assert dec({"type": "event", "event": "e", "dataType": "json", "data": None}) == UserEvent(
            "e", Payload(DataType.JSON, b"null")
        )

    def test_other_types(self) -> None:
        assert dec({"type": "sequenceAck", "sequenceId": 5}) == SequenceAck(5)
        assert dec({"type": "ping"}) == Ping()
        assert dec(
            {"type": "invoke", "invocationId": "i", "event": "e", "dataType": "text", "data": "x"}
        ) == Invoke("i", "e", Payload(DataType.TEXT, b"x"))
        assert dec({"type": "cancelInvocation", "invocationId": "i"}) == CancelInvocation("i")
        assert dec({"type": "futureThing", "ackId": 3}) == UnsupportedRequest("futureThing", ack_id=3)

    def test_stream_requests(self) -> None:
        start = {
            "type": "sendToGroup",
            "group": "g",
            "noEcho": True,
            "stream": {"streamId": "s", "idleTimeoutMs": 9},
        }
        assert dec(start) == StreamStart("g", "s", 9, True)
        assert dec({"type": "sendToGroup", "group": "g", "stream": {"streamId": "s"}}) == StreamStart(
            "g", "s"
        )
        data = {"type": "streamData", "streamId": "s", "streamSequenceId": 1, "dataType": "text", "data": "x"}
        assert dec(data) == StreamData("s", 1, Payload(DataType.TEXT, b"x"))
        assert dec({"type": "streamData", "streamId": "s"}) == StreamData("s")
        assert dec({"type": "streamEnd", "streamId": "s"}) == StreamEnd("s")
        end = {"type": "streamEnd", "streamId": "s", "error": {"message": "m", "userErrorCode": "c"}}
        assert dec(end) == StreamEnd("s", True, "m", "c")
        assert dec({"type": "streamEnd", "streamId": "s", "error": {}}) == StreamEnd("s", True)

    @pytest.mark.parametrize(
        "msg",
        [
            {"type": "sendToGroup", "group": "g", "stream": "s"},
            {"type": "sendToGroup", "group": "g", "stream": {}},
            {"type": "sendToGroup", "group": "g", "stream": {"streamId": "s"}, "data": "x"},
            {"type": "sendToGroup", "group": "g", "stream": {"streamId": "s"}, "ackId": 1},
            {"type": "sendToGroup", "group": "g", "stream": {"streamId": "s", "idleTimeoutMs": 0}},
            {"type": "streamData", "streamSequenceId": 1, "data": "x"},
            {"type": "streamData", "streamId": "s", "data": "x"},
            {"type": "streamData", "streamId": "s", "streamSequenceId": 0, "data": "x"},
            {"type": "streamData", "streamId": "s", "streamSequenceId": 1},
            {"type": "streamEnd"},
            {"type": "streamEnd", "streamId": "s", "error": "e"},
        ],
    )
    def test_malformed_stream_requests(self, msg: dict[str, object]) -> None:
        with pytest.raises(ProtocolViolation):
            dec(msg)

    def test_binary_frame_with_json_is_accepted(self) -> None:
        assert codec.decode(b'{"type":"ping"}', False) == Ping()

    @pytest.mark.parametrize(
        "raw",
        [
            b"not json",
            b"[1,2]",
            b'{"group":"g"}',
            b'{"type":"joinGroup"}',
            b'{"type":"joinGroup","group":""}',
            b'{"type":"joinGroup","group":"g","ackId":-1}',
            b'{"type":"joinGroup","group":"g","ackId":"1"}',
            b'{"type":"joinGroup","group":"g","ackId":true}',
            b'{"type":"sendToGroup","group":"g","dataType":"text","data":1}',
            b'{"type":"sendToGroup","group":"g","dataType":"binary","data":"***"}',
            b'{"type":"sendToGroup","group":"g","dataType":"weird","data":"x"}',
            b'{"type":"sendToGroup","group":"g","dataType":"json"}',
            b'{"type":"sendToGroup","group":"g","data":1,"noEcho":"yes"}',
            b'{"type":"sequenceAck"}',
        ],
    )
    def test_malformed(self, raw: bytes) -> None:
        with pytest.raises(ProtocolViolation):
            codec.decode(raw, True)

    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_never_crash(self, raw: bytes) -> None:
        with contextlib.suppress(ProtocolViolation):
            codec.decode(raw, True)

    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(),
            lambda c: (
                st.lists(c)
                | st.dictionaries(
                    st.sampled_from(["type", "group", "data", "dataType", "ackId", "event", "noEcho"]), c
                )
            ),
            max_leaves=10,
        )
    )
    def test_arbitrary_json_never_crashes(self, value: object) -> None:
        with contextlib.suppress(ProtocolViolation):
            codec.decode(json.dumps(value), True)


class TestEncode:
    def test_group_message(self) -> None:
        m = DataMessage(Payload(DataType.TEXT, b"hi"), group="g", from_user_id="u")
        assert codec.encode_data(m) == (
            b'{"type":"message","from":"group","group":"g","fromUserId":"u","dataType":"text","data":"hi"}',
            True,
        )

    def test_server_message_json_embedded(self) -> None:
        m = DataMessage(Payload(DataType.JSON, b'{"a": 1}'))
        assert (
            codec.encode_data(m)[0] == b'{"type":"message","from":"server","dataType":"json","data":{"a": 1}}'
        )

    def test_binary_base64(self) -> None:
        m = DataMessage(Payload(DataType.BINARY, b"\x00\x01"), group="g")
        assert orjson.loads(codec.encode_data(m)[0]) == {
            "type": "message",
            "from": "group",
            "group": "g",
            "dataType": "binary",
            "data": "AAE=",
        }

    def test_reliable_stamp(self) -> None:
        rel = JsonReliableCodec()
        body = rel.message_body(DataMessage(Payload(DataType.TEXT, b"x")))
        assert orjson.loads(rel.stamp(body, 42))["sequenceId"] == 42

    def test_system_and_ack(self) -> None:
        assert orjson.loads(codec.encode_connected(Connected("c", None))[0]) == {
            "type": "system",
            "event": "connected",
            "userId": None,
            "connectionId": "c",
        }
        assert orjson.loads(codec.encode_disconnected(Disconnected("bye"))[0]) == {
            "type": "system",
            "event": "disconnected",
            "message": "bye",
        }
        assert orjson.loads(codec.encode_ack(Ack(1, False, "Forbidden", "no"))[0]) == {
            "type": "ack",
            "ackId": 1,
            "success": False,
            "error": {"name": "Forbidden", "message": "no"},
        }
        assert codec.encode_ack(Ack(2, True)) == (b'{"type":"ack","ackId":2,"success":true}', True)
        assert codec.encode_pong() == (b'{"type":"pong"}', True)

    def test_stream_message_and_replies(self) -> None:
        info = StreamInfo("s", 3, True, "UserError", "m", "c")
        message = DataMessage(Payload(DataType.TEXT, b""), group="g", stream=info)
        assert json.loads(JsonReliableCodec().stamp(codec.message_body(message), 7)) == {
            "type": "message",
            "from": "group",
            "group": "g",
            "dataType": "text",
            "data": "",
            "stream": {
                "streamId": "s",
                "streamSequenceId": 3,
                "endOfStream": True,
                "error": {"name": "UserError", "message": "m", "userErrorCode": "c"},
            },
            "sequenceId": 7,
        }

        def reply(r: StreamAck | StreamNack | StreamClosed) -> object:
            encoded = codec.encode_stream_reply(r)
            assert encoded is not None and encoded[1]
            return json.loads(encoded[0])

        assert reply(StreamAck("s", 2)) == {"type": "streamAck", "streamId": "s", "expectedSequenceId": 2}
        assert reply(StreamNack("s", 2, "InvalidSequenceId", "m")) == {
            "type": "streamNack",
            "streamId": "s",
            "expectedSequenceId": 2,
            "name": "InvalidSequenceId",
            "message": "m",
        }
        assert reply(StreamClosed("s")) == {"type": "streamClosed", "streamId": "s"}
        assert reply(StreamClosed("s", "IdleTimeout", "m")) == {
            "type": "streamClosed",
            "streamId": "s",
            "error": {"name": "IdleTimeout", "message": "m"},
        }


class TestSimple:
    def test_frames_are_message_events(self) -> None:
        assert SIMPLE.decode("hi", True) == UserEvent("message", Payload(DataType.TEXT, b"hi"))
        assert SIMPLE.decode(b"\x00", False) == UserEvent("message", Payload(DataType.BINARY, b"\x00"))

    def test_raw_payload_out(self) -> None:
        assert SIMPLE.encode_data(DataMessage(Payload(DataType.JSON, b'"Hello"'))) == (b'"Hello"', True)
        assert SIMPLE.encode_data(DataMessage(Payload(DataType.BINARY, b"\x01"))) == (b"\x01", False)
        assert SIMPLE.encode_connected(Connected("c", "u")) is None


class TestNegotiate:
    def test_rules(self) -> None:
        assert negotiate([]) == (None, SIMPLE)
        assert negotiate(["custom"]) == ("custom", SIMPLE)
        name = "json.webpubsub.azure.v1"
        assert negotiate(["custom", name]) == (name, CODECS[name])
        assert negotiate(["a", "b"]) == ("a", SIMPLE)


@pytest.mark.parametrize("size", [0, 50, 100, 110, 200, 70_000])
@pytest.mark.parametrize("sequence_id", [1, 9, 10, 99_999, 2**64 - 1])
def test_reliable_stamp_frame_equals_framed_stamp(size: int, sequence_id: int) -> None:
    from hubbub.protocols.framing import OP_TEXT, frame

    rel = JsonReliableCodec()
    body = rel.message_body(DataMessage(Payload(DataType.TEXT, b"x" * size)))
    assert rel.stamp_frame(body, sequence_id) == frame(rel.stamp(body, sequence_id), OP_TEXT)
