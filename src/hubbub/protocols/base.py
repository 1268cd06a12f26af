"""The codec interface every client subprotocol implements.

A codec is pure: bytes in, events out; events in, bytes out. It never raises
anything but :class:`~hubbub.errors.ProtocolViolation` from :meth:`Codec.decode`.
"""

from __future__ import annotations

from typing import ClassVar

from hubbub.protocols.events import (
    Ack,
    ClientRequest,
    Connected,
    DataMessage,
    Disconnected,
    InvokeResponse,
    StreamAck,
    StreamClosed,
    StreamNack,
)
from hubbub.protocols.framing import OP_BINARY, OP_TEXT, frame

__all__ = ["Codec", "Encoded"]

# (frame payload, is_text); None means "nothing to send for this kind of push".
Encoded = tuple[bytes, bool]


class Codec:
    """Base class: subclasses set the class attributes and implement the methods."""

    #: The subprotocol name as negotiated ("" for simple WebSocket clients).
    name: ClassVar[str] = ""
    #: True for the PubSub subprotocols (system messages, acks, client-side groups).
    pubsub: ClassVar[bool] = False
    #: True for the ``*.reliable.*`` variants (sequence ids, recovery).
    reliable: ClassVar[bool] = False
    #: False when every frame is binary (protobuf); stamped reliable frames follow it.
    text_frames: ClassVar[bool] = True
    #: True when the codec carries group streams (the ``stream`` object, stream replies).
    streams: ClassVar[bool] = False

    def decode(self, data: bytes | str, is_text: bool) -> ClientRequest:
        raise NotImplementedError

    def encode_data(self, message: DataMessage) -> Encoded:
        raise NotImplementedError

    def message_body(self, message: DataMessage) -> bytes:
        """Reliable codecs: the shared, unstamped encoding of a data message."""
        raise NotImplementedError

    def stamp(self, body: bytes, sequence_id: int) -> bytes:
        """Reliable codecs: finish a :meth:`message_body` with a connection's sequence id."""
        raise NotImplementedError

    def stamp_frame(self, body: bytes, sequence_id: int) -> bytes:
        """The complete WebSocket frame of :meth:`stamp` (codecs may build it in one go)."""
        return frame(self.stamp(body, sequence_id), OP_TEXT if self.text_frames else OP_BINARY)

    def encode_ack(self, ack: Ack) -> Encoded | None:
        return None

    def encode_connected(self, event: Connected) -> Encoded | None:
        return None

    def encode_disconnected(self, event: Disconnected) -> Encoded | None:
        return None

    def encode_pong(self) -> Encoded | None:
        return None

    def encode_invoke_response(self, response: InvokeResponse) -> Encoded | None:
        return None

    def encode_stream_reply(self, reply: StreamAck | StreamNack | StreamClosed) -> Encoded | None:
        return None
