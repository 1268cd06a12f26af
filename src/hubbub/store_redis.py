"""Hub settings and SignalR upstream settings in Redis, for a cluster (``hubbub serve --redis``).

Every node keeps the settings in memory (reads stay dict lookups) and refreshes its copy when told:

    hubbub:settings:hubs      hash    lower-cased hub name -> {"name": display name, "properties": {...}}
    hubbub:settings:signalr   string  {"templates": [...]} (the SignalR upstream templates)
    hubbub:settings:epoch     string  set once the settings exist; gone = Redis lost its data
    hubbub:settings           channel "h:<lower-cased hub>", "s" after each change, "*" after a reseed

A write (admin API, CLI, ``--config`` at start) goes to Redis first (the key and the notification in
one MULTI), then to this node's copy; the other nodes re-read the changed key when the notification
arrives. After a lost connection a node re-reads everything (changes it missed are then applied).
While Redis is unreachable writes fail (:class:`~hubbub.store.StoreError`, the admin API's 500) and
reads answer from the last copy.

Redis without persistence loses the settings when it restarts. The epoch key tells: when a node
(re)connects and finds no epoch, it writes its own copy back (one Lua script: only the first node
to get there does it, atomically, and tells the others with ``*``); so the settings survive a Redis
restart as long as one node stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from hubbub.broker import sentinel
from hubbub.errors import BadRequest
from hubbub.settings import HubSettings
from hubbub.signalr.upstream_rules import UpstreamTemplate
from hubbub.store import SettingsBackend, StoreError, signalr_from_text, signalr_text

__all__ = ["CHANNEL", "HUBS_KEY", "SIGNALR_KEY", "RedisSettingsStore"]

log = logging.getLogger("hubbub.store.redis")

HUBS_KEY = "hubbub:settings:hubs"
SIGNALR_KEY = "hubbub:settings:signalr"
EPOCH_KEY = "hubbub:settings:epoch"
CHANNEL = "hubbub:settings"

# KEYS: epoch, hubs, signalr; ARGV: epoch value, signalr JSON ("" = none), then key/value pairs of hubs.
# Reseeds only when the epoch is missing (Redis lost its data); returns 1 when it did.
_RESEED = (
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then redis.call('SET', KEYS[3], ARGV[2]) end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('PUBLISH', '"""
    + CHANNEL
    + """', '*')
return 1
"""
)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _hub(key: str, raw: Any) -> HubSettings | None:
    try:
        doc = json.loads(_text(raw))
        return HubSettings.from_json(str(doc.get("name") or key), doc.get("properties") or {})
    except (ValueError, AttributeError, BadRequest) as exc:
        log.warning("ignoring the stored settings of hub '%s' in redis: %s", key, exc)
        return None


class RedisSettingsStore(SettingsBackend):
    def __init__(self, url: str, *, display_url: str | None = None, start_timeout: float = 10.0) -> None:
        super().__init__()
        self.location = f"redis {display_url or url}"
        self.start_timeout = start_timeout
        self.redis: Redis = sentinel.client(url, socket_connect_timeout=5.0, health_check_interval=5)
        self._task: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()
        self._closing = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, load everything and follow changes; waits up to ``start_timeout`` for the first load."""
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="hubbub-settings")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.start_timeout):
                await self._loaded.wait()
        if not self._loaded.is_set():
            log.warning("redis is not reachable yet: hub settings are empty until it is")

    async def aclose(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.redis.aclose()

    # -- writes ---------------------------------------------------------------------------------

    async def save(self, settings: HubSettings) -> None:
        key = settings.name.lower()
        text = json.dumps({"name": settings.name, "properties": settings.to_json()})
        await self._write(lambda p: p.hset(HUBS_KEY, key, text), f"h:{key}")
        self._cache[key] = settings
        self._notify(settings.name)

    async def remove(self, hub: str) -> bool:
        key = hub.lower()
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(HUBS_KEY, key)
                pipe.publish(CHANNEL, f"h:{key}")
                removed, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreError(f"cannot write the hub settings to {self.location}: {exc}") from None
        old = self._cache.pop(key, None)
        if old is not None:
            self._notify(old.name)
        return bool(removed)

    async def save_signalr_upstream(self, templates: tuple[UpstreamTemplate, ...]) -> None:
        text = signalr_text(templates)
        await self._write(lambda p: p.set(SIGNALR_KEY, text), "s")
        self._set_signalr(tuple(templates))

    async def _write(self, command: Any, message: str) -> None:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                command(pipe)
                pipe.publish(CHANNEL, message)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreError(f"cannot write the hub settings to {self.location}: {exc}") from None

    # -- following changes --------------------------------------------------------------------------

    async def _follow(self) -> None:
        delay, failures = 0.05, 0
        while not self._closing:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                await self._reseed()
                await self._reload_all()  # after SUBSCRIBE: no change can fall in between
                if failures:
                    log.info("hub settings: reconnected to redis")
                delay, failures = 0.05, 0
                self._loaded.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        await self._reload(_text(message["data"]))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning("hub settings: redis unreachable (attempt %d): %s", failures, exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 5.0)

    async def _reseed(self) -> None:
        """Write this node's copy back if Redis has lost the settings (no epoch key)."""
        args: list[str] = [secrets.token_hex(8)]
        args.append(signalr_text(self._signalr) if self._signalr else "")
        for key, settings in self._cache.items():
            args += [key, json.dumps({"name": settings.name, "properties": settings.to_json()})]
        reseeded = await self.redis.eval(_RESEED, 3, EPOCH_KEY, HUBS_KEY, SIGNALR_KEY, *args)
        if reseeded and (self._cache or self._signalr):
            log.warning(
                "redis had lost the hub settings: wrote this node's copy back (%d hubs)", len(self._cache)
            )

    async def _reload_all(self) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(HUBS_KEY)
            pipe.get(SIGNALR_KEY)
            hubs, signalr = await pipe.execute()
        fresh = {}
        for raw_key, raw in hubs.items():
            key = _text(raw_key)
            settings = _hub(key, raw)
            if settings is not None:
                fresh[key] = settings
        changed = [s.name for k, s in fresh.items() if self._cache.get(k) != s]
        changed += [s.name for k, s in self._cache.items() if k not in fresh]
        self._cache = fresh
        for name in changed:
            self._notify(name)
        self._apply_signalr(signalr)

    async def _reload(self, message: str) -> None:
        if message == "*":
            await self._reload_all()
        elif message == "s":
            self._apply_signalr(await self.redis.get(SIGNALR_KEY))
        elif message.startswith("h:"):
            key = message[2:]
            raw = await self.redis.hget(HUBS_KEY, key)
            settings = _hub(key, raw) if raw is not None else None
            old = self._cache.get(key)
            if settings == old:
                return
            if settings is None:
                self._cache.pop(key, None)
            else:
                self._cache[key] = settings
            current = settings if settings is not None else old
            if current is not None:
                self._notify(current.name)

    def _apply_signalr(self, raw: Any) -> None:
        templates = signalr_from_text(_text(raw), self.location) if raw is not None else ()
        if templates != self._signalr:
            self._set_signalr(templates)
