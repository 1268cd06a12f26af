"""The client WebSocket endpoint: with :mod:`hubbub.transport.connection`, the only code that
touches client sockets.

aiohttp parses the HTTP request and writes the 101 response (its handshake checks, status codes
and headers); then the endpoint takes the connection away from aiohttp: the transport gets a
:class:`~hubbub.transport.connection.ClientConnection` as its protocol and aiohttp's request
handler lets go of it, so nothing of aiohttp (request, response, reader, handler task) stays
alive for an idle connection. Writes go straight to the asyncio transport as frames that were
built once for every recipient (see :mod:`hubbub.core.fanout`). We negotiate no extension, so
those pre-built frames are valid on every connection.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http import WebSocketWriter
from aiohttp.web_request import BaseRequest

from hubbub.auth import ClientIdentity, InvalidToken, parse_bearer, verify_client_token
from hubbub.config import ServiceConfig
from hubbub.core.dispatch import Dispatcher
from hubbub.core.node import Node
from hubbub.core.session import Session, new_connection_id
from hubbub.errors import HubbubError
from hubbub.protocols import CODECS, SIMPLE, Codec, negotiate
from hubbub.protocols.events import Connected
from hubbub.transport.connection import ClientConnection, Coalescer, Context, Keepalive
from hubbub.upstream.cloudevents import UpstreamError
from hubbub.upstream.webhook import Upstream
from hubbub.validation import check_hub

__all__ = ["ClientConnection", "ClientEndpoint", "Coalescer", "Keepalive"]

#: How long a graceful shutdown waits for the clients to answer the close frames (1001).
SHUTDOWN_TIMEOUT = 5.0

log = logging.getLogger("hubbub.websocket")


def _offered_subprotocols(request: web.Request) -> list[str]:
    raw = request.headers.getall("Sec-WebSocket-Protocol", [])
    return [p.strip() for header in raw for p in header.split(",") if p.strip()]


def _reject(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message)


@dataclass(frozen=True, slots=True)
class Admission:
    """Who a new connection is, once its token and the ``connect`` event said so."""

    connection_id: str
    user_id: str | None
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    claims: dict[str, list[str]]
    subprotocol: str | None
    codec: Codec
    connection_state: str | None = None


class ClientEndpoint:
    """``/client/hubs/{hub}`` and ``/client/?hub=`` (spec §4.1)."""

    def __init__(
        self, config: ServiceConfig, node: Node, dispatcher: Dispatcher, upstream: Upstream | None = None
    ) -> None:
        self.config = config
        self.node = node
        self.dispatcher = dispatcher
        self.upstream = upstream
        self._context: Context | None = None

    def context(self) -> Context:
        """What the connections share (created on first use, in the running loop)."""
        ctx = self._context
        if ctx is None:
            ctx = self._context = Context(
                asyncio.get_running_loop(),
                self.node,
                self.dispatcher.handle,
                max_message=self.config.max_frame_bytes,
                retention=self.config.reliable_retention_seconds,
            )
        return ctx

    async def close(self, timeout: float | None = None) -> None:
        """Graceful shutdown, after the sessions were closed (1001): wait for the close handshakes
        (at most ``timeout``, default :data:`SHUTDOWN_TIMEOUT`), then drop the connections left."""
        ctx = self._context
        if ctx is None:
            return
        deadline = ctx.loop.time() + (SHUTDOWN_TIMEOUT if timeout is None else timeout)
        while ctx.keepalive.connections() and ctx.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in ctx.keepalive.connections():
            conn.abort()
        await asyncio.sleep(0)  # their connection_lost

    async def handle(self, request: web.Request) -> web.StreamResponse:
        hub = request.match_info.get("hub") or request.query.get("hub", "")
        try:
            check_hub(hub)
        except HubbubError as exc:
            return _reject(400, exc.message)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return _reject(400, "Bad Request: this endpoint only accepts WebSocket upgrades.")
        if "awps_connection_id" in request.query:
            return await self._recover(request, hub)
        return await self._open(request, hub)

    async def _open(self, request: web.Request, hub: str) -> web.StreamResponse:
        """A new connection: admit it, upgrade, attach its session (which then says ``connected``)."""
        admitted = await self._admit(request, hub)
        if isinstance(admitted, web.Response):
            return admitted
        ws, conn = await self._upgrade(request, admitted.subprotocol)
        session = Session(
            hub,
            admitted.codec,
            conn,
            user_id=admitted.user_id,
            roles=admitted.roles,
            subprotocol=admitted.subprotocol,
            claims=admitted.claims,
            connection_id=admitted.connection_id,
        )
        session.connection_state = admitted.connection_state
        session.push(
            session.codec.encode_connected(Connected(session.id, session.user_id, session.reconnection_token))
        )
        self.node.attach(session, admitted.groups)
        self._take_over(request, conn, session)
        return ws

    async def _admit(self, request: web.Request, hub: str) -> Admission | web.Response:
        """Authenticate (token or anonymous policy), run the ``connect`` event, pick the subprotocol."""
        settings = self.upstream.settings(hub) if self.upstream else None
        token = request.query.get("access_token") or parse_bearer(request.headers.get("Authorization"))
        if token:
            try:
                identity = verify_client_token(token, self.config.access_keys, hub)
            except InvalidToken as exc:
                log.info("rejected a connection to hub %s: %s", hub, exc.message)
                return _reject(401, f"Unauthorized: {exc.message}")
        elif settings is not None and settings.anonymous_connect:
            identity = ClientIdentity(None, (), (), {})
        else:
            return _reject(401, "Unauthorized: no access token (query 'access_token' or 'Authorization').")
        offered = _offered_subprotocols(request)
        subprotocol, codec = negotiate(offered)
        admitted = Admission(
            new_connection_id(),
            identity.user_id,
            identity.roles,
            identity.groups,
            identity.claims,
            subprotocol,
            codec,
        )
        handler = self.upstream.connect_handler(hub) if self.upstream else None
        if handler is None or self.upstream is None:
            return admitted
        try:
            result, state = await self.upstream.connect(
                handler,
                hub,
                admitted.connection_id,
                user_id=identity.user_id,
                claims=identity.claims,
                query={str(k): request.query.getall(k) for k in request.query},
                headers={str(k): request.headers.getall(k) for k in request.headers},
                subprotocols=offered,
            )
        except UpstreamError as exc:
            return _reject(exc.status, f"The connection was rejected: {exc.message}")
        if result.subprotocol is not None:
            if result.subprotocol not in offered:
                log.warning(
                    "hub %s: the connect handler chose subprotocol %r, which the client did not offer",
                    hub,
                    result.subprotocol,
                )
                return _reject(500, "The connect handler chose a subprotocol the client did not offer.")
            subprotocol, codec = result.subprotocol, CODECS.get(result.subprotocol, SIMPLE)
        return Admission(
            admitted.connection_id,
            result.user_id or identity.user_id,
            tuple(dict.fromkeys(identity.roles + result.roles)),
            tuple(dict.fromkeys(identity.groups + result.groups)),
            identity.claims,
            subprotocol,
            codec,
            state,
        )

    async def _upgrade(
        self, request: web.Request, subprotocol: str | None
    ) -> tuple[_Upgrade, ClientConnection]:
        """aiohttp checks the handshake and answers 101; the connection is then ours to write to
        (and, after :meth:`_take_over`, to read from)."""
        ws = _Upgrade(protocols=(subprotocol,) if subprotocol else (), compress=False, autoping=False)
        await ws.prepare(request)
        transport = request.transport
        if transport is None:  # the client left during the handshake
            raise ConnectionResetError("Connection lost")
        return ws, ClientConnection(self.context(), transport)

    def _take_over(self, request: web.Request, conn: ClientConnection, session: Session | None) -> None:
        """Detach the socket from aiohttp's request handler and make ``conn`` its protocol.

        The handler keeps (in ``_message_tail``) whatever the client sent after the upgrade
        request; it forgets the transport (so neither its request loop nor its shutdown closes
        the socket) and leaves the server's list of connections when its request task ends.
        """
        handler = request.protocol
        pending, handler._message_tail = handler._message_tail, b""
        handler.transport = None
        handler._force_close = True  # its request loop ends without touching the connection
        manager = handler._manager
        if manager is not None:
            manager.connection_lost(handler, None)
        conn.start(session, self._keepalive(request), pending)

    def _keepalive(self, request: web.Request) -> float:
        """The hub's ``webSocketKeepAliveIntervalInSeconds``, else the service default."""
        hub = request.match_info.get("hub") or request.query.get("hub", "")
        settings = self.upstream.settings(hub) if self.upstream else None
        return float(settings.keepalive_seconds) if settings else self.config.keepalive_seconds

    async def _recover(self, request: web.Request, hub: str) -> web.StreamResponse:
        """Resume a reliable session (spec §4.6); 1008 when it cannot be resumed."""
        connection_id = request.query.get("awps_connection_id", "")
        token = request.query.get("awps_reconnection_token", "")
        session = self.node.session(hub, connection_id)
        if session is None and token:  # cluster: the session may be held by another (dead) node
            try:
                session = await self.node.adopt(
                    hub, connection_id, token, self.config.reliable_retention_seconds
                )
            except HubbubError as exc:
                log.warning("hub %s: could not take over connection %s: %s", hub, connection_id, exc.message)
        offered = _offered_subprotocols(request)
        usable = (
            session is not None
            and session.reliable is not None
            and not session.closed
            and session.reconnection_token is not None
            and hmac.compare_digest(session.reconnection_token, token)
            and session.subprotocol in offered
        )
        subprotocol = session.subprotocol if usable and session else (offered[0] if offered else None)
        ws, conn = await self._upgrade(request, subprotocol)
        if not usable or session is None or session.reliable is None:
            log.info("hub %s: connection %s cannot be recovered", hub, connection_id)
            conn.close(1008, "The session cannot be recovered")
            self._take_over(request, conn, None)  # to read the client's answer to the close frame
            return ws
        self.node.resume(session, conn)
        session.push(
            session.codec.encode_connected(Connected(session.id, session.user_id, session.reconnection_token))
        )
        for data in session.reliable.unacked():
            conn.write(data)
        self._take_over(request, conn, session)
        return ws


class _Upgrade(web.WebSocketResponse):
    """aiohttp's WebSocket handshake and 101 response, without its reader, writer and close.

    The connection is taken over right after :meth:`prepare` (see ``ClientEndpoint._take_over``):
    aiohttp must not install its frame reader, and the end of the request handler (which calls
    :meth:`write_eof`) must not send a close frame on a socket that is no longer aiohttp's.
    """

    def _post_start(self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter) -> None:
        self._ws_protocol = protocol
        request.protocol.keep_alive(False)

    async def write_eof(self) -> None:  # type: ignore[override]  # as aiohttp's own
        self._eof_sent = True
