"""One client connection's server-side state.

The transport (the only code touching sockets) hands a :class:`Link` to the
session; everything above writes ready-made frames through it and never awaits.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from hubbub.auth import Permissions
from hubbub.broker.base import Command, ReliableMirror
from hubbub.protocols.base import Codec, Encoded
from hubbub.protocols.events import DataMessage
from hubbub.protocols.framing import OP_BINARY, OP_TEXT, frame
from hubbub.protocols.reliable import ReliableState

__all__ = ["MAX_REMEMBERED_ACK_IDS", "SLOW_CLIENT_BUFFER_BYTES", "Link", "Session", "new_connection_id"]

log = logging.getLogger("hubbub.session")

#: A connection whose unsent bytes exceed this is closed as a slow client.
SLOW_CLIENT_BUFFER_BYTES = 16 * 1024 * 1024
#: How many processed ``ackId``s a connection remembers for ``Duplicate`` detection.
MAX_REMEMBERED_ACK_IDS = 10_000


class Link(Protocol):
    """What a session needs from its transport."""

    def write(self, data: bytes) -> None:
        """Queue an already framed WebSocket frame; never blocks."""

    def hold(self, data: bytes) -> int:
        """Like :meth:`write`, for fan-out frames: the transport may hold it briefly to send it
        together with the frames that follow (never after a later :meth:`write`). Returns the
        bytes now waiting for this connection (as :meth:`buffered`; a transport may leave out its
        own buffer while that is below its high-water mark)."""

    def buffered(self) -> int:
        """Bytes queued but not yet handed to the kernel."""

    def close(self, code: int, reason: str) -> None:
        """Start closing (close frame, then TCP close); idempotent, never blocks."""


def new_connection_id() -> str:
    """Opaque, URL-path safe, globally unique (128 random bits, base64url)."""
    return secrets.token_urlsafe(16)


class Session:
    __slots__ = (
        "_ack_order",
        "acked",
        "catching_up",
        "claims",
        "closed",
        "codec",
        "connection_state",
        "groups",
        "hub",
        "id",
        "link",
        "mirror",
        "permissions",
        "reconnection_token",
        "reliable",
        "subprotocol",
        "user_id",
        "watermark",
    )

    def __init__(
        self,
        hub: str,
        codec: Codec,
        link: Link | None,
        *,
        user_id: str | None = None,
        roles: Iterable[str] = (),
        subprotocol: str | None = None,
        claims: dict[str, list[str]] | None = None,
        connection_id: str | None = None,
    ) -> None:
        self.id = connection_id or new_connection_id()
        self.hub = hub
        self.user_id = user_id
        self.codec = codec
        self.link = link
        self.subprotocol = subprotocol
        self.permissions = Permissions(roles)
        self.groups: set[str] = set()
        self.claims = claims or {}
        self.connection_state: str | None = None
        # ackId bookkeeping is created on the first ackId: most connections never send one
        self.acked: set[int] | None = None
        self._ack_order: deque[int] | None = None
        self.closed = False
        self.reliable = ReliableState() if codec.reliable else None
        self.reconnection_token = secrets.token_urlsafe(24) if codec.reliable else None
        #: cluster only: where the replay buffer is copied (None on a single node: no extra work)
        self.mirror: ReliableMirror | None = None
        #: cluster only: position of the last SEND delivered, in the cluster-wide order
        self.watermark = 0
        #: cluster only: SENDs that arrived while a taken-over session is being caught up
        self.catching_up: list[tuple[int, Command]] | None = None

    def __repr__(self) -> str:
        return f"<Session {self.hub}/{self.id} user={self.user_id!r}>"

    # -- writing ------------------------------------------------------------------

    def _link(self) -> Link | None:
        """The link to write to; None if closed, or closed now because the client cannot keep up."""
        link = self.link
        if self.closed or link is None:
            return None
        if link.buffered() > SLOW_CLIENT_BUFFER_BYTES:
            self.close_slow()
            return None
        return link

    def close_slow(self) -> None:
        """The client cannot keep up: close it (1008 ``SlowClient``)."""
        log.warning(
            "closing slow client %s/%s: send buffer over %d bytes",
            self.hub,
            self.id,
            SLOW_CLIENT_BUFFER_BYTES,
        )
        self.close(1008, "SlowClient")

    def write_frame(self, data: bytes) -> None:
        """Write a complete frame now (a reply, an ack, a control message)."""
        link = self._link()
        if link is not None:
            link.write(data)

    def hold_frame(self, data: bytes) -> None:
        """Write a fan-out frame: the transport may merge it with the frames that follow."""
        link = self.link
        if link is not None and not self.closed and link.hold(data) > SLOW_CLIENT_BUFFER_BYTES:
            self.close_slow()

    def push(self, encoded: Encoded | None) -> None:
        if encoded is not None:
            payload, is_text = encoded
            self.write_frame(frame(payload, OP_TEXT if is_text else OP_BINARY))

    def write_sequenced(self, body: bytes, frames: dict[int, bytes] | None = None) -> None:
        """Reliable connections: stamp a shared message body, keep it for replay, write it.

        While the connection is down (``link`` is None) the frame is only kept. ``frames``
        (sequence id -> stamped frame of this ``body``) lets a fan-out share one frame among the
        connections that are at the same sequence id.
        """
        state = self.reliable
        assert state is not None
        if self.closed:
            return
        sequence_id = state.next_id
        data = frames.get(sequence_id) if frames is not None else None
        if data is None:
            data = self.codec.stamp_frame(body, sequence_id)
            if frames is not None:
                frames[sequence_id] = data
        if not state.record(data):
            log.warning(
                "closing %s/%s: reliable buffer full (%d messages, %d bytes unacknowledged)",
                self.hub,
                self.id,
                state.pending_count,
                state.pending_bytes,
            )
            self.close(1008, "The reliable message buffer is full")
            return
        mirror = self.mirror
        if mirror is not None:
            mirror.reliable_frame(self.hub, self.id, sequence_id, self.watermark, data)
        self.hold_frame(data)

    def acknowledge(self, sequence_id: int) -> None:
        """The client's cumulative ``sequenceAck``."""
        state = self.reliable
        if state is None:
            return
        before = state.acked
        state.ack(sequence_id)
        mirror = self.mirror
        if mirror is not None and state.acked > before:
            mirror.reliable_acked(self.hub, self.id, state.acked)

    def push_data(self, message: DataMessage) -> None:
        """Send one data message to this connection alone (reply to a user event, ...)."""
        if self.reliable is not None:
            self.write_sequenced(self.codec.message_body(message))
        else:
            self.push(self.codec.encode_data(message))

    def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            if self.link is not None:
                self.link.close(code, reason)

    # -- ack ids ------------------------------------------------------------------

    def remember_ack(self, ack_id: int) -> bool:
        """Record a processed ``ackId``; False if it was processed before (``Duplicate``)."""
        acked, order = self.acked, self._ack_order
        if acked is None or order is None:
            acked, order = self.acked, self._ack_order = set(), deque()
        elif ack_id in acked:
            return False
        acked.add(ack_id)
        order.append(ack_id)
        if len(order) > MAX_REMEMBERED_ACK_IDS:
            acked.discard(order.popleft())
        return True
