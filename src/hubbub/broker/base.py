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
from dataclasses import dataclass, field
from typing import Protocol

from hubbub.auth import Permission
from hubbub.protocols.events import Payload, StreamInfo

__all__ = [
    "Adoption",
    "Broker",
    "BrokerHandler",
    "Command",
    "ConnectionRecord",
    "LocalView",
    "Op",
    "Presence",
    "ReliableMirror",
    "ReplayGap",
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
    #: cluster only: the owner of a suspended reliable session hands it over to the node it resumes on
    RELEASE = "release"


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
    #: cluster only, never on the wire: the position of a SEND in the cluster-wide message order
    #: (0 = not sequenced yet: the publishing node's local-first delivery)
    seq: int = 0
    #: cluster only: this node's own SEND coming back from Redis (for its reliable connections)
    echo: bool = False


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

    def wants_echo(self) -> bool:
        """True while the node has reliable connections (a sequenced broker hands it its own SENDs)."""


class Broker(Protocol):
    #: True when SENDs get a cluster-wide sequence number and are kept for reliable-session failover
    sequenced: bool

    async def start(self, handler: BrokerHandler) -> None: ...

    async def publish(self, command: Command) -> None: ...

    def subscribe(self, channel: str) -> None:
        """Start receiving ``channel`` (first local member). Never blocks, never raises."""

    def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel`` (no local member left). Never blocks, never raises."""

    async def close(self) -> None: ...

    def healthy(self) -> bool: ...

    async def sync(self) -> None:
        """Wait until every subscription and write this node made so far reached the backplane."""


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
    #: reliable connections (cluster): what another node needs to resume the session
    reconnection_token: str | None = None
    claims: dict[str, list[str]] | None = None


@dataclass(frozen=True, slots=True)
class Adoption:
    """A reliable session this node took over from another (dead or releasing) node."""

    record: ConnectionRecord
    #: the last sequence id the previous owner stamped (0: none)
    last_sequence_id: int
    #: its unacknowledged frames, sequence ids ``last_sequence_id - len(frames) + 1 ..``
    frames: tuple[bytes, ...]
    #: position in the cluster-wide SEND order up to which the session has its messages
    watermark: int
    #: False when the copied replay buffer has gaps: the session cannot be recovered
    complete: bool = True
    #: group -> position when the session joined it (a replay skips the group's earlier SENDs)
    joined: dict[str, int] = field(default_factory=dict)


class ReplayGap(Exception):
    """Messages a resuming reliable session needs are no longer kept (it cannot be recovered)."""


class ReliableMirror(Protocol):
    """Where a reliable session's replay buffer is copied so another node can take it over."""

    def reliable_frame(
        self, hub: str, connection_id: str, sequence_id: int, watermark: int, data: bytes
    ) -> None:
        """A frame was stamped (in order, fire and forget)."""

    def reliable_acked(self, hub: str, connection_id: str, sequence_id: int) -> None:
        """The client acknowledged everything up to ``sequence_id``."""

    def reliable_joined(self, hub: str, connection_id: str, group: str) -> None:
        """The session joined ``group`` (its position in the SEND order is kept for replays)."""


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

    def taken_over(self, hub: str, connection_id: str) -> None:
        """A local reliable session was resumed on another node (while this one was cut off): drop it."""


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

    # -- reliable sessions across nodes (cluster; the memory presence has no other node) --------

    def mirror(self) -> ReliableMirror | None:
        """Where reliable sessions copy their replay buffer (None: single node, nothing to copy)."""

    def reliable_released(self, hub: str, connection_id: str) -> None:
        """This node gave a suspended reliable session up for another node to take over."""

    async def adopt(self, hub: str, connection_id: str, token: str) -> Adoption | None:
        """Claim the reliable session of another node (None: no such session, or not ours to take)."""

    async def replay(self, channels: Sequence[str], after: int, limit: int) -> list[tuple[int, Command]]:
        """SENDs on ``channels`` after position ``after``, in cluster order (:class:`ReplayGap`: lost)."""

    async def connection_exists(self, hub: str, connection_id: str) -> bool: ...

    async def user_exists(self, hub: str, user_id: str) -> bool: ...

    async def group_exists(self, hub: str, group: str) -> bool: ...

    async def group_members(self, hub: str, group: str) -> list[tuple[str, str | None]]:
        """``(connection id, user id)`` of every member, in no particular order."""

    async def check_permission(
        self, hub: str, connection_id: str, permission: Permission, target: str | None
    ) -> bool: ...
