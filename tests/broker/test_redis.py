"""What only the Redis backplane has: channels per member, outages, dead nodes."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from hubbub.broker.base import Scope
from hubbub.broker.redis import RedisBroker
from hubbub.broker.wire import cancel_and_wait
from hubbub.core.node import Node
from hubbub.errors import BrokerUnavailable
from hubbub.protocols.events import DataType, Payload
from tests.broker.harness import Detached, eventually, received, redis_node, session, synced
from tests.broker.test_wire import LOSES_CANCELS, Loop, start_in_the_window
from tests.support.cluster import RedisServer, run_redis
from tests.support.server import free_port

HELLO = Payload(DataType.TEXT, b"hello")


def broker(node: Node) -> RedisBroker:
    assert isinstance(node.broker, RedisBroker)
    return node.broker


async def crash(node: Node) -> None:
    """Stop a node the way kill -9 does: no goodbye, no cleanup in Redis."""
    b = broker(node)
    for task in (b._task, b.presence._task):
        assert task is not None
        await cancel_and_wait(task)
    b._drop_connections()
    await b.redis.aclose()


async def test_channels_follow_local_members(redis_server: RedisServer) -> None:
    node = redis_node(redis_server.url, "solo")
    await node.start()
    hub = "Hub" + uuid.uuid4().hex[:6]
    h = hub.lower()
    s1, s2 = session(hub, "u1"), session(hub, "u1")
    node.attach(s1)
    node.attach(s2, groups=["g"])
    node.join_local(s1, "g")
    want = {f"hubbub:{h}:all", f"hubbub:{h}:u:u1", f"hubbub:{h}:c:{s1.id}", f"hubbub:{h}:c:{s2.id}"}
    assert broker(node).subscriptions == {*want, f"hubbub:{h}:g:g"}
    await synced(node)
    channels = await broker(node).redis.pubsub_channels(f"hubbub:{h}:*")
    assert {c.decode() for c in channels} == {*want, f"hubbub:{h}:g:g"}
    node.leave_local(s1, "g")
    assert f"hubbub:{h}:g:g" in broker(node).subscriptions  # s2 is still a member
    node.detach(s2)
    assert broker(node).subscriptions == {f"hubbub:{h}:all", f"hubbub:{h}:u:u1", f"hubbub:{h}:c:{s1.id}"}
    node.detach(s1)
    assert broker(node).subscriptions == set()
    await synced(node)
    assert await broker(node).redis.pubsub_channels(f"hubbub:{h}:*") == []
    await node.close()


async def test_unreachable_redis_is_an_error_not_a_drop() -> None:
    b = RedisBroker(f"redis://127.0.0.1:{free_port()}", start_timeout=0.3)
    node = Node(b, b.presence)
    await node.start()
    assert not b.healthy()
    with pytest.raises(BrokerUnavailable):
        await node.send("h", Scope.ALL, None, HELLO)
    with pytest.raises(BrokerUnavailable):
        await node.connection_exists("h", "c")
    await node.close()


@pytest.mark.timeout(30)  # a regression hangs
async def test_a_node_closes_although_its_heartbeat_loop_lost_the_cancel(redis_server: RedisServer) -> None:
    """On Python 3.11 redis-py's ``asyncio.wait_for`` can swallow the cancel (tests/broker/test_wire.py)."""
    node = redis_node(redis_server.url, "closing")
    await node.start()
    presence = broker(node).presence
    assert presence._task is not None
    await cancel_and_wait(presence._task)
    loop = Loop()
    presence._task = await start_in_the_window(loop)  # where the heartbeat was when close() came
    await node.close()  # cancels it, first thing: waited forever before cancel_and_wait
    assert loop.lost_a_cancel == LOSES_CANCELS
    assert presence._task is None


async def test_dead_node_connections_are_removed_and_reported_once(redis_server: RedisServer) -> None:
    url, hub = redis_server.url, "hub" + uuid.uuid4().hex[:6]
    a, b, c = (redis_node(url, name, heartbeat_interval=0.1, node_ttl=0.5) for name in "abc")
    for node in (a, b, c):
        await node.start()
    lost = Detached()
    a.on_detach.append(lost)
    b.on_detach.append(lost)
    doomed = [session(hub, "u1"), session(hub, "u2"), session(hub)]
    c.attach(doomed[0], groups=["g", "h"])
    c.attach(doomed[1], groups=["g"])
    c.attach(doomed[2])
    survivor = session(hub, "u1")
    a.attach(survivor, groups=["g"])
    await synced(a, b, c)
    assert len(await b.group_members(hub, "g")) == 3
    await crash(c)
    started = time.monotonic()
    await eventually(lambda: _gone(b, hub, [s.id for s in doomed]), timeout=5)
    elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 2 * 0.1 + 0.5  # ttl + two heartbeats + slack
    await asyncio.sleep(0.5)  # both survivors looked for dead nodes several times since
    assert sorted(cid for cid, _ in lost.calls) == sorted(s.id for s in doomed)
    assert {reason for _, reason in lost.calls} == {"The service node of the connection stopped"}
    for node in (a, b):
        assert await node.group_members(hub, "g") == [(survivor.id, "u1")]
        assert not await node.group_exists(hub, "h")
        assert await node.user_exists(hub, "u1") and not await node.user_exists(hub, "u2")
    assert broker(c).node_id not in await a.broker.presence.live_nodes()  # type: ignore[attr-defined]
    await a.close()
    await b.close()


async def test_node_declared_dead_drops_its_connections_silently(redis_server: RedisServer) -> None:
    url, hub = redis_server.url, "hub" + uuid.uuid4().hex[:6]
    a, c = (redis_node(url, name, heartbeat_interval=0.1, node_ttl=0.5) for name in "ac")
    await a.start()
    await c.start()
    lost, own = Detached(), Detached()
    a.on_detach.append(lost)
    c.on_detach.append(own)
    s = session(hub)
    c.attach(s)
    await synced(c)
    presence = broker(c).presence
    assert presence._task is not None
    await cancel_and_wait(presence._task)  # c stalls: no heartbeats for longer than the TTL
    await eventually(lambda: lost.calls == [(s.id, "The service node of the connection stopped")])
    presence._task = asyncio.get_running_loop().create_task(presence._liveness())
    await eventually(lambda: s.closed)  # its next heartbeat finds the tombstone
    assert own.calls == []  # "disconnected" was reported by a already
    await synced(c)
    assert not await a.connection_exists(hub, s.id)
    await a.close()
    await c.close()


async def test_recovers_from_a_redis_restart() -> None:
    with run_redis() as server:
        hub = "hub" + uuid.uuid4().hex[:6]
        a, b = (redis_node(server.url, name, heartbeat_interval=0.1, node_ttl=1.0) for name in "ab")
        broker(a).max_backoff = broker(b).max_backoff = 0.2
        await a.start()
        await b.start()
        s1, s2 = session(hub, "u1"), session(hub, "u2")
        a.attach(s1, groups=["g"])
        b.attach(s2)
        await synced(a, b)
        await asyncio.to_thread(server.stop)
        await eventually(lambda: not a.broker.healthy() and not b.broker.healthy())
        with pytest.raises(BrokerUnavailable):
            await b.send(hub, Scope.GROUP, "g", HELLO)
        await asyncio.to_thread(server.start)  # empty: it kept nothing
        await eventually(lambda: a.broker.healthy() and b.broker.healthy(), timeout=10)
        assert await b.group_members(hub, "g") == [(s1.id, "u1")]  # re-registered
        assert await a.user_exists(hub, "u2") and await b.connection_exists(hub, s1.id)
        await b.send(hub, Scope.GROUP, "g", HELLO)  # resubscribed
        await a.send(hub, Scope.USER, "u2", HELLO)
        await eventually(lambda: received(s1) == ["hello"] and received(s2) == ["hello"])
        await a.close()
        await b.close()


async def _gone(node: Node, hub: str, ids: list[str]) -> bool:
    return not any([await node.connection_exists(hub, cid) for cid in ids])
