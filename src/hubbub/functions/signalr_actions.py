"""The SignalR service seen from the functions host: its connection string, the tokens the
extension signs (client access tokens for ``signalRConnectionInfo``, REST tokens), and the
``signalR`` output binding's messages and group actions sent as REST calls (aiohttp).

What a function sets (``out.set(json.dumps({...}))``; a JSON string, object or array, or a
``dict``/``list``) is read like the extension reads it (names case-insensitive): an object with
``target`` (``arguments`` optional) is a **message** — to ``connectionId``, else ``userId``, else
``groupName``, else everyone; else an object with ``action`` (``add``, ``remove``, ``removeAll``) is
a **group action** on ``groupName`` for ``connectionId``, else ``userId`` (``removeAll`` is for users:
with a ``connectionId`` it does nothing, as in the extension). Anything else fails the invocation
with the extension's message. ``endpoints`` (multi-endpoint routing) is accepted and
ignored: a hubbub connection string names one service.

Each item is one REST call of the 2022-06-01 API (``/api/hubs/{hub}/…?api-version=2022-06-01``,
hub lowercased as the SDK does), authorized with an HS256 token signed with the connection
string's ``AccessKey`` whose ``aud`` is the request URL without port (the SDK's form). A status
other than 2xx fails the invocation, except 404 ``Error.Connection.NotExisted`` when adding a
connection to a group (the SDK takes that as done).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import jwt

from hubbub.functions.appconfig import ConfigError, output_objects, resolve_settings

__all__ = [
    "DEFAULT_CONNECTION_SETTING",
    "SignalRActionError",
    "SignalRActions",
    "SignalREndpoint",
    "client_token",
    "parse_items",
    "parse_signalr_connection_string",
]

log = logging.getLogger("hubbub.functions")

DEFAULT_CONNECTION_SETTING = "AzureSignalRConnectionString"
API_VERSION = "2022-06-01"
TOKEN_LIFETIME_SECONDS = 3600
REQUEST_TIMEOUT_SECONDS = 100.0  # AzureSignalRHttpClientTimeout's default
#: claim types the SDK renames to ``asrs.u.<type>`` when a user claim would collide with them
SYSTEM_CLAIMS = frozenset(
    {"aud", "exp", "iat", "nbf", "iss", "actort", "acr", "azp", "c_hash", "jti", "nonce"}
)


class SignalRActionError(Exception):
    """An output item that cannot be read or that the service refused."""


@dataclass(frozen=True)
class SignalREndpoint:
    #: ``Endpoint`` with ``Port`` applied (no trailing ``/``)
    endpoint: str
    access_key: str
    #: what clients are given (``ClientEndpoint``, default ``endpoint``)
    client_endpoint: str
    #: where REST calls go (``ServerEndpoint``, default ``endpoint``)
    server_endpoint: str

    @property
    def audience_base(self) -> str:
        """``scheme://host`` of ``Endpoint``: the SDK builds every ``aud`` on it, port dropped."""
        parts = urlsplit(self.endpoint)
        return f"{parts.scheme}://{parts.hostname}"

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.access_key,) if self.access_key else ()


def _absolute(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"the connection string's {what} must be an http:// or https:// URL")
    return value.rstrip("/")


def parse_signalr_connection_string(text: str) -> SignalREndpoint:
    """``Endpoint=…;[Port=…;]AccessKey=…;Version=1.0;[ClientEndpoint=…;][ServerEndpoint=…;]`` (§1.1)."""
    fields: dict[str, str] = {}
    for segment in text.split(";"):
        key, sep, value = segment.partition("=")
        if not sep or not key.strip():
            continue
        name = key.strip().lower()
        if name in fields:
            raise ConfigError(f"the connection string has '{key.strip()}' twice")
        fields[name] = value.strip()
    if not fields.get("endpoint"):
        raise ConfigError("the connection string has no 'Endpoint'")
    endpoint = _absolute(fields["endpoint"], "Endpoint")
    port = fields.get("port")
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("the connection string's Port must be a number from 1 to 65535")
        parts = urlsplit(endpoint)
        endpoint = f"{parts.scheme}://{parts.hostname}:{port}{parts.path}".rstrip("/")
    if not fields.get("accesskey") and not fields.get("authtype"):
        raise ConfigError("the connection string has no 'AccessKey'")
    client = fields.get("clientendpoint")
    server = fields.get("serverendpoint")
    client = _absolute(client, "ClientEndpoint") if client else endpoint
    server = _absolute(server, "ServerEndpoint") if server else endpoint
    return SignalREndpoint(endpoint, fields.get("accesskey", ""), client, server)


def _sign(claims: dict[str, Any], key: str) -> str:
    with warnings.catch_warnings():  # PyJWT warns about keys under 32 bytes; the key is the user's
        warnings.simplefilter("ignore")
        return jwt.encode(claims, key, algorithm="HS256")


def client_token(
    endpoint: SignalREndpoint, hub: str, user_id: str | None, claims: Mapping[str, Any] | None = None
) -> tuple[str, str]:
    """(client URL, access token) as the extension's ``signalRConnectionInfo`` makes them."""
    hub = hub.lower()
    now = int(time.time())
    payload: dict[str, Any] = {}
    for name, value in (claims or {}).items():
        payload[f"asrs.u.{name}" if name.lower() in SYSTEM_CLAIMS else name] = value
    if user_id:
        payload["asrs.s.uid"] = user_id
    payload.update(
        aud=f"{endpoint.audience_base}/client/?hub={hub}", iat=now, nbf=now, exp=now + TOKEN_LIFETIME_SECONDS
    )
    return f"{endpoint.client_endpoint}/client/?hub={hub}", _sign(payload, endpoint.access_key)


def parse_items(value: Any) -> list[dict[str, Any]]:
    """The objects of an output value (JSON text, bytes, a dict or a list of them)."""
    try:
        return output_objects(value, "signalR", lambda item: UNCONVERTIBLE)
    except ValueError as exc:
        raise SignalRActionError(str(exc)) from None


def _get(item: Mapping[str, Any], name: str) -> Any:
    return next((v for k, v in item.items() if k.lower() == name.lower()), None)


def _has(item: Mapping[str, Any], name: str) -> bool:
    return any(k.lower() == name.lower() for k in item)


def _text(item: Mapping[str, Any], name: str) -> str | None:
    value = _get(item, name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SignalRActionError(f"'{name}' must be a string")
    return value


@dataclass(frozen=True)
class RestCall:
    method: str
    path: str  # after /api/hubs/{hub}
    body: bytes | None = None
    #: a 404 with this x-ms-error-code counts as success
    tolerated: str | None = None


def _seg(value: str) -> str:
    return quote(value, safe="")


UNCONVERTIBLE = "Unable to convert JObject to valid output binding type, check parameters."
_GROUP_ACTIONS = ("add", "remove", "removeall")


def _message_call(item: Mapping[str, Any]) -> RestCall | None:
    """A message (``target`` required, ``arguments`` optional), or None if the item is not one."""
    target, arguments = _get(item, "target"), _get(item, "arguments")
    if not isinstance(target, str) or (arguments is not None and not isinstance(arguments, list)):
        return None
    if not target:
        raise SignalRActionError("'target' must be a non-empty string")
    body = json.dumps({"target": target, "arguments": arguments or []}, ensure_ascii=False).encode()
    if connection := _text(item, "connectionId"):
        return RestCall("POST", f"/connections/{_seg(connection)}/:send", body)
    if user := _text(item, "userId"):
        return RestCall("POST", f"/users/{_seg(user)}/:send", body)
    if group := _text(item, "groupName"):
        return RestCall("POST", f"/groups/{_seg(group)}/:send", body)
    return RestCall("POST", "/:send", body)


def to_call(item: Mapping[str, Any]) -> RestCall | None:
    """The REST call for one output item (message or group action); None when there is nothing to do.

    As in the extension, an item is first read as a message, then as a group action (``action``
    required; an enum, case-insensitive), else it is refused. ``removeAll`` with a ``connectionId``
    does nothing, as in the extension (only users can be removed from all groups there).
    """
    call = _message_call(item)
    if call is not None:
        return call
    action = _get(item, "action")
    if not isinstance(action, str) or action.lower() not in _GROUP_ACTIONS:
        raise SignalRActionError(UNCONVERTIBLE)
    action = action.lower()
    group = _text(item, "groupName")
    connection, user = _text(item, "connectionId"), _text(item, "userId")
    if not connection and not user:
        raise SignalRActionError("ConnectionId and UserId cannot be null or empty together")
    if connection and action == "removeall":
        log.info("signalR output: 'removeAll' applies to users only; ignored for connection %s", connection)
        return None
    if action != "removeall" and not group:
        raise SignalRActionError("'groupName' is required to add to or remove from a group")
    if connection:
        path = f"/groups/{_seg(group or '')}/connections/{_seg(connection)}"
        if action == "add":
            return RestCall("PUT", path, tolerated="Error.Connection.NotExisted")
        return RestCall("DELETE", path)
    assert user is not None
    if action == "removeall":
        return RestCall("DELETE", f"/users/{_seg(user)}/groups")
    path = f"/users/{_seg(user)}/groups/{_seg(group or '')}"
    return RestCall("PUT" if action == "add" else "DELETE", path)


class SignalRActions:
    """The sink for ``signalR`` outputs, and the settings lookups the bindings share."""

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        self.settings = os.environ if settings is None else settings
        self._http: aiohttp.ClientSession | None = None

    def endpoint_of(self, binding_get: Callable[[str], Any]) -> SignalREndpoint:
        setting = (
            binding_get("connectionStringSetting")
            or binding_get("connection")
            or binding_get("connectionStringSettingName")
            or DEFAULT_CONNECTION_SETTING
        )
        setting = resolve_settings(str(setting), self.settings)
        text = self.settings.get(setting)
        if not text:
            raise ConfigError(f"the app setting '{setting}' (a SignalR connection string) is not set")
        return parse_signalr_connection_string(text)

    def hub_of(self, binding_get: Callable[[str], Any]) -> str:
        hub = binding_get("hubName") or binding_get("hub") or self.settings.get("AzureSignalRHubName")
        if not hub:
            raise ConfigError("the binding has no 'hubName'")
        return resolve_settings(str(hub), self.settings)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS))
        return self._http

    async def call(self, endpoint: SignalREndpoint, hub: str, call: RestCall) -> None:
        hub = hub.lower()
        path = f"/api/hubs/{_seg(hub)}{call.path}?api-version={API_VERSION}"
        now = int(time.time())
        claims = {"aud": endpoint.audience_base + path, "iat": now, "nbf": now}
        claims["exp"] = now + TOKEN_LIFETIME_SECONDS
        headers = {"Authorization": f"Bearer {_sign(claims, endpoint.access_key)}"}
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._session().request(
                call.method, endpoint.server_endpoint + path, data=call.body, headers=headers
            ) as response:
                if response.status < 300:
                    return
                code = response.headers.get("x-ms-error-code")
                if response.status == 404 and call.tolerated and code == call.tolerated:
                    return
                text = (await response.content.read(4096)).decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SignalRActionError(f"cannot reach the SignalR service: {exc}") from None
        raise SignalRActionError(f"{call.method} {path}: the service answered {response.status}: {text}")

    async def send(self, binding_get: Callable[[str], Any], value: Any) -> None:
        items = parse_items(value)
        if not items:
            return
        calls = [to_call(item) for item in items]  # every item is read before anything is sent
        endpoint, hub = self.endpoint_of(binding_get), self.hub_of(binding_get)
        for call in calls:
            if call is not None:
                await self.call(endpoint, hub, call)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
