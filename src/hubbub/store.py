"""Hub settings that survive a restart: an embedded SQLite table plus an in-memory cache.

:class:`SettingsStore` keeps one row per hub, keyed by the lower-cased hub name (hubs are
case-insensitive), holding the display name and ``json.dumps(settings.to_json())``. Reads are dict
lookups in the cache (``get`` runs on every connect); writes go to SQLite first, then to the cache,
then to :attr:`SettingsStore.listeners`. ``--data-dir :memory:`` keeps everything in memory. One
hubbub process per data directory: a second process would not see the first one's changes.

The config file of ``hubbub serve --config hubbub.toml`` names hubs; :func:`load_config_file` turns
it into :class:`~hubbub.settings.HubSettings`, which ``serve`` puts into the store at start (the
file wins for the hubs it names, other stored hubs are kept)::

    [hubs.chat]
    anonymous_connect = true            # anonymousConnectPolicy: true = allow, false = deny (default)
    keepalive_seconds = 20              # webSocketKeepAliveIntervalInSeconds, 1-120 (default 20)

    [[hubs.chat.event_handlers]]        # ordered; an event goes to the first handler that takes it
    url_template = "http://localhost:5000/eventhandler/{event}"   # required; {hub} and {event}
    user_event_pattern = "*"            # "*", "a,b", "a" or "" (none; the default)
    system_events = ["connect", "connected"]   # any of connect, connected, disconnected
    auth_type = "None"                  # None (default) or ManagedIdentity
    auth_resource = ""                  # the ManagedIdentity resource (app id URI)

    [[signalr.upstream]]                # SignalR upstream templates, ordered (first match wins)
    url_template = "http://localhost:7071/runtime/webhooks/signalr"   # required; {hub} {category} {event}
    hub_pattern = "*"                   # "*", "a,b" or "a" (default "*"); same for the next two
    category_pattern = "*"              # connections, messages
    event_pattern = "*"                 # connected, disconnected, or an invocation target
    auth_type = "None"                  # None (default) or ManagedIdentity
    auth_resource = ""                  # the token's aud (default: the upstream URL's origin)

The SignalR upstream templates are one service-wide list (ARM ``properties.upstream.templates``),
kept in the same store (table ``service``); a ``[signalr]`` table in the file replaces the stored
list at start, its absence keeps it.

Unknown keys are errors (a typo must not silently drop a handler).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubbub.errors import BadRequest
from hubbub.settings import EventHandler, HubSettings
from hubbub.signalr.upstream_rules import UpstreamTemplate, parse_settings, templates_json
from hubbub.validation import check_hub

__all__ = [
    "DB_FILE",
    "MEMORY",
    "SIGNALR_UPSTREAM",
    "ConfigFile",
    "ConfigFileError",
    "SettingsBackend",
    "SettingsStore",
    "StoreError",
    "default_data_dir",
    "load_config",
    "load_config_file",
]

log = logging.getLogger("hubbub.store")

MEMORY = ":memory:"
DB_FILE = "hubbub.sqlite3"
_SCHEMA_VERSION = 1


class StoreError(Exception):
    """The settings database cannot be opened, read or written."""


class ConfigFileError(ValueError):
    """The ``--config`` file is missing, not TOML, or describes invalid settings."""


def default_data_dir() -> str:
    """Per-user data directory: ``$XDG_DATA_HOME/hubbub``, else the platform's usual place.

    ``~/.local/share/hubbub`` on Linux and other Unixes, ``~/Library/Application Support/hubbub``
    on macOS, ``%LOCALAPPDATA%\\hubbub`` on Windows. An ``XDG_DATA_HOME`` that is not absolute is
    ignored, as the XDG spec says.
    """
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "hubbub")
    home = Path.home()
    if sys.platform == "darwin":
        return str(home / "Library" / "Application Support" / "hubbub")
    if sys.platform == "win32":
        return os.path.join(os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local"), "hubbub")
    return str(home / ".local" / "share" / "hubbub")


#: the key of the SignalR upstream templates in the ``service`` table (and in Redis)
SIGNALR_UPSTREAM = "signalr.upstream"

SignalRListener = Callable[[tuple[UpstreamTemplate, ...]], None]


class SettingsBackend:
    """What the services read (from an in-memory cache, synchronously) and the admin API writes.

    :class:`SettingsStore` (SQLite, one process) and
    :class:`~hubbub.store_redis.RedisSettingsStore` (a cluster) implement it.
    """

    #: where the settings live (for the start banner)
    location: str

    def __init__(self) -> None:
        self._cache: dict[str, HubSettings] = {}
        self._signalr: tuple[UpstreamTemplate, ...] = ()
        #: called with the hub name after a put, and after a delete that removed something
        self.listeners: list[Callable[[str], None]] = []
        #: called with the new templates after the SignalR upstream settings changed
        self.signalr_listeners: list[SignalRListener] = []

    def get(self, hub: str) -> HubSettings | None:
        return self._cache.get(hub.lower())

    def list(self) -> list[HubSettings]:
        """All hubs, ordered by lower-cased name."""
        return [self._cache[key] for key in sorted(self._cache)]

    def signalr_upstream(self) -> tuple[UpstreamTemplate, ...]:
        """The SignalR upstream templates, in order (empty: none configured)."""
        return self._signalr

    async def save(self, settings: HubSettings) -> None:
        raise NotImplementedError

    async def remove(self, hub: str) -> bool:
        raise NotImplementedError

    async def save_signalr_upstream(self, templates: tuple[UpstreamTemplate, ...]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _notify(self, hub: str) -> None:
        for listener in list(self.listeners):
            try:
                listener(hub)
            except Exception:
                log.exception("hub settings listener failed for hub '%s'", hub)

    def _set_signalr(self, templates: tuple[UpstreamTemplate, ...]) -> None:
        self._signalr = templates
        for listener in list(self.signalr_listeners):
            try:
                listener(templates)
            except Exception:
                log.exception("SignalR upstream settings listener failed")


def signalr_text(templates: tuple[UpstreamTemplate, ...]) -> str:
    return json.dumps(templates_json(templates))


def signalr_from_text(text: str, where: str) -> tuple[UpstreamTemplate, ...]:
    try:
        return parse_settings(json.loads(text))
    except (ValueError, BadRequest) as exc:
        log.warning("ignoring the stored SignalR upstream settings in %s: %s", where, _reason(exc))
        return ()


class SettingsStore(SettingsBackend):
    """Hub settings by case-insensitive hub name; see the module docstring."""

    def __init__(self, conn: sqlite3.Connection, location: str) -> None:
        super().__init__()
        self._conn = conn
        #: where the settings live: the database file, or ``:memory:``
        self.location = location
        self._load()

    @classmethod
    def open(cls, data_dir: str) -> SettingsStore:
        """The store of ``data_dir`` (created if needed); ``":memory:"`` keeps it in memory."""
        location = data_dir if data_dir == MEMORY else os.path.join(data_dir, DB_FILE)
        try:
            if data_dir != MEMORY:
                os.makedirs(data_dir, exist_ok=True)
            conn = sqlite3.connect(location, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the hub settings store {location}: {_reason(exc)}") from None
        try:
            return cls(conn, location)
        except BaseException:
            conn.close()
            raise

    def _load(self) -> None:
        try:
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version > _SCHEMA_VERSION:
                raise StoreError(
                    f"the hub settings store {self.location} was written by a newer hubbub "
                    f"(schema {version}); upgrade hubbub or use another --data-dir"
                )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS hubs (key TEXT PRIMARY KEY, name TEXT NOT NULL, "
                "settings TEXT NOT NULL)"
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS service (key TEXT PRIMARY KEY, settings TEXT NOT NULL)"
            )
            self._conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            rows = self._conn.execute("SELECT name, settings FROM hubs").fetchall()
            signalr = self._conn.execute(
                "SELECT settings FROM service WHERE key = ?", (SIGNALR_UPSTREAM,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the hub settings store {self.location}: {_reason(exc)}") from None
        for name, text in rows:
            try:
                settings = HubSettings.from_json(name, json.loads(text))
            except (ValueError, BadRequest) as exc:
                log.warning("ignoring the stored settings of hub '%s': %s", name, _reason(exc))
                continue
            self._cache[name.lower()] = settings
        if signalr is not None:
            self._signalr = signalr_from_text(signalr[0], self.location)

    def put_signalr_upstream(self, templates: tuple[UpstreamTemplate, ...]) -> None:
        """Replace the SignalR upstream templates (an empty tuple: none)."""
        self._write(
            "INSERT INTO service (key, settings) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET settings = excluded.settings",
            (SIGNALR_UPSTREAM, signalr_text(templates)),
        )
        self._set_signalr(tuple(templates))

    async def save(self, settings: HubSettings) -> None:
        self.put(settings)

    async def remove(self, hub: str) -> bool:
        return self.delete(hub)

    async def save_signalr_upstream(self, templates: tuple[UpstreamTemplate, ...]) -> None:
        self.put_signalr_upstream(templates)

    def put(self, settings: HubSettings) -> None:
        """Create or replace the settings of ``settings.name`` (its spelling becomes the display name)."""
        key = settings.name.lower()
        text = json.dumps(settings.to_json())
        self._write(
            "INSERT INTO hubs (key, name, settings) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET name = excluded.name, settings = excluded.settings",
            (key, settings.name, text),
        )
        self._cache[key] = settings
        self._notify(settings.name)

    def delete(self, hub: str) -> bool:
        """Remove a hub's settings; False when there were none."""
        old = self._cache.get(hub.lower())
        if old is None:
            return False
        self._write("DELETE FROM hubs WHERE key = ?", (hub.lower(),))
        del self._cache[hub.lower()]
        self._notify(old.name)
        return True

    def close(self) -> None:
        self._conn.close()

    def _write(self, sql: str, params: tuple[str, ...]) -> None:
        try:
            self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the hub settings store {self.location}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, BadRequest):
        return exc.message
    return str(exc)


# --- config file -----------------------------------------------------------------------------------

_HUB_KEYS = ("anonymous_connect", "keepalive_seconds", "event_handlers")
_HANDLER_KEYS = ("url_template", "user_event_pattern", "system_events", "auth_type", "auth_resource")
_TEMPLATE_KEYS = (
    "url_template",
    "hub_pattern",
    "category_pattern",
    "event_pattern",
    "auth_type",
    "auth_resource",
)


@dataclass(frozen=True)
class ConfigFile:
    hubs: list[HubSettings]
    #: None when the file has no ``[signalr]`` table (the stored templates are kept)
    signalr_upstream: tuple[UpstreamTemplate, ...] | None = None


def load_config_file(path: str) -> list[HubSettings]:
    """The hubs of a ``--config`` TOML file; :class:`ConfigFileError` names the file and the problem."""
    return load_config(path).hubs


def load_config(path: str) -> ConfigFile:
    """Hubs and SignalR upstream templates of a ``--config`` TOML file (:class:`ConfigFileError`)."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {_reason(exc)}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"config file {path} is not valid TOML: {exc}") from None
    try:
        _only(doc, ("hubs", "signalr"), "the top level")
        return ConfigFile(_hubs(doc), _signalr(doc["signalr"]) if "signalr" in doc else None)
    except (ValueError, BadRequest) as exc:
        raise ConfigFileError(f"config file {path}: {_reason(exc)}") from None


def _signalr(table: Any) -> tuple[UpstreamTemplate, ...]:
    if not isinstance(table, Mapping):
        raise ValueError("'signalr' must be a table: [signalr]")
    _only(table, ("upstream",), "[signalr]")
    items = table.get("upstream", [])
    if not isinstance(items, list):
        raise ValueError("signalr.upstream must be an array of tables: [[signalr.upstream]]")
    result = []
    for i, item in enumerate(items):
        where = f"[[signalr.upstream]] #{i + 1}"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where} must be a table")
        _only(item, _TEMPLATE_KEYS, where)
        if "url_template" not in item:
            raise ValueError(f"{where}: url_template is required")
        for key, value in item.items():
            if not isinstance(value, str):
                raise ValueError(f"{where}: {key} must be a string")
        try:
            result.append(UpstreamTemplate(**{k: item[k] for k in _TEMPLATE_KEYS if k in item}))
        except BadRequest as exc:
            raise ValueError(f"{where}: {exc.message}") from None
    return tuple(result)


def _hubs(doc: Mapping[str, Any]) -> list[HubSettings]:
    hubs = doc.get("hubs", {})
    if not isinstance(hubs, Mapping):
        raise ValueError("'hubs' must be a table: [hubs.<name>]")
    seen: dict[str, str] = {}
    result = []
    for name, table in hubs.items():
        where = f"[hubs.{name}]"
        if name.lower() in seen:
            raise ValueError(f"{where} and [hubs.{seen[name.lower()]}] are the same hub (names ignore case)")
        seen[name.lower()] = name
        if not isinstance(table, Mapping):
            raise ValueError(f"{where} must be a table")
        try:
            result.append(_hub(name, table, where))
        except BadRequest as exc:
            raise ValueError(f"{where}: {exc.message}") from None
    return result


def _hub(name: str, table: Mapping[str, Any], where: str) -> HubSettings:
    check_hub(name)
    _only(table, _HUB_KEYS, where)
    anonymous = table.get("anonymous_connect", False)
    if not isinstance(anonymous, bool):
        raise ValueError(f"{where}: anonymous_connect must be true or false")
    keepalive = table.get("keepalive_seconds", 20)
    if not isinstance(keepalive, int) or isinstance(keepalive, bool) or not 1 <= keepalive <= 120:
        raise ValueError(f"{where}: keepalive_seconds must be an integer from 1 to 120")
    handlers = table.get("event_handlers", [])
    if not isinstance(handlers, list):
        raise ValueError(
            f"{where}: event_handlers must be an array of tables: [[hubs.{name}.event_handlers]]"
        )
    return HubSettings(
        name=name,
        event_handlers=tuple(
            _handler(h, f"[[hubs.{name}.event_handlers]] #{i + 1}") for i, h in enumerate(handlers)
        ),
        anonymous_connect=anonymous,
        keepalive_seconds=keepalive,
    )


def _handler(table: Any, where: str) -> EventHandler:
    if not isinstance(table, Mapping):
        raise ValueError(f"{where} must be a table")
    _only(table, _HANDLER_KEYS, where)
    if "url_template" not in table:
        raise ValueError(f"{where}: url_template is required")
    strings = {k: table[k] for k in _HANDLER_KEYS if k in table and k != "system_events"}
    for key, value in strings.items():
        if not isinstance(value, str):
            raise ValueError(f"{where}: {key} must be a string")
    systems = table.get("system_events", [])
    if not isinstance(systems, list) or not all(isinstance(s, str) for s in systems):
        raise ValueError(f"{where}: system_events must be a list of strings")
    try:
        return EventHandler(system_events=tuple(dict.fromkeys(systems)), **strings)
    except BadRequest as exc:
        raise ValueError(f"{where}: {exc.message}") from None


def _only(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [k for k in table if k not in allowed]
    if unknown:
        raise ValueError(f"unknown key '{unknown[0]}' in {where} (expected: {', '.join(allowed)})")
