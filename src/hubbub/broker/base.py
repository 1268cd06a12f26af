"""The backplane seam: :class:`Broker` carries :class:`Command`s to every node.

Contract (both implementations):

* ``publish`` returns once the command is accepted for delivery to every node
  (including this one); it raises :class:`~hubbub.errors.BrokerUnavailable` when
  that cannot be promised, so REST callers get a 503 instead of a silent drop.
* Commands published by one node are applied in publish order on each node
  (per-channel FIFO); across publishers there is no global order.
* Delivery is at most once per node.

The memory broker (single node) applies commands synchronously inside
``publish``; a cluster broker applies them locally first, then publishes them on the
channel of the command's target (:func:`channel`), and applies what other nodes
publish from its reader. The node tells the broker which channels it needs
(``subscribe`` on the first local member of a hub, group, user or connection,
``unsubscribe`` after the last); the memory broker ignores that.

:class:`Presence` answers the queries of the REST API (does a connection, user or
group exist, who is in a group, may a connection do X) for the whole service; the
node feeds it its local changes, in order, without awaiting.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hubbub.auth import Permission
from hubbub.protocols.events import Payload, StreamInfo

__all__ = [
    "Broker",
    "BrokerHandler",
    "Command",
    "ConnectionRecord",
    "LocalView",
    "Op",
    "Presence",
    "Scope",
    "channel",
    "command_channel",
]


class Op(enum.Enum):
    SEND = "send"
    CLOSE = "close"
    ADD_TO_GROUPS = "addToGroups"
    REMOVE_FROM_GROUPS = "removeFromGroups"
    REMOVE_FROM_ALL_GROUPS = "removeFromAllGroups"
    GRANT = "grant"
    REVOKE = "revoke"


class Scope(enum.Enum):
    ALL = "all"
    GROUP = "group"
    USER = "user"
    CONNECTION = "connection"


@dataclass(frozen=True, slots=True)
class Command:
    """One operation on the connections of a hub, addressed by scope and target.

    Which fields matter depends on ``op``: ``payload``/``from_*``/``no_echo`` for
    SEND, ``reason`` for CLOSE, ``groups`` for the group ops, ``permission`` and
    ``permission_target`` for GRANT/REVOKE. ``excluded`` and ``filter`` narrow the
    targeted connections for every op.
    """

    op: Op
    hub: str
    scope: Scope
    target: str | None = None
    payload: Payload | None = None
    excluded: tuple[str, ...] = ()
    filter: str | None = None
    groups: tuple[str, ...] = ()
    reason: str | None = None
    from_user_id: str | None = None
    from_connection_id: str | None = None
    no_echo: bool = False
    permission: str | None = None
    permission_target: str | None = None
    stream: StreamInfo | None = None


_KINDS = {Scope.GROUP: "g", Scope.USER: "u", Scope.CONNECTION: "c"}


def channel(hub: str, scope: Scope, target: str | None = None) -> str:
    """The broker channel of a target: ``hubbub:{hub}:all`` or ``hubbub:{hub}:{g|u|c}:{target}``.

    Hub names are case-insensitive (lower-cased here) and contain no ``:``, so the
    name is unambiguous whatever the group, user or connection id contains.
    """
    if scope is Scope.ALL:
        return f"hubbub:{hub.lower()}:all"
    return f"hubbub:{hub.lower()}:{_KINDS[scope]}:{target or ''}"


def command_channel(command: Command) -> str:
    return channel(command.hub, command.scope, command.target)


class BrokerHandler(Protocol):
    def handle_command(self, command: Command) -> None:
        """Apply a command to this node's local connections. Must not block or raise."""


class Broker(Protocol):
    async def start(self, handler: BrokerHandler) -> None: ...

    async def publish(self, command: Command) -> None: ...

    def subscribe(self, channel: str) -> None:
        """Start receiving ``channel`` (first local member). Never blocks, never raises."""

    def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel`` (no local member left). Never blocks, never raises."""

    async def close(self) -> None: ...

    def healthy(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """What the cluster knows of one connection (enough to fire its ``disconnected``)."""

    hub: str
    connection_id: str
    user_id: str | None = None
    subprotocol: str | None = None
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    connection_state: str | None = None


class LocalView(Protocol):
    """What a presence needs from its node: local answers, and who to tell about lost connections."""

    def local_connection_exists(self, hub: str, connection_id: str) -> bool: ...

    def local_user_exists(self, hub: str, user_id: str) -> bool: ...

    def local_group_exists(self, hub: str, group: str) -> bool: ...

    def local_group_members(self, hub: str, group: str) -> list[tuple[str, str | None]]: ...

    def local_permission(
        self, hub: str, connection_id: str, permission: Permission, target: str | None
    ) -> bool | None:
        """The answer if the connection is on this node, else None."""

    def local_records(self) -> Iterable[ConnectionRecord]:
        """Every local connection (a cluster presence re-registers them after an outage)."""

    def connections_lost(self, records: Sequence[ConnectionRecord], reason: str) -> None:
        """Connections of a dead node, handed to exactly one surviving node: fire ``disconnected``."""

    def evicted(self, reason: str) -> None:
        """The cluster declared this node dead: end local connections without further events."""


class Presence(Protocol):
    """Cluster-wide answers to the REST queries; fed by the node's local changes.

    The change methods are called in the order the changes happen on this node; they
    never block and never raise (a cluster implementation writes them in that order and
    repairs what an outage lost when it reconnects).
    """

    async def start(self, view: LocalView) -> None: ...

    async def close(self) -> None: ...

    def connection_added(self, record: ConnectionRecord) -> None: ...

    def connection_removed(self, hub: str, connection_id: str, user_id: str | None) -> None: ...

    def group_joined(self, hub: str, connection_id: str, user_id: str | None, group: str) -> None: ...

    def group_left(self, hub: str, connection_id: str, group: str) -> None: ...

    def roles_changed(self, hub: str, connection_id: str, roles: Sequence[str]) -> None: ...

    async def connection_exists(self, hub: str, connection_id: str) -> bool: ...

    async def user_exists(self, hub: str, user_id: str) -> bool: ...

    async def group_exists(self, hub: str, group: str) -> bool: ...

    async def group_members(self, hub: str, group: str) -> list[tuple[str, str | None]]:
        """``(connection id, user id)`` of every member, in no particular order."""

    async def check_permission(
        self, hub: str, connection_id: str, permission: Permission, target: str | None
    ) -> bool: ...
