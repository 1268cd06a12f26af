"""Peer for `make bench`: a minimal aiohttp WebSocket broadcast server.

python aiohttp_server.py WS_PORT HTTP_PORT -- WebSocket clients on WS_PORT (any path); POST (any path) on
HTTP_PORT sends its body as one text message to every client and answers 202.
"""

import asyncio
import sys

from aiohttp import web

clients: set[web.WebSocketResponse] = set()


async def websocket(request: web.Request) -> web.StreamResponse:
    if request.method == "POST":
        return await broadcast(request)
    ws = web.WebSocketResponse(autoping=True)
    await ws.prepare(request)
    clients.add(ws)
    try:
        async for _ in ws:
            pass
    finally:
        clients.discard(ws)
    return ws


async def broadcast(request: web.Request) -> web.Response:
    body = await request.text()
    for ws in list(clients):
        await ws.send_str(body)
    return web.Response(status=202)


async def main(ws_port: int, http_port: int) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", websocket)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for port in {ws_port, http_port}:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
