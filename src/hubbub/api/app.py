"""Assemble the aiohttp application: client endpoint, REST API, health."""

from __future__ import annotations

from aiohttp import web

from hubbub.api.rest import RestApi
from hubbub.broker.memory import MemoryBroker
from hubbub.config import ServiceConfig
from hubbub.core.dispatch import Dispatcher
from hubbub.core.node import Node
from hubbub.transport.websocket import ClientEndpoint

__all__ = ["NODE_KEY", "create_app"]

NODE_KEY = web.AppKey("node", Node)


def create_app(config: ServiceConfig, node: Node | None = None) -> web.Application:
    node = node or Node(MemoryBroker())
    dispatcher = Dispatcher(node)
    clients = ClientEndpoint(config, node, dispatcher)
    rest = RestApi(config, node)

    app = web.Application(client_max_size=config.max_frame_bytes)
    app[NODE_KEY] = node
    app.router.add_route("GET", "/client/hubs/{hub}", clients.handle)
    app.router.add_route("GET", "/client", clients.handle)
    app.router.add_route("GET", "/client/", clients.handle)
    app.router.add_route("*", "/api/health", rest.health)
    app.router.add_route("*", "/api/hubs/{tail:.*}", rest.dispatch)

    async def start(_: web.Application) -> None:
        await node.start()

    async def shutdown(_: web.Application) -> None:
        await node.close()

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    return app
