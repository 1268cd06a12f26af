"""The composition root of one service node: hubs, broker and the local apply path.

Every operation that may touch connections on other nodes is published as a
:class:`~hubbub.broker.base.Command` and applied by :meth:`Node.handle_command` on
each node (the memory broker loops straight back). Queries answer from local state
here; the cluster issue puts them behind a presence interface.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable

from hubbub.auth import Permission
from hubbub.broker.base import Broker, Command, Op, Scope
from hubbub.core.fanout import deliver
from hubbub.core.hub import Hub
from hubbub.core.session import Link, Session
from hubbub.filters import Filter, parse_filter
from hubbub.protocols.events import DataMessage, Disconnected, Payload

__all__ = ["Node"]

log = logging.getLogger("hubbub.node")

SessionHook = Callable[[Session, str | None], None]


@functools.lru_cache(maxsize=256)
def _cached_filter(text: str) -> Filter:
    return parse_filter(text)


class Node:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.hubs: dict[str, Hub] = {}
        #: called after a session is registered / unregistered (upstream events hook in here)
        self.on_attach: list[SessionHook] = []
        self.on_detach: list[SessionHook] = []
        self._expiry: dict[str, asyncio.TimerHandle] = {}

    async def start(self) -> None:
        await self.broker.start(self)

    async def close(self, reason: str = "Service is shutting down") -> None:
        for timer in self._expiry.values():
            timer.cancel()
        self._expiry.clear()
        for hub in list(self.hubs.values()):
            for session in list(hub.connections.values()):
                self._close_session(session, reason, code=1001)
        await self.broker.close()

    # -- registry -----------------------------------------------------------------

    def hub(self, name: str) -> Hub:
        key = name.lower()
        hub = self.hubs.get(key)
        if hub is None:
            hub = self.hubs[key] = Hub(name)
        return hub

    def find_hub(self, name: str) -> Hub | None:
        return self.hubs.get(name.lower())

    def attach(self, session: Session, groups: Iterable[str] = ()) -> None:
        hub = self.hub(session.hub)
        hub.add(session)
        for group in groups:
            hub.join(session, group)
        for hook in self.on_attach:
            hook(session, None)

    def detach(self, session: Session, reason: str | None = None) -> None:
        hub = self.find_hub(session.hub)
        if hub is None or hub.connections.get(session.id) is not session:
            return
        hub.remove(session)
        if not hub.connections:
            del self.hubs[hub.name.lower()]
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
        self.hub(session.hub).join(session, group)

    def leave_local(self, session: Session, group: str) -> None:
        hub = self.find_hub(session.hub)
        if hub is not None:
            hub.leave(session, group)

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
            )
        )

    # -- queries (this node; the cluster issue adds presence) ---------------------------

    def session(self, hub: str, connection_id: str) -> Session | None:
        h = self.find_hub(hub)
        return h.connections.get(connection_id) if h else None

    def connection_exists(self, hub: str, connection_id: str) -> bool:
        return self.session(hub, connection_id) is not None

    def user_exists(self, hub: str, user_id: str) -> bool:
        h = self.find_hub(hub)
        return bool(h and user_id in h.users)

    def group_exists(self, hub: str, group: str) -> bool:
        h = self.find_hub(hub)
        return bool(h and group in h.groups)

    def group_members(self, hub: str, group: str) -> list[tuple[str, str | None]]:
        h = self.find_hub(hub)
        if h is None:
            return []
        return [(s.id, s.user_id) for s in h.group_sessions(group)]

    def check_permission(
        self, hub: str, connection_id: str, permission: Permission, target: str | None
    ) -> bool:
        s = self.session(hub, connection_id)
        return bool(s and s.permissions.check(permission, target))

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
            )
            deliver(
                message,
                self._targets(hub, command.scope, command.target),
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
                    hub.join(session, group)
        elif op is Op.REMOVE_FROM_GROUPS:
            for session in self._selected(hub, command):
                for group in command.groups:
                    hub.leave(session, group)
        elif op is Op.REMOVE_FROM_ALL_GROUPS:
            for session in self._selected(hub, command):
                for group in list(session.groups):
                    hub.leave(session, group)
        elif op in (Op.GRANT, Op.REVOKE):
            permission = Permission.parse(command.permission or "")
            for session in self._selected(hub, command):
                if op is Op.GRANT:
                    session.permissions.grant(permission, command.permission_target)
                else:
                    session.permissions.revoke(permission, command.permission_target)

    def _close_session(self, session: Session, reason: str, code: int = 1000) -> None:
        session.push(session.codec.encode_disconnected(Disconnected(reason)))
        session.close(code, reason)
        self.detach(session, reason)
