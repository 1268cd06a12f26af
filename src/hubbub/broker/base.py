"""The backplane seam: :class:`Broker` carries :class:`Command`s to every node.

Contract (both implementations):

* ``publish`` returns once the command is accepted for delivery to every node
  (including this one); it raises :class:`~hubbub.errors.BrokerUnavailable` when
  that cannot be promised, so REST callers get a 503 instead of a silent drop.
* Commands published by one node are applied in publish order on each node
  (per-channel FIFO); across publishers there is no global order.
* Delivery is at most once per node.

The memory broker (single node) applies commands synchronously inside
``publish``; a cluster broker does so from its reader task.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from hubbub.protocols.events import Payload

__all__ = ["Broker", "BrokerHandler", "Command", "Op", "Scope"]


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


class BrokerHandler(Protocol):
    def handle_command(self, command: Command) -> None:
        """Apply a command to this node's local connections. Must not block or raise."""


class Broker(Protocol):
    async def start(self, handler: BrokerHandler) -> None: ...

    async def publish(self, command: Command) -> None: ...

    async def close(self) -> None: ...

    def healthy(self) -> bool: ...
