"""The functions host: load an app, serve its HTTP triggers, extension webhooks and ``/.auth``.

It sits beside the service and reaches it only through public contracts (webhooks in, REST out),
so the same host runs an app against hubbub or against Azure Web PubSub.

URL space (as on Azure): ``/<routePrefix>/<route>`` HTTP functions, ``/runtime/webhooks/webpubsub``
the Web PubSub extension and ``/runtime/webhooks/signalr`` the SignalR extension (system key
``webpubsub_extension`` / ``signalr_extension`` or the master key, as ``?code=`` or
``x-functions-key``), ``/.auth/...`` sign-in, ``/admin/host/status`` (master key), ``/`` a page
listing the HTTP functions.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from hubbub import __version__
from hubbub.functions.appconfig import (
    DEFAULT_PORT,
    AppConfig,
    ConfigError,
    exported_settings,
    load_app_config,
)
from hubbub.functions.easyauth import EasyAuth
from hubbub.functions.http import HttpFunctions, check_http_output, given_key, split_path
from hubbub.functions.invoke import Invoker
from hubbub.functions.keys import KeyStore, default_keys_dir
from hubbub.functions.loader import LoadedApp, load_app
from hubbub.functions.oidc import load_providers
from hubbub.functions.signalr import SignalRExtension
from hubbub.functions.timers import Timers
from hubbub.functions.watch import snapshot, wait_for_change
from hubbub.functions.webpubsub import WebPubSubExtension

__all__ = ["FunctionsHost", "HostOptions", "run_host"]

log = logging.getLogger("hubbub.functions")

MAX_BODY_BYTES = 100 * 1024 * 1024  # the Functions host's default request size limit


@dataclass
class HostOptions:
    script_root: Path
    host: str = "127.0.0.1"
    #: None: ``Host.LocalHttpPort`` of local.settings.json, else 7071
    port: int | None = None
    #: check function/admin/system keys (Core Tools does not locally; ``--no-auth`` turns it off)
    enforce_keys: bool = True
    keys_dir: Path | None = None
    #: None: ``Host.CORS`` / ``Host.CORSCredentials`` of local.settings.json
    cors: tuple[str, ...] | None = None
    cors_credentials: bool | None = None
    #: app settings that win over the environment and local.settings.json (``hubbub demo``)
    settings: dict[str, str] = field(default_factory=dict)


class FunctionsHost:
    def __init__(self, options: HostOptions) -> None:
        self.options = options
        self.config: AppConfig = load_app_config(options.script_root)
        self.port = options.port or self.config.port or DEFAULT_PORT
        self.cors = self.config.cors if options.cors is None else options.cors
        self.cors_credentials = (
            self.config.cors_credentials if options.cors_credentials is None else options.cors_credentials
        )
        self.keys = KeyStore(options.keys_dir or default_keys_dir(self.config.root), f"localhost:{self.port}")
        # app settings as the app sees them: Values, then the environment, then the host's overrides
        settings = {**self.config.values, **os.environ, **options.settings}
        self.easyauth = EasyAuth(self.keys.master, providers=load_providers(settings))
        self._stack = ExitStack()
        self._runner: web.AppRunner | None = None
        self.app: LoadedApp | None = None
        self.invoker = Invoker({}, {}, timeout=self.config.function_timeout)
        self.http: HttpFunctions | None = None
        self.webpubsub: WebPubSubExtension | None = None
        self.signalr: SignalRExtension | None = None
        self.timers: Timers | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        host = self.options.host
        shown = "localhost" if host in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::", "") else host
        return f"http://{shown}:{self.port}"

    @property
    def webpubsub_webhook(self) -> str:
        """The event handler URL to configure on the service (with the system key)."""
        return (
            f"{self.base_url}/runtime/webhooks/webpubsub?code={self.keys.system_key('webpubsub_extension')}"
        )

    @property
    def signalr_webhook(self) -> str:
        """The upstream URL to configure on the SignalR service (with the system key)."""
        return f"{self.base_url}/runtime/webhooks/signalr?code={self.keys.system_key('signalr_extension')}"

    def load(self) -> LoadedApp:
        """Export the app settings and import the app (blocking: user code runs at import)."""
        self._stack.enter_context(exported_settings(self.config.values, self.options.settings))
        logging.getLogger("azure").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
        self.app = load_app(self.config)
        self.webpubsub = WebPubSubExtension(self.app.functions, self.invoker)
        self.invoker.inputs.update(
            webpubsubconnection=self.webpubsub.connection_input,
            webpubsubcontext=self.webpubsub.context_input,
        )
        self.signalr = SignalRExtension(self.app.functions, self.invoker)
        self.invoker.inputs.update(signalrconnectioninfo=self.signalr.connection_info_input)
        self.invoker.outputs.update(
            http=check_http_output, webpubsub=self.webpubsub.output, signalr=self.signalr.output
        )
        self.http = HttpFunctions(
            self.app.functions, self.config.route_prefix, self.invoker, self.keys, self.options.enforce_keys
        )
        for route in self.http.routes:
            self.keys.keys_of(route.function.name)
        self.keys.system_key("webpubsub_extension")
        self.keys.system_key("signalr_extension")
        self.timers = Timers(self.app.functions, self.invoker)
        return self.app

    @property
    def errors(self) -> list[tuple[str, str]]:
        found = list(self.app.errors) if self.app else []
        found += self.http.errors if self.http else []
        found += self.webpubsub.errors if self.webpubsub else []
        found += self.signalr.errors if self.signalr else []
        found += self.timers.errors if self.timers else []
        return found

    # --- serving --------------------------------------------------------------------------------

    def web_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._cors])
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    async def start(self) -> None:
        if self.app is None:
            self.load()
        self._runner = web.AppRunner(
            self.web_app(), access_log=None, handle_signals=False, shutdown_timeout=5.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.options.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self.close()
            raise
        assert self.timers is not None
        self.timers.start()

    async def close(self) -> None:
        if self.timers is not None:
            await self.timers.close()
        for task in list(self._background):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.webpubsub is not None:
            await self.webpubsub.close()
        if self.signalr is not None:
            await self.signalr.close()
        await self.easyauth.close()
        self._stack.close()

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        segments = [s.lower() for s in split_path(request.raw_path)]
        if segments[:1] == [".auth"]:
            return await self.easyauth.handle(request)
        if segments[:2] == ["runtime", "webhooks"]:
            return await self._webhook(request, segments[2] if len(segments) > 2 else "")
        if segments[:1] == ["admin"]:
            return self._admin(request, split_path(request.raw_path)[1:])
        assert self.http is not None
        response = await self.http.handle(request, self.easyauth.principal_headers(request))
        if response is not None:
            return response
        if not segments and request.method in ("GET", "HEAD"):
            return self._home()
        return web.Response(status=404)

    async def _webhook(self, request: web.Request, extension: str) -> web.StreamResponse:
        handler = {"webpubsub": self.webpubsub, "signalr": self.signalr}.get(extension)
        if handler is None:
            return web.Response(status=404)
        if self.options.enforce_keys and not self.keys.allows_extension(extension, given_key(request)):
            return web.Response(status=401)
        return await handler.handle(request)

    def _admin(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        if self.options.enforce_keys and not self.keys.allows("admin", given_key(request)):
            return web.Response(status=401)
        if len(rest) == 2 and rest[0].lower() == "functions" and request.method == "POST":
            return self._invoke(rest[1])
        if [s.lower() for s in rest] == ["host", "status"] and request.method == "GET":
            return web.json_response(
                {
                    "state": "Running",
                    "version": f"hubbub {__version__}",
                    "errors": [f"{name}: {why}" for name, why in self.errors],
                }
            )
        return web.Response(status=404)

    def _invoke(self, name: str) -> web.Response:
        """``POST /admin/functions/<name>``: run a timer-triggered function now (202, as the host does)."""
        assert self.timers is not None
        found = next(
            (fn for key, (fn, _) in self.timers.schedules.items() if key.lower() == name.lower()), None
        )
        if found is None:
            return web.Response(status=404, text=f"no timer-triggered function '{name}'")
        task = asyncio.create_task(self.timers.fire(found))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return web.Response(status=202)

    def _home(self) -> web.Response:
        assert self.http is not None
        items = "".join(
            f'<li><a href="{html.escape(self.http.url_of(r, ""))}">{html.escape(r.function.name)}</a></li>'
            for r in self.http.routes
        )
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Functions host</title></head><body>"
            f"<h1>Your functions app is up and running</h1><p>hubbub {__version__}</p><ul>{items}</ul>"
            "</body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    @web.middleware
    async def _cors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = bool(origin) and ("*" in self.cors or origin in self.cors)
        if request.method == "OPTIONS" and origin and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204)
            if allowed:
                response.headers["Access-Control-Allow-Methods"] = request.headers[
                    "Access-Control-Request-Method"
                ]
                wanted = request.headers.get("Access-Control-Request-Headers")
                if wanted:
                    response.headers["Access-Control-Allow-Headers"] = wanted
                response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        if allowed and origin:
            wildcard = "*" in self.cors and not self.cors_credentials
            response.headers["Access-Control-Allow-Origin"] = "*" if wildcard else origin
            if not wildcard:
                response.headers.add("Vary", "Origin")
            if self.cors_credentials:
                response.headers["Access-Control-Allow-Credentials"] = "true"
        return response

    # --- start-up summary -----------------------------------------------------------------------

    def banner(self) -> list[str]:
        assert self.app is not None and self.http is not None and self.webpubsub is not None
        root, model = self.config.root, self.app.model
        lines = [f"hubbub {__version__} functions host: {self.base_url}  (app {root}, {model} model)"]
        lines.append("Functions:")
        shown = set()
        for route in self.http.routes:
            shown.add(route.function.name)
            url = self.http.url_of(route, self.base_url)
            if self.options.enforce_keys and route.auth_level == "function":
                url += f"?code={self.keys.keys_of(route.function.name)['default']}"
            elif self.options.enforce_keys and route.auth_level == "admin":
                url += " (master key)"
            lines.append(f"    {route.function.name}: [{','.join(route.method_list)}] {url}")
        for fn in self.app.functions:
            if fn.name not in shown and fn.trigger.type == "webpubsubtrigger":
                lines.append(f"    {fn.name}: {self.webpubsub.describe(fn)}")
            elif fn.name not in shown and fn.trigger.type == "signalrtrigger" and self.signalr is not None:
                lines.append(f"    {fn.name}: {self.signalr.describe(fn)}")
            elif fn.name not in shown and self.timers is not None and fn.name in self.timers.schedules:
                lines.append(f"    {fn.name}: {self.timers.describe(fn)}")
        for name, why in self.errors:
            lines.append(f"    {name}: NOT LOADED: {why}")
        lines.append(f"Keys (kept in {self.keys.directory}):")
        lines.append(f"    master: {self.keys.master}")
        lines.append(f"    host default: {self.keys.host_keys.get('default', '')}")
        for name, value in self.keys.system_keys.items():
            lines.append(f"    system {name}: {value}")
        if not self.options.enforce_keys:
            lines.append("    (key checks are off: --no-auth)")
        lines.append(f"Web PubSub event handler URL: {self.webpubsub_webhook}")
        if self.signalr is not None and self.signalr.triggers:
            lines.append(f"SignalR upstream URL: {self.signalr_webhook}")
        return lines


async def run_host(options: HostOptions) -> int:
    """``hubbub func start``: serve until SIGINT/SIGTERM; restart when the app's files change."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    first = FunctionsHost(options)
    watching = first.config.host_json.get("fileWatchingEnabled", True) is not False
    extra = [str(f) for f in first.config.host_json.get("watchFiles") or () if isinstance(f, str)]
    files = await asyncio.to_thread(snapshot, options.script_root, extra)
    if await _serve(first):
        return 1
    host: FunctionsHost | None = first
    stopped = asyncio.ensure_future(stop.wait())
    while True:
        change = (
            asyncio.ensure_future(wait_for_change(options.script_root, files, extra)) if watching else None
        )
        await asyncio.wait(
            [stopped] if change is None else [stopped, change], return_when=asyncio.FIRST_COMPLETED
        )
        if change is None or not change.done():
            if change is not None:
                change.cancel()
            break
        path, files = change.result()
        print(f"hubbub: file change detected for {path}: restarting the functions host", flush=True)
        if host is not None:
            await host.close()
        try:
            host = FunctionsHost(options)
        except (ConfigError, ValueError, OSError) as exc:  # host.json / local.settings.json / keys
            print(f"hubbub: the functions host cannot start: {exc}", flush=True)
            host = None
            continue
        if await _serve(host):
            host = None
    print("hubbub: functions host shutting down", flush=True)
    if host is not None:
        await host.close()
    return 0


async def _serve(host: FunctionsHost) -> int:
    """Import the app, listen, print the banner; 1 when the port cannot be bound."""
    await asyncio.to_thread(host.load)
    try:
        await host.start()
    except OSError as exc:
        print(f"hubbub: cannot listen on {host.options.host}:{host.port}: {exc.strerror}", flush=True)
        return 1
    for line in host.banner():
        print(line, flush=True)
    return 0
