"""``json.webpubsub.azure.v1`` (spec §4.4–4.5): JSON objects in text frames.

Decoding validates every field the official clients send; anything malformed is a
:class:`~hubbub.errors.ProtocolViolation` (the service then declines the client).
Encoding builds frames by byte concatenation so a ``json`` payload is embedded as
is, never re-parsed.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

import orjson

from hubbub.errors import ProtocolViolation
from hubbub.protocols.base import Codec, Encoded
from hubbub.protocols.events import (
    Ack,
    CancelInvocation,
    ClientRequest,
    Connected,
    DataMessage,
    DataType,
    Disconnected,
    Invoke,
    InvokeResponse,
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

__all__ = ["JsonCodec", "JsonReliableCodec", "decode_data", "encode_data_value"]

_UINT64_MAX = 2**64 - 1
_U64 = struct.Struct("!Q")  # 64-bit extended payload length of stamped frames (RFC 6455 §5.2)
_PONG = b'{"type":"pong"}'


def _str(msg: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = msg.get(key)
    if value is None:
        if required:
            raise ProtocolViolation(f"'{key}' is required")
        return None
    if not isinstance(value, str) or (required and not value):
        raise ProtocolViolation(f"'{key}' must be a non-empty string")
    return value


def _uint(msg: dict[str, Any], key: str, *, required: bool = False) -> int | None:
    value = msg.get(key)
    if value is None:
        if required:
            raise ProtocolViolation(f"'{key}' is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT64_MAX:
        raise ProtocolViolation(f"'{key}' must be an unsigned 64-bit integer")
    return value


def decode_data(data_type: Any, value: Any, present: bool) -> Payload:
    """Turn a JSON ``data``/``dataType`` pair into a :class:`Payload`."""
    if data_type is None:
        data_type = "json"
    try:
        dt = DataType(data_type)
    except ValueError:
        raise ProtocolViolation(f"unknown dataType {data_type!r}") from None
    if dt is DataType.JSON:
        if not present:
            raise ProtocolViolation("'data' is required")
        return Payload(dt, orjson.dumps(value))
    if not isinstance(value, str):
        raise ProtocolViolation(f"'data' must be a string for dataType '{dt}'")
    if dt is DataType.TEXT:
        try:
            return Payload(dt, value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ProtocolViolation("'data' is not valid UTF-8 text") from None
    try:
        return Payload(dt, base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        raise ProtocolViolation("'data' is not valid base64") from None


def encode_data_value(payload: Payload) -> bytes:
    """The JSON text of ``data`` for ``payload`` (base64 string for binary kinds)."""
    dt = payload.data_type
    if dt is DataType.JSON:
        return payload.data
    if dt is DataType.TEXT:
        return orjson.dumps(payload.data.decode("utf-8", "replace"))
    return b'"' + base64.b64encode(payload.data) + b'"'


def _stream_start(msg: dict[str, Any], no_echo: bool) -> StreamStart:
    stream = msg["stream"]
    if not isinstance(stream, dict):
        raise ProtocolViolation("'stream' must be an object")
    if "data" in msg or "dataType" in msg or "ackId" in msg:
        raise ProtocolViolation("a stream start carries no 'data', 'dataType' or 'ackId'")
    timeout = _uint(stream, "idleTimeoutMs")
    if timeout == 0:
        raise ProtocolViolation("'idleTimeoutMs' must be greater than 0")
    return StreamStart(_str(msg, "group") or "", _str(stream, "streamId") or "", timeout, no_echo)


def _stream_data(msg: dict[str, Any]) -> StreamData:
    stream_id = _str(msg, "streamId") or ""
    sequence_id = _uint(msg, "streamSequenceId")
    if sequence_id is None:
        if "data" in msg or "dataType" in msg:
            raise ProtocolViolation("'streamSequenceId' is required with 'data'")
        return StreamData(stream_id)  # a keepalive
    if sequence_id == 0:
        raise ProtocolViolation("'streamSequenceId' starts at 1")
    payload = decode_data(msg.get("dataType"), msg.get("data"), "data" in msg)
    return StreamData(stream_id, sequence_id, payload)


def _stream_end(msg: dict[str, Any]) -> StreamEnd:
    stream_id = _str(msg, "streamId") or ""
    error = msg.get("error")
    if error is None:
        return StreamEnd(stream_id)
    if not isinstance(error, dict):
        raise ProtocolViolation("'error' must be an object")
    return StreamEnd(
        stream_id,
        True,
        _str(error, "message", required=False),
        _str(error, "userErrorCode", required=False),
    )


def _stream_object(info: StreamInfo) -> bytes:
    obj: dict[str, Any] = {"streamId": info.stream_id, "streamSequenceId": info.sequence_id}
    if info.end:
        obj["endOfStream"] = True
    if info.error_name is not None:
        error: dict[str, Any] = {"name": info.error_name, "message": info.error_message or ""}
        if info.user_error_code is not None:
            error["userErrorCode"] = info.user_error_code
        obj["error"] = error
    return orjson.dumps(obj)


def _dumps(obj: dict[str, Any]) -> Encoded:
    return orjson.dumps(obj), True


class JsonCodec(Codec):
    name = "json.webpubsub.azure.v1"
    pubsub = True
    streams = True

    def decode(self, data: bytes | str, is_text: bool) -> ClientRequest:
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ProtocolViolation("the message is not valid JSON") from None
        if not isinstance(msg, dict):
            raise ProtocolViolation("the message must be a JSON object")
        kind = msg.get("type")
        if not isinstance(kind, str):
            raise ProtocolViolation("'type' is required")
        if kind == "sendToGroup":
            no_echo = msg.get("noEcho", False)
            if not isinstance(no_echo, bool):
                raise ProtocolViolation("'noEcho' must be a boolean")
            if "stream" in msg:
                return _stream_start(msg, no_echo)
            return SendToGroup(
                group=_str(msg, "group") or "",
                payload=decode_data(msg.get("dataType"), msg.get("data"), "data" in msg),
                ack_id=_uint(msg, "ackId"),
                no_echo=no_echo,
            )
        if kind == "joinGroup":
            return JoinGroup(_str(msg, "group") or "", _uint(msg, "ackId"))
        if kind == "leaveGroup":
            return LeaveGroup(_str(msg, "group") or "", _uint(msg, "ackId"))
        if kind == "event":
            return UserEvent(
                event=_str(msg, "event") or "",
                payload=decode_data(msg.get("dataType"), msg.get("data"), "data" in msg),
                ack_id=_uint(msg, "ackId"),
            )
        if kind == "sequenceAck":
            return SequenceAck(_uint(msg, "sequenceId", required=True) or 0)
        if kind == "ping":
            return Ping()
        if kind == "invoke":
            payload = None
            if "data" in msg or "dataType" in msg:
                payload = decode_data(msg.get("dataType"), msg.get("data"), "data" in msg)
            return Invoke(
                invocation_id=_str(msg, "invocationId") or "",
                event=_str(msg, "event", required=False) or "",
                payload=payload,
                target=_str(msg, "target", required=False) or "event",
            )
        if kind == "cancelInvocation":
            return CancelInvocation(_str(msg, "invocationId") or "")
        if kind == "streamData":
            return _stream_data(msg)
        if kind == "streamEnd":
            return _stream_end(msg)
        ack_id = msg.get("ackId")
        invocation_id = msg.get("invocationId")
        return UnsupportedRequest(
            kind,
            ack_id=ack_id if isinstance(ack_id, int) and not isinstance(ack_id, bool) else None,
            invocation_id=invocation_id if isinstance(invocation_id, str) else None,
        )

    # -- encoding ---------------------------------------------------------------

    def message_body(self, message: DataMessage) -> bytes:
        """The JSON object of a data message without its closing brace.

        Reliable codecs append ``,"sequenceId":N}`` per connection; others append ``}``.
        """
        dt = message.payload.data_type
        if message.group is None:
            head = b'{"type":"message","from":"server","dataType":"' + dt.value.encode() + b'"'
        else:
            head = b'{"type":"message","from":"group","group":' + orjson.dumps(message.group)
            if message.from_user_id is not None:
                head += b',"fromUserId":' + orjson.dumps(message.from_user_id)
            head += b',"dataType":"' + dt.value.encode() + b'"'
        head += b',"data":' + encode_data_value(message.payload)
        if message.stream is not None:
            head += b',"stream":' + _stream_object(message.stream)
        return head

    def encode_data(self, message: DataMessage) -> Encoded:
        return self.message_body(message) + b"}", True

    def encode_ack(self, ack: Ack) -> Encoded:
        obj: dict[str, Any] = {"type": "ack", "ackId": ack.ack_id, "success": ack.success}
        if ack.error_name is not None:
            obj["error"] = {"name": ack.error_name, "message": ack.error_message or ""}
        return _dumps(obj)

    def encode_connected(self, event: Connected) -> Encoded:
        obj: dict[str, Any] = {
            "type": "system",
            "event": "connected",
            "userId": event.user_id,
            "connectionId": event.connection_id,
        }
        if event.reconnection_token is not None:
            obj["reconnectionToken"] = event.reconnection_token
        return _dumps(obj)

    def encode_disconnected(self, event: Disconnected) -> Encoded:
        return _dumps({"type": "system", "event": "disconnected", "message": event.message})

    def encode_pong(self) -> Encoded:
        return _PONG, True

    def encode_invoke_response(self, response: InvokeResponse) -> Encoded:
        head = b'{"type":"invokeResponse","invocationId":' + orjson.dumps(response.invocation_id)
        if response.success:
            head += b',"success":true'
            if response.payload is not None:
                head += (
                    b',"dataType":"'
                    + response.payload.data_type.value.encode()
                    + b'","data":'
                    + encode_data_value(response.payload)
                )
            return head + b"}", True
        error = orjson.dumps(
            {"name": response.error_name or "InternalServerError", "message": response.error_message or ""}
        )
        return head + b',"success":false,"error":' + error + b"}", True

    def encode_stream_reply(self, reply: StreamAck | StreamNack | StreamClosed) -> Encoded:
        obj: dict[str, Any]
        if isinstance(reply, StreamAck):
            obj = {"type": "streamAck", "streamId": reply.stream_id}
            obj["expectedSequenceId"] = reply.expected_sequence_id
        elif isinstance(reply, StreamNack):
            obj = {"type": "streamNack", "streamId": reply.stream_id}
            obj["expectedSequenceId"] = reply.expected_sequence_id
            obj["name"] = reply.name
            obj["message"] = reply.message
        else:
            obj = {"type": "streamClosed", "streamId": reply.stream_id}
            if reply.error_name is not None:
                obj["error"] = {"name": reply.error_name, "message": reply.error_message or ""}
        return _dumps(obj)


class JsonReliableCodec(JsonCodec):
    name = "json.reliable.webpubsub.azure.v1"
    reliable = True

    def stamp(self, body: bytes, sequence_id: int) -> bytes:
        """Finish a shared :meth:`message_body` with this connection's sequence id."""
        return b'%s,"sequenceId":%d}' % (body, sequence_id)

    def stamp_frame(self, body: bytes, sequence_id: int) -> bytes:
        """The text frame of :meth:`stamp`, built by one formatting operation (the fan-out hot path)."""
        # payload = body + ',"sequenceId":' (14 bytes) + digits + '}'
        n = len(body) + 15 + len(str(sequence_id))
        if n < 126:
            return b'\x81%c%b,"sequenceId":%d}' % (n, body, sequence_id)
        if n < 65536:
            return b'\x81\x7e%c%c%b,"sequenceId":%d}' % (n >> 8, n & 0xFF, body, sequence_id)
        return b'\x81\x7f%b%b,"sequenceId":%d}' % (_U64.pack(n), body, sequence_id)
