"""One SignalR client connection, from negotiate to close: handshake, hub messages, Close.

No socket code: a transport (:mod:`hubbub.signalr.transports`) binds a :class:`Channel` and
feeds the bytes it reads to :meth:`SignalRConnection.receive`; everything the connection sends
goes through the channel. Once the handshake succeeds the connection owns a
:class:`~hubbub.core.session.Session` registered with the SignalR node, so REST sends reach it
through the same encode-once fan-out as Web PubSub connections.

Lifecycle: ``NEGOTIATED`` (``/negotiate`` answered, no transport yet) → ``HANDSHAKE`` (a
transport is bound, waiting for the handshake request) → ``ACTIVE`` → ``CLOSED``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import TYPE_CHECKING, Protocol

from hubbub.core.session import Session
from hubbub.errors import HubbubError
from hubbub.signalr.codecs import HUB_PROTOCOLS, MAX_PROTOCOL_VERSION, HubCodec
from hubbub.signalr.messages import (
    Close,
    Completion,
    HubMessage,
    Invocation,
    StreamInvocation,
)
from hubbub.signalr.protocol_json import JsonReader, Parsed, handshake_response, read_handshake
from hubbub.signalr.protocol_msgpack import MsgpackReader
from hubbub.signalr.tokens import ClientIdentity

if TYPE_CHECKING:
    from hubbub.signalr.service import SignalRService

__all__ = ["Channel", "ConnectionState", "SignalRConnection", "Transport"]

log = logging.getLogger("hubbub.signalr")

#: Prefix of the Close error when the client broke the protocol (ASP.NET Core's wording).
CLOSED_WITH_ERROR = "Connection closed with an error."
HANDSHAKE_FAILED = "An unexpected error occurred during connection handshake."
HANDSHAKE_CANCELED = "Handshake was canceled."
CLIENT_TIMEOUT = "Client timeout elapsed without receiving a message from the client."
STREAMING_UNSUPPORTED = "Client streaming is not supported in serverless mode."


class Transport(enum.StrEnum):
    WEB_SOCKETS = "WebSockets"
    SERVER_SENT_EVENTS = "ServerSentEvents"
    LONG_POLLING = "LongPolling"


class ConnectionState(enum.Enum):
    NEGOTIATED = "negotiated"
    HANDSHAKE = "handshake"
    ACTIVE = "active"
    CLOSED = "closed"


class Channel(Protocol):
    """What a connection needs from its transport (a :class:`~hubbub.core.session.Link` plus
    raw sends)."""

    #: True while a long poll is held open: the client is there even if it sends nothing.
    polling: bool

    def write(self, data: bytes) -> None:
        """Queue a WebSocket frame built by :func:`hubbub.protocols.framing.frame`; never blocks."""

    def hold(self, data: bytes) -> int:
        """:meth:`write` for fan-out frames (see :meth:`hubbub.core.session.Link.hold`)."""

    def send(self, payload: bytes, is_text: bool) -> None:
        """Queue one transport message (framed by the transport as it needs); never blocks."""

    def buffered(self) -> int:
        """Bytes queued but not yet handed to the kernel."""

    def close(self, code: int, reason: str) -> None:
        """End the transport after what is queued; idempotent, never blocks."""


class SignalRConnection:
    __slots__ = (
        "_buffer",
        "_reader",
        "codec",
        "hub",
        "id",
        "identity",
        "invoking",
        "last_received",
        "link",
        "query",
        "service",
        "session",
        "started",
        "state",
        "token",
        "transport",
    )

    def __init__(
        self,
        service: SignalRService,
        hub: str,
        identity: ClientIdentity,
        *,
        connection_id: str,
        token: str,
        query: str = "",
    ) -> None:
        self.service = service
        self.hub = hub
        self.identity = identity
        self.id = connection_id
        #: the secret ``id`` of transport requests (equals ``id`` for negotiate version 0)
        self.token = token
        #: the client's query string, for the upstream ``X-ASRS-Client-Query``
        self.query = query
        self.state = ConnectionState.NEGOTIATED
        self.transport: Transport | None = None
        self.link: Channel | None = None
        self.codec: HubCodec | None = None
        self.session: Session | None = None
        self._reader: JsonReader | MsgpackReader | None = None
        self._buffer = b""
        #: an upstream call for this connection is in flight (its reader waits, pings queue up)
        self.invoking = False
        now = asyncio.get_running_loop().time()
        self.started = now
        self.last_received = now

    def __repr__(self) -> str:
        return f"<SignalRConnection {self.hub}/{self.id} {self.state.value} {self.transport}>"

    @property
    def user_id(self) -> str | None:
        return self.identity.user_id

    @property
    def closed(self) -> bool:
        return self.state is ConnectionState.CLOSED

    # -- transport side ------------------------------------------------------------------

    def bind(self, transport: Transport, link: Channel, query: str) -> None:
        """A transport request arrived for this connection: from now on it carries the bytes.

        ``query`` is that request's query string (the upstream's ``X-ASRS-Client-Query``)."""
        self.transport = transport
        self.link = link
        self.query = query
        self.state = ConnectionState.HANDSHAKE
        now = asyncio.get_running_loop().time()
        self.started = now
        self.last_received = now

    def touch(self) -> None:
        self.last_received = asyncio.get_running_loop().time()

    async def receive(self, data: bytes) -> None:
        """Bytes from the client (a WebSocket message, a POST body). Never raises."""
        self.last_received = asyncio.get_running_loop().time()
        if self.state is ConnectionState.HANDSHAKE:
            data = self._handshake(data)
            if not data:
                return
        if self.state is not ConnectionState.ACTIVE or self._reader is None:
            return
        try:
            parsed = self._reader.feed(data)
        except HubbubError as exc:
            log.info("closing %s: %s", self, exc.message)
            self.close(f"{CLOSED_WITH_ERROR} {exc.message}")
            return
        for item in parsed:
            if self.closed:  # an earlier message (a Close) or the upstream ended it
                return
            await self._handle(item)

    def transport_closed(self, error: str | None = None) -> None:
        """The client went away (socket closed, long polling ended with DELETE)."""
        if self.state is not ConnectionState.CLOSED:
            self._finish(error)

    # -- handshake ----------------------------------------------------------------------------

    def _handshake(self, data: bytes) -> bytes:
        """Consume the handshake request; return the bytes that follow it (protocol messages)."""
        self._buffer += data
        try:
            found = read_handshake(self._buffer, self.service.config.max_message_bytes)
        except HubbubError as exc:
            self.reject_handshake(f"{HANDSHAKE_FAILED} {exc.message}")
            return b""
        if found is None:
            return b""
        request, rest = found
        self._buffer = b""
        codec = HUB_PROTOCOLS.get(request.protocol)
        if codec is None:
            self.reject_handshake(f"The protocol '{request.protocol[:100]}' is not supported.")
            return b""
        if not 0 <= request.version <= MAX_PROTOCOL_VERSION:
            self.reject_handshake(
                f"The server does not support version {request.version} of the '{codec.name}' protocol."
            )
            return b""
        if codec.binary and self.transport is Transport.SERVER_SENT_EVENTS:
            self.reject_handshake(
                f"Cannot use the '{codec.name}' protocol on the current transport. "
                "The transport does not support 'Binary' transfer format."
            )
            return b""
        assert self.link is not None
        self.codec = codec
        self._reader = codec.reader(self.service.config.max_message_bytes)
        self.link.send(handshake_response(), not codec.binary)
        self.session = Session(self.hub, codec, self.link, user_id=self.user_id, connection_id=self.id)
        self.state = ConnectionState.ACTIVE
        self.service.activated(self)
        return rest

    def reject_handshake(self, error: str) -> None:
        """Answer the handshake with ``error`` and end the connection."""
        log.info("handshake of %s failed: %s", self, error)
        if self.link is not None:
            self.link.send(handshake_response(error), True)
            self.link.close(1000, "")
        self._finish(error)

    # -- hub messages -------------------------------------------------------------------------

    def push(self, message: HubMessage) -> None:
        """Send one message to this client alone (a Completion, a Close, ...)."""
        session, codec = self.session, self.codec
        if session is not None and codec is not None:
            session.push((codec.encode(message), codec.text_frames))

    async def _handle(self, parsed: Parsed) -> None:
        message = parsed.message
        if isinstance(message, Invocation):
            if message.stream_ids:
                if message.invocation_id is not None:
                    self.push(Completion.failed(message.invocation_id, STREAMING_UNSUPPORTED))
                return
            await self.service.invoke(self, message, parsed.raw)
        elif isinstance(message, StreamInvocation):
            self.push(Completion.failed(message.invocation_id, STREAMING_UNSUPPORTED))
        elif isinstance(message, Close):
            self.close(message_to_client=False)
        # Ping only proves the client is alive; StreamItem, Completion (client results),
        # CancelInvocation, Ack and Sequence have no meaning in serverless mode: ignored.

    # -- closing ------------------------------------------------------------------------------

    def close(
        self,
        error: str | None = None,
        *,
        allow_reconnect: bool = False,
        message_to_client: bool = True,
        code: int = 1000,
    ) -> None:
        """End the connection: a Close message (when active), then the transport closes."""
        if self.state is ConnectionState.CLOSED:
            return
        if self.session is not None:
            if message_to_client:
                self.push(Close(error, allow_reconnect))
            self.session.close(code, error or "")
        elif self.link is not None:
            self.link.close(code, error or "")
        self._finish(error)

    def _finish(self, error: str | None) -> None:
        self.state = ConnectionState.CLOSED
        if self.session is not None:
            self.session.closed = True
        self.service.finished(self, error)
