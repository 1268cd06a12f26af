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
from hubbub.broker.base import Broker, Command, ConnectionRecord, Op, Presence, Scope, channel
from hubbub.broker.memory import MemoryPresence
from hubbub.core.fanout import deliver
from hubbub.core.hub import Hub
from hubbub.core.session import Link, Session
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
    )


class Node:
    def __init__(self, broker: Broker, presence: Presence | None = None) -> None:
        self.broker = broker
        self.presence: Presence = presence if presence is not None else MemoryPresence()
        self.hubs: dict[str, Hub] = {}
        #: called after a session is registered / unregistered (upstream events hook in here)
        self.on_attach: list[SessionHook] = []
        self.on_detach: list[SessionHook] = []
        self._expiry: dict[str, asyncio.TimerHandle] = {}

    async def start(self) -> None:
        await self.presence.start(self)
        await self.broker.start(self)

    async def close(self, reason: str = "Service is shutting down") -> None:
        for timer in self._expiry.values():
            timer.cancel()
        self._expiry.clear()
        for hub in list(self.hubs.values()):
            for session in list(hub.connections.values()):
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

    def attach(self, session: Session, groups: Iterable[str] = ()) -> None:
        hub = self.hub(session.hub)
        user = session.user_id
        if user is not None and user not in hub.users:
            self.broker.subscribe(channel(hub.name, Scope.USER, user))
        hub.add(session)
        self.broker.subscribe(channel(hub.name, Scope.CONNECTION, session.id))
        self.presence.connection_added(_record(session))
        for group in groups:
            self._join(hub, session, group)
        for hook in self.on_attach:
            hook(session, None)

    def detach(self, session: Session, reason: str | None = None, *, hooks: bool = True) -> None:
        hub = self.find_hub(session.hub)
        if hub is None or hub.connections.get(session.id) is not session:
            return
        for group in hub.remove(session):
            self.broker.unsubscribe(channel(hub.name, Scope.GROUP, group))
        self.broker.unsubscribe(channel(hub.name, Scope.CONNECTION, session.id))
        if session.user_id is not None and session.user_id not in hub.users:
            self.broker.unsubscribe(channel(hub.name, Scope.USER, session.user_id))
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
            deliver(
                message,
                targets,
                excluded=frozenset(command.excluded),
                filter=_cached_filter(command.filter) if command.filter else None,
                skip=command.from_connection_id if command.no_echo else None,
            )
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

    def _close_session(self, session: Session, reason: str, code: int = 1000, *, hooks: bool = True) -> None:
        session.push(session.codec.encode_disconnected(Disconnected(reason)))
        session.close(code, reason)
        self.detach(session, reason, hooks=hooks)
