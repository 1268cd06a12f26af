"""Peer for `make bench`: a minimal python-socketio broadcast server (aiohttp, WebSocket transport only).

python python_socketio_server.py WS_PORT HTTP_PORT -- Socket.IO clients on WS_PORT (/socket.io/); POST
/broadcast on HTTP_PORT emits its body as event "message" to every client and answers 202.
"""

import asyncio
import sys

import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", transports=["websocket"])


async def broadcast(request: web.Request) -> web.Response:
    await sio.emit("message", await request.text())
    return web.Response(status=202)


async def main(ws_port: int, http_port: int) -> None:
    app = web.Application()
    sio.attach(app)
    app.router.add_post("/broadcast", broadcast)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for port in {ws_port, http_port}:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
