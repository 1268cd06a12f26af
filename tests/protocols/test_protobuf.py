"""protobuf.webpubsub.azure.v1 and its reliable variant: the codec against the protobuf library itself.

Upstream frames are built with the library and decoded by the codec; downstream
frames are encoded by the codec and parsed by the library. A few wire vectors
published with the official C# protobuf client pin the field numbers
independently of the descriptors under test.
"""

from __future__ import annotations

import base64
import contextlib
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import descriptor_pb2
from hypothesis import given
from hypothesis import strategies as st

from hubbub.errors import ProtocolViolation
from hubbub.protocols import CODECS, SIMPLE, negotiate
from hubbub.protocols import protobuf_v1 as pb
from hubbub.protocols.events import (
    Ack,
    Connected,
    DataMessage,
    DataType,
    Disconnected,
    InvokeResponse,
    JoinGroup,
    LeaveGroup,
    Payload,
    SendToGroup,
    SequenceAck,
    UserEvent,
)
from hubbub.protocols.framing import OP_BINARY, frame
from hubbub.protocols.json_v1 import JsonCodec
from hubbub.protocols.protobuf_v1 import (
    AnyMessage,
    DownstreamMessage,
    MessageData,
    ProtobufCodec,
    ProtobufReliableCodec,
    UpstreamMessage,
)

codec = ProtobufCodec()
reliable = ProtobufReliableCodec()
UINT64_MAX = 2**64 - 1


def up(**fields: Any) -> bytes:
    """An UpstreamMessage serialized by the library."""
    return bytes(UpstreamMessage(**fields).SerializeToString())


def dec(**fields: Any) -> object:
    return codec.decode(up(**fields), False)


def parse_down(encoded: tuple[bytes, bool] | None) -> Any:
    assert encoded is not None
    data, is_text = encoded
    assert is_text is False
    return DownstreamMessage.FromString(data)


def wire(message: Any) -> bytes:
    """Compare messages by their serialization (the pure-Python backend's ``==`` resolves Any types)."""
    return bytes(message.SerializeToString())


def an_any(type_url: str = "type.googleapis.com/demo.Thing", value: bytes = b"\x08\x96\x01") -> Any:
    return AnyMessage(type_url=type_url, value=value)


# --- the schema -----------------------------------------------------------------

_SCALARS = {
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "uint64",
}
Schema = dict[str, set[tuple[str, int, str, bool, str | None]]]


def schema_of_descriptor() -> Schema:
    """message full name -> {(field, number, type, optional, oneof)} from the codec's descriptors."""
    out: Schema = {}

    def walk(msg: descriptor_pb2.DescriptorProto, prefix: str) -> None:
        name = f"{prefix}.{msg.name}"
        fields = out.setdefault(name, set())
        for f in msg.field:
            kind = _SCALARS.get(f.type) or f.type_name.rsplit(".", 1)[-1]
            oneof = None
            if f.HasField("oneof_index") and not f.proto3_optional:
                oneof = msg.oneof_decl[f.oneof_index].name
            fields.add((f.name, f.number, kind, f.proto3_optional, oneof))
        for nested in msg.nested_type:
            walk(nested, name)

    fd = pb.file_descriptor()
    for m in fd.message_type:
        walk(m, fd.package)
    return out


def schema_of_proto_file(text: str) -> Schema:
    """The same view of ``webpubsub.proto``, by a parser for the subset of proto3 it uses."""
    text = re.sub(r"//[^\n]*", "", text)
    tokens = re.findall(r'"[^"]*"|[A-Za-z_][\w.]*|\d+|[{};=]', text)
    out: Schema = {}
    pos = 0
    package = ""

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def body(scope: str, oneof: str | None) -> None:
        while (tok := take()) != "}":
            if tok == "message":
                name = f"{scope}.{take()}"
                out.setdefault(name, set())
                assert take() == "{"
                body(name, None)
            elif tok == "oneof":
                group = take()
                assert take() == "{"
                body(scope, group)
            else:
                optional = tok == "optional"
                kind = take() if optional else tok
                field = take()
                assert take() == "="
                number = int(take())
                assert take() == ";"
                out[scope].add((field, number, kind.rsplit(".", 1)[-1], optional, oneof))

    while pos < len(tokens):
        tok = take()
        if tok == "message":
            name = f"{package}.{take()}"
            out.setdefault(name, set())
            assert take() == "{"
            body(name, None)
        elif tok == "package":
            package = take()
            assert take() == ";"
        else:  # syntax, import
            while take() != ";":
                pass
    return out


def test_descriptors_match_the_proto_file() -> None:
    proto = Path(pb.__file__).with_name("webpubsub.proto").read_text(encoding="utf-8")
    from_file = schema_of_proto_file(proto)
    assert len(from_file) == 14
    assert schema_of_descriptor() == from_file


# --- registration ------------------------------------------------------------------


def test_registered_and_negotiated() -> None:
    plain = CODECS["protobuf.webpubsub.azure.v1"]
    rel = CODECS["protobuf.reliable.webpubsub.azure.v1"]
    assert isinstance(plain, ProtobufCodec) and not plain.reliable and plain.pubsub
    assert isinstance(rel, ProtobufReliableCodec) and rel.reliable and rel.pubsub
    assert negotiate(["custom", "protobuf.reliable.webpubsub.azure.v1"]) == (
        "protobuf.reliable.webpubsub.azure.v1",
        rel,
    )
    assert negotiate(["protobuf.webpubsub.azure.v1"])[1] is plain
    assert negotiate(["protobuf"]) == ("protobuf", SIMPLE)


# --- client -> service -------------------------------------------------------------

# Frames written by the official C# protobuf client (its own unit tests' vectors).
CSHARP_UPSTREAM = [
    ("MgcKBWdyb3Vw", JoinGroup("group", None)),
    ("MgsKBWdyb3VwEOXYAg==", JoinGroup("group", 44133)),
    ("OgcKBWdyb3Vw", LeaveGroup("group", None)),
    ("OgoKBWdyb3VwELlg", LeaveGroup("group", 12345)),
    ("ChAKBWdyb3VwGgUKA3h6eSAA", SendToGroup("group", Payload(DataType.TEXT, b"xzy"))),
    ("QgQIwMQH", SequenceAck(123456)),
    ("Kg4KBWV2ZW50EgUKA3h6eQ==", UserEvent("event", Payload(DataType.TEXT, b"xzy"))),
    # the C# client sends its JSON data type as text_data
    (
        "Ch8KBWdyb3VwELlgGhEKD3sidmFsdWUiOiJ4enkifSAA",
        SendToGroup("group", Payload(DataType.TEXT, b'{"value":"xzy"}'), ack_id=12345),
    ),
]


class TestDecode:
    @pytest.mark.parametrize(("b64", "expected"), CSHARP_UPSTREAM)
    def test_official_client_vectors(self, b64: str, expected: object) -> None:
        assert codec.decode(base64.b64decode(b64), False) == expected

    def test_join_leave(self) -> None:
        J, L = UpstreamMessage.JoinGroupMessage, UpstreamMessage.LeaveGroupMessage
        assert dec(join_group_message=J(group="g")) == JoinGroup("g", None)
        assert dec(join_group_message=J(group="g", ack_id=0)) == JoinGroup("g", 0)
        assert dec(join_group_message=J(group="g", ack_id=UINT64_MAX)) == JoinGroup("g", UINT64_MAX)
        assert dec(leave_group_message=L(group="g", ack_id=7)) == LeaveGroup("g", 7)

    @pytest.mark.parametrize(
        ("data", "payload"),
        [
            (MessageData(text_data="hé"), Payload(DataType.TEXT, "hé".encode())),
            (MessageData(text_data=""), Payload(DataType.TEXT, b"")),
            (MessageData(binary_data=b"\x00\xff"), Payload(DataType.BINARY, b"\x00\xff")),
            (MessageData(binary_data=b""), Payload(DataType.BINARY, b"")),
            (MessageData(json_data='{"a": [1, 2]}'), Payload(DataType.JSON, b'{"a": [1, 2]}')),
            (MessageData(json_data="null"), Payload(DataType.JSON, b"null")),
            (MessageData(protobuf_data=an_any()), Payload(DataType.PROTOBUF, an_any().SerializeToString())),
            (MessageData(protobuf_data=AnyMessage()), Payload(DataType.PROTOBUF, b"")),
        ],
    )
    def test_send_to_group_and_event_data(self, data: Any, payload: Payload) -> None:
        S, E = UpstreamMessage.SendToGroupMessage, UpstreamMessage.EventMessage
        assert dec(send_to_group_message=S(group="g", data=data)) == SendToGroup("g", payload)
        assert dec(send_to_group_message=S(group="g", data=data, ack_id=3, no_echo=True)) == SendToGroup(
            "g", payload, 3, True
        )
        assert dec(event_message=E(event="e", data=data)) == UserEvent("e", payload)
        assert dec(event_message=E(event="e", data=data, ack_id=9)) == UserEvent("e", payload, 9)

    def test_sequence_ack(self) -> None:
        Q = UpstreamMessage.SequenceAckMessage
        assert dec(sequence_ack_message=Q(sequence_id=5)) == SequenceAck(5)
        assert dec(sequence_ack_message=Q(sequence_id=UINT64_MAX)) == SequenceAck(UINT64_MAX)
        assert dec(sequence_ack_message=Q()) == SequenceAck(0)

    def test_unknown_fields_are_ignored(self) -> None:
        frame = up(join_group_message=UpstreamMessage.JoinGroupMessage(group="g", ack_id=1))
        # field 15 (varint) on the outer message, field 9 (bytes) on the inner one
        inner = frame[2:] + b"\x4a\x02hi"
        assert codec.decode(b"\x32" + bytes([len(inner)]) + inner + b"\x78\x01", False) == JoinGroup("g", 1)

    @pytest.mark.parametrize(
        "raw",
        [
            b"",  # no message at all
            b"\x78\x01",  # only an unknown field
            b"\x12\x00",  # field 2 is not a message kind of this protocol
            up(join_group_message=UpstreamMessage.JoinGroupMessage()),  # no group
            up(leave_group_message=UpstreamMessage.LeaveGroupMessage(ack_id=1)),
            up(send_to_group_message=UpstreamMessage.SendToGroupMessage(group="g")),  # no data
            up(send_to_group_message=UpstreamMessage.SendToGroupMessage(group="g", data=MessageData())),
            up(event_message=UpstreamMessage.EventMessage(data=MessageData(text_data="x"))),  # no event
            up(event_message=UpstreamMessage.EventMessage(event="e")),
            up(
                send_to_group_message=UpstreamMessage.SendToGroupMessage(
                    group="g", data=MessageData(json_data="{not json")
                )
            ),
            up(event_message=UpstreamMessage.EventMessage(event="e", data=MessageData(json_data=""))),
            b"\x32\x05\x0a\x03g",  # truncated
            b"\x32\x04\x0a\x02\xff\xfe",  # group is not UTF-8
            b"\x32\x03\x10\xff\xff",  # ack_id varint runs off the end
            b"\x07",  # wire type 7 does not exist
        ],
    )
    def test_malformed(self, raw: bytes) -> None:
        with pytest.raises(ProtocolViolation):
            codec.decode(raw, False)

    def test_text_frames_are_refused(self) -> None:
        frame = up(join_group_message=UpstreamMessage.JoinGroupMessage(group="g"))
        with pytest.raises(ProtocolViolation):
            codec.decode(frame, True)
        with pytest.raises(ProtocolViolation):
            codec.decode('{"type":"joinGroup","group":"g"}', True)
        with pytest.raises(ProtocolViolation):
            reliable.decode(frame, True)

    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_only_raise_protocol_violation(self, raw: bytes) -> None:
        with contextlib.suppress(ProtocolViolation):
            codec.decode(raw, False)

    @given(st.data())
    def test_mutated_frames_only_raise_protocol_violation(self, data: st.DataObject) -> None:
        """Valid frames with bytes flipped, inserted or cut reach deeper than random bytes."""
        frame = bytearray(data.draw(st.sampled_from(VALID_FRAMES)))
        for _ in range(data.draw(st.integers(1, 4))):
            op = data.draw(st.sampled_from(["flip", "insert", "cut"]))
            at = data.draw(st.integers(0, max(len(frame) - 1, 0)))
            if op == "flip" and frame:
                frame[at] = data.draw(st.integers(0, 255))
            elif op == "insert":
                frame[at:at] = data.draw(st.binary(min_size=1, max_size=4))
            else:
                del frame[at:]
        with contextlib.suppress(ProtocolViolation):
            codec.decode(bytes(frame), False)


VALID_FRAMES = [base64.b64decode(b64) for b64, _ in CSHARP_UPSTREAM] + [
    up(
        send_to_group_message=UpstreamMessage.SendToGroupMessage(
            group="g", data=MessageData(protobuf_data=an_any()), ack_id=300, no_echo=True
        )
    ),
    up(event_message=UpstreamMessage.EventMessage(event="e", data=MessageData(json_data='{"k":[1,2.5]}'))),
    up(event_message=UpstreamMessage.EventMessage(event="e", data=MessageData(binary_data=b"\x00\x01\x02"))),
]


# --- service -> client -------------------------------------------------------------


class TestEncode:
    def test_official_client_vectors(self) -> None:
        """Frames the C# client's tests parse; the codec writes the same bytes."""
        assert codec.encode_ack(Ack(123, True)) == (base64.b64decode("CgQIexAB"), False)
        assert codec.encode_connected(Connected("connection", "user")) == (
            base64.b64decode("GhQKEgoKY29ubmVjdGlvbhIEdXNlcg=="),
            False,
        )
        assert codec.encode_connected(Connected("connection", "user", "rec")) == (
            base64.b64decode("GhkKFwoKY29ubmVjdGlvbhIEdXNlchoDcmVj"),
            False,
        )
        assert codec.encode_disconnected(Disconnected("msg")) == (base64.b64decode("GgcSBRIDbXNn"), False)
        group = DataMessage(Payload(DataType.TEXT, b"xyz"), group="groupName")
        server = DataMessage(Payload(DataType.TEXT, b"xyz"))
        assert reliable.stamp(reliable.message_body(group), 12345) == base64.b64decode(
            "EhwKBWdyb3VwEglncm91cE5hbWUaBQoDeHl6ILlg"
        )
        assert reliable.stamp(reliable.message_body(server), 12345) == base64.b64decode(
            "EhIKBnNlcnZlchoFCgN4eXoguWA="
        )
        # their failed-ack vector also spells out success=false; it parses to the same message
        assert parse_down(codec.encode_ack(Ack(123, False, "Forbidden", "message"))) == (
            DownstreamMessage.FromString(base64.b64decode("ChoIexAAGhQKCUZvcmJpZGRlbhIHbWVzc2FnZQ=="))
        )

    def test_ack(self) -> None:
        m = parse_down(codec.encode_ack(Ack(1, True)))
        assert m.WhichOneof("message") == "ack_message"
        assert (m.ack_message.ack_id, m.ack_message.success) == (1, True)
        assert not m.ack_message.HasField("error")
        m = parse_down(codec.encode_ack(Ack(UINT64_MAX, False, "Forbidden", "no")))
        assert (m.ack_message.ack_id, m.ack_message.success) == (UINT64_MAX, False)
        assert (m.ack_message.error.name, m.ack_message.error.message) == ("Forbidden", "no")
        m = parse_down(codec.encode_ack(Ack(0, False, "Duplicate", None)))
        assert m.WhichOneof("message") == "ack_message"
        assert (m.ack_message.ack_id, m.ack_message.error.name, m.ack_message.error.message) == (
            0,
            "Duplicate",
            "",
        )

    def test_connected_and_disconnected(self) -> None:
        m = parse_down(codec.encode_connected(Connected("c1", None)))
        assert m.system_message.WhichOneof("message") == "connected_message"
        c = m.system_message.connected_message
        assert (c.connection_id, c.user_id, c.reconnection_token) == ("c1", "", "")
        c = parse_down(
            reliable.encode_connected(Connected("c2", "u", "tok"))
        ).system_message.connected_message
        assert (c.connection_id, c.user_id, c.reconnection_token) == ("c2", "u", "tok")
        m = parse_down(codec.encode_disconnected(Disconnected("bye")))
        assert m.system_message.WhichOneof("message") == "disconnected_message"
        assert m.system_message.disconnected_message.reason == "bye"
        m = parse_down(codec.encode_disconnected(Disconnected()))
        assert m.system_message.WhichOneof("message") == "disconnected_message"

    def test_data_messages(self) -> None:
        m = parse_down(codec.encode_data(DataMessage(Payload(DataType.TEXT, b"hi"), "g", from_user_id="u")))
        d = m.data_message
        assert (getattr(d, "from"), d.group, d.data.text_data) == ("group", "g", "hi")
        assert d.HasField("group") and not d.HasField("sequence_id")
        d = parse_down(codec.encode_data(DataMessage(Payload(DataType.BINARY, b"\x00")))).data_message
        assert (getattr(d, "from"), d.HasField("group"), d.data.binary_data) == ("server", False, b"\x00")
        d = parse_down(codec.encode_data(DataMessage(Payload(DataType.TEXT, b""), ""))).data_message
        assert d.HasField("group") and d.group == "" and d.data.WhichOneof("data") == "text_data"

    def test_outbound_any(self) -> None:
        thing = an_any()
        d = parse_down(codec.encode_data(DataMessage(Payload(DataType.PROTOBUF, thing.SerializeToString()))))
        assert wire(d.data_message.data.protobuf_data) == wire(thing)
        d = parse_down(codec.encode_data(DataMessage(Payload(DataType.PROTOBUF, b""))))
        assert d.data_message.data.WhichOneof("data") == "protobuf_data"
        assert wire(d.data_message.data.protobuf_data) == b""
        # not a serialized Any: delivered as binary_data
        d = parse_down(codec.encode_data(DataMessage(Payload(DataType.PROTOBUF, b"\xff\xff"))))
        assert d.data_message.data.binary_data == b"\xff\xff"

    def test_no_pong_no_invoke(self) -> None:
        assert codec.encode_pong() is None
        assert reliable.encode_pong() is None
        assert codec.encode_invoke_response(InvokeResponse("i", True, Payload(DataType.TEXT, b"x"))) is None

    def test_all_frames_binary(self) -> None:
        msg = DataMessage(Payload(DataType.TEXT, b"x"))
        for c in (codec, reliable):
            assert c.text_frames is False  # tells the session to frame stamped messages as binary
            assert c.encode_data(msg)[1] is False
            assert c.encode_ack(Ack(1, True))[1] is False
            assert c.encode_connected(Connected("c", "u"))[1] is False
            assert c.encode_disconnected(Disconnected("x"))[1] is False


# --- reliable: stamp() equals the library's serialization ------------------------------


def library_stamped(message: DataMessage, sequence_id: int) -> bytes:
    down = DownstreamMessage()
    d = down.data_message
    setattr(d, "from", "server" if message.group is None else "group")
    if message.group is not None:
        d.group = message.group
    kind = message.payload.data_type
    if kind is DataType.TEXT:
        d.data.text_data = message.payload.data.decode()
    elif kind is DataType.JSON:
        d.data.json_data = message.payload.data.decode()
    elif kind is DataType.BINARY:
        d.data.binary_data = message.payload.data
    else:
        d.data.protobuf_data.ParseFromString(message.payload.data)
        d.data.protobuf_data.SetInParent()
    d.sequence_id = sequence_id
    return bytes(down.SerializeToString())


payloads = st.one_of(
    st.builds(lambda s: Payload(DataType.TEXT, s.encode()), st.text(max_size=300)),
    st.builds(lambda s: Payload(DataType.JSON, orjson.dumps(s)), st.text(max_size=50)),
    st.builds(lambda b: Payload(DataType.BINARY, b), st.binary(max_size=300)),
    st.builds(
        lambda u, v: Payload(DataType.PROTOBUF, an_any(u, v).SerializeToString()),
        st.text(max_size=40),
        st.binary(max_size=200),
    ),
)


class TestStamp:
    @pytest.mark.parametrize("sequence_id", [1, 127, 128, 300, 2**32, 2**63, UINT64_MAX])
    def test_varint_boundaries(self, sequence_id: int) -> None:
        msg = DataMessage(Payload(DataType.TEXT, b"x" * 130), group="g")
        stamped = reliable.stamp(reliable.message_body(msg), sequence_id)
        assert stamped == library_stamped(msg, sequence_id)
        assert DownstreamMessage.FromString(stamped).data_message.sequence_id == sequence_id

    @given(payloads, st.none() | st.text(max_size=40), st.integers(1, UINT64_MAX))
    def test_equals_library_serialization(
        self, payload: Payload, group: str | None, sequence_id: int
    ) -> None:
        msg = DataMessage(payload, group=group)
        body = reliable.message_body(msg)
        assert reliable.stamp(body, sequence_id) == library_stamped(msg, sequence_id)

    @given(payloads, st.integers(1, UINT64_MAX), st.integers(0, 70_000))
    def test_stamp_frame_equals_framed_stamp(self, payload: Payload, sequence_id: int, pad: int) -> None:
        msg = DataMessage(Payload(payload.data_type, payload.data + b"x" * pad))
        body = reliable.message_body(msg)
        assert reliable.stamp_frame(body, sequence_id) == frame(reliable.stamp(body, sequence_id), OP_BINARY)

    @pytest.mark.parametrize("sequence_id", [16_383, 16_384, 2**21 - 1, 2**21])
    def test_two_byte_varint_boundaries(self, sequence_id: int) -> None:
        msg = DataMessage(Payload(DataType.TEXT, b"x" * 16_500), group="g")
        assert reliable.stamp(reliable.message_body(msg), sequence_id) == library_stamped(msg, sequence_id)

    def test_body_is_shared_and_unstamped(self) -> None:
        msg = DataMessage(Payload(DataType.TEXT, b"hi"), group="g")
        body = reliable.message_body(msg)
        assert not DownstreamMessage.DataMessage.FromString(body).HasField("sequence_id")
        a, b = reliable.stamp(body, 1), reliable.stamp(body, 2)
        assert DownstreamMessage.FromString(a).data_message.sequence_id == 1
        assert DownstreamMessage.FromString(b).data_message.sequence_id == 2
        # the unstamped frame of the plain codec is the same message without sequence_id
        assert codec.encode_data(msg)[0] == b"\x12" + bytes([len(body)]) + body


# --- cross-protocol data mapping (spec §4.5) ---------------------------------------------

json_codec = JsonCodec()
THING = an_any()
THING_BYTES = THING.SerializeToString()

# (protobuf MessageData, json client's dataType/data, payload, simple subscriber's frame)
MAPPING = [
    (
        MessageData(text_data="hé"),
        ("text", "hé"),
        Payload(DataType.TEXT, "hé".encode()),
        ("hé".encode(), True),
    ),
    (
        MessageData(json_data='{"a":[1]}'),
        ("json", {"a": [1]}),
        Payload(DataType.JSON, b'{"a":[1]}'),
        (b'{"a":[1]}', True),
    ),
    (
        MessageData(binary_data=b"\x00\xff"),
        ("binary", "AP8="),
        Payload(DataType.BINARY, b"\x00\xff"),
        (b"\x00\xff", False),
    ),
    (
        MessageData(protobuf_data=THING),
        ("protobuf", base64.b64encode(THING_BYTES).decode()),
        Payload(DataType.PROTOBUF, THING_BYTES),
        (THING_BYTES, False),
    ),
]


class TestCrossProtocol:
    @pytest.mark.parametrize(("pb_data", "json_data", "payload", "simple_frame"), MAPPING)
    def test_mapping_table(
        self, pb_data: Any, json_data: tuple[str, object], payload: Payload, simple_frame: tuple[bytes, bool]
    ) -> None:
        data_type, value = json_data
        # both publishers produce the same payload...
        from_pb = dec(send_to_group_message=UpstreamMessage.SendToGroupMessage(group="g", data=pb_data))
        json_frame = {"type": "sendToGroup", "group": "g", "dataType": data_type, "data": value}
        from_json = json_codec.decode(orjson.dumps(json_frame), True)
        assert isinstance(from_pb, SendToGroup) and isinstance(from_json, SendToGroup)
        assert from_pb.payload == from_json.payload == payload
        # ...and every subscriber gets its own rendering of it
        msg = DataMessage(payload, group="g", from_user_id="u")
        assert wire(parse_down(codec.encode_data(msg)).data_message.data) == wire(pb_data)
        assert orjson.loads(json_codec.encode_data(msg)[0]) == {
            "type": "message",
            "from": "group",
            "group": "g",
            "fromUserId": "u",
            "dataType": data_type,
            "data": value,
        }
        assert SIMPLE.encode_data(msg) == simple_frame

    def test_json_client_protobuf_that_is_not_an_any(self) -> None:
        frame = {"type": "sendToGroup", "group": "g", "dataType": "protobuf", "data": "//8="}
        request = json_codec.decode(orjson.dumps(frame), True)
        assert isinstance(request, SendToGroup)
        d = parse_down(codec.encode_data(DataMessage(request.payload, group="g"))).data_message.data
        assert d.WhichOneof("data") == "binary_data" and d.binary_data == b"\xff\xff"

    def test_protobuf_json_reaches_json_client_verbatim(self) -> None:
        request = dec(
            event_message=UpstreamMessage.EventMessage(event="e", data=MessageData(json_data=' {"b": 1.50} '))
        )
        assert isinstance(request, UserEvent)
        assert request.payload == Payload(DataType.JSON, b' {"b": 1.50} ')
        frame = json_codec.encode_data(DataMessage(request.payload))[0]
        assert orjson.loads(frame)["data"] == {"b": 1.5}
