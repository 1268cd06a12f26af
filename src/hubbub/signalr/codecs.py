"""The two hub protocols as :class:`~hubbub.protocols.base.Codec` s, so SignalR connections ride the
shared :class:`~hubbub.core.session.Session` / fan-out / broker path unchanged. Pure.

What a REST send puts in a :class:`~hubbub.protocols.events.Payload` (see
:mod:`hubbub.signalr.rest`):

* ``json``: the JSON Invocation record without its separator,
  ``{"type":1,"target":"newMessage","arguments":[…]}``. The JSON codec appends ``0x1E`` (no
  re-parse); the MessagePack codec converts it once per broadcast ("service-side JSON →
  MessagePack conversion", digest §2.8).
* ``binary``: the SDK's multi-protocol body, a MessagePack map from protocol name to the already
  framed message(s) for that protocol (digest §3.5), completed by the REST layer so that both
  ``json`` and ``messagepack`` are present; each codec forwards its entry verbatim.
"""

from __future__ import annotations

import base64
from typing import Any, ClassVar

import msgpack  # type: ignore[import-untyped]
import orjson

from hubbub.errors import BadRequest, HubbubError
from hubbub.protocols.base import Codec, Encoded
from hubbub.protocols.events import ClientRequest, DataMessage, DataType, Disconnected
from hubbub.signalr import protocol_json, protocol_msgpack
from hubbub.signalr.messages import Close, HubMessage, Invocation
from hubbub.signalr.protocol_json import JsonReader
from hubbub.signalr.protocol_msgpack import MsgpackReader

__all__ = [
    "HUB_PROTOCOLS",
    "JSON",
    "MAX_PROTOCOL_VERSION",
    "MESSAGEPACK",
    "HubCodec",
    "complete_multi_protocol",
    "frame_payload",
    "invocation_record",
]

#: The highest hub protocol version accepted in the handshake (2 adds stateful reconnect, which
#: hubbub does not offer, so 1 and 2 behave the same).
MAX_PROTOCOL_VERSION = 2


def frame_payload(frame: bytes) -> bytes:
    """The payload of an unmasked, unfragmented WebSocket frame built by
    :func:`hubbub.protocols.framing.frame` (how SSE and long polling reuse fan-out frames)."""
    n = frame[1] & 0x7F
    if n < 126:
        return frame[2:]
    return frame[4:] if n == 126 else frame[10:]


def invocation_record(target: str, arguments: list[Any]) -> bytes:
    """The JSON Invocation record (no separator) a REST send fans out."""
    return orjson.dumps({"type": 1, "target": target, "arguments": arguments})


class HubCodec(Codec):
    """One SignalR hub protocol. Sessions use it through the :class:`Codec` surface."""

    name: ClassVar[str]
    #: Needs a transport with the Binary transfer format (not Server-Sent Events).
    binary: ClassVar[bool]
    #: The framed Ping message.
    ping: ClassVar[bytes]

    def encode(self, message: HubMessage) -> bytes:
        raise NotImplementedError

    def reader(self, max_message_bytes: int) -> JsonReader | MsgpackReader:
        raise NotImplementedError

    def decode(self, data: bytes | str, is_text: bool) -> ClientRequest:
        raise NotImplementedError("SignalR connections are read by hubbub.signalr.connection")

    def from_json_record(self, record: bytes) -> bytes:
        """This protocol's framed form of a JSON Invocation record."""
        raise NotImplementedError

    def encode_data(self, message: DataMessage) -> Encoded:
        payload = message.payload
        if payload.data_type is DataType.BINARY:
            data = msgpack.unpackb(payload.data, raw=False)[self.name]
        else:
            data = self.from_json_record(payload.data)
        return data, self.text_frames

    def encode_disconnected(self, event: Disconnected) -> Encoded:
        """Server-side closes (REST, shutdown): a Close message that lets clients reconnect."""
        return self.encode(Close(event.message or None, allow_reconnect=True)), self.text_frames


class JsonHubCodec(HubCodec):
    name = "json"
    binary = False
    text_frames = True
    ping = protocol_json.PING

    def encode(self, message: HubMessage) -> bytes:
        return protocol_json.encode(message)

    def reader(self, max_message_bytes: int) -> JsonReader:
        return JsonReader(max_message_bytes)

    def from_json_record(self, record: bytes) -> bytes:
        return record + protocol_json.RS


class MessagePackHubCodec(HubCodec):
    name = "messagepack"
    binary = True
    text_frames = False
    ping = protocol_msgpack.PING

    def encode(self, message: HubMessage) -> bytes:
        return protocol_msgpack.encode(message)

    def reader(self, max_message_bytes: int) -> MsgpackReader:
        return MsgpackReader(max_message_bytes)

    def from_json_record(self, record: bytes) -> bytes:
        obj = orjson.loads(record)
        return protocol_msgpack.encode(Invocation(obj["target"], obj["arguments"]))


JSON = JsonHubCodec()
MESSAGEPACK = MessagePackHubCodec()
HUB_PROTOCOLS: dict[str, HubCodec] = {JSON.name: JSON, MESSAGEPACK.name: MESSAGEPACK}


# --- the multi-protocol REST body ---------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")  # as System.Text.Json writes byte[]
    if isinstance(value, msgpack.Timestamp):
        return value.to_datetime().isoformat()
    raise TypeError


def _invocations(reader: JsonReader | MsgpackReader, data: bytes) -> list[Invocation]:
    messages = []
    for parsed in reader.feed(data):
        if not isinstance(parsed.message, Invocation):
            raise BadRequest("The multi-protocol payload may only hold Invocation messages.")
        messages.append(parsed.message)
    if not messages:
        raise BadRequest("The multi-protocol payload holds no complete message.")
    return messages


def _json_record(message: Invocation) -> bytes:
    body: dict[str, Any] = {"type": 1}
    if message.headers:
        body["headers"] = dict(message.headers)
    body["target"] = message.target
    body["arguments"] = message.arguments
    return orjson.dumps(body, default=_json_default) + protocol_json.RS


def complete_multi_protocol(body: bytes, limit: int) -> bytes:
    """Validate an ``application/octet-stream`` send body and give it both protocols' entries.

    The body is a MessagePack map ``{"json": bin, "messagepack": bin}`` (either entry may be
    missing); a missing entry is converted from the other one (MessagePack ``bin`` values become
    base64 strings in JSON, as .NET writes ``byte[]``). Unknown protocol names are dropped. Raises
    :class:`BadRequest` when the body is not such a map or an entry does not parse.
    """
    try:
        entries = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise BadRequest("The body is not a MessagePack map of protocol name to message bytes.") from None
    if not isinstance(entries, dict):
        raise BadRequest("The body is not a MessagePack map of protocol name to message bytes.")
    known = {
        name: value for name, value in entries.items() if isinstance(name, str) and name in HUB_PROTOCOLS
    }
    if not known or not all(isinstance(v, bytes) for v in known.values()):
        raise BadRequest("The body needs a 'json' or 'messagepack' entry holding the framed message bytes.")
    try:
        if "json" in known:
            messages = _invocations(JSON.reader(limit), known["json"])
        else:
            messages = _invocations(MESSAGEPACK.reader(limit), known["messagepack"])
        if "messagepack" not in known:
            known["messagepack"] = b"".join(MESSAGEPACK.encode(m) for m in messages)
        elif "json" not in known:
            known["json"] = b"".join(_json_record(m) for m in messages)
        else:
            _invocations(MESSAGEPACK.reader(limit), known["messagepack"])
    except HubbubError as exc:
        raise BadRequest(f"The multi-protocol payload is malformed: {exc.message}") from None
    except (TypeError, ValueError, OverflowError):
        raise BadRequest("The multi-protocol payload cannot be converted between protocols.") from None
    return msgpack.packb(known, use_bin_type=True)  # type: ignore[no-any-return]
