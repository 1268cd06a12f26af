"""SignalR over the cluster broker (``hubbub serve --redis``): the SignalR node's broker and presence
see every hub as ``signalr~<hub>``.

The SignalR service already sends every connection-affecting operation as a
:class:`~hubbub.broker.base.Command` through its own :class:`~hubbub.core.node.Node`. In a cluster
that node gets its own :class:`~hubbub.broker.redis.RedisBroker` (node id ``<node id>.signalr``),
wrapped here so that its channels (``hubbub:signalr~chat:…``) and presence keys
(``hubbub:hub:signalr~chat:…``) never meet Web PubSub's: ``~`` cannot occur in a hub name, so a
Web PubSub hub and a SignalR hub of the same name stay apart. Nothing else changes: the node, the
REST API and the connections use the plain hub name; the wrappers add the prefix on the way to
Redis and remove it on the way back.

The SignalR broker joins its own node set (``service="signalr"``): only SignalR nodes watch
SignalR nodes, so the connections of a dead one are always reaped by a node that has SignalR to
send their upstream ``disconnected`` (exactly once), even when some nodes run without SignalR.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from hubbub.auth import Permission
from hubbub.broker.base import (
    Adoption,
    Broker,
    BrokerHandler,
    Command,
    ConnectionRecord,
    LocalView,
    Presence,
    ReliableMirror,
)
from hubbub.errors import BrokerUnavailable

__all__ = [
    "PREFIX",
    "NamespacedBroker",
    "NamespacedPresence",
    "SharedUserGroups",
    "signalr_node_id",
]

log = logging.getLogger("hubbub.signalr.cluster")

PREFIX = "signalr~"


def signalr_node_id(node_id: str) -> str:
    """The SignalR broker's node id (at most 64 characters, as node ids are)."""
    return node_id[:56] + ".signalr"


def _in(hub: str) -> str:
    return PREFIX + hub


def _out(hub: str) -> str:
    return hub[len(PREFIX) :] if hub.startswith(PREFIX) else hub


def _channel(name: str) -> str:
    """``hubbub:{hub}:…`` -> ``hubbub:signalr~{hub}:…`` (hub names contain no ``:``)."""
    head, sep, rest = name.partition(":")
    hub, sep2, tail = rest.partition(":")
    return f"{head}{sep}{_in(hub)}{sep2}{tail}" if sep and sep2 else name


class NamespacedBroker:
    """:class:`~hubbub.broker.base.Broker` that prefixes hub names on the way to ``inner``.

    SignalR has no reliable sessions: its node never needs SENDs in cluster order or replays.
    """

    sequenced = False

    def __init__(self, inner: Broker) -> None:
        self.inner = inner
        self._handler: BrokerHandler | None = None

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        await self.inner.start(self)

    def handle_command(self, command: Command) -> None:
        if self._handler is not None and command.hub.startswith(PREFIX):
            self._handler.handle_command(dataclasses.replace(command, hub=_out(command.hub)))

    def wants_echo(self) -> bool:
        return False

    async def publish(self, command: Command) -> None:
        await self.inner.publish(dataclasses.replace(command, hub=_in(command.hub)))

    def subscribe(self, channel: str) -> None:
        self.inner.subscribe(_channel(channel))

    def unsubscribe(self, channel: str) -> None:
        self.inner.unsubscribe(_channel(channel))

    async def close(self) -> None:
        await self.inner.close()

    def healthy(self) -> bool:
        return self.inner.healthy()

    async def sync(self) -> None:
        await self.inner.sync()


class NamespacedPresence:
    """:class:`~hubbub.broker.base.Presence` that prefixes hub names on the way to ``inner`` (and is
    the inner presence's :class:`~hubbub.broker.base.LocalView`, removing them on the way back)."""

    def __init__(self, inner: Presence) -> None:
        self.inner = inner
        self._view: LocalView | None = None

    async def start(self, view: LocalView) -> None:
        self._view = view
        await self.inner.start(self)

    async def close(self) -> None:
        await self.inner.close()

    # -- changes ------------------------------------------------------------------------------

    def connection_added(self, record: ConnectionRecord) -> None:
        self.inner.connection_added(dataclasses.replace(record, hub=_in(record.hub)))

    def connection_removed(self, hub: str, connection_id: str, user_id: str | None) -> None:
        self.inner.connection_removed(_in(hub), connection_id, user_id)

    def group_joined(self, hub: str, connection_id: str, user_id: str | None, group: str) -> None:
        self.inner.group_joined(_in(hub), connection_id, user_id, group)

    def group_left(self, hub: str, connection_id: str, group: str) -> None:
        self.inner.group_left(_in(hub), connection_id, group)

    def roles_changed(self, hub: str, connection_id: str, roles: Sequence[str]) -> None:
        self.inner.roles_changed(_in(hub), connection_id, roles)

    # -- reliable sessions: SignalR has none ---------------------------------------------------

    def mirror(self) -> ReliableMirror | None:
        return None

    def reliable_released(self, hub: str, connection_id: str) -> None:
        pass

    async def adopt(self, hub: str, connection_id: str, token: str) -> Adoption | None:
        return None

    async def replay(self, channels: Sequence[str], after: int, limit: int) -> list[tuple[int, Command]]:
        return []

    # -- queries ------------------------------------------------------------------------------

    async def connection_exists(self, hub: str, connection_id: str) -> bool:
        return await self.inner.connection_exists(_in(hub), connection_id)

    async def user_exists(self, hub: str, user_id: str) -> bool:
        return await self.inner.user_exists(_in(hub), user_id)

    async def group_exists(self, hub: str, group: str) -> bool:
        return await self.inner.group_exists(_in(hub), group)

    async def group_members(self, hub: str, group: str) -> list[tuple[str, str | None]]:
        return await self.inner.group_members(_in(hub), group)

    async def check_permission(
        self, hub: str, connection_id: str, permission: Permission, target: str | None
    ) -> bool:
        return await self.inner.check_permission(_in(hub), connection_id, permission, target)

    # -- LocalView (what the inner presence asks of this node) ----------------------------------

    def _local(self) -> LocalView:
        assert self._view is not None, "NamespacedPresence.start() was not called"
        return self._view

    def local_connection_exists(self, hub: str, connection_id: str) -> bool:
        return self._local().local_connection_exists(_out(hub), connection_id)

    def local_user_exists(self, hub: str, user_id: str) -> bool:
        return self._local().local_user_exists(_out(hub), user_id)

    def local_group_exists(self, hub: str, group: str) -> bool:
        return self._local().local_group_exists(_out(hub), group)

    def local_group_members(self, hub: str, group: str) -> list[tuple[str, str | None]]:
        return self._local().local_group_members(_out(hub), group)

    def local_permission(
        self, hub: str, connection_id: str, permission: Permission, target: str | None
    ) -> bool | None:
        return self._local().local_permission(_out(hub), connection_id, permission, target)

    def local_records(self) -> Iterable[ConnectionRecord]:
        for record in self._local().local_records():
            yield dataclasses.replace(record, hub=_in(record.hub))

    def connections_lost(self, records: Sequence[ConnectionRecord], reason: str) -> None:
        self._local().connections_lost([dataclasses.replace(r, hub=_out(r.hub)) for r in records], reason)

    def evicted(self, reason: str) -> None:
        self._local().evicted(reason)

    def taken_over(self, hub: str, connection_id: str) -> None:
        self._local().taken_over(_out(hub), connection_id)


class SharedUserGroups:
    """User -> group memberships (digest §3.3) shared by the cluster, so a later connection of the user
    on any node joins them and any node answers "is the user in the group".

    One hash per user: ``hubbub:hub:signalr~{hub}:ugroups:{user}``, group -> expiry (Unix time, ``""``
    = none). The node that added a membership with a TTL also keeps it in its local
    :class:`~hubbub.signalr.usergroups.UserGroups` and removes the user's connections from the group
    when it expires (as a single node does); readers ignore expired entries.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @staticmethod
    def key(hub: str, user: str) -> str:
        return f"hubbub:hub:{_in(hub.lower())}:ugroups:{user}"

    async def add(self, hub: str, user: str, group: str, ttl: int | None) -> None:
        expiry = "" if ttl is None else repr(time.time() + ttl)
        await self._run(self.redis.hset(self.key(hub, user), group, expiry))

    async def remove(self, hub: str, user: str, group: str) -> None:
        await self._run(self.redis.hdel(self.key(hub, user), group))

    async def remove_all(self, hub: str, user: str) -> None:
        await self._run(self.redis.delete(self.key(hub, user)))

    async def contains(self, hub: str, user: str, group: str) -> bool:
        raw = await self._run(self.redis.hget(self.key(hub, user), group))
        return raw is not None and _alive(raw, time.time())

    async def groups(self, hub: str, user: str) -> list[str]:
        entries = await self._run(self.redis.hgetall(self.key(hub, user)))
        now = time.time()
        return [_text(g) for g, raw in entries.items() if _alive(raw, now)]

    @staticmethod
    async def _run(call: Awaitable[Any]) -> Any:
        try:
            return await call
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"The Redis backplane cannot be reached; retry later ({exc}).") from None


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _alive(raw: Any, now: float) -> bool:
    text = _text(raw)
    return not text or float(text) > now
