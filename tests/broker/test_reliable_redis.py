"""Reliable sessions across nodes (Redis): numbered SENDs kept per channel, takeover, orphan expiry."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from hubbub.broker.base import ReplayGap, Scope, channel
from hubbub.broker.envelope import EnvelopeError, split_sequenced
from hubbub.broker.redis import RedisBroker
from hubbub.core.node import Node
from hubbub.core.session import Session
from hubbub.protocols import CODECS
from hubbub.protocols.events import DataType, Payload
from tests.broker.harness import Detached, eventually, redis_node, synced
from tests.broker.test_redis import crash
from tests.core.fakes import RecordingLink
from tests.support.cluster import RedisServer

RELIABLE = "json.reliable.webpubsub.azure.v1"


def text(value: str) -> Payload:
    return Payload(DataType.TEXT, value.encode())


def reliable_session(hub: str, user: str | None = None) -> Session:
    return Session(hub, CODECS[RELIABLE], RecordingLink(), user_id=user, subprotocol=RELIABLE)


def stamped(s: Session) -> list[tuple[int, object]]:
    """``(sequenceId, data)`` of every data frame the session got (written or kept for replay)."""
    assert s.reliable is not None
    out = []
    for frame in s.reliable.unacked():
        n = frame[1] & 0x7F
        body = orjson.loads(frame[2 if n < 126 else 4 if n == 126 else 10 :])
        out.append((body["sequenceId"], body["data"]))
    return out


def test_split_sequenced() -> None:
    assert split_sequenced(b"\x0242:\x01rest") == (42, b"\x01rest")
    for bad in (b"\x01x", b"\x02:x", b"\x02ab:x", b"\x02" + b"9" * 40):
        with pytest.raises(EnvelopeError):
            split_sequenced(bad)


async def test_sends_are_numbered_and_replayed_in_cluster_order(redis_server: RedisServer) -> None:
    hub = "hub" + uuid.uuid4().hex[:6]
    a = redis_node(redis_server.url, "a")
    await a.start()
    for i in range(5):
        scope, target = (Scope.GROUP, "g") if i % 2 else (Scope.ALL, None)
        await a.send(hub, scope, target, text(f"m{i}"))
    channels = [channel(hub, Scope.ALL), channel(hub, Scope.GROUP, "g"), channel(hub, Scope.GROUP, "none")]
    kept = await a.presence.replay(channels, 0, 100)
    assert [c.payload.data for _, c in kept if c.payload] == [f"m{i}".encode() for i in range(5)]
    seqs = [seq for seq, _ in kept]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    later = await a.presence.replay(channels, seqs[2], 100)
    assert [seq for seq, _ in later] == seqs[3:]
    with pytest.raises(ReplayGap):  # more than the session could have buffered
        await a.presence.replay(channels, 0, 3)
    await a.close()


async def test_a_trimmed_channel_is_a_gap_not_a_silent_loss(redis_server: RedisServer) -> None:
    hub = "hub" + uuid.uuid4().hex[:6]
    b = RedisBroker(redis_server.url, "t-" + uuid.uuid4().hex[:6], replay_messages=10)
    node = Node(b, b.presence)
    await node.start()
    for i in range(300):
        await node.send(hub, Scope.GROUP, "g", text(f"m{i}"))
    ch = [channel(hub, Scope.GROUP, "g")]
    with pytest.raises(ReplayGap):
        await node.presence.replay(ch, 0, 1000)
    last = int(await b.redis.get("hubbub:seq") or 0)
    recent = await node.presence.replay(ch, last - 5, 1000)  # the newest ones are still there
    assert [c.payload.data for _, c in recent if c.payload] == [f"m{i}".encode() for i in range(295, 300)]
    await node.close()


async def test_a_crashed_nodes_reliable_session_is_taken_over_with_its_buffer(
    redis_server: RedisServer,
) -> None:
    url, hub = redis_server.url, "hub" + uuid.uuid4().hex[:6]
    a, b, c = (redis_node(url, name, heartbeat_interval=0.1, node_ttl=0.5) for name in "abc")
    for node in (a, b, c):
        await node.start()
    lost = Detached()
    for node in (a, b):
        node.on_detach.append(lost)
    s = reliable_session(hub, "u")
    c.attach(s, groups=["g"])
    await synced(c)
    for i in range(3):
        await a.send(hub, Scope.GROUP, "g", text(f"m{i}"))
    await eventually(lambda: len(stamped(s)) == 3)
    await a.send(hub, Scope.GROUP, "h", text("before the join"))
    c.join_local(s, "h")
    s.acknowledge(1)
    await synced(c)
    await crash(c)
    await a.send(hub, Scope.GROUP, "g", text("m3"))  # nobody holds the session now: kept in Redis
    await a.send(hub, Scope.GROUP, "h", text("m4"))
    assert s.reconnection_token is not None
    assert await b.adopt(hub, s.id, "wrong token", 5.0) is None
    moved = await b.adopt(hub, s.id, s.reconnection_token, 5.0)
    assert moved is not None and moved.id == s.id and moved.groups == {"g", "h"} and moved.user_id == "u"
    assert stamped(moved) == [(2, "m1"), (3, "m2"), (4, "m3"), (5, "m4")]  # 1 was acknowledged
    await a.send(hub, Scope.USER, "u", text("m5"))
    await eventually(lambda: stamped(moved)[-1:] == [(6, "m5")])
    await asyncio.sleep(1.0)  # c is declared dead meanwhile: the session is b's, not lost
    assert lost.calls == []
    # the client comes back on a while b (alive) holds the suspended session: b hands it over
    again = await a.adopt(hub, s.id, s.reconnection_token, 5.0)
    assert again is not None and b.session(hub, s.id) is None
    assert stamped(again) == [(2, "m1"), (3, "m2"), (4, "m3"), (5, "m4"), (6, "m5")]
    await b.send(hub, Scope.GROUP, "g", text("m6"))
    await eventually(lambda: stamped(again)[-1:] == [(7, "m6")])
    assert lost.calls == [] and await b.connection_exists(hub, s.id)
    for node in (a, b):
        await node.close()


async def test_an_orphaned_reliable_session_ends_once_after_the_retention(redis_server: RedisServer) -> None:
    url, hub = redis_server.url, "hub" + uuid.uuid4().hex[:6]
    a, b, c = (
        redis_node(url, name, heartbeat_interval=0.1, node_ttl=0.5, reliable_retention=0.5) for name in "abc"
    )
    for node in (a, b, c):
        await node.start()
    lost = Detached()
    for node in (a, b):
        node.on_detach.append(lost)
    s = reliable_session(hub)
    c.attach(s, groups=["g"])
    await synced(c)
    await crash(c)
    await eventually(lambda: lost.calls != [], timeout=5)
    await asyncio.sleep(0.5)
    assert lost.calls == [(s.id, "The reliable session expired")]
    assert not await a.connection_exists(hub, s.id) and not await b.group_exists(hub, "g")
    for node in (a, b):
        await node.close()
