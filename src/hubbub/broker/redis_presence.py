"""Cluster-wide presence in Redis: who is connected where, in which groups, with which roles.

Keys (``{h}`` is the lower-cased hub name, which never contains ``:``)::

    hubbub:hub:{h}:conn:{cid}     hash  n=node, hub=name, m=member, u=user, p=subprotocol,
                                        r=roles (JSON), s=connection state
    hubbub:hub:{h}:cgroups:{cid}  set   the connection's groups
    hubbub:hub:{h}:user:{uid}     set   the user's connection ids
    hubbub:hub:{h}:group:{g}      hash  connection id -> user id ("" = none)
    hubbub:nodes                  set   node ids that registered
    hubbub:node:{id}              string heartbeat, expires after the node TTL
    hubbub:node:{id}:conns        set   "{h}\\n{cid}" of the node's connections
    hubbub:node:{id}:reaper       string lock: the node that is removing a dead node's connections
    hubbub:node:{id}:reaped       string tombstone: the node was declared dead (1 hour)

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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from hubbub.auth import Permission, Permissions
from hubbub.broker.base import ConnectionRecord, LocalView
from hubbub.broker.wire import RespConnection
from hubbub.errors import BrokerUnavailable

if TYPE_CHECKING:
    from hubbub.broker.redis import RedisBroker

__all__ = ["LOST_REASON", "RedisPresence", "node_channel"]

log = logging.getLogger("hubbub.broker.presence")

NODES = "hubbub:nodes"
LOST_REASON = "The service node of the connection stopped"
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
  redis.call('DEL', ck, gk)
  if f['n'] and f['m'] then redis.call('SREM', 'hubbub:node:' .. f['n'] .. ':conns', f['m']) end
  return {rec, groups}
end
"""
# ARGV: hub key prefix, connection id, owner node id
REMOVE_SCRIPT = _REMOVE_FN + "return remove(ARGV[1], ARGV[2], ARGV[3])\n"
# KEYS[1]: a node's connection set; ARGV[1]: how many to pop. Returns {popped, records}.
REAP_SCRIPT = (
    _REMOVE_FN
    + """
local out = {}
local popped = redis.call('SPOP', KEYS[1], ARGV[1])
for _, m in ipairs(popped) do
  local sep = string.find(m, '\\n', 1, true)
  if sep then
    local r = remove('hubbub:hub:' .. string.sub(m, 1, sep - 1) .. ':', string.sub(m, sep + 1), '')
    if r then table.insert(out, r) end
  end
end
return {#popped, out}
"""
)
# KEYS: heartbeat, tombstone, node set; ARGV: node id, ttl ms. Returns 1 if we had been declared dead.
HEARTBEAT_SCRIPT = """
local evicted = redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return evicted
"""


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode("utf-8")).hexdigest()


_REMOVE_SHA, _REAP_SHA = _sha(REMOVE_SCRIPT), _sha(REAP_SCRIPT)


def node_channel(node_id: str) -> str:
    """A node's own channel; ``PUBSUB NUMSUB`` of it tells whether the node is subscribed."""
    return f"hubbub-node:{node_id}"


def _prefix(hub: str) -> str:
    return f"hubbub:hub:{hub.lower()}:"


def _member(hub: str, connection_id: str) -> str:
    return f"{hub.lower()}\n{connection_id}"


def _text(value: Any) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else None


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
        self._heartbeat = broker.redis.register_script(HEARTBEAT_SCRIPT)
        self._reap = broker.redis.register_script(REAP_SCRIPT)
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
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        writer = self._broker.writer
        if writer is None or writer.closed:
            return
        try:
            async with asyncio.timeout(5.0):
                await writer.send(b"EVALSHA", _REAP_SHA, 1, self._conns_key, 1 << 30)
                await writer.send(b"DEL", f"hubbub:node:{self._node}", self._conns_key)
                await writer.send(b"SREM", NODES, self._node)
        except (ConnectionError, TimeoutError, RedisError, Exception) as exc:
            log.warning("could not unregister this node from redis: %s", exc)

    # -- (re)connect -------------------------------------------------------------------------

    async def connected(self, writer: RespConnection) -> None:
        """Load the scripts, replace this node's registrations by its current state, heartbeat."""
        writer.send_nowait(b"SCRIPT", b"LOAD", REMOVE_SCRIPT)
        writer.send_nowait(b"SCRIPT", b"LOAD", REAP_SCRIPT)
        _popped, stale = await writer.send(b"EVALSHA", _REAP_SHA, 1, self._conns_key, 1 << 30)
        local = list(self.view.local_records())
        for record in local:
            self._add(writer, record)
        first, self._connected_before = not self._connected_before, True
        await self._beat()
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

    def _add(self, writer: RespConnection, record: ConnectionRecord) -> None:
        p, cid = _prefix(record.hub), record.connection_id
        member = _member(record.hub, cid)
        fields: list[str] = ["n", self._node, "hub", record.hub, "cid", cid, "m", member]
        fields += ["r", orjson.dumps(list(record.roles)).decode()]
        for key, value in (("u", record.user_id), ("p", record.subprotocol), ("s", record.connection_state)):
            if value is not None:
                fields += [key, value]
        writer.send_nowait(b"HSET", p + "conn:" + cid, *fields)
        writer.send_nowait(b"SADD", self._conns_key, member)
        if record.user_id is not None:
            writer.send_nowait(b"SADD", p + "user:" + record.user_id, cid)
        for group in record.groups:
            self._join(writer, p, cid, record.user_id, group)

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
            self._add(writer, record)

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
        nodes = sorted(n for n in map(_text, await redis.smembers(NODES)) if n)
        if not nodes:
            return set()
        async with redis.pipeline(transaction=False) as pipe:
            for n in nodes:
                pipe.exists(f"hubbub:node:{n}")
            alive = await pipe.execute()
        return {n for n, a in zip(nodes, alive, strict=True) if a}

    async def _beat(self) -> None:
        ttl_ms = int(self._broker.node_ttl * 1000)
        keys = [f"hubbub:node:{self._node}", f"hubbub:node:{self._node}:reaped", NODES]
        evicted = await self._heartbeat(keys=keys, args=[self._node, ttl_ms])
        if evicted:
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
                registered = {n for n in map(_text, await self._broker.redis.smembers(NODES)) if n}
                self.peers = nodes - {self._node}
                for dead in sorted(registered - nodes - {self._node}):
                    await self._reap_node(dead)
                failing = False
            except (RedisError, OSError, BrokerUnavailable) as exc:
                if not failing:
                    log.warning("heartbeat failed: %s", exc)
                failing = True

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
            popped, replies = await self._reap(keys=[f"hubbub:node:{dead}:conns"], args=[_REAP_BATCH])
            records = [r for r in map(_record, replies or ()) if r is not None]
            if records:
                total += len(records)
                self.view.connections_lost(records, LOST_REASON)
            if popped < _REAP_BATCH:
                break
        async with redis.pipeline(transaction=True) as pipe:
            pipe.srem(NODES, dead)
            pipe.set(f"hubbub:node:{dead}:reaped", self._node, ex=_TOMBSTONE_SECONDS)
            pipe.delete(lock)
            await pipe.execute()
        log.warning("node %s stopped answering: removed its %d connections", dead, total)
