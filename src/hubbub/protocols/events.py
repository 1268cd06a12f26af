"""The vocabulary every codec shares: decoded client requests and server pushes.

Codecs turn frame payloads into these frozen dataclasses and back; nothing here
knows about sockets, asyncio or HTTP (see ``docs/architecture.md``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "Ack",
    "CancelInvocation",
    "ClientRequest",
    "Connected",
    "DataMessage",
    "DataType",
    "Disconnected",
    "Invoke",
    "InvokeResponse",
    "JoinGroup",
    "LeaveGroup",
    "Payload",
    "Ping",
    "SendToGroup",
    "SequenceAck",
    "StreamAck",
    "StreamClosed",
    "StreamData",
    "StreamEnd",
    "StreamInfo",
    "StreamNack",
    "StreamStart",
    "UnsupportedRequest",
    "UserEvent",
]


class DataType(enum.StrEnum):
    TEXT = "text"
    JSON = "json"
    BINARY = "binary"
    PROTOBUF = "protobuf"


@dataclass(frozen=True, slots=True)
class Payload:
    """A message body with its data type.

    ``data`` is always bytes: UTF-8 for ``text``, serialized JSON for ``json``
    (so JSON subscribers can embed it without re-parsing), raw bytes otherwise.
    """

    data_type: DataType
    data: bytes


# --- client -> service ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinGroup:
    group: str
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class LeaveGroup:
    group: str
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class SendToGroup:
    group: str
    payload: Payload
    ack_id: int | None = None
    no_echo: bool = False


@dataclass(frozen=True, slots=True)
class UserEvent:
    """A user event for the upstream event handler (``event`` message or simple-client frame)."""

    event: str
    payload: Payload
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class SequenceAck:
    sequence_id: int


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Invoke:
    invocation_id: str
    event: str
    payload: Payload | None
    target: str = "event"


@dataclass(frozen=True, slots=True)
class CancelInvocation:
    invocation_id: str


# group streams (spec §4.8; the JSON subprotocols' `stream` / `streamData` / `streamEnd`)


@dataclass(frozen=True, slots=True)
class StreamStart:
    """``sendToGroup`` with a ``stream`` object: open stream ``stream_id`` to ``group``."""

    group: str
    stream_id: str
    idle_timeout_ms: int | None = None
    no_echo: bool = False


@dataclass(frozen=True, slots=True)
class StreamData:
    """One fragment (``sequence_id`` 1, 2, ...) or, with neither id nor payload, a keepalive."""

    stream_id: str
    sequence_id: int | None = None
    payload: Payload | None = None


@dataclass(frozen=True, slots=True)
class StreamEnd:
    stream_id: str
    failed: bool = False
    error_message: str | None = None
    user_error_code: str | None = None


@dataclass(frozen=True, slots=True)
class UnsupportedRequest:
    """A well-formed message of a type this server does not implement.

    The dispatcher answers it with the error the real service gives (an ack when
    it carries an ``ackId``), instead of dropping the connection.
    """

    type: str
    ack_id: int | None = None
    invocation_id: str | None = None


ClientRequest = (
    JoinGroup
    | LeaveGroup
    | SendToGroup
    | UserEvent
    | SequenceAck
    | Ping
    | Invoke
    | CancelInvocation
    | StreamStart
    | StreamData
    | StreamEnd
    | UnsupportedRequest
)


# --- service -> client (non-message pushes) -------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    ack_id: int
    success: bool
    error_name: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class InvokeResponse:
    invocation_id: str
    success: bool
    payload: Payload | None = None
    error_name: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class Connected:
    connection_id: str
    user_id: str | None
    reconnection_token: str | None = None


@dataclass(frozen=True, slots=True)
class Disconnected:
    message: str = field(default="")


@dataclass(frozen=True, slots=True)
class StreamAck:
    stream_id: str
    expected_sequence_id: int


@dataclass(frozen=True, slots=True)
class StreamNack:
    """A retriable stream error: ``InvalidSequenceId`` or ``TransientError``."""

    stream_id: str
    expected_sequence_id: int
    name: str
    message: str


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The publisher's stream is closed; ``error_name`` is None for a normal end."""

    stream_id: str
    error_name: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """The ``stream`` object of a group message that belongs to a stream.

    ``error_name`` is one of IdleTimeout, InternalServerError, Forbidden, Cancelled,
    UserError (``user_error_code`` only with UserError).
    """

    stream_id: str
    sequence_id: int
    end: bool = False
    error_name: str | None = None
    error_message: str | None = None
    user_error_code: str | None = None


@dataclass(slots=True, eq=False)
class DataMessage:
    """A message fanned out to connections: from a group or from the server (REST / event handler).

    ``group`` is ``None`` for server messages. Codecs encode it once per codec;
    see :mod:`hubbub.core.fanout`.
    """

    payload: Payload
    group: str | None = None
    from_user_id: str | None = None
    stream: StreamInfo | None = None
