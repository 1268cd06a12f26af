"""Group streams of the JSON subprotocols (spec §4.8): one publisher, a group of readers.

A client opens a stream with ``sendToGroup`` + ``stream{streamId}``, sends fragments
``streamData`` with ``streamSequenceId`` 1, 2, ... and closes it with ``streamEnd``. Every
accepted fragment is published to the group as a normal group message carrying a
``stream`` object; the publisher gets ``streamAck{expectedSequenceId}`` for each, a
``streamNack`` for a retriable problem and ``streamClosed`` when its stream is over.

Fragments the publisher resends after a reliable reconnect (its client replays the
unacknowledged ones) are acknowledged again and not delivered twice: a stream only
moves forward on the fragment it expects. A stream lives on its publisher's session,
survives the session's reconnects, and ends with ``Cancelled`` for the readers when
the session ends, or with ``IdleTimeout`` after ``idleTimeoutMs`` without a fragment or
keepalive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from hubbub.auth import Permission
from hubbub.broker.base import Scope
from hubbub.core.node import Node
from hubbub.core.session import Session
from hubbub.errors import BadRequest, Forbidden, HubbubError
from hubbub.protocols.events import (
    DataType,
    Payload,
    StreamAck,
    StreamClosed,
    StreamData,
    StreamEnd,
    StreamInfo,
    StreamNack,
    StreamStart,
)
from hubbub.validation import check_group

__all__ = ["DEFAULT_IDLE_TIMEOUT_MS", "MAX_STREAMS_PER_CONNECTION", "Streams"]

log = logging.getLogger("hubbub.streams")

DEFAULT_IDLE_TIMEOUT_MS = 300_000
#: Open streams one connection may have at once; one more is refused (``streamClosed`` BadRequest).
MAX_STREAMS_PER_CONNECTION = 100
_EMPTY = Payload(DataType.TEXT, b"")


@dataclass(eq=False)
class _Stream:
    session: Session
    stream_id: str
    group: str
    no_echo: bool
    idle_seconds: float
    expected: int = 1
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class Streams:
    """The open streams of every local session; the dispatcher hands it the stream requests."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._open: dict[Session, dict[str, _Stream]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        node.on_detach.append(self._session_ended)

    async def handle(self, session: Session, request: StreamStart | StreamData | StreamEnd) -> None:
        if isinstance(request, StreamStart):
            await self._start(session, request)
        elif isinstance(request, StreamData):
            await self._data(session, request)
        else:
            await self._end(session, request)

    def open_count(self, session: Session) -> int:
        return len(self._open.get(session, ()))

    # -- requests ------------------------------------------------------------------

    async def _start(self, session: Session, request: StreamStart) -> None:
        sid = request.stream_id
        streams = self._open.setdefault(session, {})
        try:
            check_group(request.group)
            if not session.permissions.allows(Permission.SEND_TO_GROUP, request.group):
                raise Forbidden(f"The connection has no permission to send to group '{request.group}'")
            if sid in streams:
                raise BadRequest(f"Stream '{sid}' is already open on this connection")
            if len(streams) >= MAX_STREAMS_PER_CONNECTION:
                raise BadRequest(f"A connection can have at most {MAX_STREAMS_PER_CONNECTION} open streams")
        except HubbubError as exc:
            if not streams:
                del self._open[session]
            self._reply(session, StreamClosed(sid, _closed_name(exc), exc.message))
            return
        timeout_ms = request.idle_timeout_ms or DEFAULT_IDLE_TIMEOUT_MS
        stream = _Stream(session, sid, request.group, request.no_echo, timeout_ms / 1000)
        streams[sid] = stream
        self._touch(stream)
        self._reply(session, StreamAck(sid, 1))

    async def _data(self, session: Session, request: StreamData) -> None:
        stream = self._open.get(session, {}).get(request.stream_id)
        if stream is None:
            self._not_found(session, request.stream_id)
            return
        self._touch(stream)
        sequence_id = request.sequence_id
        if sequence_id is None or request.payload is None:
            return  # keepalive
        if sequence_id < stream.expected:  # resent after a reconnect: delivered already
            self._reply(session, StreamAck(stream.stream_id, stream.expected))
            return
        if sequence_id > stream.expected:
            message = f"Expected streamSequenceId {stream.expected}, got {sequence_id}"
            self._reply(session, StreamNack(stream.stream_id, stream.expected, "InvalidSequenceId", message))
            return
        if not session.permissions.allows(Permission.SEND_TO_GROUP, stream.group):
            message = f"The connection has no permission to send to group '{stream.group}'"
            await self._close(stream, "Forbidden", message)
            return
        try:
            await self._publish(stream, request.payload, StreamInfo(stream.stream_id, sequence_id))
        except HubbubError as exc:  # e.g. the broker is down: the publisher may retry
            self._reply(session, StreamNack(stream.stream_id, stream.expected, "TransientError", exc.message))
            return
        stream.expected += 1
        self._reply(session, StreamAck(stream.stream_id, stream.expected))

    async def _end(self, session: Session, request: StreamEnd) -> None:
        stream = self._forget(session, request.stream_id)
        if stream is None:
            self._not_found(session, request.stream_id)
            return
        if request.failed:
            await self._publish_end(stream, "UserError", request.error_message, request.user_error_code)
        else:
            await self._publish_end(stream)
        self._reply(session, StreamClosed(stream.stream_id))

    # -- endings the service decides -------------------------------------------------

    async def _close(self, stream: _Stream, name: str, message: str) -> None:
        """End ``stream`` with an error for its readers and a ``streamClosed`` for its publisher."""
        if self._forget(stream.session, stream.stream_id) is not stream:
            return
        await self._publish_end(stream, name, message)
        self._reply(stream.session, StreamClosed(stream.stream_id, name, message))

    def _idle(self, stream: _Stream) -> None:
        stream.timer = None
        message = f"No stream data or keepalive for {stream.idle_seconds:g} s"
        self._spawn(self._close(stream, "IdleTimeout", message))

    def _session_ended(self, session: Session, reason: str | None) -> None:
        streams = self._open.pop(session, None)
        if not streams:
            return
        for stream in streams.values():
            if stream.timer is not None:
                stream.timer.cancel()
            self._spawn(self._publish_end(stream, "Cancelled", "The publisher's connection closed"))

    # -- helpers ---------------------------------------------------------------------

    async def _publish(self, stream: _Stream, payload: Payload, info: StreamInfo) -> None:
        session = stream.session
        await self.node.send(
            session.hub,
            Scope.GROUP,
            stream.group,
            payload,
            from_session=session,
            no_echo=stream.no_echo,
            stream=info,
        )

    async def _publish_end(
        self, stream: _Stream, error: str | None = None, message: str | None = None, code: str | None = None
    ) -> None:
        """Tell the readers the stream is over (an end marker without data); failures are logged."""
        info = StreamInfo(stream.stream_id, stream.expected, True, error, message, code)
        try:
            await self._publish(stream, _EMPTY, info)
        except HubbubError as exc:
            log.warning("end of stream %s of %s not sent: %s", stream.stream_id, stream.session, exc.message)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _touch(self, stream: _Stream) -> None:
        if stream.timer is not None:
            stream.timer.cancel()
        stream.timer = asyncio.get_running_loop().call_later(stream.idle_seconds, self._idle, stream)

    def _forget(self, session: Session, stream_id: str) -> _Stream | None:
        streams = self._open.get(session)
        if streams is None:
            return None
        stream = streams.pop(stream_id, None)
        if not streams:
            del self._open[session]
        if stream is not None and stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        return stream

    def _not_found(self, session: Session, stream_id: str) -> None:
        self._reply(session, StreamClosed(stream_id, "StreamNotFound", f"Stream '{stream_id}' is not open"))

    @staticmethod
    def _reply(session: Session, reply: StreamAck | StreamNack | StreamClosed) -> None:
        session.push(session.codec.encode_stream_reply(reply))


def _closed_name(exc: HubbubError) -> str:
    """The ``streamClosed`` error name of a refused stream start."""
    return exc.ack_name if exc.ack_name in ("Forbidden", "BadRequest") else "InternalServerError"
