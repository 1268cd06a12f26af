"""The SignalR MessagePack hub protocol (``messagepack``, versions 1–2), pure.

Each message is a VarInt length prefix (7 bits per byte, least significant group first, high bit
= more bytes follow, at most 5 bytes, at most 2 GB) followed by a MessagePack array whose first
item is the message type (ASP.NET Core ``MessagePackHubProtocol``). The handshake stays JSON
(:mod:`hubbub.signalr.protocol_json`). Like the JSON protocol: unknown message types and extra
trailing array items are ignored; a malformed message is a
:class:`~hubbub.errors.ProtocolViolation`.
"""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped]

from hubbub.errors import PayloadTooLarge, ProtocolViolation
from hubbub.signalr.messages import (
    Ack,
    CancelInvocation,
    Close,
    Completion,
    HubMessage,
    Invocation,
    MessageType,
    Ping,
    Sequence,
    StreamInvocation,
    StreamItem,
)
from hubbub.signalr.protocol_json import Parsed

__all__ = ["PING", "MsgpackReader", "decode_body", "encode", "encode_body", "read_varint", "varint"]

_MAX_LENGTH = 2**31 - 1
_ERROR, _VOID, _NON_VOID = 1, 2, 3


def varint(length: int) -> bytes:
    """The length prefix of a message body of ``length`` bytes."""
    if not 0 <= length <= _MAX_LENGTH:
        raise ValueError("a message body is 0 to 2 GB long")
    out = bytearray()
    while True:
        low = length & 0x7F
        length >>= 7
        if length:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def read_varint(data: bytes, offset: int = 0) -> tuple[int, int] | None:
    """``(length, offset of the body)``, or None when the prefix is not complete yet.

    Raises :class:`ProtocolViolation` for a prefix of more than 5 bytes or a length over 2 GB.
    """
    length = shift = 0
    for i in range(5):
        if offset + i >= len(data):
            return None
        byte = data[offset + i]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if length > _MAX_LENGTH:
                break
            return length, offset + i + 1
        shift += 7
    raise ProtocolViolation("Messages over 2GB in size are not supported.")


def encode_body(message: HubMessage) -> bytes:
    """The MessagePack array of ``message``, without the length prefix."""
    items: list[Any]
    if isinstance(message, Ping):
        items = [6]
    elif isinstance(message, Invocation):
        items = [
            1,
            dict(message.headers),
            message.invocation_id,
            message.target,
            message.arguments,
            list(message.stream_ids),
        ]
    elif isinstance(message, Completion):
        items = [3, dict(message.headers), message.invocation_id]
        if message.error is not None:
            items += [_ERROR, message.error]
        elif message.has_result:
            items += [_NON_VOID, message.result]
        else:
            items.append(_VOID)
    elif isinstance(message, Close):
        items = [7, message.error, message.allow_reconnect]
    elif isinstance(message, StreamItem):
        items = [2, dict(message.headers), message.invocation_id, message.item]
    elif isinstance(message, StreamInvocation):
        items = [
            4,
            dict(message.headers),
            message.invocation_id,
            message.target,
            message.arguments,
            list(message.stream_ids),
        ]
    elif isinstance(message, CancelInvocation):
        items = [5, dict(message.headers), message.invocation_id]
    elif isinstance(message, Ack):
        items = [8, message.sequence_id]
    else:
        items = [9, message.sequence_id]
    return msgpack.packb(items, use_bin_type=True)  # type: ignore[no-any-return]


def encode(message: HubMessage) -> bytes:
    """The framed message: VarInt length prefix + MessagePack body."""
    body = encode_body(message)
    return varint(len(body)) + body


#: The MessagePack Ping message, framed (``0x02 0x91 0x06``).
PING = encode(Ping())


# --- decoding ---------------------------------------------------------------------------------


def _item(items: list[Any], index: int, what: str) -> Any:
    if index >= len(items):
        raise ProtocolViolation(f"Invalid payload for {what} message.")
    return items[index]


def _string(items: list[Any], index: int, name: str, what: str, *, nullable: bool = False) -> Any:
    value = _item(items, index, what)
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise ProtocolViolation(f"Reading '{name}' as String failed.")
    return value


def _headers(items: list[Any], what: str) -> dict[str, str]:
    value = _item(items, 1, what)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ProtocolViolation("Reading 'headers' as a map of String to String failed.")
    return value


def _arguments(items: list[Any], index: int, what: str) -> list[Any]:
    value = _item(items, index, what)
    if not isinstance(value, list):
        raise ProtocolViolation("Reading array length for 'arguments' failed.")
    return value


def _stream_ids(items: list[Any], index: int) -> tuple[str, ...]:
    if index >= len(items) or items[index] is None:
        return ()
    value = items[index]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolViolation("Reading 'streamIds' as an Array of String failed.")
    return tuple(value)


def _integer(items: list[Any], index: int, name: str, what: str) -> int:
    value = _item(items, index, what)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolViolation(f"Reading '{name}' as Int32 failed.")
    return value


def _completion(items: list[Any]) -> Completion:
    what = "Completion"
    headers = _headers(items, what)
    invocation_id = _string(items, 2, "invocationId", what)
    kind = _integer(items, 3, "resultKind", what)
    if kind == _ERROR:
        return Completion(invocation_id, error=_string(items, 4, "error", what), headers=headers)
    if kind == _VOID:
        return Completion(invocation_id, headers=headers)
    if kind == _NON_VOID:
        return Completion(invocation_id, _item(items, 4, what), has_result=True, headers=headers)
    raise ProtocolViolation("Invalid invocation result kind.")


def _message(items: list[Any]) -> HubMessage | None:
    kind = _integer(items, 0, "messageType", "hub")
    if kind == MessageType.INVOCATION:
        what = "Invocation"
        headers = _headers(items, what)
        invocation_id = _string(items, 2, "invocationId", what, nullable=True)
        return Invocation(
            _string(items, 3, "target", what),
            _arguments(items, 4, what),
            invocation_id or None,
            _stream_ids(items, 5),
            headers,
        )
    if kind == MessageType.STREAM_ITEM:
        headers = _headers(items, "StreamItem")
        invocation_id = _string(items, 2, "invocationId", "StreamItem")
        return StreamItem(invocation_id, _item(items, 3, "StreamItem"), headers)
    if kind == MessageType.COMPLETION:
        return _completion(items)
    if kind == MessageType.STREAM_INVOCATION:
        what = "StreamInvocation"
        headers = _headers(items, what)
        return StreamInvocation(
            _string(items, 2, "invocationId", what),
            _string(items, 3, "target", what),
            _arguments(items, 4, what),
            _stream_ids(items, 5),
            headers,
        )
    if kind == MessageType.CANCEL_INVOCATION:
        headers = _headers(items, "CancelInvocation")
        return CancelInvocation(_string(items, 2, "invocationId", "CancelInvocation"), headers)
    if kind == MessageType.PING:
        return Ping()
    if kind == MessageType.CLOSE:
        error = _string(items, 1, "error", "Close", nullable=True)
        allow = items[2] if len(items) > 2 else False
        if not isinstance(allow, bool):
            raise ProtocolViolation("Reading 'allowReconnect' as Boolean failed.")
        return Close(error, allow)
    if kind == MessageType.ACK:
        return Ack(_integer(items, 1, "sequenceId", "Ack"))
    if kind == MessageType.SEQUENCE:
        return Sequence(_integer(items, 1, "sequenceId", "Sequence"))
    return None  # a newer message type: ignored, as ASP.NET Core does


def decode_body(body: bytes) -> HubMessage | None:
    """One message from its MessagePack body (no prefix); None for an unknown type."""
    try:
        items = msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise ProtocolViolation("The message is not valid MessagePack.") from None
    if not isinstance(items, list) or not items:
        raise ProtocolViolation("Reading array length for 'elementCount' failed.")
    return _message(items)


class MsgpackReader:
    """Splits a byte stream into length-prefixed messages and decodes them (one per connection)."""

    __slots__ = ("_buffer", "max_message_bytes")

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._buffer = b""

    def feed(self, data: bytes) -> list[Parsed]:
        """Decode every message completed by ``data`` (errors as :class:`JsonReader.feed`)."""
        buffer = self._buffer + data if self._buffer else data
        out: list[Parsed] = []
        offset = 0
        while True:
            prefix = read_varint(buffer, offset)
            if prefix is None:
                break
            length, start = prefix
            if length > self.max_message_bytes:
                raise PayloadTooLarge(f"The maximum message size of {self.max_message_bytes}B was exceeded.")
            end = start + length
            if end > len(buffer):
                break
            body = buffer[start:end]
            out.append(Parsed(decode_body(body), body))
            offset = end
        self._buffer = buffer[offset:]
        return out
