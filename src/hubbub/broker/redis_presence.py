"""Cluster-wide presence in Redis: who is connected where, in which groups, with which roles.

Keys (``{h}`` is the lower-cased hub name, which never contains ``:``)::

    hubbub:hub:{h}:conn:{cid}     hash  n=node, hub=name, m=member, u=user, p=subprotocol,
                                        r=roles (JSON), s=connection state
    hubbub:hub:{h}:cgroups:{cid}  set   the connection's groups
    hubbub:hub:{h}:user:{uid}     set   the user's connection ids
    hubbub:hub:{h}:group:{g}      hash  connection id -> user id ("" = none)
    hubbub:nodes                  set   Web PubSub node ids that registered
    hubbub:nodes:{service}        set   the same for another service's brokers (``signalr``)
    hubbub:node:{id}              string heartbeat, expires after the node TTL
    hubbub:node:{id}:conns        set   "{h}\\n{cid}" of the node's connections
    hubbub:node:{id}:reaper       string lock: the node that is removing a dead node's connections
    hubbub:node:{id}:reaped       string tombstone: the node was declared dead (1 hour)

Reliable sessions (``json.reliable…`` / ``protobuf.reliable…``) survive the loss of their node::

    hubbub:seq                    counter  position of the last SEND in the cluster-wide order
    hubbub:s:{channel}            stream   the last SENDs on a pub/sub channel, entry id "{position}-0",
                                           field e = envelope (the last N, expires after the retention)
    hubbub:hub:{h}:rb:{cid}       stream   the session's unacknowledged frames, entry id
                                           "{sequence id}-{position of the last SEND delivered}"
    hubbub:hub:{h}:rj:{cid}       hash     group -> SEND position when the session joined it
    hubbub:orphans                zset     "{h}\\n{cid}" of sessions nobody holds -> deadline (ms)

plus, in the connection hash: rel=1, t=SHA-256 of the reconnection token, c=claims (JSON),
w=the SEND position when the session was registered; n="" while no node holds the session.

The owning node writes its changes through the broker's ordered writer connection
(fire and forget, in order; Lua for the removal, which touches several keys). A
permission check is answered from the roles the owning node stored (REST grants and
revokes are written back by the owner after it applied them).

Liveness: every node refreshes its heartbeat each ``heartbeat_interval``; a node whose
heartbeat expired (``node_ttl``) is dead. Every node looks for dead ones on each
heartbeat; the one that wins the reaper lock pops the dead node's connections in
batches (``SPOP`` is atomic, so each connection is handed to exactly one reaper even if
a reaper dies half way), removes them from every index and fires their ``disconnected``
events. So a dead node's connections are gone from every answer within
``node_ttl + heartbeat_interval`` (+ the time to reap) of its last heartbeat.

Each service has its own node set (:attr:`RedisBroker.service`): a node watches and reaps only
peers of its own service, since only they can report the lost connections (a node started
without SignalR has no SignalR to send a ``disconnected`` upstream). Only Web PubSub has reliable
sessions, so only its nodes expire orphans.

A node that starts with the id of a node declared dead earlier (a restarted pod of a stateful
set) is a new node: it drops the tombstone instead of treating it as its own eviction, and
reports whatever its previous run left registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from hubbub.auth import Permission, Permissions
from hubbub.broker.base import (
    Adoption,
    Command,
    ConnectionRecord,
    LocalView,
    Op,
    ReliableMirror,
    ReplayGap,
    Scope,
)
from hubbub.broker.envelope import EnvelopeError, decode
from hubbub.broker.wire import RespConnection, cancel_and_wait
from hubbub.errors import BrokerUnavailable

if TYPE_CHECKING:
    from hubbub.broker.redis import RedisBroker

__all__ = ["LOST_REASON", "PUBLISH_SHA", "RedisPresence", "node_channel", "stream_key", "token_hash"]

log = logging.getLogger("hubbub.broker.presence")

NODES = "hubbub:nodes"
ORPHANS = "hubbub:orphans"
LOST_REASON = "The service node of the connection stopped"
EXPIRED_REASON = "The reliable session expired"
_REAP_BATCH = 500
_TOMBSTONE_SECONDS = 3600

# Remove one connection from every index; return {hash fields, groups} or false.
_REMOVE_FN = """
local function remove(p, cid, owner)
  local ck = p .. 'conn:' .. cid
  local rec = redis.call('HGETALL', ck)
  if #rec == 0 then return false end
  local f = {}
  for i = 1, #rec, 2 do f[rec[i]] = rec[i + 1] end
  if owner ~= '' and f['n'] ~= owner then return false end
  local gk = p .. 'cgroups:' .. cid
  local groups = redis.call('SMEMBERS', gk)
  for _, g in ipairs(groups) do redis.call('HDEL', p .. 'group:' .. g, cid) end
  if f['u'] then redis.call('SREM', p .. 'user:' .. f['u'], cid) end
  redis.call('DEL', ck, gk, p .. 'rb:' .. cid, p .. 'rj:' .. cid)
  if f['m'] then
    if f['n'] then redis.call('SREM', 'hubbub:node:' .. f['n'] .. ':conns', f['m']) end
    redis.call('ZREM', 'hubbub:orphans', f['m'])
  end
  return {rec, groups}
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
# ARGV: hub key prefix, connection id, owner node id
REMOVE_SCRIPT = _REMOVE_FN + "return remove(ARGV[1], ARGV[2], ARGV[3])\n"
# KEYS[1]: a node's connection set; ARGV[1]: how many to pop, ARGV[2]: reliable retention (ms).
# Reliable sessions are not removed: nobody holds them until a client resumes them somewhere or
# the retention ends (ORPHANS). Returns {popped, records of the removed connections}.
REAP_SCRIPT = (
    _REMOVE_FN
    + """
local out = {}
local deadline = now_ms() + tonumber(ARGV[2])
local popped = redis.call('SPOP', KEYS[1], ARGV[1])
for _, m in ipairs(popped) do
  local sep = string.find(m, '\\n', 1, true)
  if sep then
    local p, cid = 'hubbub:hub:' .. string.sub(m, 1, sep - 1) .. ':', string.sub(m, sep + 1)
    if redis.call('HGET', p .. 'conn:' .. cid, 'rel') == '1' then
      redis.call('HSET', p .. 'conn:' .. cid, 'n', '')
      redis.call('ZADD', 'hubbub:orphans', deadline, m)
    else
      local r = remove(p, cid, '')
      if r then table.insert(out, r) end
    end
  end
end
return {#popped, out}
"""
)
# ARGV[1]: how many. Ends the orphaned reliable sessions whose retention is over (each exactly once).
EXPIRE_SCRIPT = (
    _REMOVE_FN
    + """
local out = {}
local due = redis.call('ZRANGEBYSCORE', 'hubbub:orphans', '-inf', now_ms(), 'LIMIT', 0, ARGV[1])
for _, m in ipairs(due) do
  redis.call('ZREM', 'hubbub:orphans', m)
  local sep = string.find(m, '\\n', 1, true)
  if sep then
    local p, cid = 'hubbub:hub:' .. string.sub(m, 1, sep - 1) .. ':', string.sub(m, sep + 1)
    if redis.call('HGET', p .. 'conn:' .. cid, 'n') == '' then
      local r = remove(p, cid, '')
      if r then table.insert(out, r) end
    end
  end
end
return out
"""
)
# ARGV: hub key prefix, connection id, this node, token hash, the owner we expect (maybe "").
# Takes a reliable session over: {1, fields, groups}; {2, owner} if the owner changed; {0} if no such session.
CLAIM_SCRIPT = """
local p, cid, me = ARGV[1], ARGV[2], ARGV[3]
local ck = p .. 'conn:' .. cid
local rec = redis.call('HGETALL', ck)
if #rec == 0 then return {0} end
local f = {}
for i = 1, #rec, 2 do f[rec[i]] = rec[i + 1] end
if f['rel'] ~= '1' or f['t'] ~= ARGV[4] or not f['m'] then return {0} end
if f['n'] ~= ARGV[5] then return {2, f['n'] or ''} end
if f['n'] ~= '' then redis.call('SREM', 'hubbub:node:' .. f['n'] .. ':conns', f['m']) end
redis.call('ZREM', 'hubbub:orphans', f['m'])
redis.call('HSET', ck, 'n', me)
redis.call('SADD', 'hubbub:node:' .. me .. ':conns', f['m'])
return {1, rec, redis.call('SMEMBERS', p .. 'cgroups:' .. cid)}
"""
# ARGV: hub key prefix, connection id, this node, retention (ms). This node gives a suspended session up.
RELEASE_SCRIPT = (
    _REMOVE_FN
    + """
local ck = ARGV[1] .. 'conn:' .. ARGV[2]
local f = redis.call('HMGET', ck, 'n', 'm')
if f[1] ~= ARGV[3] or not f[2] then return 0 end
redis.call('HSET', ck, 'n', '')
redis.call('SREM', 'hubbub:node:' .. ARGV[3] .. ':conns', f[2])
redis.call('ZADD', 'hubbub:orphans', now_ms() + tonumber(ARGV[4]), f[2])
return 1
"""
)
# KEYS[1]: connection hash; ARGV: this node, member, then field/value pairs. Registers a reliable
# session unless another node took it over meanwhile (0); w = the current SEND position.
RELIABLE_ADD_SCRIPT = """
local n = redis.call('HGET', KEYS[1], 'n')
if n and n ~= '' and n ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('HSET', KEYS[1], 'w', redis.call('GET', 'hubbub:seq') or '0')
redis.call('SADD', 'hubbub:node:' .. ARGV[1] .. ':conns', ARGV[2])
redis.call('ZREM', 'hubbub:orphans', ARGV[2])
return 1
"""
# KEYS[1]: a reliable session's join positions; ARGV[1]: group. Replays skip what the group got before.
JOINED_SCRIPT = """
return redis.call('HSET', KEYS[1], ARGV[1], redis.call('GET', 'hubbub:seq') or '0')
"""
# KEYS: pub/sub channel, its stream; ARGV: envelope, stream cap, stream ttl (ms). A SEND, numbered.
PUBLISH_SCRIPT = """
local seq = redis.call('INCR', 'hubbub:seq')
redis.call('XADD', KEYS[2], seq .. '-0', 'e', ARGV[1])
local over = redis.call('XLEN', KEYS[2]) - tonumber(ARGV[2])
if over > 0 then  -- XDEL (not XTRIM) so that max-deleted-entry-id tells a resuming session what is gone
  for _, e in ipairs(redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', over)) do
    redis.call('XDEL', KEYS[2], e[1])
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', KEYS[1], '\\2' .. seq .. ':' .. ARGV[1])
return seq
"""
# KEYS: heartbeat, tombstone, node set; ARGV: node id, ttl ms. Returns 1 if we had been declared dead.
HEARTBEAT_SCRIPT = """
local evicted = redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return evicted
"""


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode("utf-8")).hexdigest()


_SCRIPTS = (
    REMOVE_SCRIPT,
    REAP_SCRIPT,
    EXPIRE_SCRIPT,
    CLAIM_SCRIPT,
    RELEASE_SCRIPT,
    RELIABLE_ADD_SCRIPT,
    PUBLISH_SCRIPT,
    JOINED_SCRIPT,
)
_REMOVE_SHA, _REAP_SHA, _EXPIRE_SHA, _CLAIM_SHA, _RELEASE_SHA, _RELIABLE_ADD_SHA, PUBLISH_SHA, _JOINED_SHA = (
    map(_sha, _SCRIPTS)
)


def _ignore_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("redis refused a write: %s", future.exception())


def node_channel(node_id: str) -> str:
    """A node's own channel; ``PUBSUB NUMSUB`` of it tells whether the node is subscribed."""
    return f"hubbub-node:{node_id}"


def stream_key(channel: str) -> str:
    """The stream that keeps the last SENDs of a pub/sub channel."""
    return "hubbub:s:" + channel


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _id_parts(value: Any) -> tuple[int, int]:
    """``(first, second)`` of a stream entry id such as ``b"12-3"``; (0, 0) if unreadable."""
    text = _text(value) if isinstance(value, bytes) else value
    if not isinstance(text, str) or "-" not in text:
        return 0, 0
    first, _, second = text.partition("-")
    try:
        return int(first), int(second)
    except ValueError:
        return 0, 0


def _prefix(hub: str) -> str:
    return f"hubbub:hub:{hub.lower()}:"


def _member(hub: str, connection_id: str) -> str:
    return f"{hub.lower()}\n{connection_id}"


def _text(value: Any) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else None


def _claims(raw: Any) -> dict[str, list[str]] | None:
    if not raw:
        return None
    value = orjson.loads(raw)
    if not isinstance(value, dict):
        return None
    return {str(k): [str(x) for x in v] if isinstance(v, list) else [str(v)] for k, v in value.items()}


def _record(reply: Any) -> ConnectionRecord | None:
    """A :class:`ConnectionRecord` from the ``{hash fields, groups}`` a Lua script returned."""
    try:
        flat, groups = reply
        fields = {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
        roles = orjson.loads(fields.get("r") or b"[]")
        return ConnectionRecord(
            hub=_text(fields.get("hub")) or "",
            connection_id=_text(fields.get("cid")) or "",
            user_id=_text(fields.get("u")),
            subprotocol=_text(fields.get("p")),
            roles=tuple(r for r in roles if isinstance(r, str)),
            groups=tuple(g for g in map(_text, groups) if g is not None),
            connection_state=_text(fields.get("s")),
            claims=_claims(fields.get("c")),
        )
    except (TypeError, ValueError, orjson.JSONDecodeError):
        log.warning("ignored a malformed connection record: %r", reply)
        return None


class RedisPresence:
    """:class:`~hubbub.broker.base.Presence` in Redis; made by (and sharing the connections of)
    :class:`~hubbub.broker.redis.RedisBroker`."""

    def __init__(self, broker: RedisBroker) -> None:
        self._broker = broker
        self._view: LocalView | None = None
        self._node = broker.node_id
        self._conns_key = f"hubbub:node:{self._node}:conns"
        self._nodes = f"{NODES}:{broker.service}" if broker.service else NODES
        self._expires_orphans = not broker.service  # only Web PubSub has reliable sessions
        self._heartbeat = broker.redis.register_script(HEARTBEAT_SCRIPT)
        self._reap = broker.redis.register_script(REAP_SCRIPT)
        self._retention_ms = int(broker.reliable_retention * 1000)
        self._connected_before = False
        self._task: asyncio.Task[None] | None = None
        #: live peers seen at the last heartbeat (the broker waits for them after an outage)
        self.peers: set[str] = set()

    @property
    def view(self) -> LocalView:
        if self._view is None:
            raise RuntimeError("RedisPresence.start() was not called")
        return self._view

    async def start(self, view: LocalView) -> None:
        self._view = view
        self._task = asyncio.get_running_loop().create_task(self._liveness(), name="hubbub-liveness")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        writer = self._broker.writer
        if writer is None or writer.closed:
            return
        try:
            async with asyncio.timeout(5.0):
                await writer.send(b"EVALSHA", _REAP_SHA, 1, self._conns_key, 1 << 30, self._retention_ms)
                await writer.send(b"DEL", f"hubbub:node:{self._node}", self._conns_key)
                await writer.send(b"SREM", self._nodes, self._node)
        except (ConnectionError, TimeoutError, RedisError, Exception) as exc:
            log.warning("could not unregister this node from redis: %s", exc)

    # -- (re)connect -------------------------------------------------------------------------

    async def connected(self, writer: RespConnection) -> None:
        """Load the scripts, replace this node's registrations by its current state, heartbeat."""
        for script in _SCRIPTS:
            writer.send_nowait(b"SCRIPT", b"LOAD", script)
        _popped, stale = await writer.send(
            b"EVALSHA", _REAP_SHA, 1, self._conns_key, 1 << 30, self._retention_ms
        )
        local = list(self.view.local_records())
        added = [self._add(writer, record) for record in local]
        for record, reply in zip(local, added, strict=True):
            if reply is not None and not await reply:  # resumed on another node during the outage
                self.view.taken_over(record.hub, record.connection_id)
        first, self._connected_before = not self._connected_before, True
        await self._beat(fresh=first)
        await writer.send(b"PING")
        # peers known before an outage stay known: the broker waits for them to come back
        self.peers |= await self.live_nodes() - {self._node}
        if first:  # records of a previous run of this node id: nobody reported them yet
            live = {(r.hub.lower(), r.connection_id) for r in local}
            records = [r for r in map(_record, stale or ()) if r is not None]
            gone = [r for r in records if (r.hub.lower(), r.connection_id) not in live]
            if gone:
                log.info("reporting %d connections of a previous run of node %s", len(gone), self._node)
                self.view.connections_lost(gone, LOST_REASON)

    def _add(self, writer: RespConnection, record: ConnectionRecord) -> asyncio.Future[Any] | None:
        """Register a connection; for a reliable one, the future tells whether it is still ours."""
        p, cid = _prefix(record.hub), record.connection_id
        member = _member(record.hub, cid)
        fields: list[str] = ["n", self._node, "hub", record.hub, "cid", cid, "m", member]
        fields += ["r", orjson.dumps(list(record.roles)).decode()]
        for key, value in (("u", record.user_id), ("p", record.subprotocol), ("s", record.connection_state)):
            if value is not None:
                fields += [key, value]
        reply = None
        if record.reconnection_token is not None:
            fields += ["rel", "1", "t", token_hash(record.reconnection_token)]
            fields += ["c", orjson.dumps(record.claims or {}).decode()]
            reply = writer.send(
                b"EVALSHA", _RELIABLE_ADD_SHA, 1, p + "conn:" + cid, self._node, member, *fields
            )
        else:
            writer.send_nowait(b"HSET", p + "conn:" + cid, *fields)
            writer.send_nowait(b"SADD", self._conns_key, member)
        if record.user_id is not None:
            writer.send_nowait(b"SADD", p + "user:" + record.user_id, cid)
        for group in record.groups:
            self._join(writer, p, cid, record.user_id, group)
        return reply

    @staticmethod
    def _join(writer: RespConnection, p: str, cid: str, user_id: str | None, group: str) -> None:
        writer.send_nowait(b"HSET", p + "group:" + group, cid, user_id or "")
        writer.send_nowait(b"SADD", p + "cgroups:" + cid, group)

    # -- changes of this node (ordered, fire and forget) --------------------------------------

    def _writer(self) -> RespConnection | None:
        writer = self._broker.writer
        return None if writer is None or writer.closed else writer

    def connection_added(self, record: ConnectionRecord) -> None:
        if (writer := self._writer()) is not None:
            reply = self._add(writer, record)
            if reply is not None:
                reply.add_done_callback(_ignore_result)

    def connection_removed(self, hub: str, connection_id: str, user_id: str | None) -> None:
        if (writer := self._writer()) is not None:
            writer.send_nowait(b"EVALSHA", _REMOVE_SHA, 0, _prefix(hub), connection_id, self._node)

    def group_joined(self, hub: str, connection_id: str, user_id: str | None, group: str) -> None:
        if (writer := self._writer()) is not None:
            self._join(writer, _prefix(hub), connection_id, user_id, group)

    def group_left(self, hub: str, connection_id: str, group: str) -> None:
        if (writer := self._writer()) is not None:
            p = _prefix(hub)
            writer.send_nowait(b"HDEL", p + "group:" + group, connection_id)
            writer.send_nowait(b"SREM", p + "cgroups:" + connection_id, group)

    def roles_changed(self, hub: str, connection_id: str, roles: Sequence[str]) -> None:
        if (writer := self._writer()) is not None:
            key = _prefix(hub) + "conn:" + connection_id
            writer.send_nowait(b"HSET", key, "r", orjson.dumps(list(roles)))

    # -- reliable sessions across nodes ------------------------------------------------------

    def mirror(self) -> ReliableMirror | None:
        return self

    def reliable_frame(
        self, hub: str, connection_id: str, sequence_id: int, watermark: int, data: bytes
    ) -> None:
        if (writer := self._writer()) is not None:
            key = _prefix(hub) + "rb:" + connection_id
            writer.send_nowait(b"XADD", key, f"{sequence_id}-{watermark}", b"f", data)

    def reliable_acked(self, hub: str, connection_id: str, sequence_id: int) -> None:
        if (writer := self._writer()) is not None:
            key = _prefix(hub) + "rb:" + connection_id
            writer.send_nowait(b"XTRIM", key, b"MINID", f"{sequence_id + 1}-0")

    def reliable_joined(self, hub: str, connection_id: str, group: str) -> None:
        if (writer := self._writer()) is not None:
            writer.send_nowait(b"EVALSHA", _JOINED_SHA, 1, _prefix(hub) + "rj:" + connection_id, group)

    def reliable_released(self, hub: str, connection_id: str) -> None:
        if (writer := self._writer()) is not None:
            writer.send_nowait(
                b"EVALSHA", _RELEASE_SHA, 0, _prefix(hub), connection_id, self._node, self._retention_ms
            )

    async def _owner_alive(self, owner: str) -> bool:
        """A node is alive while its heartbeat lasts and it is subscribed (a killed one is not)."""
        redis = self._broker.redis
        if not await redis.exists(f"hubbub:node:{owner}"):
            return False
        ((_, subscribers),) = await redis.pubsub_numsub(node_channel(owner))
        return bool(subscribers)

    async def adopt(self, hub: str, connection_id: str, token: str) -> Adoption | None:
        if self._writer() is None:
            raise BrokerUnavailable("The service is not connected to its Redis backplane; retry later.")
        try:
            return await self._adopt(hub, connection_id, token)
        except (RedisError, OSError) as exc:
            log.warning("taking over reliable session %s failed: %s", connection_id, exc)
            raise BrokerUnavailable("The Redis backplane did not answer; retry later.") from None

    async def _adopt(self, hub: str, connection_id: str, token: str) -> Adoption | None:
        redis = self._broker.redis
        p = _prefix(hub)
        key = p + "conn:" + connection_id
        digest = token_hash(token)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._broker.node_ttl + 2 * self._broker.heartbeat_interval
        asked = False
        while True:
            fields = await redis.hmget(key, "rel", "t", "n")
            rel, stored, owner = (_text(v) for v in fields)
            if rel != "1" or stored is None or owner is None or not secrets.compare_digest(stored, digest):
                return None
            if owner == self._node:
                return None  # ours, but not here any more: it ended
            if owner == "" or not await self._owner_alive(owner):
                reply = await redis.evalsha(_CLAIM_SHA, 0, p, connection_id, self._node, digest, owner)
                if reply[0] == 1:
                    return await self._adopted(hub, connection_id, reply[1], reply[2])
                if reply[0] == 0:
                    return None
                continue  # the owner changed under us: look again
            if not asked:  # a live node holds it (suspended): ask it to let go
                asked = True
                await self._broker.publish(Command(Op.RELEASE, hub, Scope.CONNECTION, connection_id))
            if loop.time() >= deadline:
                log.warning("node %s did not release reliable session %s", owner, connection_id)
                return None
            await asyncio.sleep(0.02)

    async def _adopted(self, hub: str, connection_id: str, flat: Any, groups: Any) -> Adoption | None:
        record = _record((flat, groups))
        if record is None:
            return None
        fields = {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
        registered = int(_text(fields.get("w")) or 0)
        redis = self._broker.redis
        key = _prefix(hub) + "rb:" + connection_id
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xinfo_stream(key)
            pipe.xrange(key)
            pipe.hgetall(_prefix(hub) + "rj:" + connection_id)
            info, entries, joins = await pipe.execute(raise_on_error=False)
        joined: dict[str, int] = {}
        for group, position in joins.items() if isinstance(joins, dict) else ():
            with contextlib.suppress(ValueError):
                joined[_text(group) or ""] = int(position)
        last, watermark = (0, 0)
        if isinstance(info, dict):
            last, watermark = _id_parts(info.get("last-generated-id"))
        frames: list[bytes] = []
        seqs: list[int] = []
        for entry_id, values in entries if isinstance(entries, list) else ():
            seqs.append(_id_parts(entry_id)[0])
            frames.append(values.get(b"f", b""))
        if seqs and seqs != list(range(last - len(seqs) + 1, last + 1)):
            log.warning(
                "the replay buffer of %s has gaps (%s..%s): not resumable", connection_id, seqs[0], last
            )
            return Adoption(record, last, (), watermark, complete=False)
        return Adoption(record, last, tuple(frames), max(registered, watermark), joined=joined)

    async def replay(self, channels: Sequence[str], after: int, limit: int) -> list[tuple[int, Command]]:
        redis = self._broker.redis
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for ch in channels:
                    pipe.xinfo_stream(stream_key(ch))
                    pipe.xrange(stream_key(ch), min=f"{after + 1}-0", count=limit + 1)
                replies = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"The Redis backplane did not answer: {exc}") from None
        found: list[tuple[int, Command]] = []
        for ch, info, entries in zip(channels, replies[::2], replies[1::2], strict=True):
            if not isinstance(info, dict):
                continue  # no such stream: nothing was sent there (within the retention)
            deleted, _ = _id_parts(info.get("max-deleted-entry-id"))
            if deleted > after:
                raise ReplayGap(f"messages on {ch} after {after} are no longer kept")
            for entry_id, values in entries:
                seq, _ = _id_parts(entry_id)
                try:
                    command, _origin = decode(values.get(b"e", b""), seq)
                except EnvelopeError as exc:
                    log.warning("skipped a kept message on %s: %s", ch, exc)
                    continue
                found.append((seq, command))
        if len(found) > limit:
            raise ReplayGap(f"more than {limit} messages were sent while the session had no node")
        found.sort(key=lambda item: item[0])
        return found

    # -- queries ------------------------------------------------------------------------------

    async def _ask(self, *args: str) -> Any:
        if self._writer() is None:
            raise BrokerUnavailable("The service is not connected to its Redis backplane; retry later.")
        try:
            return await self._broker.redis.execute_command(*args)  # type: ignore[no-untyped-call]
        except (RedisError, OSError) as exc:
            log.warning("presence query %s failed: %s", args[0], exc)
            raise BrokerUnavailable("The Redis backplane did not answer; retry later.") from None

    async def connection_exists(self, hub: str, connection_id: str) -> bool:
        if self.view.local_connection_exists(hub, connection_id):
            return True
        return bool(await self._ask("EXISTS", _prefix(hub) + "conn:" + connection_id))

    async def user_exists(self, hub: str, user_id: str) -> bool:
        if self.view.local_user_exists(hub, user_id):
            return True
        return bool(await self._ask("EXISTS", _prefix(hub) + "user:" + user_id))

    async def group_exists(self, hub: str, group: str) -> bool:
        if self.view.local_group_exists(hub, group):
            return True
        return bool(await self._ask("EXISTS", _prefix(hub) + "group:" + group))

    async def group_members(self, hub: str, group: str) -> list[tuple[str, str | None]]:
        flat = await self._ask("HGETALL", _prefix(hub) + "group:" + group)
        members: dict[str, str | None] = {}
        if isinstance(flat, dict):  # RESP3 / redis-py parsed it already
            items = list(flat.items())
        else:
            items = [(flat[i], flat[i + 1]) for i in range(0, len(flat or ()), 2)]
        for cid, user in items:
            members[_text(cid) or ""] = _text(user) or None
        members.update(self.view.local_group_members(hub, group))
        return list(members.items())

    async def check_permission(
        self, hub: str, connection_id: str, permission: Permission, target: str | None
    ) -> bool:
        local = self.view.local_permission(hub, connection_id, permission, target)
        if local is not None:
            return local
        raw = await self._ask("HGET", _prefix(hub) + "conn:" + connection_id, "r")
        if raw is None:
            return False
        try:
            roles = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return False
        return Permissions(r for r in roles if isinstance(r, str)).check(permission, target)

    # -- liveness ------------------------------------------------------------------------------

    async def live_nodes(self) -> set[str]:
        """Registered nodes whose heartbeat has not expired."""
        redis = self._broker.redis
        nodes = sorted(n for n in map(_text, await redis.smembers(self._nodes)) if n)
        if not nodes:
            return set()
        async with redis.pipeline(transaction=False) as pipe:
            for n in nodes:
                pipe.exists(f"hubbub:node:{n}")
            alive = await pipe.execute()
        return {n for n, a in zip(nodes, alive, strict=True) if a}

    async def _beat(self, *, fresh: bool = False) -> None:
        """Refresh the heartbeat; ``fresh``: this process's first one (an old tombstone is not ours)."""
        ttl_ms = int(self._broker.node_ttl * 1000)
        keys = [f"hubbub:node:{self._node}", f"hubbub:node:{self._node}:reaped", self._nodes]
        evicted = await self._heartbeat(keys=keys, args=[self._node, ttl_ms])
        if evicted and not fresh:
            self.view.evicted("The cluster lost contact with this service node")

    async def _liveness(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._broker.heartbeat_interval)
            if self._writer() is None:
                continue
            try:
                await self._beat()
                nodes = await self.live_nodes()
                registered = {n for n in map(_text, await self._broker.redis.smembers(self._nodes)) if n}
                self.peers = nodes - {self._node}
                for dead in sorted(registered - nodes - {self._node}):
                    await self._reap_node(dead)
                if self._expires_orphans:
                    await self._expire_orphans()
                failing = False
            except (RedisError, OSError, BrokerUnavailable) as exc:
                if not failing:
                    log.warning("heartbeat failed: %s", exc)
                failing = True

    async def _expire_orphans(self) -> None:
        """End the reliable sessions of dead nodes nobody resumed within the retention (once each)."""
        while True:
            replies = await self._broker.redis.evalsha(_EXPIRE_SHA, 0, _REAP_BATCH)
            records = [r for r in map(_record, replies or ()) if r is not None]
            if records:
                log.info("%d reliable sessions of lost nodes expired", len(records))
                self.view.connections_lost(records, EXPIRED_REASON)
            if len(replies or ()) < _REAP_BATCH:
                return

    async def _reap_node(self, dead: str) -> None:
        redis = self._broker.redis
        lock = f"hubbub:node:{dead}:reaper"
        if not await redis.set(lock, self._node, nx=True, px=30_000):
            return  # another node is on it
        if await redis.exists(f"hubbub:node:{dead}"):  # it came back meanwhile
            await redis.delete(lock)
            return
        total = 0
        while True:
            popped, replies = await self._reap(
                keys=[f"hubbub:node:{dead}:conns"], args=[_REAP_BATCH, self._retention_ms]
            )
            records = [r for r in map(_record, replies or ()) if r is not None]
            if records:
                total += len(records)
                self.view.connections_lost(records, LOST_REASON)
            if popped < _REAP_BATCH:
                break
        async with redis.pipeline(transaction=True) as pipe:
            pipe.srem(self._nodes, dead)
            pipe.set(f"hubbub:node:{dead}:reaped", self._node, ex=_TOMBSTONE_SECONDS)
            pipe.delete(lock)
            await pipe.execute()
        log.warning("node %s stopped answering: removed its %d connections", dead, total)
