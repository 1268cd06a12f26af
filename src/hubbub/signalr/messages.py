"""SignalR hub protocol messages (ASP.NET Core ``HubProtocol.md``, digest §2.7–2.8): pure data.

Both codecs (:mod:`hubbub.signalr.protocol_json`, :mod:`hubbub.signalr.protocol_msgpack`) decode
to and encode from these frozen dataclasses. Argument and result values are whatever the codec
produced (JSON values, or MessagePack values such as ``bytes``); the service never binds them to
types, it forwards them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Ack",
    "CancelInvocation",
    "Close",
    "Completion",
    "HandshakeRequest",
    "HubMessage",
    "Invocation",
    "MessageType",
    "Ping",
    "Sequence",
    "StreamInvocation",
    "StreamItem",
]

Headers = Mapping[str, str]


class MessageType(enum.IntEnum):
    INVOCATION = 1
    STREAM_ITEM = 2
    COMPLETION = 3
    STREAM_INVOCATION = 4
    CANCEL_INVOCATION = 5
    PING = 6
    CLOSE = 7
    ACK = 8
    SEQUENCE = 9


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """The first client message: ``{"protocol":"json","version":1}␞``."""

    protocol: str
    version: int


@dataclass(frozen=True, slots=True)
class Invocation:
    """Call ``target`` on the other side; without ``invocation_id`` no Completion is expected."""

    target: str
    arguments: list[Any]
    invocation_id: str | None = None
    stream_ids: tuple[str, ...] = ()
    headers: Headers = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamItem:
    invocation_id: str
    item: Any
    headers: Headers = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Completion:
    """The end of an invocation: a ``result`` (when ``has_result``), an ``error``, or void."""

    invocation_id: str
    result: Any = None
    error: str | None = None
    has_result: bool = False
    headers: Headers = field(default_factory=dict)

    @classmethod
    def void(cls, invocation_id: str) -> Completion:
        return cls(invocation_id)

    @classmethod
    def ok(cls, invocation_id: str, result: Any) -> Completion:
        return cls(invocation_id, result=result, has_result=True)

    @classmethod
    def failed(cls, invocation_id: str, error: str) -> Completion:
        return cls(invocation_id, error=error)


@dataclass(frozen=True, slots=True)
class StreamInvocation:
    invocation_id: str
    target: str
    arguments: list[Any]
    stream_ids: tuple[str, ...] = ()
    headers: Headers = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CancelInvocation:
    invocation_id: str
    headers: Headers = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Close:
    """Sent before the transport closes; ``error`` is shown to the app, ``allow_reconnect``
    tells an auto-reconnecting client to reconnect."""

    error: str | None = None
    allow_reconnect: bool = False


@dataclass(frozen=True, slots=True)
class Ack:
    """Stateful reconnect (not negotiated by hubbub; decoded so it can be ignored)."""

    sequence_id: int


@dataclass(frozen=True, slots=True)
class Sequence:
    """Stateful reconnect (not negotiated by hubbub; decoded so it can be ignored)."""

    sequence_id: int


HubMessage = (
    Invocation | StreamItem | Completion | StreamInvocation | CancelInvocation | Ping | Close | Ack | Sequence
)
