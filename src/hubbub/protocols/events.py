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


@dataclass(slots=True, eq=False)
class DataMessage:
    """A message fanned out to connections: from a group or from the server (REST / event handler).

    ``group`` is ``None`` for server messages. Codecs encode it once per codec;
    see :mod:`hubbub.core.fanout`.
    """

    payload: Payload
    group: str | None = None
    from_user_id: str | None = None
