"""The cluster broker: Redis pub/sub carries commands between hubbub nodes.

* **Channels** (:func:`~hubbub.broker.base.channel`): one per hub, group, user and
  connection target. A node subscribes to a channel while it has a local member
  (the node calls :meth:`RedisBroker.subscribe` / :meth:`RedisBroker.unsubscribe`), plus
  its own ``hubbub:node:{id}`` channel, which other nodes use to see that it is
  subscribed.
* **Publish**: the command is applied to local connections first, then published on
  its target's channel; the call returns once Redis accepted it. Readers skip their
  own echoes by the origin node id in the envelope (:mod:`hubbub.broker.envelope`).
* **Ordering**: ``SUBSCRIBE``, ``PUBLISH`` and presence writes leave the node in the
  order they happen, inside the call that caused them (:mod:`hubbub.broker.wire`).
* **Outages**: one supervisor task (re)connects with capped exponential backoff and
  jitter, resubscribes every channel, re-registers this node's connections
  (:class:`~hubbub.broker.redis_presence.RedisPresence`), and then waits until every
  peer it knew is subscribed again (or declared dead) before it accepts publishes.
  While it is not ready, :meth:`publish` raises :class:`BrokerUnavailable` (REST 503)
  and :meth:`healthy` is False (``/api/health`` 503): an accepted send is never
  published into a Redis that has lost a live node's subscriptions.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError

from hubbub.broker import sentinel
from hubbub.broker.base import BrokerHandler, Command, Op, command_channel
from hubbub.broker.envelope import VERSION, EnvelopeError, decode, encode, split_sequenced
from hubbub.broker.redis_presence import PUBLISH_SHA, RedisPresence, node_channel, stream_key
from hubbub.broker.resp import RespError
from hubbub.broker.wire import MAX_BUFFERED_BYTES, RespConnection, cancel_and_wait
from hubbub.errors import BrokerUnavailable
from hubbub.protocols.reliable import MAX_BUFFERED_MESSAGES

__all__ = ["RedisBroker"]

log = logging.getLogger("hubbub.broker.redis")

_SUBSCRIBE_BATCH = 512


#: seconds after its last heartbeat that a node is declared dead (its connections are then reaped)
NODE_TTL = 5.0


class RedisBroker:
    """:class:`~hubbub.broker.base.Broker` over Redis pub/sub; ``presence`` is its cluster presence.

    Args:
        url: ``redis://[user:password@]host:port``, ``rediss://...`` or ``unix:///path``.
        node_id: this node's name in the cluster (default: random); at most 64 characters.
        heartbeat_interval: seconds between liveness heartbeats (and dead-node checks).
        node_ttl: a node whose heartbeat is this old is dead; its connections are removed.
        max_backoff: cap of the reconnect delay, in seconds.
        reliable_retention: seconds a reliable session of a dead node waits for its client to resume
            it on another node (and how long the SENDs it may need are kept after the last one).
        replay_messages: SENDs kept per channel for reliable sessions that resume on another node.
        service: which service's node set this node joins and watches: "" (Web PubSub) or "signalr".
    """

    sequenced = True

    def __init__(
        self,
        url: str,
        node_id: str | None = None,
        *,
        heartbeat_interval: float = 1.0,
        node_ttl: float = NODE_TTL,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
        start_timeout: float = 10.0,
        reliable_retention: float = 30.0,
        replay_messages: int = MAX_BUFFERED_MESSAGES,
        service: str = "",
    ) -> None:
        node_id = node_id or secrets.token_hex(6)
        if not 0 < len(node_id) <= 64 or any(c in node_id for c in " \n\r\t:"):
            raise ValueError("a node id is 1-64 characters without whitespace or ':'")
        if node_ttl <= 2 * heartbeat_interval:
            raise ValueError("node_ttl must be more than twice the heartbeat interval")
        self.url = url
        self.node_id = node_id
        self.heartbeat_interval = heartbeat_interval
        self.node_ttl = node_ttl
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.start_timeout = start_timeout
        self.reliable_retention = reliable_retention
        self.replay_messages = replay_messages
        self.service = service
        # a stream outlives the retention of any session that may need it, plus the time to notice a death
        self._replay_ttl_ms = int((reliable_retention + 2 * node_ttl + 60) * 1000)
        sentinel.parse(url)  # a ValueError now for an unusable Sentinel URL
        self._origin = node_id.encode("utf-8")
        self._origin_end = 2 + len(self._origin)
        #: redis-py client for request/response work (queries, heartbeats, reaping)
        self.redis: Redis = sentinel.client(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        self.presence = RedisPresence(self)
        self._channels: set[str] = set()
        self._handler: BrokerHandler | None = None
        self._sub: RespConnection | None = None
        self._writer: RespConnection | None = None
        self._ready = False
        self._closing = False
        self._first_round = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- Broker ---------------------------------------------------------------------------

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name="hubbub-redis")
        try:
            async with asyncio.timeout(self.start_timeout):
                await self._first_round.wait()
        except TimeoutError:
            pass
        if not self._ready:
            log.warning("redis at %s is not reachable yet: serving, but /api/health is 503", self.display_url)

    def healthy(self) -> bool:
        return self._ready

    @property
    def subscriptions(self) -> frozenset[str]:
        """The channels this node wants (and has subscribed while connected)."""
        return frozenset(self._channels)

    async def sync(self) -> None:
        """Wait until Redis has processed every subscription and write this node made so far.

        Causality across nodes comes from the network: a ``SUBSCRIBE`` leaves this node before
        the client hears "joined", so any request the client (or an app server it told) makes
        afterwards reaches Redis later. Code that acts for two nodes at once from one place
        (tests) has no such delay and waits here instead.
        """
        sub, writer = self._sub, self._writer
        if sub is None or writer is None or sub.closed or writer.closed:
            raise BrokerUnavailable("The service is not connected to its Redis backplane.")
        await asyncio.gather(sub.send(b"PING"), writer.send(b"PING"))

    @property
    def display_url(self) -> str:
        """The Redis URL without its password (for logs and banners)."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def writer(self) -> RespConnection | None:
        """The ordered write connection, when connected (the presence writes through it)."""
        return self._writer

    async def publish(self, command: Command) -> None:
        writer, handler = self._writer, self._handler
        if not self._ready or writer is None or writer.closed or handler is None:
            raise BrokerUnavailable("The service is not connected to its Redis backplane; retry later.")
        if writer.buffered() > MAX_BUFFERED_BYTES:
            raise BrokerUnavailable("The Redis backplane is not keeping up; retry later.")
        data = encode(command, self.node_id)
        handler.handle_command(command)  # local connections first (reliable ones: when it comes back)
        ch = command_channel(command)
        try:
            if command.op is Op.SEND:  # numbered and kept for reliable sessions that move to another node
                await writer.send(
                    b"EVALSHA",
                    PUBLISH_SHA,
                    2,
                    ch,
                    stream_key(ch),
                    data,
                    self.replay_messages,
                    self._replay_ttl_ms,
                )
            else:
                await writer.send(b"PUBLISH", ch, data)
        except (ConnectionError, RespError) as exc:
            log.warning("publish to redis failed: %s", exc)
            raise BrokerUnavailable(
                "The message could not be published to the other nodes; retry later."
            ) from None

    def subscribe(self, channel: str) -> None:
        if channel in self._channels:
            return
        self._channels.add(channel)
        sub = self._sub
        if sub is not None and not sub.closed:
            sub.send_nowait(b"SUBSCRIBE", channel)

    def unsubscribe(self, channel: str) -> None:
        if channel not in self._channels:
            return
        self._channels.discard(channel)
        sub = self._sub
        if sub is not None and not sub.closed:
            sub.send_nowait(b"UNSUBSCRIBE", channel)

    async def close(self) -> None:
        self._closing = True
        self._ready = False
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        self._drop_connections()
        await self.redis.aclose()
        self._handler = None

    # -- the reader -------------------------------------------------------------------------

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if data[:1] == b"\x02":
            self._on_sequenced(channel, data)
            return
        if (
            data[:1] == b"\x01"
            and data[2 : self._origin_end] == self._origin
            and data[1] == len(self._origin)
        ):
            return  # our own publish, applied locally already
        handler = self._handler
        if handler is None:
            return
        try:
            command, _origin = decode(data)
        except EnvelopeError as exc:
            version = data[0] if data else None
            log.warning(
                "dropped a message on %r: %s (envelope version %s, ours %d)", channel, exc, version, VERSION
            )
            return
        handler.handle_command(command)

    def _on_sequenced(self, channel: bytes, data: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        try:
            seq, envelope = split_sequenced(data)
            echo = envelope[2 : self._origin_end] == self._origin and envelope[1:2] == bytes(
                (len(self._origin),)
            )
            if echo and not handler.wants_echo():
                return  # applied locally already, and no reliable connection is waiting for it
            command, _origin = decode(envelope, seq, echo)
        except EnvelopeError as exc:
            log.warning("dropped a message on %r: %s", channel, exc)
            return
        handler.handle_command(command)

    # -- connection supervision ---------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = self.min_backoff
        failures = 0
        while not self._closing:
            lost = asyncio.Event()
            try:
                await self._connect(lost)
            except asyncio.CancelledError:
                raise
            except (OSError, ConnectionError, RespError, RedisError, TimeoutError) as exc:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning(
                        "cannot connect to redis at %s (attempt %d): %s", self.display_url, failures, exc
                    )
            except Exception:
                failures += 1
                log.exception("unexpected error while connecting to redis")
            else:
                if failures:
                    log.info("reconnected to redis after %d failed attempts", failures)
                failures = 0
                delay = self.min_backoff
                self._first_round.set()
                await lost.wait()
                if not self._closing:
                    log.warning("lost the connection to redis at %s: reconnecting", self.display_url)
            finally:
                self._ready = False
                self._drop_connections()
            self._first_round.set()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.max_backoff)

    def _drop_connections(self) -> None:
        for conn in (self._sub, self._writer):
            if conn is not None:
                conn.close()
        self._sub = self._writer = None

    async def _connect(self, lost: asyncio.Event) -> None:
        name = f"hubbub-{self.node_id}"
        endpoint = await sentinel.locate(self.url)  # asked again on every reconnect: Sentinel failover
        sub = await RespConnection.open(
            endpoint, on_push=self._on_message, on_lost=lost.set, name=name + "-sub"
        )
        self._sub = sub
        _subscribe_all(sub, sorted(self._channels))  # channels added from now on are sent by subscribe()
        _subscribe_all(sub, [node_channel(self.node_id)])  # last: peers read it as "fully subscribed"
        async with asyncio.timeout(10.0):
            await sub.send(b"PING")  # every SUBSCRIBE before it is confirmed
        writer = await RespConnection.open(endpoint, on_lost=lost.set, name=name)
        self._writer = writer
        await self.presence.connected(writer)
        await self._await_peers(lost)
        if not lost.is_set():
            self._ready = True

    async def _await_peers(self, lost: asyncio.Event) -> None:
        """Wait until every peer we know of is subscribed again, or has had time to die."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.node_ttl + self.heartbeat_interval
        peers = set(self.presence.peers) | await self.presence.live_nodes()
        peers.discard(self.node_id)
        while peers and not lost.is_set():
            ordered = sorted(peers)
            counts = await self.redis.pubsub_numsub(*(node_channel(p) for p in ordered))
            peers = {p for p, (_, n) in zip(ordered, counts, strict=True) if not n}
            if not peers:
                return
            if loop.time() >= deadline:
                log.warning("peers %s did not come back after the reconnect: treating them as dead", peers)
                return
            await asyncio.sleep(0.05)


def _subscribe_all(sub: RespConnection, channels: Iterable[str]) -> None:
    batch: list[str] = []
    for ch in channels:
        batch.append(ch)
        if len(batch) == _SUBSCRIBE_BATCH:
            sub.send_nowait(b"SUBSCRIBE", *batch)
            batch = []
    if batch:
        sub.send_nowait(b"SUBSCRIBE", *batch)
