"""Hub settings, as ``az webpubsub hub create|update`` sets them (spec §6.7).

One model for the three ways of setting them (config file, admin REST API, CLI). The JSON shape
is the ARM resource's ``properties`` object, so what ``az webpubsub hub show`` prints can be fed
back unchanged::

    {"eventHandlers": [{"urlTemplate": "http://localhost:5000/eventhandler/{event}",
                        "userEventPattern": "*",
                        "systemEvents": ["connect", "connected"],
                        "auth": {"type": "None"}}],
     "anonymousConnectPolicy": "deny",
     "webSocketKeepAliveIntervalInSeconds": 20}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hubbub.errors import BadRequest

__all__ = ["SYSTEM_EVENTS", "EventHandler", "HubSettings", "StaticSettings"]

SYSTEM_EVENTS = ("connect", "connected", "disconnected")
_EVENT_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass(frozen=True, slots=True)
class EventHandler:
    url_template: str
    user_event_pattern: str = ""
    system_events: tuple[str, ...] = ()
    auth_type: str = "None"
    auth_resource: str = ""

    def __post_init__(self) -> None:
        template = self.url_template
        if not template.startswith(("http://", "https://")):
            raise BadRequest(f"Invalid urlTemplate '{template}': it must be an http:// or https:// URL.")
        host = template.split("://", 1)[1].split("/", 1)[0]
        if "{" in host:
            raise BadRequest(f"Invalid urlTemplate '{template}': placeholders are not allowed in the host.")
        for name in self.system_events:
            if name not in SYSTEM_EVENTS:
                raise BadRequest(f"Unknown system event '{name}': use connect, connected or disconnected.")
        pattern = self.user_event_pattern.strip()
        if pattern and pattern != "*":
            for part in pattern.split(","):
                if not _EVENT_NAME.fullmatch(part.strip()):
                    raise BadRequest(f"Invalid userEventPattern '{self.user_event_pattern}'.")
        if self.auth_type not in ("None", "ManagedIdentity"):
            raise BadRequest(f"Unknown auth type '{self.auth_type}': use None or ManagedIdentity.")

    def handles_system(self, event: str) -> bool:
        return event in self.system_events

    def handles_user(self, event: str) -> bool:
        pattern = self.user_event_pattern.strip()
        if not pattern:
            return False
        if pattern == "*":
            return True
        return event in (p.strip() for p in pattern.split(","))

    def url(self, hub: str, event: str) -> str:
        return self.url_template.replace("{hub}", hub).replace("{event}", event)

    def to_json(self) -> dict[str, Any]:
        auth: dict[str, Any] = {"type": self.auth_type}
        if self.auth_type == "ManagedIdentity":
            auth["managedIdentity"] = {"resource": self.auth_resource}
        return {
            "urlTemplate": self.url_template,
            "userEventPattern": self.user_event_pattern,
            "systemEvents": list(self.system_events),
            "auth": auth,
        }

    @classmethod
    def from_json(cls, obj: Any) -> EventHandler:
        if not isinstance(obj, Mapping) or not isinstance(obj.get("urlTemplate"), str):
            raise BadRequest("Each event handler needs a 'urlTemplate' string.")
        systems = obj.get("systemEvents") or []
        if not isinstance(systems, list) or not all(isinstance(s, str) for s in systems):
            raise BadRequest("'systemEvents' must be a list of strings.")
        pattern = obj.get("userEventPattern") or ""
        if not isinstance(pattern, str):
            raise BadRequest("'userEventPattern' must be a string.")
        auth = obj.get("auth") or {}
        if not isinstance(auth, Mapping):
            raise BadRequest("'auth' must be an object.")
        identity = auth.get("managedIdentity") or {}
        return cls(
            url_template=obj["urlTemplate"],
            user_event_pattern=pattern,
            system_events=tuple(dict.fromkeys(systems)),
            auth_type=str(auth.get("type") or "None"),
            auth_resource=str(identity.get("resource") or "") if isinstance(identity, Mapping) else "",
        )


@dataclass(frozen=True, slots=True)
class HubSettings:
    name: str
    event_handlers: tuple[EventHandler, ...] = ()
    anonymous_connect: bool = False
    keepalive_seconds: int = 20
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.keepalive_seconds <= 120:
            raise BadRequest("'webSocketKeepAliveIntervalInSeconds' must be between 1 and 120.")

    def handler_for_system(self, event: str) -> EventHandler | None:
        """The first handler (in order) that takes system event ``event``."""
        return next((h for h in self.event_handlers if h.handles_system(event)), None)

    def handler_for_user(self, event: str) -> EventHandler | None:
        return next((h for h in self.event_handlers if h.handles_user(event)), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "eventHandlers": [h.to_json() for h in self.event_handlers],
            "anonymousConnectPolicy": "allow" if self.anonymous_connect else "deny",
            "webSocketKeepAliveIntervalInSeconds": self.keepalive_seconds,
        }

    @classmethod
    def from_json(cls, name: str, obj: Any) -> HubSettings:
        if isinstance(obj, Mapping) and isinstance(obj.get("properties"), Mapping):
            obj = obj["properties"]  # a whole ARM resource, as `az webpubsub hub show` prints it
        if not isinstance(obj, Mapping):
            raise BadRequest("Hub settings must be a JSON object.")
        handlers = obj.get("eventHandlers") or []
        if not isinstance(handlers, list):
            raise BadRequest("'eventHandlers' must be a list.")
        policy = str(obj.get("anonymousConnectPolicy") or "deny").lower()
        if policy not in ("allow", "deny"):
            raise BadRequest("'anonymousConnectPolicy' must be 'allow' or 'deny'.")
        keepalive = obj.get("webSocketKeepAliveIntervalInSeconds", 20)
        if not isinstance(keepalive, int) or isinstance(keepalive, bool):
            raise BadRequest("'webSocketKeepAliveIntervalInSeconds' must be an integer.")
        return cls(
            name=name,
            event_handlers=tuple(EventHandler.from_json(h) for h in handlers),
            anonymous_connect=policy == "allow",
            keepalive_seconds=keepalive,
        )

    @classmethod
    def build(cls, name: str, handlers: Iterable[EventHandler], anonymous_connect: bool) -> HubSettings:
        return cls(name=name, event_handlers=tuple(handlers), anonymous_connect=anonymous_connect)


class StaticSettings:
    """Settings held in memory only (tests, and the service when no store is given)."""

    def __init__(self, hubs: Iterable[HubSettings] = ()) -> None:
        self._hubs = {h.name.lower(): h for h in hubs}

    def get(self, hub: str) -> HubSettings | None:
        return self._hubs.get(hub.lower())

    def put(self, settings: HubSettings) -> None:
        self._hubs[settings.name.lower()] = settings
