"""Simple WebSocket clients: no subprotocol, or one that is not predefined (spec §4.9).

Every inbound frame is the user event ``message``; outbound messages are the raw
payload (text frame for text/json, binary frame for binary/protobuf); no system
messages, acks or pongs are sent.
"""

from __future__ import annotations

from hubbub.protocols.base import Codec, Encoded
from hubbub.protocols.events import DataMessage, DataType, Payload, UserEvent

__all__ = ["SimpleCodec"]

_TEXTUAL = frozenset({DataType.TEXT, DataType.JSON})


class SimpleCodec(Codec):
    name = ""

    def decode(self, data: bytes | str, is_text: bool) -> UserEvent:
        if isinstance(data, str):
            data = data.encode("utf-8")
        return UserEvent("message", Payload(DataType.TEXT if is_text else DataType.BINARY, data))

    def encode_data(self, message: DataMessage) -> Encoded:
        payload = message.payload
        return payload.data, payload.data_type in _TEXTUAL
