"""The composition root of one service node: hubs, broker, presence and the local apply path.

Every operation that may touch connections on other nodes is published as a
:class:`~hubbub.broker.base.Command` and applied by :meth:`Node.handle_command` on
each node (the memory broker loops straight back). The node tells the broker which
channels it needs (first local member of a hub, group, user; each local connection)
and tells the presence every local change; the REST queries ask the presence, which
answers for the whole service. The node does not know which broker or presence it has.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable, Sequence

from hubbub.auth import Permission
from hubbub.broker.base import (
    Broker,
    Command,
    ConnectionRecord,
    Op,
    Presence,
    ReplayGap,
    Scope,
    channel,
)
from hubbub.broker.memory import MemoryPresence
from hubbub.core.fanout import deliver
from hubbub.core.hub import Hub
from hubbub.core.session import Link, Session
from hubbub.errors import BrokerUnavailable
from hubbub.filters import Filter, parse_filter
from hubbub.protocols import CODECS, SIMPLE
from hubbub.protocols.events import DataMessage, Disconnected, Payload, StreamInfo

__all__ = ["Node"]

log = logging.getLogger("hubbub.node")

SessionHook = Callable[[Session, str | None], None]


@functools.lru_cache(maxsize=256)
def _cached_filter(text: str) -> Filter:
    return parse_filter(text)


def _record(session: Session) -> ConnectionRecord:
    return ConnectionRecord(
        session.hub,
        session.id,
        session.user_id,
        session.subprotocol,
        session.permissions.roles(),
        tuple(session.groups),
        session.connection_state,
        session.reconnection_token,
        session.claims if session.reliable is not None else None,
    )


def _wants(session: Session, command: Command) -> bool:
    """Whether a SEND's ``excluded`` / ``noEcho`` / ``filter`` let it through to ``session``."""
    sid = session.id
    if sid in command.excluded or (command.no_echo and sid == command.from_connection_id):
        return False
    stream = command.stream
    if stream is not None and stream.end and not session.codec.streams:
        return False  # an end-of-stream marker (no data) only for clients that know streams
    return not command.filter or _cached_filter(command.filter).matches(session.user_id, sid, session.groups)


class Node:
    def __init__(self, broker: Broker, presence: Presence | None = None) -> None:
        self.broker = broker
        self.presence: Presence = presence if presence is not None else MemoryPresence()
        self.hubs: dict[str, Hub] = {}
        #: called after a session is registered / unregistered (upstream events hook in here)
        self.on_attach: list[SessionHook] = []
        self.on_detach: list[SessionHook] = []
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        #: cluster mode: SENDs carry their cluster-wide position and reliable sessions are mirrored
        self.sequenced = broker.sequenced
        self._mirror = self.presence.mirror() if self.sequenced else None
        #: local reliable sessions (cluster mode: they get SENDs when they come back from Redis)
        self._reliable = 0
        #: cleared by the transport while fan-out writing lags: :meth:`send` waits for it
        self.writable = asyncio.Event()
        self.writable.set()

    async def start(self) -> None:
        await self.presence.start(self)
        await self.broker.start(self)

    async def close(self, reason: str = "Service is shutting down") -> None:
        for timer in self._expiry.values():
            timer.cancel()
        self._expiry.clear()
        for hub in list(self.hubs.values()):
            for session in list(hub.connections.values()):
                if session.mirror is not None and not session.closed:
                    # cluster: the client resumes it on another node (no `disconnected`; 1001 is
                    # recoverable for the official clients); it ends there after the retention if not
                    self._release(session, 1001, reason)
                else:
                    self._close_session(session, reason, code=1001)
        await self.presence.close()
        await self.broker.close()

    # -- registry -----------------------------------------------------------------

    def hub(self, name: str) -> Hub:
        key = name.lower()
        hub = self.hubs.get(key)
        if hub is None:
            hub = self.hubs[key] = Hub(name)
            self.broker.subscribe(channel(name, Scope.ALL))
        return hub

    def find_hub(self, name: str) -> Hub | None:
        return self.hubs.get(name.lower())

    def attach(self, session: Session, groups: Iterable[str] = (), *, hooks: bool = True) -> None:
        hub = self.hub(session.hub)
        if session.reliable is not None and self.sequenced:
            session.mirror = self._mirror
            self._reliable += 1
        user = session.user_id
        if user is not None and user not in hub.users:
            self.broker.subscribe(channel(hub.name, Scope.USER, user))
        hub.add(session)
        self.broker.subscribe(channel(hub.name, Scope.CONNECTION, session.id))
        self.presence.connection_added(_record(session))
        for group in groups:
            self._join(hub, session, group)
        if hooks:
            for hook in self.on_attach:
                hook(session, None)

    def detach(
        self, session: Session, reason: str | None = None, *, hooks: bool = True, forget: bool = True
    ) -> None:
        """Remove a local session; ``forget=False`` keeps its cluster record (another node takes it)."""
        hub = self.find_hub(session.hub)
        if hub is None or hub.connections.get(session.id) is not session:
            return
        if session.mirror is not None:
            self._reliable -= 1
        for group in hub.remove(session):
            self.broker.unsubscribe(channel(hub.name, Scope.GROUP, group))
        self.broker.unsubscribe(channel(hub.name, Scope.CONNECTION, session.id))
        if session.user_id is not None and session.user_id not in hub.users:
            self.broker.unsubscribe(channel(hub.name, Scope.USER, session.user_id))
        if forget:
            self.presence.connection_removed(session.hub, session.id, session.user_id)
        if not hub.connections:
            del self.hubs[hub.name.lower()]
            self.broker.unsubscribe(channel(hub.name, Scope.ALL))
        if hooks:
            for hook in self.on_detach:
                hook(session, reason)

    # -- reliable sessions: kept across a dropped connection ---------------------------

    def suspend(self, session: Session, retention_seconds: float) -> None:
        """The connection of a reliable session dropped: keep the session for a while.

        It stays in its groups and keeps collecting messages; if no client resumes it
        within ``retention_seconds`` it ends (and only then is ``disconnected`` fired).
        """
        session.link = None
        timer = asyncio.get_running_loop().call_later(retention_seconds, self._expire, session)
        self._expiry[session.id] = timer

    def resume(self, session: Session, link: Link) -> None:
        timer = self._expiry.pop(session.id, None)
        if timer is not None:
            timer.cancel()
        old, session.link = session.link, link
        if old is not None:  # the client came back before we noticed the old socket died
            old.close(1000, "Replaced by a resumed connection")

    def _expire(self, session: Session) -> None:
        self._expiry.pop(session.id, None)
        if session.link is None:
            session.closed = True
            self.detach(session, "The reliable session expired")

    def wants_echo(self) -> bool:
        return self._reliable > 0

    async def adopt(
        self, hub: str, connection_id: str, token: str, retention_seconds: float
    ) -> Session | None:
        """Cluster: take over a reliable session another node held (dead, or handing it over).

        The session is rebuilt from its record and mirrored replay buffer, subscribed, then
        caught up with the SENDs it missed (kept in Redis); it is returned suspended, ready
        for :meth:`resume`. None when there is no such session or it cannot be recovered.
        """
        if not self.sequenced:
            return None
        adoption = await self.presence.adopt(hub, connection_id, token)
        if adoption is None:
            return None
        record = adoption.record
        session = Session(
            record.hub,
            CODECS.get(record.subprotocol or "", SIMPLE),
            None,
            user_id=record.user_id,
            roles=record.roles,
            subprotocol=record.subprotocol,
            claims=record.claims,
            connection_id=connection_id,
        )
        session.connection_state = record.connection_state
        session.reconnection_token = token
        state = session.reliable
        if state is None:  # not a reliable subprotocol after all: end it
            session.closed = True
            self.connections_lost([record], "The session cannot be recovered")
            return None
        state.next_id = adoption.last_sequence_id - len(adoption.frames) + 1
        for data in adoption.frames:
            state.record(data)
        state.acked = state.next_id - len(adoption.frames) - 1
        session.watermark = adoption.watermark
        session.catching_up = []
        self.attach(session, record.groups, hooks=False)
        try:
            if not adoption.complete:
                raise ReplayGap("the replay buffer is incomplete")
            await self.broker.sync()  # every channel of the session is subscribed from here on
            channels = [channel(hub, Scope.ALL), channel(hub, Scope.CONNECTION, connection_id)]
            if session.user_id is not None:
                channels.append(channel(hub, Scope.USER, session.user_id))
            channels += [channel(hub, Scope.GROUP, g) for g in sorted(session.groups)]
            missed = await self.presence.replay(channels, session.watermark, state.max_messages)
        except (ReplayGap, BrokerUnavailable) as exc:
            log.info("hub %s: reliable session %s cannot be recovered: %s", hub, connection_id, exc)
            missed = None
        queued, session.catching_up = session.catching_up, None
        if missed is not None:
            joined = adoption.joined
            for seq, command in missed:
                if command.scope is Scope.GROUP and seq <= joined.get(command.target or "", 0):
                    continue  # sent to the group before the session joined it
                self._catch_up(session, seq, command)
            for seq, command in sorted(queued, key=lambda item: item[0]):
                if seq > session.watermark:
                    self._catch_up(session, seq, command)
        if missed is None or session.closed:
            session.closed = True
            self.detach(session, "The reliable session could not be recovered")
            return None
        self.suspend(session, retention_seconds)
        log.info(
            "hub %s: took over reliable session %s (%d messages caught up)", hub, connection_id, len(missed)
        )
        return session

    def _catch_up(self, session: Session, seq: int, command: Command) -> None:
        if (
            session.closed
            or command.op is not Op.SEND
            or command.payload is None
            or not _wants(session, command)
        ):
            return
        message = DataMessage(
            command.payload,
            group=command.target if command.scope is Scope.GROUP else None,
            from_user_id=command.from_user_id,
        )
        session.watermark = seq
        session.write_sequenced(session.codec.message_body(message))

    def _release(
        self, session: Session, code: int = 1000, reason: str = "The session resumed on another service node"
    ) -> None:
        """Let another node resume this reliable session (no events); close its socket if any."""
        timer = self._expiry.pop(session.id, None)
        if timer is not None:
            timer.cancel()
        old, session.link = session.link, None
        session.closed = True
        self.detach(session, hooks=False, forget=False)
        self.presence.reliable_released(session.hub, session.id)
        if old is not None:
            old.close(code, reason)

    def taken_over(self, hub: str, connection_id: str) -> None:
        """The cluster says another node resumed this session (while we were cut off): drop it."""
        session = self.session(hub, connection_id)
        if session is None:
            return
        timer = self._expiry.pop(session.id, None)
        if timer is not None:
            timer.cancel()
        session.close(1000, "The session resumed on another service node")
        self.detach(session, hooks=False, forget=False)

    def join_local(self, session: Session, group: str) -> None:
        self._join(self.hub(session.hub), session, group)

    def leave_local(self, session: Session, group: str) -> None:
        hub = self.find_hub(session.hub)
        if hub is not None:
            self._leave(hub, session, group)

    def _join(self, hub: Hub, session: Session, group: str) -> None:
        if group in session.groups:
            return
        if hub.join(session, group):
            # written to the broker before the caller acknowledges the join (see broker.wire)
            self.broker.subscribe(channel(hub.name, Scope.GROUP, group))
        self.presence.group_joined(session.hub, session.id, session.user_id, group)
        if session.mirror is not None:
            session.mirror.reliable_joined(session.hub, session.id, group)

    def _leave(self, hub: Hub, session: Session, group: str) -> None:
        if group not in session.groups:
            return
        if hub.leave(session, group):
            self.broker.unsubscribe(channel(hub.name, Scope.GROUP, group))
        self.presence.group_left(session.hub, session.id, group)

    # -- commands (cluster-wide) -----------------------------------------------------

    async def publish(self, command: Command) -> None:
        await self.broker.publish(command)

    async def send(
        self,
        hub: str,
        scope: Scope,
        target: str | None,
        payload: Payload,
        *,
        excluded: Iterable[str] = (),
        filter: str | None = None,
        from_session: Session | None = None,
        no_echo: bool = False,
        stream: StreamInfo | None = None,
    ) -> None:
        await self.publish(
            Command(
                Op.SEND,
                hub,
                scope,
                target,
                payload=payload,
                excluded=tuple(excluded),
                filter=filter,
                from_user_id=from_session.user_id if from_session else None,
                from_connection_id=from_session.id if from_session else None,
                no_echo=no_echo,
                stream=stream,
            )
        )
        if not self.writable.is_set():  # back-pressure: the connections have enough waiting
            await self.writable.wait()

    # -- queries (the whole service, through the presence) ------------------------------

    def session(self, hub: str, connection_id: str) -> Session | None:
        """The local session of a connection (None if it is on another node, or nowhere)."""
        h = self.find_hub(hub)
        return h.connections.get(connection_id) if h else None

    async def connection_exists(self, hub: str, connection_id: str) -> bool:
        return await self.presence.connection_exists(hub, connection_id)

    async def user_exists(self, hub: str, user_id: str) -> bool:
        return await self.presence.user_exists(hub, user_id)

    async def group_exists(self, hub: str, group: str) -> bool:
        return await self.presence.group_exists(hub, group)

    async def group_members(self, hub: str, group: str) -> list[tuple[str, str | None]]:
        return await self.presence.group_members(hub, group)

    async def check_permission(
        self, hub: str, connection_id: str, permission: Permission, target: str | None
    ) -> bool:
        return await self.presence.check_permission(hub, connection_id, permission, target)

    # -- LocalView: what the presence asks of this node ------------------------------------

    def local_connection_exists(self, hub: str, connection_id: str) -> bool:
        return self.session(hub, connection_id) is not None

    def local_user_exists(self, hub: str, user_id: str) -> bool:
        h = self.find_hub(hub)
        return bool(h and user_id in h.users)

    def local_group_exists(self, hub: str, group: str) -> bool:
        h = self.find_hub(hub)
        return bool(h and group in h.groups)

    def local_group_members(self, hub: str, group: str) -> list[tuple[str, str | None]]:
        h = self.find_hub(hub)
        if h is None:
            return []
        return [(s.id, s.user_id) for s in h.group_sessions(group)]

    def local_permission(
        self, hub: str, connection_id: str, permission: Permission, target: str | None
    ) -> bool | None:
        s = self.session(hub, connection_id)
        return None if s is None else s.permissions.check(permission, target)

    def local_records(self) -> Iterable[ConnectionRecord]:
        for hub in list(self.hubs.values()):
            for session in list(hub.connections.values()):
                yield _record(session)

    def connections_lost(self, records: Sequence[ConnectionRecord], reason: str) -> None:
        """Connections of a dead node (this node won the right to report them): fire the hooks."""
        for record in records:
            ghost = Session(
                record.hub,
                CODECS.get(record.subprotocol or "", SIMPLE),
                None,
                user_id=record.user_id,
                roles=record.roles,
                subprotocol=record.subprotocol,
                connection_id=record.connection_id,
            )
            ghost.connection_state = record.connection_state
            ghost.groups.update(record.groups)
            ghost.closed = True
            for hook in self.on_detach:
                try:
                    hook(ghost, reason)
                except Exception:
                    log.exception("a detach hook failed for lost connection %s", record.connection_id)

    def evicted(self, reason: str) -> None:
        """The cluster reported this node's connections gone already: close them without events."""
        log.error("this node was declared dead by the cluster: closing its connections (%s)", reason)
        for timer in self._expiry.values():
            timer.cancel()
        self._expiry.clear()
        for hub in list(self.hubs.values()):
            for session in list(hub.connections.values()):
                self._close_session(session, reason, code=1011, hooks=False)

    # -- local apply ----------------------------------------------------------------

    def _targets(self, hub: Hub, scope: Scope, target: str | None) -> Iterable[Session]:
        if scope is Scope.ALL:
            return hub.connections.values()
        if scope is Scope.GROUP:
            return hub.groups.get(target or "", {}).values()
        if scope is Scope.USER:
            return hub.users.get(target or "", {}).values()
        session = hub.connections.get(target or "")
        return (session,) if session else ()

    def _selected(self, hub: Hub, command: Command) -> list[Session]:
        flt = _cached_filter(command.filter) if command.filter else None
        excluded = frozenset(command.excluded)
        return [
            s
            for s in self._targets(hub, command.scope, command.target)
            if s.id not in excluded and (flt is None or flt.matches(s.user_id, s.id, s.groups))
        ]

    def handle_command(self, command: Command) -> None:
        hub = self.find_hub(command.hub)
        if hub is None:
            return
        try:
            self._apply(hub, command)
        except Exception:  # a bad command must never take the node down
            log.exception("failed to apply %s to hub %s", command.op.value, command.hub)

    def _apply(self, hub: Hub, command: Command) -> None:
        op = command.op
        if op is Op.SEND:
            assert command.payload is not None
            message = DataMessage(
                command.payload,
                group=command.target if command.scope is Scope.GROUP else None,
                from_user_id=command.from_user_id,
                stream=command.stream,
            )
            targets = self._targets(hub, command.scope, command.target)
            if command.stream is not None and command.stream.end and not command.payload.data:
                # an end-of-stream marker has no data: only clients that know streams get it
                targets = [s for s in targets if s.codec.streams]
            if self._reliable:  # cluster mode with local reliable sessions
                self._send_sequenced(command, message, targets)
                return
            if command.echo:
                return
            deliver(
                message,
                targets,
                excluded=frozenset(command.excluded),
                filter=_cached_filter(command.filter) if command.filter else None,
                skip=command.from_connection_id if command.no_echo else None,
            )
        elif op is Op.RELEASE:
            for session in self._selected(hub, command):
                if session.reliable is not None and self.sequenced:
                    self._release(session)
        elif op is Op.CLOSE:
            for session in self._selected(hub, command):
                self._close_session(session, command.reason or "")
        elif op is Op.ADD_TO_GROUPS:
            for session in self._selected(hub, command):
                for group in command.groups:
                    self._join(hub, session, group)
        elif op is Op.REMOVE_FROM_GROUPS:
            for session in self._selected(hub, command):
                for group in command.groups:
                    self._leave(hub, session, group)
        elif op is Op.REMOVE_FROM_ALL_GROUPS:
            for session in self._selected(hub, command):
                for group in list(session.groups):
                    self._leave(hub, session, group)
        elif op in (Op.GRANT, Op.REVOKE):
            permission = Permission.parse(command.permission or "")
            for session in self._selected(hub, command):
                if op is Op.GRANT:
                    session.permissions.grant(permission, command.permission_target)
                else:
                    session.permissions.revoke(permission, command.permission_target)
                self.presence.roles_changed(session.hub, session.id, session.permissions.roles())

    def _send_sequenced(self, command: Command, message: DataMessage, targets: Iterable[Session]) -> None:
        """Cluster mode: plain sessions get a SEND at once (local first), reliable ones in cluster order.

        A reliable session only takes SENDs that carry their position (from Redis, this node's own
        included), so what it got is exactly a prefix of that order: the part another node must
        replay if this one dies. Its copy of the replay buffer is written on the way
        (:meth:`Session.write_sequenced`).
        """
        targets = list(targets)
        if not command.echo:
            deliver(
                message,
                [s for s in targets if s.reliable is None],
                excluded=frozenset(command.excluded),
                filter=_cached_filter(command.filter) if command.filter else None,
                skip=command.from_connection_id if command.no_echo else None,
            )
        seq = command.seq
        if not seq:
            return
        bodies: dict[int, bytes] = {}
        for session in targets:
            if session.reliable is None:
                continue
            if session.catching_up is not None:
                session.catching_up.append((seq, command))
                continue
            if session.closed or not _wants(session, command):
                continue
            codec = session.codec
            body = bodies.get(id(codec))
            if body is None:
                body = bodies[id(codec)] = codec.message_body(message)
            session.watermark = seq
            session.write_sequenced(body)

    def _close_session(self, session: Session, reason: str, code: int = 1000, *, hooks: bool = True) -> None:
        session.push(session.codec.encode_disconnected(Disconnected(reason)))
        session.close(code, reason)
        self.detach(session, reason, hooks=hooks)
