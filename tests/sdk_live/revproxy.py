"""A pass-through HTTP reverse proxy: the API Management stand-in for the SDK reverse-proxy tests.

Forwards every request (method, raw path and query, headers, body) to ``--target`` and relays the
answer, the way an APIM gateway in front of Web PubSub does. The ``Host`` header is the target's,
as with APIM's default backend settings. Run as a script: ``python revproxy.py --port P --target URL``.
"""

from __future__ import annotations

import argparse

from aiohttp import ClientSession, web
from yarl import URL

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


def make_app(target: str) -> web.Application:
    base = target.rstrip("/")
    session_key = web.AppKey("session", ClientSession)

    async def start(app: web.Application) -> None:
        app[session_key] = ClientSession(auto_decompress=False)

    async def stop(app: web.Application) -> None:
        await app[session_key].close()

    async def forward(request: web.Request) -> web.Response:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        async with request.app[session_key].request(
            request.method,
            URL(base + request.raw_path, encoded=True),
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            out = [(k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP]
            return web.Response(status=upstream.status, headers=out, body=body)

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", required=True)
    args = parser.parse_args()
    web.run_app(make_app(args.target), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
