"""The SignalR service of one node: connections by token and id, the node they fan out through,
user-group memberships, and the periodic sweep (pings, timeouts, TTLs).

REST operations go through :attr:`SignalRService.node` as Web PubSub's do (one
:class:`~hubbub.broker.base.Command` per operation), so the cluster broker of issue #7 can carry
them too. The service keeps its own :class:`~hubbub.core.node.Node`: SignalR hubs and Web PubSub
hubs of the same name are different hubs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from hubbub.broker.base import Command, Op, Scope
from hubbub.broker.memory import MemoryBroker
from hubbub.core.node import Node
from hubbub.core.session import Session
from hubbub.errors import HubbubError
from hubbub.protocols.framing import OP_BINARY, OP_TEXT, frame
from hubbub.signalr.codecs import HUB_PROTOCOLS
from hubbub.signalr.config import SignalRConfig
from hubbub.signalr.connection import (
    CLIENT_TIMEOUT,
    HANDSHAKE_CANCELED,
    ConnectionState,
    SignalRConnection,
)
from hubbub.signalr.messages import Completion, Invocation
from hubbub.signalr.tokens import ClientIdentity
from hubbub.signalr.usergroups import UserGroups

__all__ = ["InvocationHandler", "SignalRService", "new_id"]

log = logging.getLogger("hubbub.signalr")

#: What answers a client invocation (the upstream): (connection, message, raw record/body).
InvocationHandler = Callable[[SignalRConnection, Invocation, bytes], Awaitable[None]]

NO_UPSTREAM = "Invocation failed, no upstream is configured for this hub."


def new_id() -> str:
    """A connection id or token: 128 random bits, base64url (22 characters, URL-safe)."""
    return secrets.token_urlsafe(16)


def _mac(key: str, hub: str, connection_id: str, user_id: str | None, expiry: int) -> str:
    """The signature of a connection token: 128 bits of HMAC-SHA256, base64url."""
    message = f"{hub.lower()}\n{connection_id}\n{user_id or ''}\n{expiry}".encode()
    digest = hmac.new(key.encode("utf-8"), message, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class SharedGroups(Protocol):
    """User-group memberships shared by a cluster (:class:`~hubbub.signalr.cluster.SharedUserGroups`)."""

    async def add(self, hub: str, user: str, group: str, ttl: int | None) -> None: ...

    async def remove(self, hub: str, user: str, group: str) -> None: ...

    async def remove_all(self, hub: str, user: str) -> None: ...

    async def contains(self, hub: str, user: str, group: str) -> bool: ...

    async def groups(self, hub: str, user: str) -> list[str]: ...


class SignalRService:
    def __init__(
        self, config: SignalRConfig, node: Node | None = None, shared_groups: SharedGroups | None = None
    ) -> None:
        self.config = config
        self.node = node if node is not None else Node(MemoryBroker())
        self.user_groups = UserGroups()
        #: a cluster's copy of the user-group memberships (None: this node's are the only ones)
        self.shared_groups = shared_groups
        self._joins: set[asyncio.Task[None]] = set()
        #: answers client invocations; None until an upstream is configured
        self.invocation_handler: InvocationHandler | None = None
        #: called once a connection completed its handshake / after it ended (upstream events)
        self.on_connected: list[Callable[[SignalRConnection], None]] = []
        self.on_disconnected: list[Callable[[SignalRConnection, str | None], None]] = []
        self._by_token: dict[str, SignalRConnection] = {}
        self._by_id: dict[str, SignalRConnection] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._pings = {
            name: frame(codec.ping, OP_BINARY if codec.binary else OP_TEXT)
            for name, codec in HUB_PROTOCOLS.items()
        }
        self.node.on_detach.append(self._detached)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self.node.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="signalr-sweep")

    async def close(self) -> None:
        for task in list(self._joins):
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for connection in list(self._by_token.values()):
            if connection.state is not ConnectionState.ACTIVE:
                connection.close()
        await self.node.close()  # active ones: Close message (allowReconnect) and 1001

    # -- registry ---------------------------------------------------------------------------

    def negotiate(self, hub: str, identity: ClientIdentity, version: int) -> SignalRConnection:
        """A new connection waiting for its transport; version 0 uses the id as token.

        A version-1 token is ``<connection id>.<expiry>.<HMAC>`` signed with the access key, so that in
        a cluster the client may connect through any node (:meth:`adopt`), not only the one it negotiated
        with: a load balancer needs no sticky sessions for WebSockets.
        """
        connection_id = new_id()
        if version >= 1:
            expiry = int(time.time() + self.config.handshake_timeout_seconds) + 1
            mac = _mac(self.config.access_keys[0], hub, connection_id, identity.user_id, expiry)
            token = f"{connection_id}.{expiry}.{mac}"
        else:
            token = connection_id
        return self._register(
            SignalRConnection(self, hub, identity, connection_id=connection_id, token=token)
        )

    async def taken_elsewhere(self, connection: SignalRConnection) -> bool:
        """In a cluster: whether a negotiated connection was meanwhile taken by another node (then
        forgotten here)."""
        if isinstance(self.node.broker, MemoryBroker) or connection.state is not ConnectionState.NEGOTIATED:
            return False
        if not await self.node.presence.connection_exists(connection.hub, connection.id):
            return False
        if connection.state is ConnectionState.NEGOTIATED:
            self._forget(connection)
        return True

    async def adopt(self, hub: str, identity: ClientIdentity, token: str) -> SignalRConnection | None:
        """In a cluster: the connection another node negotiated, if ``token`` is one of ours, unexpired,
        signed for this hub and user, and its connection does not exist anywhere yet."""
        if isinstance(self.node.broker, MemoryBroker):
            return None  # one node: every token it gave out is in _by_token
        connection_id, _, rest = token.partition(".")
        expiry_text, _, mac = rest.partition(".")
        if not expiry_text.isdigit() or int(expiry_text) < time.time() or connection_id in self._by_id:
            return None
        expected = (
            _mac(k, hub, connection_id, identity.user_id, int(expiry_text)) for k in self.config.access_keys
        )
        if not any(hmac.compare_digest(mac, e) for e in expected):
            return None
        if await self.node.presence.connection_exists(hub, connection_id):
            return None  # used already (on another node)
        if connection_id in self._by_id or token in self._by_token:  # adopted meanwhile
            return None
        return self._register(
            SignalRConnection(self, hub, identity, connection_id=connection_id, token=token)
        )

    def connect(self, hub: str, identity: ClientIdentity) -> SignalRConnection:
        """A WebSocket without ``id`` (clients that skip the service negotiate)."""
        connection_id = new_id()
        return self._register(
            SignalRConnection(self, hub, identity, connection_id=connection_id, token=new_id())
        )

    def _register(self, connection: SignalRConnection) -> SignalRConnection:
        self._by_token[connection.token] = connection
        self._by_id[connection.id] = connection
        return connection

    def by_token(self, token: str) -> SignalRConnection | None:
        return self._by_token.get(token)

    def by_id(self, connection_id: str) -> SignalRConnection | None:
        return self._by_id.get(connection_id)

    def connections(self) -> list[SignalRConnection]:
        return list(self._by_token.values())

    # -- called by connections ----------------------------------------------------------------

    def activated(self, connection: SignalRConnection) -> None:
        """Handshake done: join the node (and the user's groups), fire ``connected``."""
        assert connection.session is not None
        now = asyncio.get_running_loop().time()
        groups = (
            self.user_groups.groups(connection.hub, connection.user_id, now) if connection.user_id else []
        )
        self.node.attach(connection.session, groups)
        if self.shared_groups is not None and connection.user_id:
            task = asyncio.get_running_loop().create_task(self._join_shared(connection))
            self._joins.add(task)
            task.add_done_callback(self._joins.discard)
        for hook in self.on_connected:
            hook(connection)

    async def _join_shared(self, connection: SignalRConnection) -> None:
        """Join the groups other nodes added the user to (after attaching: later adds arrive as commands)."""
        assert self.shared_groups is not None and connection.user_id is not None
        try:
            groups = await self.shared_groups.groups(connection.hub, connection.user_id)
        except HubbubError as exc:
            log.warning(
                "cannot read the groups of user %s in hub %s: %s", connection.user_id, connection.hub, exc
            )
            return
        session = connection.session
        if session is None or connection.state is not ConnectionState.ACTIVE:
            return
        for group in groups:
            self.node.join_local(session, group)

    def finished(self, connection: SignalRConnection, error: str | None) -> None:
        """The connection ended (any way): leave the node (which fires ``disconnected``), forget it."""
        session = connection.session
        if session is not None and self._by_id.get(connection.id) is connection:
            self.node.detach(session, error)  # -> _detached
        self._forget(connection)

    def _forget(self, connection: SignalRConnection) -> None:
        if self._by_token.get(connection.token) is connection:
            del self._by_token[connection.token]
        if self._by_id.get(connection.id) is connection:
            del self._by_id[connection.id]

    def _detached(self, session: Session, reason: str | None) -> None:
        """Node hook, also when the node itself closed the session (REST close, shutdown)."""
        connection = self._by_id.get(session.id)
        if connection is None and session.link is None and session.closed:
            # a connection of a cluster node that died, handed to this node: its upstream `disconnected`
            connection = SignalRConnection(
                self, session.hub, ClientIdentity(session.user_id, {}), connection_id=session.id, token=""
            )
            connection.state = ConnectionState.CLOSED
            for hook in self.on_disconnected:
                hook(connection, reason)
            return
        if connection is None or connection.session is not session:
            return
        connection.state = ConnectionState.CLOSED
        self._forget(connection)
        for hook in self.on_disconnected:
            hook(connection, reason)

    async def invoke(self, connection: SignalRConnection, message: Invocation, raw: bytes) -> None:
        handler = self.invocation_handler
        if handler is not None:
            await handler(connection, message, raw)
        elif message.invocation_id is not None:
            connection.push(Completion.failed(message.invocation_id, NO_UPSTREAM))

    # -- user groups (REST) ---------------------------------------------------------------------

    async def add_user_to_group(self, hub: str, user: str, group: str, ttl: int | None) -> None:
        if self.shared_groups is not None:
            await self.shared_groups.add(hub, user, group, ttl)
        now = asyncio.get_running_loop().time()
        self.user_groups.add(hub, user, group, None if ttl is None else now + ttl)
        await self.node.publish(Command(Op.ADD_TO_GROUPS, hub, Scope.USER, user, groups=(group,)))

    async def remove_user_from_group(self, hub: str, user: str, group: str) -> None:
        if self.shared_groups is not None:
            await self.shared_groups.remove(hub, user, group)
        self.user_groups.remove(hub, user, group)
        await self.node.publish(Command(Op.REMOVE_FROM_GROUPS, hub, Scope.USER, user, groups=(group,)))

    async def remove_user_from_all_groups(self, hub: str, user: str) -> None:
        if self.shared_groups is not None:
            await self.shared_groups.remove_all(hub, user)
        self.user_groups.remove_all(hub, user)
        await self.node.publish(Command(Op.REMOVE_FROM_ALL_GROUPS, hub, Scope.USER, user))

    async def user_in_group(self, hub: str, user: str, group: str) -> bool:
        """A user membership (this node's, or the cluster's), or a connection of the user in the group."""
        now = asyncio.get_running_loop().time()
        if self.user_groups.contains(hub, user, group, now):
            return True
        if self.shared_groups is not None and await self.shared_groups.contains(hub, user, group):
            return True
        return any(member == user for _, member in await self.node.group_members(hub, group))

    # -- the sweep ------------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.config.keepalive_seconds
        while True:
            await asyncio.sleep(self.config.sweep_seconds)
            now = loop.time()
            ping = now >= next_ping
            if ping:
                next_ping = now + self.config.keepalive_seconds
            try:
                await self.sweep(now, ping=ping)
            except Exception:  # the sweep must survive anything one connection does
                log.exception("SignalR sweep failed")

    async def sweep(self, now: float, *, ping: bool) -> None:
        """Handshake and client timeouts, keep-alive pings, expired user-group memberships."""
        config = self.config
        for connection in list(self._by_token.values()):
            state = connection.state
            if state is ConnectionState.ACTIVE:
                link = connection.link
                if connection.invoking or (link is not None and link.polling):
                    connection.last_received = now
                elif now - connection.last_received > config.client_timeout_seconds:
                    log.info("closing %s: no message for %.0f s", connection, now - connection.last_received)
                    connection.close(CLIENT_TIMEOUT)
                    continue
                if ping and connection.session is not None and connection.codec is not None:
                    connection.session.write_frame(self._pings[connection.codec.name])
            elif (
                state is not ConnectionState.CLOSED
                and now - connection.started > config.handshake_timeout_seconds
            ):
                if connection.link is not None:
                    log.info(
                        "closing %s: no handshake within %.0f s", connection, config.handshake_timeout_seconds
                    )
                    connection.reject_handshake(HANDSHAKE_CANCELED)
                else:
                    connection.close()  # negotiated, never connected
        for hub, user, group in self.user_groups.expire(now):
            await self.node.publish(Command(Op.REMOVE_FROM_GROUPS, hub, Scope.USER, user, groups=(group,)))
