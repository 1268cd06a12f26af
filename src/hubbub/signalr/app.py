"""Assemble the SignalR aiohttp application, and start it beside Web PubSub (``hubbub serve``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web

from hubbub.api.admin import add_signalr_admin_routes
from hubbub.config import ServiceConfig
from hubbub.errors import HubbubError
from hubbub.signalr.config import DEFAULT_SIGNALR_PORT, SignalRConfig
from hubbub.signalr.rest import SignalRRestApi
from hubbub.signalr.secrets import SecretResolver
from hubbub.signalr.service import SignalRService
from hubbub.signalr.transports import ClientEndpoint, cors_middleware, cors_on_prepare
from hubbub.signalr.upstream import SignalRUpstream
from hubbub.signalr.upstream_rules import UpstreamTemplate, parse_settings
from hubbub.store import MEMORY, SettingsBackend, StoreError

__all__ = [
    "SIGNALR_SERVICE_KEY",
    "SIGNALR_UPSTREAM_KEY",
    "connection_string",
    "create_signalr_app",
    "load_upstream_settings",
    "start_signalr",
]

SIGNALR_SERVICE_KEY = web.AppKey("signalr", SignalRService)
SIGNALR_UPSTREAM_KEY = web.AppKey("signalr-upstream", SignalRUpstream)
SECRETS_FILE = "secrets.json"
#: how often the upstream settings file is checked for changes
SETTINGS_POLL_SECONDS = 1.0

log = logging.getLogger("hubbub.signalr")


def create_signalr_app(
    config: SignalRConfig,
    service: SignalRService | None = None,
    store: SettingsBackend | None = None,
    settings_path: str | None = None,
) -> web.Application:
    """The SignalR app. With a ``store``, the upstream templates are the stored ones (and follow
    their changes), and the admin API's SignalR routes are served here too; else ``config.upstream``.
    ``settings_path``: the upstream settings file, reloaded when it changes (as the emulator does)."""
    service = service if service is not None else SignalRService(config)
    upstream = SignalRUpstream(
        service,
        store.signalr_upstream() if store is not None else config.upstream,
        timeout=config.upstream_timeout_seconds,
        secrets=SecretResolver(config.secrets_file),
    )
    if store is not None:
        store.signalr_listeners.append(upstream.set_templates)
    clients = ClientEndpoint(service)
    rest = SignalRRestApi(service)
    app = web.Application(middlewares=[cors_middleware], client_max_size=config.max_rest_body_bytes)
    app[SIGNALR_SERVICE_KEY] = service
    app[SIGNALR_UPSTREAM_KEY] = upstream
    if store is not None:
        add_signalr_admin_routes(app, config.access_keys, store)
    app.on_response_prepare.append(cors_on_prepare)
    for path in ("/client/negotiate", "/client/negotiate/"):
        app.router.add_route("POST", path, clients.negotiate)
    for path in ("/client", "/client/"):
        app.router.add_route("GET", path, clients.connect)
        app.router.add_route("POST", path, clients.send)
        app.router.add_route("DELETE", path, clients.delete)
    for path in ("/api/health", "/api/v1/health"):
        app.router.add_get(path, rest.health)
    app.router.add_route("*", "/api/v1/hubs/{tail:.*}", rest.dispatch)
    app.router.add_route("*", "/api/hubs/{tail:.*}", rest.dispatch)

    async def apply(templates: tuple[UpstreamTemplate, ...]) -> None:
        if store is None:
            upstream.set_templates(templates)
        else:
            await store.save_signalr_upstream(templates)  # every listener (and, in a cluster, node)

    follower: asyncio.Task[None] | None = None

    async def start(_: web.Application) -> None:
        nonlocal follower
        await upstream.start()
        await service.start()
        if settings_path:
            follower = asyncio.get_running_loop().create_task(follow_settings_file(settings_path, apply))

    async def shutdown(_: web.Application) -> None:
        if follower is not None:
            follower.cancel()
        await service.close()
        await upstream.close()  # after the disconnected events of the shutdown
        if store is not None and upstream.set_templates in store.signalr_listeners:
            store.signalr_listeners.remove(upstream.set_templates)

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    return app


def connection_string(host: str, port: int, key: str) -> str:
    return f"Endpoint=http://{host};Port={port};AccessKey={key};Version=1.0;"


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


async def follow_settings_file(
    path: str,
    apply: Callable[[tuple[UpstreamTemplate, ...]], Awaitable[None]],
    interval: float = SETTINGS_POLL_SECONDS,
) -> None:
    """Reload the upstream settings file whenever it changes; a broken file keeps the previous ones."""
    last = _stamp(path)
    while True:
        await asyncio.sleep(interval)
        now = _stamp(path)
        if now == last or now is None:  # unchanged, or being replaced right now
            continue
        last = now
        try:
            templates = load_upstream_settings(path)
            await apply(templates)
        except (ValueError, StoreError) as exc:
            log.error("SignalR upstream settings not reloaded, the previous ones stay: %s", exc)
            continue
        log.info("SignalR upstream: %d template(s) reloaded from %s", len(templates), path)


def load_upstream_settings(path: str) -> tuple[UpstreamTemplate, ...]:
    """Upstream templates from a JSON file: the emulator's ``settings.json`` or the ARM shape.

    Raises :class:`ValueError` with a message for the user when the file cannot be used.
    """
    try:
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
        return parse_settings(document)
    except OSError as exc:
        raise ValueError(f"cannot read SignalR settings {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"SignalR settings {path} are not JSON: {exc}") from None
    except HubbubError as exc:
        raise ValueError(f"SignalR settings {path}: {exc.message}") from None


def secrets_file(explicit: str | None, data_dir: str | None) -> str | None:
    """``--secrets-file`` / ``HUBBUB_SECRETS_FILE``, else ``secrets.json`` in the data directory."""
    chosen = explicit or os.environ.get("HUBBUB_SECRETS_FILE") or None
    if chosen:
        return chosen
    if data_dir and data_dir != MEMORY:
        return os.path.join(data_dir, SECRETS_FILE)
    return None


async def start_signalr(
    config: ServiceConfig,
    port: int | None,
    settings_path: str | None = None,
    store: SettingsBackend | None = None,
    secrets_path: str | None = None,
    cluster: tuple[str, str] | None = None,
) -> web.AppRunner | None:
    """Start SignalR on ``port`` (None: the default 8888, skipped with a warning when busy; 0: off).

    ``settings_path`` (or ``HUBBUB_SIGNALR_SETTINGS``) names an upstream settings file; with a
    ``store`` its templates replace the stored ones (the file wins, as ``--config`` does), and the
    store's templates are used from then on. Prints the connection string. Returns the runner to
    clean up, or None when not started. Raises :class:`ValueError` for unusable settings and
    :class:`OSError` when an explicitly requested port cannot be bound. ``cluster`` = (Redis URL,
    this node's id): SignalR commands and presence go through Redis (:mod:`hubbub.signalr.cluster`).
    """
    if port == 0:
        return None
    chosen = DEFAULT_SIGNALR_PORT if port is None else port
    settings_path = settings_path or os.environ.get("HUBBUB_SIGNALR_SETTINGS") or None
    upstream = load_upstream_settings(settings_path) if settings_path else ()
    if store is not None and settings_path:
        await store.save_signalr_upstream(upstream)
    host = "localhost" if config.host in ("127.0.0.1", "::1", "localhost") else config.host
    signalr = SignalRConfig(
        access_keys=config.access_keys,
        upstream=upstream,
        endpoint=f"http://{host}:{chosen}",
        secrets_file=secrets_path,
    )
    service = None
    if cluster is not None:
        from hubbub.broker.redis import RedisBroker
        from hubbub.core.node import Node
        from hubbub.signalr.cluster import (
            NamespacedBroker,
            NamespacedPresence,
            SharedUserGroups,
            signalr_node_id,
        )

        broker = RedisBroker(cluster[0], signalr_node_id(cluster[1]), service="signalr")
        node = Node(NamespacedBroker(broker), NamespacedPresence(broker.presence))
        service = SignalRService(signalr, node, SharedUserGroups(broker.redis))
    runner = web.AppRunner(
        create_signalr_app(signalr, service, store=store, settings_path=settings_path),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=5.0,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, chosen, reuse_address=True, backlog=4096)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if port is not None:
            raise
        print(
            f"hubbub: SignalR not started: cannot listen on {config.host}:{chosen} ({exc.strerror}); "
            "pass --signalr-port to choose another port, 0 to disable",
            file=sys.stderr,
            flush=True,
        )
        return None
    print(f"hubbub: SignalR (serverless) on http://{host}:{chosen}", flush=True)
    print(f"  connection string: {connection_string(host, chosen, config.primary_key)}", flush=True)
    count = len(store.signalr_upstream() if store is not None else upstream)
    if settings_path or count:
        where = settings_path or store.location if store is not None else settings_path
        print(f"  upstream: {where} ({count} template{'' if count == 1 else 's'})", flush=True)
    if secrets_path:
        print(f"  secret references resolved from HUBBUB_SECRET_* and {secrets_path}", flush=True)
    return runner
