"""In-process nodes for the broker tests: sessions over recording links, polling helpers."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from hubbub.broker.redis import RedisBroker
from hubbub.core.node import Node
from hubbub.core.session import Session
from hubbub.protocols import CODECS
from tests.core.fakes import RecordingLink

JSON = CODECS["json.webpubsub.azure.v1"]


def redis_node(url: str, name: str, **kw: float) -> Node:
    options: dict[str, float] = {"heartbeat_interval": 0.2, "node_ttl": 2.0, **kw}
    broker = RedisBroker(url, f"{name}-{uuid.uuid4().hex[:6]}", **options)  # type: ignore[arg-type]
    return Node(broker, broker.presence)


@dataclass
class Detached:
    """Records the node's detach hook calls (the ``disconnected`` events)."""

    calls: list[tuple[str, str | None]] = field(default_factory=list)

    def __call__(self, session: Session, reason: str | None) -> None:
        self.calls.append((session.id, reason))


def session(hub: str, user: str | None = None, roles: tuple[str, ...] = ()) -> Session:
    return Session(
        hub, JSON, RecordingLink(), user_id=user, roles=roles, subprotocol="json.webpubsub.azure.v1"
    )


def frames(s: Session) -> list[dict[str, object]]:
    link = s.link
    assert isinstance(link, RecordingLink)
    out = []
    for frame in link.frames:
        n = frame[1] & 0x7F
        start = 2 if n < 126 else 4 if n == 126 else 10
        out.append(orjson.loads(frame[start:]))
    return out


def received(s: Session) -> list[object]:
    """The ``data`` of every data message the session got, in order."""
    return [f["data"] for f in frames(s) if f.get("type") == "message"]


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def synced(*nodes: Node) -> None:
    """Wait until Redis processed every subscription/presence write of ``nodes`` (no-op in memory).

    A real client's next request is causally after the node wrote them; a test that drives two
    nodes from one event loop is not, so it waits here before it acts on another node.
    """
    for node in nodes:
        if isinstance(node.broker, RedisBroker):
            await node.broker.sync()


async def settle(nodes: list[Node]) -> None:
    """Give in-flight messages time to arrive (nothing to wait for on a single memory node)."""
    if any(isinstance(n.broker, RedisBroker) for n in nodes):
        await asyncio.sleep(0.1)
