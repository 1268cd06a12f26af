"""SignalR bindings: the ``signalRTrigger`` webhook, the ``signalRConnectionInfo`` input and the
``signalR`` output, reaching the service only through its public contracts (upstream requests in,
REST out, client tokens signed with the connection string's key) — the same app runs against hubbub
or Azure SignalR Service in serverless mode.

``/runtime/webhooks/signalr`` (system key ``signalr_extension``) takes the service's upstream
requests; functions are found by (hub, category, event), case-insensitively. The trigger value is
the ``InvocationContext`` as JSON text (PascalCase, as non-.NET workers get it; bytes with
``dataType: binary``). Names in ``parameterNames`` are bound, in order, to the invocation's
arguments as binding data (their count must match), beside the context's own fields. The answer:
a blocking invocation gets a Completion with the function's return value (or its error message);
``connected`` gets 403 when the function raised; everything else 200.

Upstream token (hubbub's side of the upstream ``Auth`` setting ``ManagedIdentity``): a request
carrying ``Authorization: Bearer <JWT>`` is accepted only when the token verifies against an
``AccessKey`` of the trigger's connection string (HS256, ``exp`` required, ``exp``/``nbf`` with
30 s leeway, ``aud`` checked when the app setting ``HubbubSignalRUpstreamAudience`` is set); with
``HubbubSignalRUpstreamTokenRequired=true`` a request without one is refused too (401).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from aiohttp import web

from hubbub.functions.appconfig import ConfigError, resolve_settings
from hubbub.functions.expressions import BindingData, resolve
from hubbub.functions.invoke import FunctionFailed, Invocation, Invoker
from hubbub.functions.loader import Binding, FunctionDef
from hubbub.functions.signalr_actions import (
    SignalRActionError,
    SignalRActions,
    SignalREndpoint,
    client_token,
)
from hubbub.functions.signalr_events import (
    SignalRRejected,
    UpstreamRequest,
    check_content_type,
    check_signature,
    completion,
    dispatch_key,
    invocation_context,
    parse_request,
    result_value,
    verify_upstream_token,
)

__all__ = ["AUDIENCE_SETTING", "REQUIRED_SETTING", "SignalRExtension"]

log = logging.getLogger("hubbub.functions")

REQUIRED_SETTING = "HubbubSignalRUpstreamTokenRequired"
AUDIENCE_SETTING = "HubbubSignalRUpstreamAudience"
CATEGORIES = ("connections", "messages")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class SignalRExtension:
    """The SignalR extension of one app: triggers by (hub, category, event)."""

    name = "signalr"

    def __init__(
        self, functions: Iterable[FunctionDef], invoker: Invoker, settings: Mapping[str, str] | None = None
    ) -> None:
        self.settings = os.environ if settings is None else settings
        self.invoker = invoker
        self.actions = SignalRActions(self.settings)
        self.errors: list[tuple[str, str]] = []
        self.triggers: dict[tuple[str, str, str], FunctionDef] = {}
        self._endpoints: dict[str, SignalREndpoint] = {}
        self._parameters: dict[str, list[str] | None] = {}
        for fn in functions:
            if fn.trigger.type == "signalrtrigger":
                try:
                    self._register(fn)
                except ConfigError as exc:
                    self.errors.append((fn.name, str(exc)))

    @property
    def token_required(self) -> bool:
        return _true(self.settings.get(REQUIRED_SETTING))

    @property
    def audience(self) -> str | None:
        return self.settings.get(AUDIENCE_SETTING) or None

    def _register(self, fn: FunctionDef) -> None:
        trigger = fn.trigger
        hub = self.actions.hub_of(trigger.get)
        category = resolve_settings(str(trigger.get("category") or ""), self.settings).lower()
        if category not in CATEGORIES:
            raise ConfigError("the trigger's 'category' must be 'connections' or 'messages'")
        event = resolve_settings(str(trigger.get("event") or ""), self.settings)
        if not event:
            raise ConfigError("the trigger has no 'event'")
        if category == "connections" and event.lower() not in ("connected", "disconnected"):
            raise ConfigError("a 'connections' trigger's event must be 'connected' or 'disconnected'")
        names = trigger.get("parameterNames")
        if names is not None and (
            not isinstance(names, list) or not all(isinstance(n, str) and n for n in names)
        ):
            raise ConfigError("'parameterNames' must be a list of names")
        key = (hub.lower(), category, event.lower())
        if key in self.triggers:
            raise ConfigError(
                f"another function ({self.triggers[key].name}) already handles {category} event "
                f"'{event}' of hub '{hub}'"
            )
        self._endpoints[fn.name] = self.actions.endpoint_of(trigger.get)
        self._parameters[fn.name] = names
        self.triggers[key] = fn

    def describe(self, fn: FunctionDef) -> str:
        t = fn.trigger
        hub = t.get("hubName") or t.get("hub")
        return f"signalRTrigger (hub {hub}, {t.get('category')} {t.get('event')})"

    # --- the webhook ----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        try:
            check_content_type(request.headers)
            hub, category, event = dispatch_key(request.headers)
            fn = self.triggers.get((hub.lower(), category.lower(), event.lower()))
            if fn is None:
                log.warning("no function for SignalR %s/%s of hub '%s'", category, event, hub)
                raise SignalRRejected(404, f"No function for {category}/{event} of hub '{hub}'.")
            upstream = parse_request(request.headers, request.headers.items(), await request.read())
            endpoint = self._endpoints[fn.name]
            if endpoint.keys:  # identity-based connection strings have none: no validation, as Azure
                check_signature(request.headers, upstream.connection_id, endpoint.keys)
            verify_upstream_token(
                request.headers.get("Authorization"),
                endpoint.keys,
                required=self.token_required,
                audience=self.audience,
            )
            data = self._binding_data(fn, upstream)  # parameterNames bind at execution, after the checks
        except SignalRRejected as exc:
            if exc.status in (401, 500):
                log.warning("SignalR upstream request refused (%d): %s", exc.status, exc.message)
            return web.Response(status=exc.status, text=exc.message)
        text = _dumps(invocation_context(upstream))
        value: Any = text.encode("utf-8") if fn.trigger.data_type == "binary" else text
        inv = Invocation(fn, value, data, request)
        try:
            result = await self.invoker.run(inv)
        except FunctionFailed as exc:
            return self._failed(upstream, exc)
        if not upstream.blocking:
            return web.Response(status=200)
        try:
            body = completion(upstream, result=result_value(result.value))
        except TypeError as exc:
            body = completion(upstream, error=str(exc))
        return web.Response(status=200, body=body)

    def _binding_data(self, fn: FunctionDef, upstream: UpstreamRequest) -> BindingData:
        data = BindingData(invocation_context(upstream))
        names = self._parameters.get(fn.name)
        if names is not None:
            arguments = upstream.arguments or []
            if len(names) != len(arguments):
                raise SignalRRejected(
                    500,
                    f"The function '{fn.name}' expects {len(names)} arguments "
                    f"({', '.join(names)}) but the invocation has {len(arguments)}.",
                )
            for name, argument in zip(names, arguments, strict=True):
                data[name] = argument
        return data

    @staticmethod
    def _failed(upstream: UpstreamRequest, exc: FunctionFailed) -> web.Response:
        if upstream.blocking:
            cause = exc.__cause__
            message = str(cause) if cause is not None and str(cause) else "Method execution failed."
            return web.Response(status=200, body=completion(upstream, error=message))
        if upstream.category == "connections" and upstream.event.lower() == "connected":
            return web.Response(status=403)
        return web.Response(status=200)

    # --- input and output bindings --------------------------------------------------------------

    async def connection_info_input(self, binding: Binding, inv: Invocation) -> str:
        """``signalRConnectionInfo``: ``{"url","accessToken"}`` as JSON text."""
        endpoint = self.actions.endpoint_of(binding.get)
        hub = self.actions.hub_of(binding.get)
        user_template = binding.get("userId")
        user = resolve(str(user_template), inv.data, self.settings) if user_template else None
        claims: dict[str, Any] = {}
        id_token_template = binding.get("idToken")
        if id_token_template:
            claims = self._id_token_claims(
                resolve(str(id_token_template), inv.data, self.settings), binding.get("claimTypeList")
            )
        url, token = client_token(endpoint, hub, user or None, claims)
        return _dumps({"url": url, "accessToken": token})

    @staticmethod
    def _id_token_claims(token: str, wanted: Any) -> dict[str, Any]:
        """The claims of ``idToken`` (a JWT, ``Bearer`` prefix allowed) listed in ``claimTypeList``.

        Like the extension, nothing is copied without a non-empty list, and the token is read, not
        verified: the function checks it if it must.
        """
        if not isinstance(wanted, list) or not wanted:
            return {}
        text = token.strip()
        if text[:7].lower() == "bearer ":
            text = text[7:].strip()
        try:
            claims: dict[str, Any] = jwt.decode(text, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise ValueError(f"idToken is not a JWT: {exc}") from None
        listed = {str(w) for w in wanted}
        return {k: v for k, v in claims.items() if k in listed}

    async def output(self, binding: Binding, value: Any, inv: Invocation) -> None:
        """``signalR`` output: send the messages and group actions."""
        try:
            await self.actions.send(binding.get, value)
        except SignalRActionError as exc:
            raise RuntimeError(str(exc)) from None

    async def close(self) -> None:
        await self.actions.close()
