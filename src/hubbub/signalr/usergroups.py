"""User ↔ group membership that outlives connections (digest §3.3), pure.

On SignalR, adding a *user* to a group covers the user's current connections and every later one,
until the user is removed or the optional TTL runs out; adding a *connection* to a group dies with
the connection (that part lives in :class:`~hubbub.core.hub.Hub`). Times are whatever monotonic
clock the caller passes in (the event loop's). Hub names are case-insensitive.
"""

from __future__ import annotations

import heapq

__all__ = ["UserGroups"]


class UserGroups:
    __slots__ = ("_expiries", "_hubs")

    def __init__(self) -> None:
        # hub (lower-cased) -> user -> group -> expiry time (None = forever)
        self._hubs: dict[str, dict[str, dict[str, float | None]]] = {}
        self._expiries: list[tuple[float, str, str, str]] = []

    def add(self, hub: str, user: str, group: str, expires_at: float | None = None) -> None:
        """Add (or renew: the new TTL replaces the old one) a membership."""
        self._hubs.setdefault(hub.lower(), {}).setdefault(user, {})[group] = expires_at
        if expires_at is not None:
            heapq.heappush(self._expiries, (expires_at, hub.lower(), user, group))

    def remove(self, hub: str, user: str, group: str) -> None:
        users = self._hubs.get(hub.lower())
        groups = users.get(user) if users else None
        if users is None or groups is None:
            return
        groups.pop(group, None)
        if not groups:
            del users[user]
            if not users:
                del self._hubs[hub.lower()]

    def remove_all(self, hub: str, user: str) -> None:
        users = self._hubs.get(hub.lower())
        if users is not None:
            users.pop(user, None)
            if not users:
                del self._hubs[hub.lower()]

    def groups(self, hub: str, user: str, now: float) -> list[str]:
        """The groups ``user`` belongs to at time ``now``."""
        groups = self._hubs.get(hub.lower(), {}).get(user, {})
        return [g for g, expiry in groups.items() if expiry is None or expiry > now]

    def contains(self, hub: str, user: str, group: str, now: float) -> bool:
        groups = self._hubs.get(hub.lower(), {}).get(user, {})
        if group not in groups:
            return False
        expiry = groups[group]
        return expiry is None or expiry > now

    def expire(self, now: float) -> list[tuple[str, str, str]]:
        """Drop memberships whose TTL ran out by ``now``; return them as ``(hub, user, group)``."""
        gone = []
        while self._expiries and self._expiries[0][0] <= now:
            expiry, hub, user, group = heapq.heappop(self._expiries)
            if self._hubs.get(hub, {}).get(user, {}).get(group, -1.0) == expiry:
                self.remove(hub, user, group)
                gone.append((hub, user, group))
        return gone
