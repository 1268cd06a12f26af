"""Encode once, write many.

A :class:`~hubbub.protocols.events.DataMessage` is encoded and framed once per
codec; every connection of that codec gets the very same bytes object. Delivery
is a plain synchronous loop: it never awaits a socket and never spawns tasks.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from hubbub.core.session import Session
from hubbub.filters import Filter
from hubbub.protocols.base import Codec
from hubbub.protocols.events import DataMessage
from hubbub.protocols.framing import OP_BINARY, OP_TEXT, frame

__all__ = ["deliver", "frame_for"]


def frame_for(codec: Codec, message: DataMessage) -> bytes:
    payload, is_text = codec.encode_data(message)
    return frame(payload, OP_TEXT if is_text else OP_BINARY)


def deliver(
    message: DataMessage,
    sessions: Iterable[Session],
    *,
    excluded: Collection[str] = (),
    filter: Filter | None = None,
    skip: str | None = None,
) -> int:
    """Write ``message`` to every matching session; return how many got it.

    Args:
        excluded: connection ids that must not receive it (REST ``excluded``).
        filter: OData filter a connection must match.
        skip: one more connection id to leave out (``noEcho`` sender).
    """
    # per codec: a finished frame, or (reliable codecs) the body each connection stamps
    cache: dict[int, bytes] = {}
    # per reliable codec: the stamped frames by sequence id; connections that received the same
    # messages are at the same sequence id, so they share one frame (and one replay-buffer entry)
    stamped: dict[int, dict[int, bytes]] = {}
    # the codec of the previous session and what it needs (most fan-outs have one codec)
    last: Codec | None = None
    data = b""
    frames: dict[int, bytes] | None = None
    count = 0
    for session in sessions:
        sid = session.id
        if sid == skip or (excluded and sid in excluded):
            continue
        if filter is not None and not filter.matches(session.user_id, sid, session.groups):
            continue
        codec = session.codec
        if codec is not last:
            last, key = codec, id(codec)
            cached = cache.get(key)
            if codec.reliable:
                data = cache[key] = codec.message_body(message) if cached is None else cached
                frames = stamped.setdefault(key, {})
            else:
                data = cache[key] = frame_for(codec, message) if cached is None else cached
                frames = None
        if frames is None:
            session.hold_frame(data)
        else:
            session.write_sequenced(data, frames)
        count += 1
    return count
