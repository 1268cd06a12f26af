"""The per-hub registry of local connections: by id, by user and by group."""

from __future__ import annotations

from hubbub.core.session import Session

__all__ = ["Hub"]


class Hub:
    """Connections of one hub on this node.

    ``join``/``leave`` report first-member / last-member transitions so the node can
    subscribe to and drop per-group broker channels.
    """

    __slots__ = ("connections", "groups", "name", "users")

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections: dict[str, Session] = {}
        self.users: dict[str, dict[str, Session]] = {}
        self.groups: dict[str, dict[str, Session]] = {}

    def add(self, session: Session) -> None:
        self.connections[session.id] = session
        if session.user_id is not None:
            self.users.setdefault(session.user_id, {})[session.id] = session

    def remove(self, session: Session) -> list[str]:
        """Unregister ``session``; return the groups that became empty."""
        if self.connections.pop(session.id, None) is None:
            return []
        if session.user_id is not None:
            peers = self.users.get(session.user_id)
            if peers is not None:
                peers.pop(session.id, None)
                if not peers:
                    del self.users[session.user_id]
        emptied = [g for g in list(session.groups) if self.leave(session, g)]
        return emptied

    def join(self, session: Session, group: str) -> bool:
        """Add ``session`` to ``group``; True if the group had no local member before."""
        members = self.groups.get(group)
        first = members is None
        if members is None:
            members = self.groups[group] = {}
        members[session.id] = session
        session.groups.add(group)
        return first

    def leave(self, session: Session, group: str) -> bool:
        """Remove ``session`` from ``group``; True if the group has no local member left."""
        session.groups.discard(group)
        members = self.groups.get(group)
        if members is None or members.pop(session.id, None) is None:
            return False
        if not members:
            del self.groups[group]
            return True
        return False

    def user_sessions(self, user_id: str) -> list[Session]:
        return list(self.users.get(user_id, {}).values())

    def group_sessions(self, group: str) -> list[Session]:
        return list(self.groups.get(group, {}).values())
