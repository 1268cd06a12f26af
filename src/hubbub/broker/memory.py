"""Single-node broker: a publish is applied to this node right away (loopback)."""

from __future__ import annotations

from hubbub.broker.base import BrokerHandler, Command
from hubbub.errors import BrokerUnavailable

__all__ = ["MemoryBroker"]


class MemoryBroker:
    def __init__(self) -> None:
        self._handler: BrokerHandler | None = None

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler

    async def publish(self, command: Command) -> None:
        if self._handler is None:
            raise BrokerUnavailable("the broker is not running")
        self._handler.handle_command(command)

    async def close(self) -> None:
        self._handler = None

    def healthy(self) -> bool:
        return self._handler is not None
