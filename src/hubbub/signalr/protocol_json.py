"""The SignalR JSON hub protocol (``json``, versions 1–2) and the handshake, pure.

Every message, the handshake included, is one JSON object followed by the record separator
``0x1E``. Several records may share a transport frame and one record may span frames, so
:class:`JsonReader` keeps the unfinished tail between :meth:`~JsonReader.feed` calls.

Decoding follows ASP.NET Core's ``JsonHubProtocol``: property names are case-sensitive, a
missing or mistyped required property is a :class:`~hubbub.errors.ProtocolViolation` (the
connection then ends with a Close message carrying the error), unknown message types and
unknown properties are ignored so newer clients keep working.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from hubbub.errors import PayloadTooLarge, ProtocolViolation
from hubbub.signalr.messages import (
    Ack,
    CancelInvocation,
    Close,
    Completion,
    HandshakeRequest,
    HubMessage,
    Invocation,
    MessageType,
    Ping,
    Sequence,
    StreamInvocation,
    StreamItem,
)

__all__ = [
    "PING",
    "RS",
    "JsonReader",
    "Parsed",
    "decode_record",
    "encode",
    "handshake_response",
    "parse_handshake",
    "read_handshake",
]

RS = b"\x1e"
#: The JSON Ping message, framed (``{"type":6}␞``).
PING = b'{"type":6}' + RS
_JSON_TYPES = {dict: "Object", list: "Array", str: "String", bool: "Boolean", type(None): "Null"}


class Parsed(NamedTuple):
    """One decoded record: the message (None for an unknown type, to be ignored) and its raw
    bytes without the framing (what the upstream receives for an invocation)."""

    message: HubMessage | None
    raw: bytes


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int | float):
        return "Number"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _load_object(record: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(record)
    except orjson.JSONDecodeError:
        raise ProtocolViolation("Error reading JSON: the message is not valid JSON.") from None
    if not isinstance(value, dict):
        raise ProtocolViolation(f"Unexpected JSON Token Type '{_kind(value)}'. Expected a JSON Object.")
    return value


# --- handshake --------------------------------------------------------------------------------


def parse_handshake(record: bytes) -> HandshakeRequest:
    """The handshake request in ``record`` (the JSON object, without the separator)."""
    obj = _load_object(record)
    protocol = obj.get("protocol")
    if protocol is None:
        raise ProtocolViolation("Missing required property 'protocol'.")
    if not isinstance(protocol, str):
        raise ProtocolViolation("Expected 'protocol' to be of type String.")
    version = obj.get("version")
    if version is None:
        raise ProtocolViolation("Missing required property 'version'.")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolViolation("Expected 'version' to be of type Integer.")
    return HandshakeRequest(protocol, version)


def read_handshake(buffer: bytes, max_bytes: int) -> tuple[HandshakeRequest, bytes] | None:
    """``(request, bytes after it)`` once ``buffer`` holds a whole handshake record, else None.

    Raises :class:`ProtocolViolation` for a malformed request and :class:`PayloadTooLarge` when
    more than ``max_bytes`` arrive without a separator.
    """
    end = buffer.find(RS)
    if end < 0:
        if len(buffer) > max_bytes:
            raise PayloadTooLarge(f"The handshake is larger than {max_bytes} bytes.")
        return None
    return parse_handshake(buffer[:end]), buffer[end + 1 :]


def handshake_response(error: str | None = None) -> bytes:
    """``{}␞`` on success, ``{"error":"…"}␞`` on failure (JSON for every hub protocol)."""
    if error is None:
        return b"{}" + RS
    return orjson.dumps({"error": error}) + RS


# --- messages ---------------------------------------------------------------------------------


def _string(obj: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise ProtocolViolation(f"Missing required property '{name}'.")
        return None
    if not isinstance(value, str):
        raise ProtocolViolation(f"Expected '{name}' to be of type String.")
    return value


def _required(obj: dict[str, Any], name: str) -> str:
    value = _string(obj, name, required=True)
    assert value is not None
    return value


def _integer(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name)
    if value is None:
        raise ProtocolViolation(f"Missing required property '{name}'.")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolViolation(f"Expected '{name}' to be of type Integer.")
    return value


def _arguments(obj: dict[str, Any]) -> list[Any]:
    if "arguments" not in obj:
        raise ProtocolViolation("Missing required property 'arguments'.")
    value = obj["arguments"]
    if not isinstance(value, list):
        raise ProtocolViolation(f"Expected 'arguments' to be of type Array, got {_kind(value)}.")
    return value


def _stream_ids(obj: dict[str, Any]) -> tuple[str, ...]:
    value = obj.get("streamIds")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolViolation("Expected 'streamIds' to be an Array of String.")
    return tuple(value)


def _headers(obj: dict[str, Any]) -> dict[str, str]:
    value = obj.get("headers")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolViolation(f"Expected 'headers' to be of type Object, got {_kind(value)}.")
    for key, item in value.items():
        if not isinstance(item, str):
            raise ProtocolViolation(f"Expected header '{key[:64]}' to be of type String.")
    return value


def decode_record(record: bytes) -> HubMessage | None:
    """One message from a record (without the separator); None for an unknown type."""
    obj = _load_object(record)
    kind = _integer(obj, "type")
    if kind == MessageType.INVOCATION:
        return Invocation(
            _required(obj, "target"),
            _arguments(obj),
            _string(obj, "invocationId", required=False),
            _stream_ids(obj),
            _headers(obj),
        )
    if kind == MessageType.STREAM_ITEM:
        return StreamItem(_required(obj, "invocationId"), obj.get("item"), _headers(obj))
    if kind == MessageType.COMPLETION:
        invocation_id = _required(obj, "invocationId")
        error = _string(obj, "error", required=False)
        if error is not None and "result" in obj:
            raise ProtocolViolation("The 'error' and 'result' properties are mutually exclusive.")
        return Completion(invocation_id, obj.get("result"), error, "result" in obj, _headers(obj))
    if kind == MessageType.STREAM_INVOCATION:
        return StreamInvocation(
            _required(obj, "invocationId"),
            _required(obj, "target"),
            _arguments(obj),
            _stream_ids(obj),
            _headers(obj),
        )
    if kind == MessageType.CANCEL_INVOCATION:
        return CancelInvocation(_required(obj, "invocationId"), _headers(obj))
    if kind == MessageType.PING:
        return Ping()
    if kind == MessageType.CLOSE:
        allow = obj.get("allowReconnect", False)
        if not isinstance(allow, bool):
            raise ProtocolViolation("Expected 'allowReconnect' to be of type Boolean.")
        return Close(_string(obj, "error", required=False), allow)
    if kind == MessageType.ACK:
        return Ack(_integer(obj, "sequenceId"))
    if kind == MessageType.SEQUENCE:
        return Sequence(_integer(obj, "sequenceId"))
    return None  # a newer message type: ignored, as ASP.NET Core does


class JsonReader:
    """Splits a byte stream into records and decodes them (one per connection, stateful)."""

    __slots__ = ("_buffer", "max_message_bytes")

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._buffer = b""

    def feed(self, data: bytes) -> list[Parsed]:
        """Decode every record completed by ``data``.

        Raises :class:`ProtocolViolation` for a malformed record and :class:`PayloadTooLarge` for
        a record (or an unfinished tail) longer than ``max_message_bytes``; the reader is then
        unusable, the connection must end.
        """
        buffer = self._buffer + data if self._buffer else data
        records = buffer.split(RS)
        self._buffer = records.pop()
        limit = self.max_message_bytes
        if len(self._buffer) > limit or any(len(r) > limit for r in records):
            raise PayloadTooLarge(f"The maximum message size of {limit}B was exceeded.")
        return [Parsed(decode_record(record), record) for record in records]


# --- encoding ---------------------------------------------------------------------------------


def _with_headers(body: dict[str, Any], headers: Any) -> dict[str, Any]:
    if headers:
        body["headers"] = dict(headers)
    return body


def encode(message: HubMessage) -> bytes:
    """The framed JSON record of ``message`` (``orjson``, compact, separator included)."""
    body: dict[str, Any]
    if isinstance(message, Ping):
        return PING
    if isinstance(message, Invocation):
        body = _with_headers({"type": 1}, message.headers)
        if message.invocation_id is not None:
            body["invocationId"] = message.invocation_id
        body["target"] = message.target
        body["arguments"] = message.arguments
        if message.stream_ids:
            body["streamIds"] = list(message.stream_ids)
    elif isinstance(message, Completion):
        body = _with_headers({"type": 3}, message.headers)
        body["invocationId"] = message.invocation_id
        if message.error is not None:
            body["error"] = message.error
        elif message.has_result:
            body["result"] = message.result
    elif isinstance(message, Close):
        body = {"type": 7}
        if message.error is not None:
            body["error"] = message.error
        if message.allow_reconnect:
            body["allowReconnect"] = True
    elif isinstance(message, StreamItem):
        body = _with_headers({"type": 2}, message.headers)
        body["invocationId"] = message.invocation_id
        body["item"] = message.item
    elif isinstance(message, StreamInvocation):
        body = _with_headers({"type": 4}, message.headers)
        body["invocationId"] = message.invocation_id
        body["target"] = message.target
        body["arguments"] = message.arguments
        if message.stream_ids:
            body["streamIds"] = list(message.stream_ids)
    elif isinstance(message, CancelInvocation):
        body = _with_headers({"type": 5, "invocationId": message.invocation_id}, message.headers)
    elif isinstance(message, Ack):
        body = {"type": 8, "sequenceId": message.sequence_id}
    else:
        body = {"type": 9, "sequenceId": message.sequence_id}
    return orjson.dumps(body) + RS
