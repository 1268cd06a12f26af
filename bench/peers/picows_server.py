"""Peer for `make bench`: a minimal picows WebSocket broadcast server.

python picows_server.py WS_PORT HTTP_PORT -- WebSocket clients on WS_PORT (picows, any path); POST (any
path) on HTTP_PORT (aiohttp, same event loop: picows speaks only WebSocket) sends its body as one text
message to every client and answers 202.
"""

import asyncio
import sys

from aiohttp import web
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

clients: set[WSTransport] = set()


class Listener(WSListener):  # type: ignore[misc]
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        clients.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        clients.discard(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


async def broadcast(request: web.Request) -> web.Response:
    body = await request.read()
    for transport in list(clients):
        transport.send(WSMsgType.TEXT, body)
    return web.Response(status=202)


async def main(ws_port: int, http_port: int) -> None:
    def factory(request: WSUpgradeRequest) -> Listener:
        return Listener()

    await ws_create_server(factory, "127.0.0.1", ws_port)
    app = web.Application()
    app.router.add_post("/{tail:.*}", broadcast)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
