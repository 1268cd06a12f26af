"""Web PubSub bindings: the ``webPubSubTrigger`` webhook, the ``webPubSubConnection`` and
``webPubSubContext`` inputs and the ``webPubSub`` output, talking to the service only through its
public contracts (CloudEvents in, REST out, client tokens signed with the connection string's key).

``/runtime/webhooks/webpubsub`` follows the extension's dispatcher: ``OPTIONS``/``GET`` answer the
abuse-protection check (``WebHook-Allowed-Origin``: ``*`` when no connection string is configured,
else the origin matching a configured endpoint's host, else 400); a ``POST`` missing a ``ce-*``
header is 400, an event no function takes is 404, a bad signature 401, a user event with another
content type 400; ``connect`` and user events answer with the function's return value
(:func:`~hubbub.functions.wps_events.build_response`), other events with an empty 200; a function
that raises makes a 500 with the message as text.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from hubbub.auth import client_audience, mint_client_token
from hubbub.functions.appconfig import ConfigError, ServiceEndpoint, parse_connection_string, resolve_settings
from hubbub.functions.expressions import BindingData, resolve
from hubbub.functions.invoke import FunctionFailed, Invocation, Invoker
from hubbub.functions.loader import Binding, FunctionDef
from hubbub.functions.wps_actions import DEFAULT_CONNECTION_SETTING, HUB_SETTING, WebPubSubActions
from hubbub.functions.wps_events import (
    EventRejected,
    WpsEvent,
    binding_values,
    build_response,
    parse_event,
    preflight_origin,
    signature_ok,
    trigger_value,
)

__all__ = ["WebPubSubExtension"]

log = logging.getLogger("hubbub.functions")

_PROTOCOLS = {"all": "all", "webpubsub": "webpubsub", "mqtt": "mqtt"}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class WebPubSubExtension:
    """The Web PubSub extension of one app: triggers by (hub, event type, event name, protocol)."""

    name = "webpubsub"

    def __init__(
        self, functions: Iterable[FunctionDef], invoker: Invoker, settings: Mapping[str, str] | None = None
    ) -> None:
        self.settings = os.environ if settings is None else settings
        self.invoker = invoker
        self.actions = WebPubSubActions(self.settings)
        self.errors: list[tuple[str, str]] = []
        self.triggers: dict[tuple[str, str, str, str], FunctionDef] = {}
        self.global_endpoints = self._global_endpoints()
        self._endpoints: dict[str, list[ServiceEndpoint]] = {}
        for fn in functions:
            if fn.trigger.type == "webpubsubtrigger":
                try:
                    self._register(fn)
                except ConfigError as exc:
                    self.errors.append((fn.name, str(exc)))

    # --- configuration --------------------------------------------------------------------------

    def _global_endpoints(self) -> list[ServiceEndpoint]:
        text = self.settings.get(DEFAULT_CONNECTION_SETTING)
        if not text:
            return []
        try:
            return [parse_connection_string(text)]
        except ConfigError as exc:
            log.error("app setting %s: %s", DEFAULT_CONNECTION_SETTING, exc)
            return []

    def _register(self, fn: FunctionDef) -> None:
        trigger = fn.trigger
        hub = trigger.get("hub") or self.settings.get(HUB_SETTING)
        if not hub:
            raise ConfigError(f"the trigger has no 'hub' and the app setting '{HUB_SETTING}' is not set")
        hub = resolve_settings(str(hub), self.settings)
        event_type = str(trigger.get("eventType") or "").lower()
        if event_type not in ("system", "user"):
            raise ConfigError("the trigger's 'eventType' must be 'system' or 'user'")
        event_name = resolve_settings(str(trigger.get("eventName") or ""), self.settings)
        if not event_name:
            raise ConfigError("the trigger has no 'eventName'")
        protocol = _PROTOCOLS.get(str(trigger.get("clientProtocols") or "all").lower())
        if protocol is None:
            raise ConfigError("the trigger's 'clientProtocols' must be 'all', 'webPubSub' or 'mqtt'")
        key = (hub.lower(), event_type, event_name.lower(), protocol)
        if key in self.triggers:
            raise ConfigError(
                f"another function ({self.triggers[key].name}) already handles {event_type} event "
                f"'{event_name}' of hub '{hub}'"
            )
        connections = trigger.get("connections")
        if connections:
            names = connections if isinstance(connections, list) else [connections]
            endpoints = []
            for name in names:
                text = self.settings.get(resolve_settings(str(name), self.settings))
                if not text:
                    raise ConfigError(f"the app setting '{name}' named in 'connections' is not set")
                endpoints.append(parse_connection_string(text))
            self._endpoints[fn.name] = endpoints
        self.triggers[key] = fn

    def describe(self, fn: FunctionDef) -> str:
        t = fn.trigger
        hub = t.get("hub") or "%WebPubSubHub%"
        return f"webPubSubTrigger (hub {hub}, {t.get('eventType')} {t.get('eventName')})"

    def handled_events(self) -> dict[str, tuple[set[str], set[str]]]:
        """Per hub: (system events, user events) the app's triggers take — the hub settings it needs."""
        out: dict[str, tuple[set[str], set[str]]] = {}
        for (_, event_type, event_name, _), fn in self.triggers.items():
            hub_name = resolve_settings(
                str(fn.trigger.get("hub") or self.settings.get(HUB_SETTING)), self.settings
            )
            system, user = out.setdefault(hub_name, (set(), set()))
            (system if event_type == "system" else user).add(event_name)
        return out

    def endpoints_for(self, fn: FunctionDef | None) -> list[ServiceEndpoint]:
        if fn is not None and fn.name in self._endpoints:
            return self._endpoints[fn.name]
        return self.global_endpoints

    # --- the webhook ----------------------------------------------------------------------------

    def find(self, event: WpsEvent) -> FunctionDef | None:
        base = (event.hub.lower(), event.event_type, event.event_name.lower())
        return self.triggers.get((*base, event.protocol)) or self.triggers.get((*base, "all"))

    async def handle(self, request: web.Request) -> web.Response:
        origin_header = request.headers.get("WebHook-Request-Origin")
        if request.method in ("OPTIONS", "GET"):
            allowed = preflight_origin(origin_header, self.global_endpoints) if origin_header else None
            if allowed is None:
                return web.Response(status=400, text="abuse protection: origin not allowed")
            return web.Response(status=200, headers={"WebHook-Allowed-Origin": allowed})
        body = await request.read()
        try:
            event = parse_event(request.headers, request.headers.items(), body)
        except EventRejected as exc:
            return web.Response(status=exc.status, text=exc.message)
        fn = self.find(event)
        if fn is None:
            log.warning(
                "no function for Web PubSub %s event '%s' of hub '%s'",
                event.event_type,
                event.event_name,
                event.hub,
            )
            return web.Response(status=404)
        if not signature_ok(request.headers, event.connection_id, self.endpoints_for(fn)):
            log.warning("Web PubSub event for %s: signature validation failed", fn.name)
            return web.Response(status=401, text="Signature validation failed.")
        if request.method != "POST":
            return web.Response(status=400, text="Web PubSub events are POST requests")
        value = trigger_value(event, fn.trigger.name, fn.trigger.data_type)
        inv = Invocation(fn, value, BindingData(binding_values(event)), request)
        try:
            result = await self.invoker.run(inv)
        except FunctionFailed as exc:
            return web.Response(status=500, text=str(exc))
        if not event.blocking:
            return web.Response(status=200)
        answer = build_response(event, result.value)
        response = web.Response(status=answer.status, body=answer.body, headers=answer.headers)
        if answer.content_type:
            response.content_type = answer.content_type
        return response

    # --- input and output bindings --------------------------------------------------------------

    async def connection_input(self, binding: Binding, inv: Invocation) -> str:
        """``webPubSubConnection``: ``{"baseUrl","url","accessToken"}`` as JSON text."""
        endpoint = self.actions.endpoint_of(binding.get)
        hub = self.actions.hub_of(binding.get)
        user_template = binding.get("userId")
        user = resolve(str(user_template), inv.data, self.settings) if user_template else None
        mqtt = str(binding.get("clientProtocol") or "default").lower() == "mqtt"
        audience = client_audience(endpoint.endpoint, hub, "MQTT" if mqtt else "Default")
        token = mint_client_token(endpoint.access_key, audience, user_id=user or None)
        scheme, rest = endpoint.endpoint.split("://", 1)
        path = "/clients/mqtt/hubs/" if mqtt else "/client/hubs/"
        base = f"{'wss' if scheme == 'https' else 'ws'}://{rest}{path}{hub}"
        return _dumps({"baseUrl": base, "url": f"{base}?access_token={token}", "accessToken": token})

    async def context_input(self, binding: Binding, inv: Invocation) -> str:
        """``webPubSubContext`` (HTTP-triggered handlers): the parsed request, or the answer to give."""
        request: web.Request = inv.request
        endpoints = self._binding_endpoints(binding)
        ok: dict[str, Any] = {"body": None, "status": 200, "headers": {}}
        out: dict[str, Any] = {"request": None, "response": ok, "errorMessage": None}
        out.update(hasError=False, isPreflight=False)
        origin_header = request.headers.get("WebHook-Request-Origin")
        if request.method == "OPTIONS" and origin_header:
            allowed = preflight_origin(origin_header, endpoints)
            out["isPreflight"] = True
            out["request"] = {"isValid": allowed is not None}
            if allowed is None:
                out["response"] = {"body": None, "status": 400, "headers": {}}
            else:
                out["response"] = {"body": None, "status": 200, "headers": {"WebHook-Allowed-Origin": ["*"]}}
            return _dumps(out)
        try:
            event = parse_event(request.headers, request.headers.items(), await request.read())
            if not signature_ok(request.headers, event.connection_id, endpoints):
                raise EventRejected(401, "Signature validation failed.")
        except EventRejected as exc:
            out.update(hasError=True, errorMessage=exc.message)
            out["response"] = {"body": exc.message, "status": exc.status, "headers": {}}
            return _dumps(out)
        out["request"] = event.request
        return _dumps(out)

    def _binding_endpoints(self, binding: Binding) -> list[ServiceEndpoint]:
        names = binding.get("connections") or binding.get("connection")
        if not names:
            return self.global_endpoints
        endpoints = []
        for name in names if isinstance(names, list) else [names]:
            text = self.settings.get(resolve_settings(str(name), self.settings))
            if not text:
                raise ConfigError(f"the app setting '{name}' is not set")
            endpoints.append(parse_connection_string(text))
        return endpoints

    async def output(self, binding: Binding, value: Any, inv: Invocation) -> None:
        """``webPubSub`` output: send the actions."""
        await self.actions.send(binding.get, value)

    async def close(self) -> None:
        await self.actions.close()
