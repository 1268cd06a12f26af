"""Admin REST API for hub settings (what ``az webpubsub hub`` does through ARM), under ``/api/admin``.

* ``GET /api/admin/hubs`` -> ``200 {"value": [{"name": ..., "properties": {...}}, ...]}``
  (ordered by lower-cased name);
* ``GET /api/admin/hubs/{hub}`` -> ``200 {"name": ..., "properties": {...}}``, ``404`` when the hub
  has no settings;
* ``PUT /api/admin/hubs/{hub}`` with the ``properties`` object, or a whole ``{"properties": {...}}``
  resource, as body: creates or replaces -> ``200`` with the stored resource; invalid settings ``400``;
* ``DELETE /api/admin/hubs/{hub}`` -> ``204``, ``404`` when the hub has no settings;
* ``GET /api/admin/signalr/upstream`` -> ``200 {"templates": [...]}``: the SignalR upstream templates
  (the ARM ``properties.upstream`` object, as ``az signalr upstream list`` prints it);
* ``PUT /api/admin/signalr/upstream`` with ``{"templates": [...]}`` (or a whole resource
  ``{"properties": {"upstream": ...}}``, or the emulator's ``settings.json``): replaces the list ->
  ``200`` with the stored list; ``DELETE`` clears it -> ``204``.

The SignalR routes are served on both ports (Web PubSub's and SignalR's), so either connection
string reaches them.

Authentication is the data-plane REST API's: ``Authorization: Bearer <JWT>`` signed (HS256) with an
access key, ``aud`` = the request URL; 401 otherwise. Errors are ``{"code": ..., "message": ...}``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from hubbub.api.rest import error_response
from hubbub.auth import InvalidToken, parse_bearer, verify_rest_token
from hubbub.config import ServiceConfig
from hubbub.errors import BadRequest, HubbubError, InternalError, NotFound, PayloadTooLarge
from hubbub.settings import HubSettings
from hubbub.signalr.upstream_rules import parse_settings, templates_json
from hubbub.store import SettingsBackend, StoreError
from hubbub.validation import check_hub

__all__ = ["SIGNALR_UPSTREAM_PATH", "add_admin_routes", "add_signalr_admin_routes", "resource"]

SIGNALR_UPSTREAM_PATH = "/api/admin/signalr/upstream"

log = logging.getLogger("hubbub.admin")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def resource(settings: HubSettings) -> dict[str, Any]:
    """The JSON resource of a hub, shaped like the ARM resource ``az webpubsub hub show`` prints."""
    return {"name": settings.name, "properties": settings.to_json()}


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json")


class _Admin:
    def __init__(self, access_keys: tuple[str, ...], store: SettingsBackend) -> None:
        self.access_keys = access_keys
        self.store = store

    def guarded(self, fn: _Handler) -> _Handler:
        """Authenticate, then run ``fn``; every HubbubError becomes the JSON error response."""

        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                token = parse_bearer(request.headers.get("Authorization"))
                if not token:
                    raise InvalidToken("The request has no 'Authorization: Bearer' token.")
                verify_rest_token(token, self.access_keys, request.raw_path)
                if "hub" in request.match_info:
                    check_hub(request.match_info["hub"])
                return await fn(request)
            except StoreError as exc:
                log.error("%s %s failed: %s", request.method, request.path, exc)
                return error_response(InternalError("The hub settings could not be saved."))
            except HubbubError as exc:
                return error_response(exc)

        return handler

    async def list_hubs(self, request: web.Request) -> web.StreamResponse:
        return _json({"value": [resource(s) for s in self.store.list()]})

    async def show(self, request: web.Request) -> web.StreamResponse:
        hub = request.match_info["hub"]
        settings = self.store.get(hub)
        if settings is None:
            raise NotFound(f"Hub '{hub}' not found.")
        return _json(resource(settings))

    async def put(self, request: web.Request) -> web.StreamResponse:
        hub = request.match_info["hub"]
        settings = HubSettings.from_json(hub, await _body(request, "hub settings"))
        await self.store.save(settings)
        log.info("hub '%s': settings saved through the admin API", hub)
        return _json(resource(settings))

    async def delete(self, request: web.Request) -> web.StreamResponse:
        hub = request.match_info["hub"]
        if not await self.store.remove(hub):
            raise NotFound(f"Hub '{hub}' not found.")
        log.info("hub '%s': settings deleted through the admin API", hub)
        return web.Response(status=204)

    async def show_signalr(self, request: web.Request) -> web.StreamResponse:
        return _json(templates_json(self.store.signalr_upstream()))

    async def put_signalr(self, request: web.Request) -> web.StreamResponse:
        templates = parse_settings(await _body(request, "SignalR upstream settings"))
        await self.store.save_signalr_upstream(templates)
        log.info("SignalR upstream: %d template(s) saved through the admin API", len(templates))
        return _json(templates_json(templates))

    async def clear_signalr(self, request: web.Request) -> web.StreamResponse:
        await self.store.save_signalr_upstream(())
        log.info("SignalR upstream: templates cleared through the admin API")
        return web.Response(status=204)


async def _body(request: web.Request, what: str) -> Any:
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"The {what} are too large.") from None
    if not body.strip():
        raise BadRequest(f"The body must be a JSON object with the {what}.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("The body is not valid JSON.") from None


def add_signalr_admin_routes(
    app: web.Application, access_keys: tuple[str, ...], store: SettingsBackend
) -> None:
    """Register the SignalR upstream routes (see the module docstring) on ``app``."""
    admin = _Admin(access_keys, store)
    app.router.add_route("GET", SIGNALR_UPSTREAM_PATH, admin.guarded(admin.show_signalr))
    app.router.add_route("PUT", SIGNALR_UPSTREAM_PATH, admin.guarded(admin.put_signalr))
    app.router.add_route("DELETE", SIGNALR_UPSTREAM_PATH, admin.guarded(admin.clear_signalr))


def add_admin_routes(app: web.Application, config: ServiceConfig, store: SettingsBackend) -> None:
    """Register the admin API (see the module docstring) on ``app``."""
    add_signalr_admin_routes(app, config.access_keys, store)
    admin = _Admin(config.access_keys, store)
    app.router.add_route("GET", "/api/admin/hubs", admin.guarded(admin.list_hubs))
    app.router.add_route("GET", "/api/admin/hubs/{hub}", admin.guarded(admin.show))
    app.router.add_route("PUT", "/api/admin/hubs/{hub}", admin.guarded(admin.put))
    app.router.add_route("DELETE", "/api/admin/hubs/{hub}", admin.guarded(admin.delete))
