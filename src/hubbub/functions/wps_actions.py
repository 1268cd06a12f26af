"""The ``webPubSub`` output binding: actions become REST calls through the official service SDK.

What a function sets (``actions.set(json.dumps({...}))``; a JSON string, object or array, or a
``dict``/``list``) is read like the Functions extension reads it: ``actionName`` (case-insensitive)
selects the action, field names are camelCase, ``dataType`` defaults to ``text``, ``data`` must be a
string for ``text``/``json`` and a Node ``Buffer`` object (``{"type": "Buffer", "data": [...]}``)
for ``binary``. The 2021 beta form (``operationKind`` + ``message``, binary by default) is read too.

Each action is one call of ``azure.messaging.webpubsubservice.aio.WebPubSubServiceClient`` against the
service named by the binding's ``connection`` (or ``connectionStringSetting``) app setting, default
``WebPubSubConnectionString`` — so the same app works against hubbub and against Azure Web PubSub.
A failed call fails the invocation.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.messaging.webpubsubservice.aio import WebPubSubServiceClient

from hubbub.functions.appconfig import (
    ConfigError,
    ServiceEndpoint,
    output_objects,
    parse_connection_string,
    resolve_settings,
)

__all__ = ["ActionError", "WebPubSubActions", "parse_actions"]

log = logging.getLogger("hubbub.functions")

DEFAULT_CONNECTION_SETTING = "WebPubSubConnectionString"
HUB_SETTING = "WebPubSubHub"
_CONTENT_TYPES = {"text": "text/plain", "json": "application/json", "binary": "application/octet-stream"}
_LEGACY_KINDS = {
    "addtogroup": "addusertogroup",
    "grandgrouppermission": "grantpermission",
    "grantgrouppermission": "grantpermission",
    "revokegrouppermission": "revokepermission",
}

Call = Callable[[WebPubSubServiceClient, dict[str, Any]], Coroutine[Any, Any, None]]


class ActionError(Exception):
    """An output action that cannot be read or that the service refused."""


def parse_actions(value: Any) -> list[dict[str, Any]]:
    """The action objects in an output value (JSON text, bytes, a dict or a list of them)."""
    try:
        return output_objects(
            value,
            "webPubSub",
            lambda item: f"a webPubSub action must be a JSON object, not {type(item).__name__}",
        )
    except ValueError as exc:
        raise ActionError(str(exc)) from None


def _field(action: Mapping[str, Any], name: str, required: bool = True) -> Any:
    for key, value in action.items():
        if key.lower() == name.lower():
            return value
    if required:
        raise ActionError(f"the action has no '{name}'")
    return None


def _text(action: Mapping[str, Any], name: str) -> str:
    value = _field(action, name)
    if not isinstance(value, str) or not value:
        raise ActionError(f"'{name}' must be a non-empty string")
    return value


def _excluded(action: Mapping[str, Any]) -> list[str] | None:
    value = _field(action, "excluded", required=False)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ActionError("'excluded' must be a list of connection ids")
    return value


def _message(action: Mapping[str, Any]) -> tuple[io.BytesIO, str]:
    """The body (a stream: the SDK sends streams as they are, but JSON-encodes bytes) and content type."""
    body, content_type = _message_bytes(action)
    return io.BytesIO(body), content_type


def _message_bytes(action: Mapping[str, Any]) -> tuple[bytes, str]:
    legacy = "operationkind" in {k.lower() for k in action}
    data_type = str(_field(action, "dataType", False) or ("binary" if legacy else "text")).lower()
    if data_type not in _CONTENT_TYPES:
        raise ActionError(f"unknown dataType '{data_type}' (text, json or binary)")
    data = _field(action, "message" if legacy else "data", required=False)
    if legacy and data is None:
        data = _field(action, "data", required=False)
    if isinstance(data, dict) and str(data.get("type", "")).lower() == "buffer":
        try:
            return bytes(data.get("data") or []), _CONTENT_TYPES[data_type]
        except (TypeError, ValueError):
            raise ActionError("a Buffer's 'data' must be a list of byte values") from None
    if data_type == "binary" and not legacy:
        raise ActionError("WebPubSubDataType is binary, please use ArrayBuffer as message data type.")
    if not isinstance(data, str):
        raise ActionError("Message data should be string, please stringify object.")
    return data.encode("utf-8"), _CONTENT_TYPES[data_type]


async def _send_to_all(c: WebPubSubServiceClient, a: dict[str, Any]) -> None:
    body, ctype = _message(a)
    await c.send_to_all(body, excluded=_excluded(a), content_type=ctype)


async def _send_to_group(c: WebPubSubServiceClient, a: dict[str, Any]) -> None:
    body, ctype = _message(a)
    await c.send_to_group(_text(a, "group"), body, excluded=_excluded(a), content_type=ctype)


async def _send_to_user(c: WebPubSubServiceClient, a: dict[str, Any]) -> None:
    body, ctype = _message(a)
    await c.send_to_user(_text(a, "userId"), body, content_type=ctype)


async def _send_to_connection(c: WebPubSubServiceClient, a: dict[str, Any]) -> None:
    body, ctype = _message(a)
    await c.send_to_connection(_text(a, "connectionId"), body, content_type=ctype)


async def _add_user_to_group(c: WebPubSubServiceClient, a: dict[str, Any]) -> None:
    await c.add_user_to_group(_text(a, "group"), _text(a, "userId"))


async def _remove_user_from_group(c: WebPubSubServiceClient, a: dict[str, Any]) -> None:
    await c.remove_user_from_group(_text(a, "group"), _text(a, "userId"))


async def _remove_user_from_all_groups(c: WebPubSubServiceClient, a: dict[str, Any]) -> None:
    await c.remove_user_from_all_groups(_text(a, "userId"))


async def _add_connection_to_group(c: WebPubSubServiceClient, a: dict[str, Any]) -> None:
    await c.add_connection_to_group(_text(a, "group"), _text(a, "connectionId"))


async def _remove_connection_from_group(c: WebPubSubServiceClient, a: dict[str, Any]) -> None:
    await c.remove_connection_from_group(_text(a, "group"), _text(a, "connectionId"))


def _reason(a: Mapping[str, Any]) -> str | None:
    value = _field(a, "reason", required=False)
    return str(value) if value is not None else None


async def _close_all(c: WebPubSubServiceClient, a: dict[str, Any]) -> None:
    await c.close_all_connections(excluded=_excluded(a), reason=_reason(a))


async def _close_connection(c: WebPubSubServiceClient, a: dict[str, Any]) -> None:
    await c.close_connection(_text(a, "connectionId"), reason=_reason(a))


async def _close_group(c: WebPubSubServiceClient, a: dict[str, Any]) -> None:
    await c.close_group_connections(_text(a, "group"), excluded=_excluded(a), reason=_reason(a))


def _permission(a: Mapping[str, Any]) -> tuple[str, str, str | None]:
    permission = _text(a, "permission")
    target = _field(a, "targetName", required=False)
    if target is None:
        target = _field(a, "group", required=False)  # the beta names the group 'group'
    return permission, _text(a, "connectionId"), str(target) if target is not None else None


async def _grant(c: WebPubSubServiceClient, a: dict[str, Any]) -> None:
    permission, cid, target = _permission(a)
    await c.grant_permission(permission, cid, target_name=target)


async def _revoke(c: WebPubSubServiceClient, a: dict[str, Any]) -> None:
    permission, cid, target = _permission(a)
    await c.revoke_permission(permission, cid, target_name=target)


ACTIONS: dict[str, Call] = {
    "sendtoall": _send_to_all,
    "sendtogroup": _send_to_group,
    "sendtouser": _send_to_user,
    "sendtoconnection": _send_to_connection,
    "addusertogroup": _add_user_to_group,
    "removeuserfromgroup": _remove_user_from_group,
    "removeuserfromallgroups": _remove_user_from_all_groups,
    "addconnectiontogroup": _add_connection_to_group,
    "removeconnectionfromgroup": _remove_connection_from_group,
    "closeallconnections": _close_all,
    "closeclientconnection": _close_connection,
    "closegroupconnections": _close_group,
    "grantpermission": _grant,
    "revokepermission": _revoke,
}


def action_name(action: Mapping[str, Any]) -> str:
    name = _field(action, "actionName", required=False) or _field(action, "operationKind", required=False)
    if not isinstance(name, str) or not name:
        raise ActionError("the action has no 'actionName'")
    key = name.lower().removesuffix("action")
    key = _LEGACY_KINDS.get(key, key)
    if key not in ACTIONS:
        raise ActionError(f"Not supported WebPubSubOperation: '{name}'")
    return key


class WebPubSubActions:
    """The sink for ``webPubSub`` outputs; one SDK client per (service, hub), closed by :meth:`close`."""

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        self.settings = os.environ if settings is None else settings
        self._clients: dict[tuple[str, str, str], WebPubSubServiceClient] = {}

    def endpoint_of(self, binding_get: Callable[[str], Any]) -> ServiceEndpoint:
        setting = (
            binding_get("connection") or binding_get("connectionStringSetting") or DEFAULT_CONNECTION_SETTING
        )
        setting = resolve_settings(str(setting), self.settings)
        text = self.settings.get(setting)
        if not text:
            raise ConfigError(f"the app setting '{setting}' (a Web PubSub connection string) is not set")
        return parse_connection_string(text)

    def hub_of(self, binding_get: Callable[[str], Any]) -> str:
        hub = binding_get("hub") or binding_get("hubName") or self.settings.get(HUB_SETTING)
        if not hub:
            raise ConfigError(f"the binding has no 'hub' and the app setting '{HUB_SETTING}' is not set")
        return resolve_settings(str(hub), self.settings)

    def client(self, endpoint: ServiceEndpoint, hub: str) -> WebPubSubServiceClient:
        key = (endpoint.endpoint, endpoint.access_key, hub.lower())
        client = self._clients.get(key)
        if client is None:
            client = WebPubSubServiceClient(
                endpoint=endpoint.endpoint,
                hub=hub,
                credential=AzureKeyCredential(endpoint.access_key),
                retry_total=2,
            )
            self._clients[key] = client
        return client

    async def send(self, binding_get: Callable[[str], Any], value: Any) -> None:
        actions = parse_actions(value)
        if not actions:
            return
        client = self.client(self.endpoint_of(binding_get), self.hub_of(binding_get))
        for action in actions:
            name = action_name(action)
            try:
                await ACTIONS[name](client, action)
            except HttpResponseError as exc:
                raise ActionError(f"{name}: the service answered {exc.status_code}: {exc.message}") from None
            except AzureError as exc:
                raise ActionError(f"{name}: cannot reach the service: {exc.message}") from None

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()
