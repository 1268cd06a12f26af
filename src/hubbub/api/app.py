"""Assemble the aiohttp application: client endpoint, REST API, health, admin, upstream."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hubbub.api.admin import add_admin_routes
from hubbub.api.rest import RestApi
from hubbub.broker.base import Broker, Presence
from hubbub.broker.memory import MemoryBroker
from hubbub.config import ServiceConfig
from hubbub.core.dispatch import Dispatcher
from hubbub.core.node import Node
from hubbub.settings import StaticSettings
from hubbub.store import SettingsBackend
from hubbub.transport.websocket import ClientEndpoint
from hubbub.upstream.webhook import SettingsSource, Upstream

__all__ = ["NODE_KEY", "UPSTREAM_KEY", "create_app"]

NODE_KEY = web.AppKey("node", Node)
UPSTREAM_KEY = web.AppKey("upstream", Upstream)


def create_app(
    config: ServiceConfig,
    node: Node | None = None,
    store: SettingsSource | None = None,
    *,
    broker: Broker | None = None,
    presence: Presence | None = None,
) -> web.Application:
    node = node or Node(broker or MemoryBroker(), presence)
    settings: SettingsSource = store if store is not None else StaticSettings()
    upstream = Upstream(config, settings)
    node.on_attach.append(upstream.connected)
    node.on_detach.append(upstream.disconnected)
    listeners: list[Any] | None = getattr(store, "listeners", None)
    if listeners is not None:
        listeners.append(upstream.settings_changed)
    dispatcher = Dispatcher(node, upstream)
    clients = ClientEndpoint(config, node, dispatcher, upstream)
    rest = RestApi(config, node)

    app = web.Application(client_max_size=config.max_frame_bytes)
    app[NODE_KEY] = node
    app[UPSTREAM_KEY] = upstream
    app.router.add_route("GET", "/client/hubs/{hub}", clients.handle)
    app.router.add_route("GET", "/client", clients.handle)
    app.router.add_route("GET", "/client/", clients.handle)
    app.router.add_route("*", "/api/health", rest.health)
    if isinstance(store, SettingsBackend):
        add_admin_routes(app, config, store)
    app.router.add_route("*", "/api/hubs/{tail:.*}", rest.dispatch)

    async def start(_: web.Application) -> None:
        await upstream.start()
        await node.start()

    async def shutdown(_: web.Application) -> None:
        await node.close()
        await clients.close()  # the close handshakes of the sessions node.close() ended (1001)
        await upstream.close()

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    return app
