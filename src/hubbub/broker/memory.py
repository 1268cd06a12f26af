"""Single node: a publish is applied to this node right away (loopback); presence is local state."""

from __future__ import annotations

from collections.abc import Sequence

from hubbub.auth import Permission
from hubbub.broker.base import Adoption, BrokerHandler, Command, ConnectionRecord, LocalView, ReliableMirror
from hubbub.errors import BrokerUnavailable

__all__ = ["MemoryBroker", "MemoryPresence"]


class MemoryBroker:
    sequenced = False

    def __init__(self) -> None:
        self._handler: BrokerHandler | None = None

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler

    async def publish(self, command: Command) -> None:
        if self._handler is None:
            raise BrokerUnavailable("the broker is not running")
        self._handler.handle_command(command)

    def subscribe(self, channel: str) -> None:
        pass

    def unsubscribe(self, channel: str) -> None:
        pass

    async def close(self) -> None:
        self._handler = None

    def healthy(self) -> bool:
        return self._handler is not None

    async def sync(self) -> None:
        pass


class MemoryPresence:
    """One node is the whole service: every answer is the node's local one."""

    def __init__(self) -> None:
        self._view: LocalView | None = None

    @property
    def view(self) -> LocalView:
        if self._view is None:
            raise RuntimeError("MemoryPresence.start() was not called")
        return self._view

    async def start(self, view: LocalView) -> None:
        self._view = view

    async def close(self) -> None:
        pass

    def connection_added(self, record: ConnectionRecord) -> None:
        pass

    def connection_removed(self, hub: str, connection_id: str, user_id: str | None) -> None:
        pass

    def group_joined(self, hub: str, connection_id: str, user_id: str | None, group: str) -> None:
        pass

    def group_left(self, hub: str, connection_id: str, group: str) -> None:
        pass

    def roles_changed(self, hub: str, connection_id: str, roles: Sequence[str]) -> None:
        pass

    def mirror(self) -> ReliableMirror | None:
        return None

    def reliable_released(self, hub: str, connection_id: str) -> None:
        pass

    async def adopt(self, hub: str, connection_id: str, token: str) -> Adoption | None:
        return None

    async def replay(self, channels: Sequence[str], after: int, limit: int) -> list[tuple[int, Command]]:
        return []

    async def connection_exists(self, hub: str, connection_id: str) -> bool:
        return self.view.local_connection_exists(hub, connection_id)

    async def user_exists(self, hub: str, user_id: str) -> bool:
        return self.view.local_user_exists(hub, user_id)

    async def group_exists(self, hub: str, group: str) -> bool:
        return self.view.local_group_exists(hub, group)

    async def group_members(self, hub: str, group: str) -> list[tuple[str, str | None]]:
        return self.view.local_group_members(hub, group)

    async def check_permission(
        self, hub: str, connection_id: str, permission: Permission, target: str | None
    ) -> bool:
        return bool(self.view.local_permission(hub, connection_id, permission, target))
