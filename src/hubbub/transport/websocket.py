"""The client WebSocket endpoint: the only module that touches client sockets.

aiohttp parses HTTP, performs the upgrade and reads frames (its reader is
C-accelerated); writes go straight to the asyncio transport as frames that were
built once for every recipient (see :mod:`hubbub.core.fanout`). We negotiate no
extension, so those pre-built frames are valid on every connection.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass
from typing import cast

from aiohttp import WSMsgType, web

from hubbub.auth import ClientIdentity, InvalidToken, parse_bearer, verify_client_token
from hubbub.config import ServiceConfig
from hubbub.core.dispatch import Dispatcher
from hubbub.core.node import Node
from hubbub.core.session import Session, new_connection_id
from hubbub.errors import HubbubError
from hubbub.protocols import CODECS, SIMPLE, Codec, negotiate
from hubbub.protocols.events import Connected
from hubbub.upstream.cloudevents import UpstreamError
from hubbub.upstream.webhook import Upstream
from hubbub.validation import check_hub

__all__ = ["AiohttpLink", "ClientEndpoint", "Coalescer"]

log = logging.getLogger("hubbub.websocket")


class Coalescer:
    """Per event loop: merges the frames one connection is given within one loop iteration.

    A connection's first frame of an iteration goes straight to the transport (one ``send``, no
    added latency: the common case of one broadcast per iteration costs nothing more). Further
    frames in the same iteration (several broadcasts handled together: concurrent REST calls, a
    batch of broker commands) are held and handed over in one ``writelines`` (one ``writev``) by a
    callback at the end of the iteration. The transport's own buffer stays the bounded queue.
    """

    __slots__ = ("generation", "held", "loop", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.generation = 0
        self.held: list[AiohttpLink] = []
        self.scheduled = False

    def schedule(self) -> None:
        self.scheduled = True
        self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        self.generation += 1
        held, self.held = self.held, []
        for link in held:
            link.flush()


#: An empty, unmasked ping frame (RFC 6455 §5.5.2), the same bytes for every connection.
PING_FRAME = bytes((0x89, 0))


class Keepalive:
    """Per event loop: one timer per keepalive interval pings every connection on that interval.

    Replaces a per-connection heartbeat (a timer, and a task per ping, for each connection). At
    each tick a connection from which nothing (no frame of any kind, pong included) arrived since
    the previous tick's ping is dropped as dead; the others get the shared :data:`PING_FRAME`. So
    a silent peer is dropped between one and two intervals after its last frame.
    """

    __slots__ = ("loop", "rings")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.rings: dict[float, set[AiohttpLink]] = {}

    def add(self, link: AiohttpLink, interval: float) -> None:
        ring = self.rings.get(interval)
        if ring is None:
            ring = self.rings[interval] = set()
            self.loop.call_later(interval, self._tick, interval)
        link.heard = True
        ring.add(link)

    def remove(self, link: AiohttpLink, interval: float) -> None:
        ring = self.rings.get(interval)
        if ring is not None:
            ring.discard(link)

    def _tick(self, interval: float) -> None:
        ring = self.rings.get(interval)
        if not ring:  # nobody on this interval any more: the timer stops until someone comes
            self.rings.pop(interval, None)
            return
        dead = []
        for link in ring:
            if link.heard:
                link.heard = False
                link.write(PING_FRAME)
            else:
                dead.append(link)
        for link in dead:
            ring.discard(link)
            link.abort()
        self.loop.call_later(interval, self._tick, interval)


class AiohttpLink:
    """:class:`~hubbub.core.session.Link` over an upgraded aiohttp connection."""

    __slots__ = (
        "_closing",
        "_coalescer",
        "_generation",
        "_held",
        "_held_bytes",
        "_transport",
        "_ws",
        "heard",
    )

    def __init__(
        self, ws: web.WebSocketResponse, transport: asyncio.WriteTransport, coalescer: Coalescer
    ) -> None:
        self._ws = ws
        self._transport = transport
        self._coalescer = coalescer
        self._generation = -1
        self._held: list[bytes] | None = None
        self._held_bytes = 0
        #: something arrived since the last keepalive ping (see :class:`Keepalive`)
        self.heard = True
        self._closing: asyncio.Task[bool] | None = None

    def write(self, data: bytes) -> None:
        coalescer = self._coalescer
        if self._generation != coalescer.generation:  # first frame of this iteration
            self._generation = coalescer.generation
            if not coalescer.scheduled:
                coalescer.schedule()
            if not self._transport.is_closing():
                self._transport.write(data)
        elif self._held is None:
            self._held = [data]
            self._held_bytes = len(data)
            coalescer.held.append(self)
        else:
            self._held.append(data)
            self._held_bytes += len(data)

    def flush(self) -> None:
        """Hand the held frames to the transport (one ``writev``); frames never follow a close."""
        held, self._held = self._held, None
        self._held_bytes = 0
        if held and self._closing is None and not self._ws.closed and not self._transport.is_closing():
            self._transport.writelines(held)

    def buffered(self) -> int:
        """Unsent bytes: the transport's buffer plus the frames held for the end of the iteration."""
        return self._transport.get_write_buffer_size() + self._held_bytes

    def abort(self) -> None:
        """Drop a dead connection at once (no close handshake: the peer stopped answering)."""
        self._held = None
        self._held_bytes = 0
        self._transport.abort()

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self.flush()
            message = reason.encode("utf-8")[:120]
            self._closing = asyncio.ensure_future(self._ws.close(code=code, message=message))


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
        self._coalescer: Coalescer | None = None
        self._keepalive_rings: Keepalive | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        hub = request.match_info.get("hub") or request.query.get("hub", "")
        try:
            check_hub(hub)
        except HubbubError as exc:
            return _reject(400, exc.message)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return _reject(400, "Bad Request: this endpoint only accepts WebSocket upgrades.")
        if "awps_connection_id" in request.query:
            opened = await self._recover(request, hub)
        else:
            opened = await self._open(request, hub)
        if not isinstance(opened, tuple):  # rejected, or upgraded and closed at once
            return opened
        ws, link, session = opened
        interval = self._keepalive(request)
        if self._keepalive_rings is None:
            self._keepalive_rings = Keepalive(asyncio.get_running_loop())
        keepalive = self._keepalive_rings
        keepalive.add(link, interval)
        # Read until the connection ends, then detach (or suspend) the session. The connection's
        # whole life is spent in this one coroutine frame (no nested reader coroutine, no async
        # iterator): an idle connection keeps this frame alive, so it is kept alone and small.
        reason: str | None = None
        decode = session.codec.decode
        dispatch = self.dispatcher.handle
        try:
            while True:
                msg = await ws.receive()
                link.heard = True
                if msg.type is WSMsgType.TEXT:
                    data: bytes | str = msg.data
                    is_text = True
                elif msg.type is WSMsgType.BINARY:
                    data, is_text = msg.data, False
                elif msg.type is WSMsgType.PING:  # answered here: autoping is off, see Keepalive
                    await ws.pong(msg.data)
                    continue
                elif msg.type is WSMsgType.PONG:
                    continue
                else:
                    break
                try:
                    client_request = decode(data, is_text)
                except HubbubError as exc:
                    log.info("closing %s: %s", session, exc.message)
                    session.closed = True
                    reason = exc.message
                    await ws.close(code=exc.close_code, message=exc.message.encode("utf-8")[:120])
                    break
                await dispatch(session, client_request)
            if reason is None and ws.close_code == 1009:
                reason = f"Message too big: the limit is {self.config.max_frame_bytes} bytes"
        finally:
            keepalive.remove(link, interval)
            if session.link is link:  # else a resumed connection took the session over
                # only a normal closure ends a reliable session at once: 1001 ("going away") and
                # every abnormal end keep it for the retention time, as Azure does
                clean = ws.close_code in (1000, 1005) and reason is None
                if session.reliable is not None and not session.closed and not clean:
                    self.node.suspend(session, self.config.reliable_retention_seconds)
                else:
                    session.closed = True
                    self.node.detach(session, reason)
        return ws

    async def _open(
        self, request: web.Request, hub: str
    ) -> web.StreamResponse | tuple[web.WebSocketResponse, AiohttpLink, Session]:
        """A new connection: admit it, upgrade, attach its session (which then says ``connected``)."""
        admitted = await self._admit(request, hub)
        if isinstance(admitted, web.Response):
            return admitted
        ws, link = await self._upgrade(request, admitted.subprotocol)
        session = Session(
            hub,
            admitted.codec,
            link,
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
        return ws, link, session

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
    ) -> tuple[web.WebSocketResponse, AiohttpLink]:
        ws = web.WebSocketResponse(
            protocols=(subprotocol,) if subprotocol else (),
            max_msg_size=self.config.max_frame_bytes,
            compress=False,
            autoping=False,  # pings are answered and sent by us (Keepalive), not per-connection timers
        )
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        if self._coalescer is None:
            self._coalescer = Coalescer(asyncio.get_running_loop())
        return ws, AiohttpLink(ws, cast(asyncio.WriteTransport, transport), self._coalescer)

    def _keepalive(self, request: web.Request) -> float:
        """The hub's ``webSocketKeepAliveIntervalInSeconds``, else the service default."""
        hub = request.match_info.get("hub") or request.query.get("hub", "")
        settings = self.upstream.settings(hub) if self.upstream else None
        return float(settings.keepalive_seconds) if settings else self.config.keepalive_seconds

    async def _recover(
        self, request: web.Request, hub: str
    ) -> web.StreamResponse | tuple[web.WebSocketResponse, AiohttpLink, Session]:
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
        ws, link = await self._upgrade(request, subprotocol)
        if not usable or session is None or session.reliable is None:
            log.info("hub %s: connection %s cannot be recovered", hub, connection_id)
            await ws.close(code=1008, message=b"The session cannot be recovered")
            return ws
        self.node.resume(session, link)
        session.push(
            session.codec.encode_connected(Connected(session.id, session.user_id, session.reconnection_token))
        )
        for data in session.reliable.unacked():
            link.write(data)
        return ws, link, session
