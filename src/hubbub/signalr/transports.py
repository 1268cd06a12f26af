"""The SignalR client endpoint (digest §2.3–2.6): the only SignalR module that touches sockets.

``POST /client/negotiate?hub=`` creates a connection; ``/client/?hub=…&id=<token>`` carries it
over one of three transports: a WebSocket (``GET`` + upgrade; also without ``id``, for clients
that skip the service negotiate), Server-Sent Events (``GET`` with ``Accept: text/event-stream``,
client → service by ``POST``) or long polling (``GET`` polls, ``POST`` sends, ``DELETE`` ends).
Every request carries the client token in ``access_token`` or ``Authorization: Bearer``. CORS
answers any origin with credentials, as the emulator does (browsers call the service
cross-origin).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import cast

import orjson
from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler

from hubbub.auth import parse_bearer
from hubbub.errors import HubbubError, InvalidToken
from hubbub.protocols.framing import OP_BINARY, OP_TEXT, frame
from hubbub.signalr.codecs import frame_payload
from hubbub.signalr.connection import ConnectionState, SignalRConnection, Transport
from hubbub.signalr.service import SignalRService
from hubbub.signalr.tokens import ClientIdentity, TransportType, verify_client_token
from hubbub.validation import check_hub

__all__ = ["ClientEndpoint", "cors_middleware", "cors_on_prepare"]

log = logging.getLogger("hubbub.signalr")

_FLAGS = {
    Transport.WEB_SOCKETS: TransportType.WEB_SOCKETS,
    Transport.SERVER_SENT_EVENTS: TransportType.SERVER_SENT_EVENTS,
    Transport.LONG_POLLING: TransportType.LONG_POLLING,
}
_FORMATS = {
    Transport.WEB_SOCKETS: ["Text", "Binary"],
    Transport.SERVER_SENT_EVENTS: ["Text"],
    Transport.LONG_POLLING: ["Text", "Binary"],
}
#: how long the last data and the 204 of a closed long-polling connection stay available
_CLOSED_POLL_SECONDS = 10.0


# --- CORS --------------------------------------------------------------------------------------


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer CORS preflights (any origin, method and header; credentials allowed)."""
    if (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    ):
        headers = {
            "Access-Control-Allow-Methods": request.headers["Access-Control-Request-Method"],
            "Access-Control-Max-Age": "86400",
        }
        if "Access-Control-Request-Headers" in request.headers:
            headers["Access-Control-Allow-Headers"] = request.headers["Access-Control-Request-Headers"]
        return web.Response(status=204, headers=headers)
    return await handler(request)


async def cors_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Reflect the origin on every response, streamed ones (SSE, WebSocket upgrade) included."""
    origin = request.headers.get("Origin")
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"


# --- channels ------------------------------------------------------------------------------------


class WebSocketChannel:
    """Writes frames straight to the asyncio transport (fan-out frames are shared)."""

    __slots__ = ("_closing", "_transport", "_ws", "polling")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.WriteTransport) -> None:
        self._ws = ws
        self._transport = transport
        self._closing: asyncio.Future[bool] | None = None
        self.polling = False

    def write(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    def hold(self, data: bytes) -> int:
        self.write(data)
        return self.buffered()

    def send(self, payload: bytes, is_text: bool) -> None:
        self.write(frame(payload, OP_TEXT if is_text else OP_BINARY))

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size()

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            message = reason.encode("utf-8")[:120]
            self._closing = asyncio.ensure_future(self._ws.close(code=code, message=message))


class QueueChannel:
    """Server-Sent Events and long polling: messages wait in a queue the request handlers drain."""

    __slots__ = ("_bytes", "_messages", "_on_close", "closing", "generation", "polling", "posting", "ready")

    def __init__(self, on_close: Callable[[QueueChannel], None] | None = None) -> None:
        self._messages: deque[bytes] = deque()
        self._bytes = 0
        self._on_close = on_close
        self.ready = asyncio.Event()
        self.closing = False
        #: a long poll is held open
        self.polling = False
        #: counts long polls: a newer poll ends an older one
        self.generation = 0
        #: a POST is being processed (a second concurrent one gets 409)
        self.posting = False

    def write(self, data: bytes) -> None:
        self.send(frame_payload(data), True)

    def hold(self, data: bytes) -> int:
        self.write(data)
        return self.buffered()

    def send(self, payload: bytes, is_text: bool) -> None:
        if not self.closing:
            self._messages.append(payload)
            self._bytes += len(payload)
            self.ready.set()

    def buffered(self) -> int:
        return self._bytes

    def close(self, code: int, reason: str) -> None:
        if not self.closing:
            self.closing = True
            self.ready.set()
            if self._on_close is not None:
                self._on_close(self)

    def drain(self) -> list[bytes]:
        messages = list(self._messages)
        self._messages.clear()
        self._bytes = 0
        if not self.closing:
            self.ready.clear()
        return messages


def sse_event(payload: bytes) -> bytes:
    """One SSE event per transport message: ``data: <line>`` per line, then a blank line."""
    lines = payload.replace(b"\r\n", b"\n").split(b"\n")
    return b"".join(b"data: " + line + b"\r\n" for line in lines) + b"\r\n"


# --- the endpoint ----------------------------------------------------------------------------


def _text(status: int, text: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=text, headers=headers or None)


def _unauthorized(message: str) -> web.Response:
    return _text(401, f"Unauthorized: {message}", **{"WWW-Authenticate": 'Bearer error="invalid_token"'})


class ClientEndpoint:
    def __init__(self, service: SignalRService) -> None:
        self.service = service
        self.config = service.config
        self._closed_polls: dict[str, QueueChannel] = {}

    def _hub(self, request: web.Request) -> str | web.Response:
        hub = request.query.get("hub", "")
        try:
            return check_hub(hub)
        except HubbubError as exc:
            return _text(400, exc.message)

    def _caller(self, request: web.Request) -> tuple[str, ClientIdentity] | web.Response:
        """The hub and the verified client token of a request, or the error response."""
        hub = self._hub(request)
        if isinstance(hub, web.Response):
            return hub
        identity = self._identity(request, hub)
        if isinstance(identity, web.Response):
            return identity
        return hub, identity

    def _find(self, request: web.Request, hub: str) -> SignalRConnection | web.Response:
        """The connection named by the ``id`` query parameter (its token), or the error response."""
        token = request.query.get("id")
        if not token:
            return _text(400, "Connection ID required")
        connection = self.service.by_token(token)
        if connection is None or connection.hub.lower() != hub.lower():
            return _text(404, "No Connection with that ID")
        return connection

    def _identity(self, request: web.Request, hub: str) -> ClientIdentity | web.Response:
        token = request.query.get("access_token") or parse_bearer(request.headers.get("Authorization"))
        if not token:
            return _unauthorized("no access token (query 'access_token' or 'Authorization: Bearer').")
        try:
            return verify_client_token(token, self.config.access_keys, hub)
        except InvalidToken as exc:
            log.info("rejected a SignalR request for hub %s: %s", hub, exc.message)
            return _unauthorized(exc.message)

    # -- negotiate ------------------------------------------------------------------------

    async def negotiate(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        hub, identity = caller
        raw = request.query.get("negotiateVersion")
        try:
            version = 0 if raw is None else int(raw)
        except ValueError:
            return web.json_response(
                {"error": f"The client requested an invalid protocol version '{str(raw)[:20]}'"}
            )
        if version < 0:
            error = f"The client requested version '{version}', but the server does not support this version."
            return web.json_response({"error": error})
        version = min(version, 1)
        connection = self.service.negotiate(hub, identity, version)
        transports = [
            {"transport": t.value, "transferFormats": _FORMATS[t]}
            for t in Transport
            if identity.transports & _FLAGS[t]
        ]
        body: dict[str, object] = {"connectionId": connection.id}
        if version >= 1:
            body = {"negotiateVersion": 1, "connectionId": connection.id, "connectionToken": connection.token}
        body["availableTransports"] = transports
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    # -- GET: WebSocket, SSE, long polling -------------------------------------------------------

    async def _lookup(
        self, request: web.Request, hub: str, identity: ClientIdentity, transport: Transport
    ) -> SignalRConnection | web.Response:
        connection = self._find(request, hub)
        if isinstance(connection, web.Response):
            token = request.query.get("id")
            adopted = None
            # negotiated through another node of the cluster? (WebSockets only: the SSE and long-polling
            # transports make more requests, which a load balancer must send to one node: sticky sessions)
            if connection.status == 404 and token and transport is Transport.WEB_SOCKETS:
                adopted = await self.service.adopt(hub, identity, token)
            if adopted is None:
                return connection
            connection = adopted
        elif await self.service.taken_elsewhere(connection):
            return _text(404, "No Connection with that ID")
        if connection.user_id != identity.user_id:
            return _text(403, "Forbidden: the token belongs to another user than the connection.")
        if not identity.transports & _FLAGS[transport]:
            return _text(404, f"{transport.value} transport not supported by this end point type")
        return connection

    async def connect(self, request: web.Request) -> web.StreamResponse:
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        hub, identity = caller
        if self._is_upgrade(request):
            return await self._websocket(request, hub, identity)
        if "text/event-stream" in request.headers.get("Accept", ""):
            return await self._sse(request, hub, identity)
        closed = self._closed_polls.get(request.query.get("id", ""))
        if closed is not None:
            return self._answer_poll(closed, binary=True)
        return await self._poll(request, hub, identity)

    @staticmethod
    def _is_upgrade(request: web.Request) -> bool:
        return request.headers.get("Upgrade", "").lower() == "websocket"

    @staticmethod
    def _busy(connection: SignalRConnection, transport: Transport) -> web.Response | None:
        if connection.state is ConnectionState.NEGOTIATED:
            return None
        if connection.transport is not transport:
            return _text(400, "Cannot change transports mid-connection")
        return _text(409, f"An active {transport.value} request already exists for this connection.")

    async def _websocket(
        self, request: web.Request, hub: str, identity: ClientIdentity
    ) -> web.StreamResponse:
        if "id" in request.query:
            found = await self._lookup(request, hub, identity, Transport.WEB_SOCKETS)
            if isinstance(found, web.Response):
                return found
            busy = self._busy(found, Transport.WEB_SOCKETS)
            if busy is not None:
                return busy
            connection = found
        else:
            if not identity.transports & TransportType.WEB_SOCKETS:
                return _text(404, "WebSockets transport not supported by this end point type")
            connection = self.service.connect(hub, identity)
        ws = web.WebSocketResponse(max_msg_size=2 * self.config.max_message_bytes, compress=False)
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        channel = WebSocketChannel(ws, cast(asyncio.WriteTransport, transport))
        connection.bind(Transport.WEB_SOCKETS, channel, request.query_string)
        error: str | None = None
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await connection.receive(msg.data.encode("utf-8"))
                elif msg.type is WSMsgType.BINARY:
                    await connection.receive(msg.data)
                else:
                    break
            if ws.close_code == 1009:
                error = f"The maximum message size of {self.config.max_message_bytes}B was exceeded."
        finally:
            connection.transport_closed(error)
        return ws

    async def _sse(self, request: web.Request, hub: str, identity: ClientIdentity) -> web.StreamResponse:
        connection = await self._lookup(request, hub, identity, Transport.SERVER_SENT_EVENTS)
        if isinstance(connection, web.Response):
            return connection
        busy = self._busy(connection, Transport.SERVER_SENT_EVENTS)
        if busy is not None:
            return busy
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        await response.write(b":\r\n")  # lets EventSource fire "open" at once
        channel = QueueChannel()
        connection.bind(Transport.SERVER_SENT_EVENTS, channel, request.query_string)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(channel.ready.wait(), timeout=1.0)
                messages = channel.drain()
                if messages:
                    await response.write(b"".join(sse_event(m) for m in messages))
                if channel.closing or request.transport is None or request.transport.is_closing():
                    break
        except (ConnectionError, RuntimeError):
            pass  # the client went away while we wrote
        finally:
            connection.transport_closed()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    async def _poll(self, request: web.Request, hub: str, identity: ClientIdentity) -> web.StreamResponse:
        connection = await self._lookup(request, hub, identity, Transport.LONG_POLLING)
        if isinstance(connection, web.Response):
            return connection
        if connection.state is ConnectionState.NEGOTIATED:
            first = QueueChannel(self._poll_closed(connection.token))
            connection.bind(Transport.LONG_POLLING, first, request.query_string)
            return web.Response(status=200)  # the first poll only completes the connection setup
        channel = connection.link
        if connection.transport is not Transport.LONG_POLLING or not isinstance(channel, QueueChannel):
            return _text(400, "Cannot change transports mid-connection")
        channel.generation += 1
        generation = channel.generation
        if channel.polling:
            channel.ready.set()  # wakes the older poll, which sees a newer generation: 204
        channel.polling = True
        connection.touch()
        try:
            if not channel.buffered() and not channel.closing:
                channel.ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(channel.ready.wait(), timeout=self.config.long_poll_seconds)
        finally:
            if channel.generation == generation:
                channel.polling = False
            connection.touch()
        if channel.generation != generation:
            return web.Response(status=204)
        return self._answer_poll(channel, binary=connection.codec is not None and connection.codec.binary)

    @staticmethod
    def _answer_poll(channel: QueueChannel, *, binary: bool) -> web.Response:
        messages = channel.drain()
        if messages:
            return web.Response(
                body=b"".join(messages),
                content_type="application/octet-stream" if binary else "text/plain",
            )
        return web.Response(status=204 if channel.closing else 200)

    def _poll_closed(self, token: str) -> Callable[[QueueChannel], None]:
        """Keep a closed long-polling channel a while: its last data, then 204, go to the next poll."""

        def keep(channel: QueueChannel) -> None:
            self._closed_polls[token] = channel
            loop = asyncio.get_running_loop()
            loop.call_later(_CLOSED_POLL_SECONDS, self._closed_polls.pop, token, None)

        return keep

    # -- POST (SSE and long-polling sends), DELETE (long polling ends) ----------------------------

    async def send(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        connection = self._find(request, caller[0])
        if isinstance(connection, web.Response):
            return connection
        if connection.transport is Transport.WEB_SOCKETS:
            return _text(405, "POST requests are not allowed for WebSocket connections.")
        channel = connection.link
        if not isinstance(channel, QueueChannel):
            return _text(400, "The connection has no transport yet.")
        if channel.posting:
            return _text(409, "Another send request is in progress.")
        limit = self.config.max_message_bytes
        if request.content_length is not None and request.content_length > limit:
            return _text(413, f"The request body is larger than {limit} bytes.")
        channel.posting = True
        try:
            body = await request.content.read(limit + 1)
            if len(body) > limit:
                return _text(413, f"The request body is larger than {limit} bytes.")
            await connection.receive(body)
        finally:
            channel.posting = False
        return web.Response(status=200)

    async def delete(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        connection = self._find(request, caller[0])
        if isinstance(connection, web.Response):
            return connection
        if connection.transport is not Transport.LONG_POLLING:
            return _text(400, "Cannot terminate this connection using the DELETE endpoint.")
        if connection.link is not None:
            connection.link.close(1000, "")
        connection.transport_closed()
        return _text(202, "")
