"""``protobuf.webpubsub.azure.v1`` and its reliable variant (spec §4.7): protobuf in binary frames.

Parsing and building go through the official ``protobuf`` runtime. Its message
classes come from descriptors built here at import time, field for field the
schema in ``webpubsub.proto`` beside this file (a test keeps the two equal).
Building descriptors in code rather than checking in ``protoc`` output means no
code generator in the toolchain and no generated-code/runtime version pin: the
protobuf runtime refuses (or warns about) generated modules from another
major version, and warnings are errors in the test suite.

Data mapping (spec §4.5), both directions:

=================  ==========================================================
``MessageData``    :class:`~hubbub.protocols.events.DataType`
=================  ==========================================================
``text_data``      ``TEXT``
``binary_data``    ``BINARY``
``protobuf_data``  ``PROTOBUF``; the payload is the serialized ``Any``
``json_data``      ``JSON``; must be valid JSON; passed on verbatim, never re-serialized
=================  ==========================================================

Outbound, ``JSON`` goes out as ``json_data`` (field 4 of the current proto, which
the current clients read as JSON) rather than ``text_data`` (the oldest doc), and
a ``PROTOBUF`` payload that is not a serialized ``Any`` (a JSON or simple client
can send any bytes as "protobuf") goes out as ``binary_data`` instead of being
dropped. Protobuf has no ``fromUserId``, ping/pong or invoke: those are never sent.

Reliable connections: :meth:`ProtobufCodec.message_body` is the serialized inner
``DataMessage`` (fields 1-3), shared by every connection of a broadcast;
:meth:`ProtobufReliableCodec.stamp` appends ``sequence_id`` (field 4) and wraps
it as field 2 of ``DownstreamMessage`` by byte concatenation, which is exactly
what the library serializes (fields go out in number order).
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar

import orjson
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from hubbub.errors import ProtocolViolation
from hubbub.protocols.base import Codec, Encoded
from hubbub.protocols.events import (
    Ack,
    ClientRequest,
    Connected,
    DataMessage,
    DataType,
    Disconnected,
    JoinGroup,
    LeaveGroup,
    Payload,
    SendToGroup,
    SequenceAck,
    UserEvent,
)

__all__ = [
    "AnyMessage",
    "DownstreamMessage",
    "MessageData",
    "ProtobufCodec",
    "ProtobufReliableCodec",
    "UpstreamMessage",
    "file_descriptor",
]

PACKAGE = "azure.webpubsub"

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _BYTES, _BOOL, _UINT64, _MESSAGE = (
    _F.TYPE_STRING,
    _F.TYPE_BYTES,
    _F.TYPE_BOOL,
    _F.TYPE_UINT64,
    _F.TYPE_MESSAGE,
)
# how a field is declared: plain proto3 field, member of the message's oneof, or proto3 ``optional``
_PLAIN, _ONEOF, _OPTIONAL = "plain", "oneof", "optional"

_Field = tuple[str, int, "descriptor_pb2.FieldDescriptorProto.Type.ValueType", str, str]


def _message(
    name: str,
    *fields: _Field,
    oneof: str | None = None,
    nested: tuple[descriptor_pb2.DescriptorProto, ...] = (),
) -> descriptor_pb2.DescriptorProto:
    """A message descriptor; fields are ``(name, number, type, mode, type_name)``.

    proto3 ``optional`` fields get a synthetic oneof ``_<name>`` after the real
    oneof, as ``protoc`` lays them out.
    """
    msg = descriptor_pb2.DescriptorProto(name=name, nested_type=nested)
    if oneof is not None:
        msg.oneof_decl.add(name=oneof)
    optional = []
    for field_name, number, type_, mode, type_name in fields:
        field = msg.field.add(name=field_name, number=number, type=type_, label=_F.LABEL_OPTIONAL)
        if type_name:
            field.type_name = (
                f".{type_name}" if type_name.startswith("google.") else f".{PACKAGE}.{type_name}"
            )
        if mode == _ONEOF:
            field.oneof_index = 0
        elif mode == _OPTIONAL:
            field.proto3_optional = True
            optional.append(field)
    for field in optional:
        field.oneof_index = len(msg.oneof_decl)
        msg.oneof_decl.add(name="_" + field.name)
    return msg


def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The schema of ``webpubsub.proto`` as a ``FileDescriptorProto``."""
    up, down, system = "UpstreamMessage", "DownstreamMessage", "DownstreamMessage.SystemMessage"
    upstream = _message(
        up,
        ("send_to_group_message", 1, _MESSAGE, _ONEOF, f"{up}.SendToGroupMessage"),
        ("event_message", 5, _MESSAGE, _ONEOF, f"{up}.EventMessage"),
        ("join_group_message", 6, _MESSAGE, _ONEOF, f"{up}.JoinGroupMessage"),
        ("leave_group_message", 7, _MESSAGE, _ONEOF, f"{up}.LeaveGroupMessage"),
        ("sequence_ack_message", 8, _MESSAGE, _ONEOF, f"{up}.SequenceAckMessage"),
        oneof="message",
        nested=(
            _message(
                "SendToGroupMessage",
                ("group", 1, _STRING, _PLAIN, ""),
                ("ack_id", 2, _UINT64, _OPTIONAL, ""),
                ("data", 3, _MESSAGE, _PLAIN, "MessageData"),
                ("no_echo", 4, _BOOL, _OPTIONAL, ""),
            ),
            _message(
                "EventMessage",
                ("event", 1, _STRING, _PLAIN, ""),
                ("data", 2, _MESSAGE, _PLAIN, "MessageData"),
                ("ack_id", 3, _UINT64, _OPTIONAL, ""),
            ),
            _message(
                "JoinGroupMessage", ("group", 1, _STRING, _PLAIN, ""), ("ack_id", 2, _UINT64, _OPTIONAL, "")
            ),
            _message(
                "LeaveGroupMessage", ("group", 1, _STRING, _PLAIN, ""), ("ack_id", 2, _UINT64, _OPTIONAL, "")
            ),
            _message("SequenceAckMessage", ("sequence_id", 1, _UINT64, _PLAIN, "")),
        ),
    )
    downstream = _message(
        down,
        ("ack_message", 1, _MESSAGE, _ONEOF, f"{down}.AckMessage"),
        ("data_message", 2, _MESSAGE, _ONEOF, f"{down}.DataMessage"),
        ("system_message", 3, _MESSAGE, _ONEOF, system),
        oneof="message",
        nested=(
            _message(
                "AckMessage",
                ("ack_id", 1, _UINT64, _PLAIN, ""),
                ("success", 2, _BOOL, _PLAIN, ""),
                ("error", 3, _MESSAGE, _OPTIONAL, f"{down}.AckMessage.ErrorMessage"),
                nested=(
                    _message(
                        "ErrorMessage", ("name", 1, _STRING, _PLAIN, ""), ("message", 2, _STRING, _PLAIN, "")
                    ),
                ),
            ),
            _message(
                "DataMessage",
                ("from", 1, _STRING, _PLAIN, ""),
                ("group", 2, _STRING, _OPTIONAL, ""),
                ("data", 3, _MESSAGE, _PLAIN, "MessageData"),
                ("sequence_id", 4, _UINT64, _OPTIONAL, ""),
            ),
            _message(
                "SystemMessage",
                ("connected_message", 1, _MESSAGE, _ONEOF, f"{system}.ConnectedMessage"),
                ("disconnected_message", 2, _MESSAGE, _ONEOF, f"{system}.DisconnectedMessage"),
                oneof="message",
                nested=(
                    _message(
                        "ConnectedMessage",
                        ("connection_id", 1, _STRING, _PLAIN, ""),
                        ("user_id", 2, _STRING, _PLAIN, ""),
                        ("reconnection_token", 3, _STRING, _PLAIN, ""),
                    ),
                    _message("DisconnectedMessage", ("reason", 2, _STRING, _PLAIN, "")),
                ),
            ),
        ),
    )
    message_data = _message(
        "MessageData",
        ("text_data", 1, _STRING, _ONEOF, ""),
        ("binary_data", 2, _BYTES, _ONEOF, ""),
        ("protobuf_data", 3, _MESSAGE, _ONEOF, "google.protobuf.Any"),
        ("json_data", 4, _STRING, _ONEOF, ""),
        oneof="data",
    )
    return descriptor_pb2.FileDescriptorProto(
        name="hubbub/protocols/webpubsub.proto",
        package=PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/any.proto"],
        message_type=[upstream, downstream, message_data],
    )


def _build_classes() -> dict[str, Any]:
    """Top-level message classes by full name, each with its nested classes as attributes."""
    any_file = descriptor_pb2.FileDescriptorProto()
    any_pb2.DESCRIPTOR.CopyToProto(any_file)
    # a private pool: nothing else in the process can clash with (or see) these names
    pool = descriptor_pool.DescriptorPool()
    classes: dict[str, Any] = dict(message_factory.GetMessages([any_file, file_descriptor()], pool=pool))

    def nest(cls: Any) -> None:
        # the upb backend attaches nested classes itself, the pure-Python one does not
        for nested in cls.DESCRIPTOR.nested_types:
            if not hasattr(cls, nested.name):
                setattr(cls, nested.name, message_factory.GetMessageClass(nested))
            nest(getattr(cls, nested.name))

    for cls in classes.values():
        nest(cls)
    return classes


_classes = _build_classes()

# The message classes (typed Any: they are built at run time). Nested messages
# are attributes, e.g. ``UpstreamMessage.JoinGroupMessage``.
UpstreamMessage: Any = _classes[f"{PACKAGE}.UpstreamMessage"]
DownstreamMessage: Any = _classes[f"{PACKAGE}.DownstreamMessage"]
MessageData: Any = _classes[f"{PACKAGE}.MessageData"]
AnyMessage: Any = _classes["google.protobuf.Any"]

# what parsing untrusted bytes may raise (DecodeError in practice; the rest is belt and braces)
_PARSE_ERRORS = (DecodeError, ValueError, RecursionError)


def _parse_payload(owner: Any, field: str) -> Payload:
    """The :class:`Payload` of the ``MessageData`` in ``owner.<field>``; it must be set."""
    if not owner.HasField(field):
        raise ProtocolViolation(f"'{field}' is required")
    data = getattr(owner, field)
    kind = data.WhichOneof("data")
    if kind == "text_data":
        return Payload(DataType.TEXT, data.text_data.encode("utf-8"))
    if kind == "binary_data":
        return Payload(DataType.BINARY, bytes(data.binary_data))
    if kind == "protobuf_data":
        return Payload(DataType.PROTOBUF, data.protobuf_data.SerializeToString())
    if kind == "json_data":
        text = data.json_data
        try:
            orjson.loads(text)  # validate only: the client's text is passed on as it was sent
        except orjson.JSONDecodeError:
            raise ProtocolViolation("'json_data' is not valid JSON") from None
        return Payload(DataType.JSON, text.encode("utf-8"))
    raise ProtocolViolation(f"'{field}' needs one of text_data, binary_data, protobuf_data, json_data")


def _ack_id(message: Any) -> int | None:
    return int(message.ack_id) if message.HasField("ack_id") else None


def _required(value: str, name: str) -> str:
    if not value:
        raise ProtocolViolation(f"'{name}' is required")
    return value


def _fill_data(target: Any, payload: Payload) -> None:
    """Set the oneof of the ``MessageData`` ``target`` from ``payload``."""
    dt = payload.data_type
    if dt is DataType.TEXT:
        target.text_data = payload.data.decode("utf-8", "replace")
    elif dt is DataType.JSON:
        target.json_data = payload.data.decode("utf-8", "replace")
    elif dt is DataType.PROTOBUF:
        try:
            target.protobuf_data.ParseFromString(payload.data)
        except _PARSE_ERRORS:
            target.binary_data = payload.data  # not an Any: still deliver the bytes
        else:
            target.protobuf_data.SetInParent()  # an empty Any is still "set"
    else:
        target.binary_data = payload.data


def _fill_data_message(target: Any, message: DataMessage) -> None:
    if message.group is None:
        setattr(target, "from", "server")
    else:
        setattr(target, "from", "group")
        target.group = message.group
    _fill_data(target.data, message.payload)


_ONE_BYTE = [bytes((i,)) for i in range(0x80)]
_U64 = struct.Struct("!Q")  # 64-bit extended payload length of stamped frames (RFC 6455 §5.2)


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class ProtobufCodec(Codec):
    name = "protobuf.webpubsub.azure.v1"
    pubsub = True
    #: Every frame is binary, including the stamped frames of the reliable variant.
    text_frames: ClassVar[bool] = False

    def decode(self, data: bytes | str, is_text: bool) -> ClientRequest:
        if is_text or isinstance(data, str):
            raise ProtocolViolation("protobuf subprotocols take binary frames only")
        msg = UpstreamMessage()
        try:
            msg.ParseFromString(data)
        except _PARSE_ERRORS:
            raise ProtocolViolation("the message is not a valid protobuf UpstreamMessage") from None
        kind = msg.WhichOneof("message")
        if kind == "send_to_group_message":
            m = msg.send_to_group_message
            return SendToGroup(
                group=_required(m.group, "group"),
                payload=_parse_payload(m, "data"),
                ack_id=_ack_id(m),
                no_echo=bool(m.no_echo),
            )
        if kind == "join_group_message":
            m = msg.join_group_message
            return JoinGroup(_required(m.group, "group"), _ack_id(m))
        if kind == "leave_group_message":
            m = msg.leave_group_message
            return LeaveGroup(_required(m.group, "group"), _ack_id(m))
        if kind == "event_message":
            m = msg.event_message
            return UserEvent(_required(m.event, "event"), _parse_payload(m, "data"), _ack_id(m))
        if kind == "sequence_ack_message":
            return SequenceAck(int(msg.sequence_ack_message.sequence_id))
        raise ProtocolViolation("the UpstreamMessage carries no known message")

    # -- encoding ---------------------------------------------------------------

    def message_body(self, message: DataMessage) -> bytes:
        """The serialized inner ``DataMessage`` without ``sequence_id``."""
        body = DownstreamMessage.DataMessage()
        _fill_data_message(body, message)
        return bytes(body.SerializeToString())

    def encode_data(self, message: DataMessage) -> Encoded:
        down = DownstreamMessage()
        _fill_data_message(down.data_message, message)
        return down.SerializeToString(), False

    def encode_ack(self, ack: Ack) -> Encoded:
        down = DownstreamMessage()
        m = down.ack_message
        m.ack_id = ack.ack_id
        m.success = ack.success
        if ack.error_name is not None:
            m.error.name = ack.error_name
            m.error.message = ack.error_message or ""
        m.SetInParent()  # ack_id 0 / success false are still an ack
        return down.SerializeToString(), False

    def encode_connected(self, event: Connected) -> Encoded:
        down = DownstreamMessage()
        m = down.system_message.connected_message
        m.connection_id = event.connection_id
        m.user_id = event.user_id or ""
        m.reconnection_token = event.reconnection_token or ""
        m.SetInParent()
        return down.SerializeToString(), False

    def encode_disconnected(self, event: Disconnected) -> Encoded:
        down = DownstreamMessage()
        m = down.system_message.disconnected_message
        m.reason = event.message
        m.SetInParent()
        return down.SerializeToString(), False

    # no ping/pong and no invoke in the protobuf protocol: encode_pong and
    # encode_invoke_response keep the base class's None


class ProtobufReliableCodec(ProtobufCodec):
    name = "protobuf.reliable.webpubsub.azure.v1"
    reliable = True

    def stamp(self, body: bytes, sequence_id: int) -> bytes:
        """``DownstreamMessage{data_message: body + sequence_id}``, by concatenation."""
        tail = b"\x20" + _varint(sequence_id)  # field 4, wire type 0 (varint)
        return b"\x12" + _varint(len(body) + len(tail)) + body + tail  # field 2, length-delimited

    def stamp_frame(self, body: bytes, sequence_id: int) -> bytes:
        """The binary frame of :meth:`stamp`, joined in one copy (the fan-out hot path)."""
        sequence = _varint(sequence_id)
        inner = len(body) + 1 + len(sequence)
        size = _varint(inner)
        n = 1 + len(size) + inner
        if n < 126:
            head = b"\x82%c\x12" % n
        elif n < 65536:
            head = b"\x82\x7e%c%c\x12" % (n >> 8, n & 0xFF)
        else:
            head = b"\x82\x7f%b\x12" % _U64.pack(n)
        return b"".join((head, size, body, b"\x20", sequence))
