"""One behaviour suite, two backplanes.

``memory``: one node (a single-node service: "node a" and "node b" are the same node).
``redis``: two nodes in this process sharing a real redis-server. Every test puts
connections on both "nodes", acts through one and asks the other; the answers must be
the single-node ones.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from hubbub.auth import Permission
from hubbub.broker.base import Command, Op, Scope
from hubbub.broker.memory import MemoryBroker
from hubbub.core.node import Node
from hubbub.errors import BrokerUnavailable
from hubbub.protocols.events import DataType, Payload
from tests.broker.harness import Detached, eventually, received, redis_node, session, settle, synced

TEXT = DataType.TEXT


def text(value: str) -> Payload:
    return Payload(TEXT, value.encode())


@pytest.fixture(params=["memory", "redis"])
async def nodes(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Node, Node]]:
    if request.param == "memory":
        node = Node(MemoryBroker())
        await node.start()
        yield node, node
        await node.close()
        return
    server = request.getfixturevalue("redis_server")
    a, b = redis_node(server.url, "a"), redis_node(server.url, "b")
    await a.start()
    await b.start()
    assert a.broker.healthy() and b.broker.healthy()
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture
def hub() -> str:
    return "hub" + uuid.uuid4().hex[:8]


async def test_send_to_all_reaches_every_connection_once(nodes: tuple[Node, Node], hub: str) -> None:
    a, b = nodes
    s1, s2, s3 = session(hub, "u1"), session(hub, "u2"), session(hub, "u3")
    a.attach(s1)
    b.attach(s2)
    b.attach(s3)
    await synced(a, b)
    await a.send(hub, Scope.ALL, None, text("one"))
    await eventually(lambda: all(received(s) == ["one"] for s in (s1, s2, s3)))
    await b.send(hub, Scope.ALL, None, text("two"), excluded=[s2.id], filter="userId ne 'u3'")
    await a.send(
        hub.upper(), Scope.ALL, None, text("three"), excluded=[s1.id, s3.id]
    )  # hub names ignore case
    await eventually(lambda: received(s1) == ["one", "two"] and received(s2) == ["one", "three"])
    await settle([a, b])
    assert (received(s1), received(s2), received(s3)) == (["one", "two"], ["one", "three"], ["one"])


async def test_groups_across_nodes(nodes: tuple[Node, Node], hub: str) -> None:
    a, b = nodes
    s1, s2, s3 = session(hub, "u1"), session(hub, "u2"), session(hub, "u3")
    a.attach(s1)
    b.attach(s2)
    a.attach(s3, groups=["other"])
    a.join_local(s1, "g")
    await synced(a, b)
    await a.publish(Command(Op.ADD_TO_GROUPS, hub, Scope.CONNECTION, s2.id, groups=("g",)))
    want = {(s1.id, "u1"), (s2.id, "u2")}
    for node in (a, b):
        await eventually(lambda n=node: _members(n, hub, "g", want))  # type: ignore[misc]
        assert await node.group_exists(hub, "g") and await node.group_exists(hub, "other")
        assert not await node.group_exists(hub, "nope")
    await synced(a, b)
    await b.send(hub, Scope.GROUP, "g", text("to g"))
    await a.send(hub, Scope.GROUP, "g", text("no echo"), from_session=s1, no_echo=True)
    await eventually(lambda: received(s1) == ["to g"] and received(s2) == ["to g", "no echo"])
    await b.send(hub, Scope.GROUP, "g", text("filtered"), filter=f"connectionId ne '{s1.id}'")
    await eventually(lambda: received(s2)[-1:] == ["filtered"])
    await settle([a, b])
    assert received(s1) == ["to g"] and received(s3) == []

    a.leave_local(s1, "g")
    await b.publish(Command(Op.REMOVE_FROM_GROUPS, hub, Scope.CONNECTION, s2.id, groups=("g",)))
    for node in (a, b):
        await eventually(lambda n=node: _not(n.group_exists(hub, "g")))  # type: ignore[misc]
        assert await node.group_members(hub, "g") == []
    await a.send(hub, Scope.GROUP, "g", text("nobody"))
    await settle([a, b])
    assert received(s1) == ["to g"] and received(s2)[-1] == "filtered"


async def test_filtered_group_operations(nodes: tuple[Node, Node], hub: str) -> None:
    a, b = nodes
    s1, s2, s3 = session(hub, "alice"), session(hub, "bob"), session(hub, "carol")
    a.attach(s1)
    b.attach(s2)
    b.attach(s3)
    await synced(a, b)
    await a.publish(
        Command(Op.ADD_TO_GROUPS, hub, Scope.ALL, None, groups=("x", "y"), filter="userId ne 'carol'")
    )
    for node in (a, b):
        await eventually(lambda n=node: _members(n, hub, "y", {(s1.id, "alice"), (s2.id, "bob")}))  # type: ignore[misc]
    await b.publish(Command(Op.REMOVE_FROM_ALL_GROUPS, hub, Scope.USER, "bob"))
    await eventually(lambda: _members(a, hub, "x", {(s1.id, "alice")}))
    await a.publish(Command(Op.REMOVE_FROM_GROUPS, hub, Scope.ALL, None, groups=("x",)))
    await eventually(lambda: _not(b.group_exists(hub, "x")))
    assert await b.group_exists(hub, "y")


async def test_users_across_nodes(nodes: tuple[Node, Node], hub: str) -> None:
    a, b = nodes
    s1, s2, s3 = session(hub, "u1"), session(hub, "u1"), session(hub, "u2")
    a.attach(s1)
    b.attach(s2)
    b.attach(s3)
    await synced(a, b)
    for node in (a, b):
        assert await node.user_exists(hub, "u1")
        assert not await node.user_exists(hub, "nobody")
    await b.send(hub, Scope.USER, "u1", text("hi u1"))
    await eventually(lambda: received(s1) == ["hi u1"] and received(s2) == ["hi u1"])
    await b.publish(Command(Op.ADD_TO_GROUPS, hub, Scope.USER, "u1", groups=("team",)))
    await eventually(lambda: _members(a, hub, "team", {(s1.id, "u1"), (s2.id, "u1")}))
    await a.publish(Command(Op.CLOSE, hub, Scope.USER, "u1", reason="bye"))
    for node in (a, b):
        await eventually(lambda n=node: _not(n.user_exists(hub, "u1")))  # type: ignore[misc]
        assert not await node.group_exists(hub, "team")
    assert s1.closed and s2.closed and not s3.closed
    await settle([a, b])
    assert received(s3) == []


async def test_connections_across_nodes(nodes: tuple[Node, Node], hub: str) -> None:
    a, b = nodes
    gone = Detached()
    a.on_detach.append(gone)
    if b is not a:
        b.on_detach.append(gone)
    s1, s2 = session(hub), session(hub)
    a.attach(s1)
    b.attach(s2)
    await synced(a, b)
    for node in (a, b):
        assert await node.connection_exists(hub, s1.id)
        assert await node.connection_exists(hub, s2.id)
        assert not await node.connection_exists(hub, "nope")
    await b.send(hub, Scope.CONNECTION, s1.id, text("direct"))
    await eventually(lambda: received(s1) == ["direct"])
    await b.publish(Command(Op.CLOSE, hub, Scope.CONNECTION, s1.id, reason="kicked"))
    for node in (a, b):
        await eventually(lambda n=node: _not(n.connection_exists(hub, s1.id)))  # type: ignore[misc]
    assert s1.closed and not s2.closed
    await settle([a, b])
    assert gone.calls == [(s1.id, "kicked")] and received(s2) == []


async def test_permissions_across_nodes(nodes: tuple[Node, Node], hub: str) -> None:
    a, b = nodes
    s1 = session(hub, roles=("webpubsub.sendToGroup.g1",))
    a.attach(s1)
    await synced(a)
    assert await b.check_permission(hub, s1.id, Permission.SEND_TO_GROUP, "g1")
    assert not await b.check_permission(hub, s1.id, Permission.SEND_TO_GROUP, None)
    assert not await b.check_permission(hub, s1.id, Permission.JOIN_LEAVE_GROUP, "g1")
    assert not await b.check_permission(hub, "nope", Permission.SEND_TO_GROUP, "g1")
    grant = Command(
        Op.GRANT, hub, Scope.CONNECTION, s1.id, permission="joinLeaveGroup", permission_target="g2"
    )
    await b.publish(grant)
    for node in (a, b):
        await eventually(lambda n=node: n.check_permission(hub, s1.id, Permission.JOIN_LEAVE_GROUP, "g2"))  # type: ignore[misc]
    assert s1.permissions.allows(Permission.JOIN_LEAVE_GROUP, "g2")
    await b.publish(Command(Op.REVOKE, hub, Scope.CONNECTION, s1.id, permission="sendToGroup"))
    for node in (a, b):
        await eventually(lambda n=node: _not(n.check_permission(hub, s1.id, Permission.SEND_TO_GROUP, "g1")))  # type: ignore[misc]


async def test_binary_payloads_cross_unchanged(nodes: tuple[Node, Node], hub: str) -> None:
    a, b = nodes
    s1 = session(hub)
    a.attach(s1)
    await synced(a)
    blob = bytes(range(256))
    await b.send(hub, Scope.CONNECTION, s1.id, Payload(DataType.BINARY, blob))
    await eventually(lambda: len(received(s1)) == 1)
    import base64

    assert base64.b64decode(str(received(s1)[0])) == blob


async def test_closed_broker_refuses_publish(nodes: tuple[Node, Node], hub: str) -> None:
    a, _ = nodes
    await a.broker.close()
    assert not a.broker.healthy()
    with pytest.raises(BrokerUnavailable):
        await a.send(hub, Scope.ALL, None, text("lost?"))


async def _members(node: Node, hub: str, group: str, want: set[tuple[str, str | None]]) -> bool:
    return set(await node.group_members(hub, group)) == want


async def _not(result: object) -> bool:
    return not await result  # type: ignore[misc]
