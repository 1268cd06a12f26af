"""Event handler for the upstream echo scenario of `make bench`: a minimal aiohttp CloudEvents handler.

python echo_handler.py PORT -- answers the abuse-protection OPTIONS request, and every user event
(`ce-type: azure.webpubsub.user.*`) with its own body, which the service sends back to the caller.
Runs in the project's environment (aiohttp is a hubbub dependency).
"""

import asyncio
import sys

from aiohttp import web


async def options(request: web.Request) -> web.Response:
    origin = request.headers.get("WebHook-Request-Origin", "*")
    return web.Response(headers={"WebHook-Allowed-Origin": origin})


async def event(request: web.Request) -> web.Response:
    body = await request.read()
    if request.headers.get("ce-type", "").startswith("azure.webpubsub.user."):
        return web.Response(body=body, content_type="text/plain")
    return web.Response(status=204)


async def main(port: int) -> None:
    app = web.Application()
    app.router.add_route("OPTIONS", "/{tail:.*}", options)
    app.router.add_post("/{tail:.*}", event)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
