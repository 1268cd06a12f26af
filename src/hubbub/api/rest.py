"""The Web PubSub data-plane REST API (spec §3): 25 operations under ``/api/hubs/{hub}``.

Routing is done on the raw (still percent-encoded) path, one segment at a time,
so group names and user ids may contain ``/`` or ``:`` when the SDK encodes them.
Every handler is thin: validate, then call :class:`~hubbub.core.node.Node`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlencode

import orjson
from aiohttp import web

from hubbub.auth import (
    Permission,
    client_audience,
    mint_client_token,
    verify_rest_request,
)
from hubbub.broker.base import Command, Op, Scope
from hubbub.config import ServiceConfig
from hubbub.core.node import Node
from hubbub.errors import BadRequest, HubbubError, NotFound, PayloadTooLarge, UnsupportedMediaType
from hubbub.filters import parse_filter
from hubbub.protocols.events import DataType, Payload
from hubbub.validation import check_connection_id, check_group, check_hub, check_user_id

__all__ = ["RestApi", "error_response"]

log = logging.getLogger("hubbub.rest")

MAX_PAGE_SIZE = 200
_MEDIA_TYPES = {
    "application/json": DataType.JSON,
    "text/plain": DataType.TEXT,
    "application/octet-stream": DataType.BINARY,
}


def error_response(exc: HubbubError) -> web.Response:
    body = orjson.dumps({"code": exc.code, "message": exc.message})
    return web.Response(
        status=exc.status,
        body=body,
        content_type="application/json",
        headers={"x-ms-error-code": exc.code},
    )


@dataclass(frozen=True, slots=True)
class Call:
    """One REST request after routing: decoded path values and the raw request."""

    request: web.Request
    hub: str
    args: tuple[str, ...]

    def query_list(self, name: str) -> list[str]:
        return self.request.query.getall(name, [])

    def query(self, name: str) -> str | None:
        return self.request.query.get(name)


Handler = Callable[["RestApi", Call], Awaitable[web.StreamResponse]]

# (method, path pattern) -> handler; "*" in a pattern captures one path segment.
_ROUTES: dict[tuple[str, tuple[str, ...]], Handler] = {}


def route(method: str, *pattern: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _ROUTES[(method, pattern)] = fn
        return fn

    return register


def _match(segments: list[str]) -> tuple[dict[str, tuple[Handler, tuple[str, ...]]], bool]:
    """Handlers by method for a path; second value says whether the path is known at all."""
    found: dict[str, tuple[Handler, tuple[str, ...]]] = {}
    for (method, pattern), fn in _ROUTES.items():
        if len(pattern) != len(segments):
            continue
        args = []
        for want, got in zip(pattern, segments, strict=True):
            if want == "*":
                args.append(got)
            elif want != got:
                break
        else:
            found[method] = (fn, tuple(args))
    return found, bool(found)


def _int_param(call: Call, name: str, low: int, high: int, default: int | None) -> int | None:
    raw = call.query(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be an integer between {low} and {high}.") from None
    if not low <= value <= high:
        raise BadRequest(f"'{name}' must be an integer between {low} and {high}.")
    return value


def _filter_param(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    parse_filter(text)  # raises InvalidFilter with the position of the error
    return text


class RestApi:
    def __init__(self, config: ServiceConfig, node: Node) -> None:
        self.config = config
        self.node = node

    # -- entry points -----------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        if not self.node.broker.healthy():
            return web.Response(status=503)
        return web.Response(status=200)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = request.raw_path.split("?", 1)[0]
            segments = [unquote(s) for s in raw.split("/")[3:]]  # ['', 'api', 'hubs', ...]
            if not segments or not segments[0]:
                raise NotFound("No such API.")
            hub, rest = segments[0], segments[1:]
            handlers, known = _match(rest)
            if not known:
                raise NotFound(f"No such API: {request.method} {request.path}")
            entry = handlers.get(request.method)
            if entry is None:
                return web.Response(status=405, headers={"Allow": ", ".join(sorted(handlers))})
            self._authenticate(request)
            check_hub(hub)
            fn, args = entry
            return await fn(self, Call(request, hub, args))
        except HubbubError as exc:
            if exc.status >= 500:
                log.warning("%s %s failed: %s", request.method, request.path, exc.message)
            return error_response(exc)

    def _authenticate(self, request: web.Request) -> None:
        verify_rest_request(request.headers.get("Authorization"), self.config.access_keys, request.raw_path)

    # -- helpers ------------------------------------------------------------------------

    async def _payload(self, call: Call) -> Payload:
        request = call.request
        media = request.content_type.lower()  # aiohttp strips parameters such as charset
        data_type = _MEDIA_TYPES.get(media)
        if data_type is None:
            raise UnsupportedMediaType(
                f"Unsupported Content-Type '{media}': use application/json, text/plain or "
                "application/octet-stream."
            )
        if request.content_length is not None and request.content_length > self.config.max_frame_bytes:
            raise PayloadTooLarge(f"The message is larger than {self.config.max_frame_bytes} bytes.")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(
                f"The message is larger than {self.config.max_frame_bytes} bytes."
            ) from None
        if data_type is DataType.JSON:
            try:
                orjson.loads(body)
            except orjson.JSONDecodeError:
                raise BadRequest("The body is not valid JSON (Content-Type is application/json).") from None
        elif data_type is DataType.TEXT:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest("The body is not valid UTF-8 text (Content-Type is text/plain).") from None
        _int_param(call, "messageTtlSeconds", 0, 300, 0)
        return Payload(data_type, body)

    async def _send(
        self, call: Call, scope: Scope, target: str | None, *, excluded: bool = True, filtered: bool = True
    ) -> web.Response:
        flt = _filter_param(call.query("filter")) if filtered else None
        payload = await self._payload(call)
        await self.node.send(
            call.hub,
            scope,
            target,
            payload,
            excluded=call.query_list("excluded") if excluded else (),
            filter=flt,
        )
        return web.Response(status=202)

    async def _command(
        self, call: Call, op: Op, scope: Scope, target: str | None, status: int, **fields: Any
    ) -> web.Response:
        await self.node.publish(Command(op, call.hub, scope, target, **fields))
        return web.Response(status=status)

    async def _close(self, call: Call, scope: Scope, target: str | None) -> web.Response:
        """The close operations: ``excluded`` connections stay, ``reason`` reaches the clients."""
        excluded = tuple(call.query_list("excluded"))
        return await self._command(
            call, Op.CLOSE, scope, target, 204, excluded=excluded, reason=call.query("reason")
        )

    async def _require_connection(self, call: Call, connection_id: str) -> None:
        if not await self.node.connection_exists(call.hub, connection_id):
            raise NotFound(f"Connection '{connection_id}' does not exist.")

    # -- hub-wide -------------------------------------------------------------------------

    @route("POST", ":send")
    async def send_to_all(self, call: Call) -> web.Response:
        return await self._send(call, Scope.ALL, None)

    @route("POST", ":closeConnections")
    async def close_all(self, call: Call) -> web.Response:
        return await self._close(call, Scope.ALL, None)

    @route("POST", ":generateToken")
    async def generate_token(self, call: Call) -> web.Response:
        minutes = _int_param(call, "minutesToExpire", 1, 2**31 - 1, 60) or 60
        client_type = call.query("clientType") or "Default"
        url = call.request.url
        endpoint = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.explicit_port else "")
        audience = client_audience(endpoint, call.hub, client_type)
        token = mint_client_token(
            self.config.primary_key,
            audience,
            user_id=call.query("userId") or None,
            roles=call.query_list("role"),
            groups=call.query_list("group"),
            minutes_to_expire=minutes,
        )
        return web.json_response({"token": token})

    async def _filtered_groups(self, call: Call, op: Op) -> web.Response:
        try:
            body = orjson.loads(await call.request.read())
        except orjson.JSONDecodeError:
            raise BadRequest('The body must be JSON: {"groups": [...], "filter": "..."}.') from None
        if not isinstance(body, dict):
            raise BadRequest("The body must be a JSON object with 'groups' and 'filter'.")
        groups = body.get("groups")
        if not isinstance(groups, list) or not groups or not all(isinstance(g, str) for g in groups):
            raise BadRequest("'groups' must be a non-empty array of group names.")
        for group in groups:
            check_group(group)
        flt = body.get("filter")
        if flt is not None and not isinstance(flt, str):
            raise BadRequest("'filter' must be a string.")
        await self.node.publish(
            Command(op, call.hub, Scope.ALL, None, groups=tuple(groups), filter=_filter_param(flt))
        )
        return web.Response(status=200)

    @route("POST", ":addToGroups")
    async def add_filtered_to_groups(self, call: Call) -> web.Response:
        return await self._filtered_groups(call, Op.ADD_TO_GROUPS)

    @route("POST", ":removeFromGroups")
    async def remove_filtered_from_groups(self, call: Call) -> web.Response:
        return await self._filtered_groups(call, Op.REMOVE_FROM_GROUPS)

    # -- connections ------------------------------------------------------------------------

    @route("DELETE", "connections", "*")
    async def close_connection(self, call: Call) -> web.Response:
        cid = check_connection_id(call.args[0])
        return await self._command(call, Op.CLOSE, Scope.CONNECTION, cid, 204, reason=call.query("reason"))

    @route("HEAD", "connections", "*")
    async def connection_exists(self, call: Call) -> web.Response:
        exists = await self.node.connection_exists(call.hub, call.args[0])
        return web.Response(status=200 if exists else 404)

    @route("POST", "connections", "*", ":send")
    async def send_to_connection(self, call: Call) -> web.Response:
        cid = check_connection_id(call.args[0])
        return await self._send(call, Scope.CONNECTION, cid, excluded=False, filtered=False)

    @route("DELETE", "connections", "*", "groups")
    async def remove_connection_from_all_groups(self, call: Call) -> web.Response:
        cid = check_connection_id(call.args[0])
        return await self._command(call, Op.REMOVE_FROM_ALL_GROUPS, Scope.CONNECTION, cid, 204)

    # -- groups -------------------------------------------------------------------------------

    @route("HEAD", "groups", "*")
    async def group_exists(self, call: Call) -> web.Response:
        group = check_group(call.args[0])
        return web.Response(status=200 if await self.node.group_exists(call.hub, group) else 404)

    @route("POST", "groups", "*", ":closeConnections")
    async def close_group(self, call: Call) -> web.Response:
        group = check_group(call.args[0])
        return await self._close(call, Scope.GROUP, group)

    @route("POST", "groups", "*", ":send")
    async def send_to_group(self, call: Call) -> web.Response:
        return await self._send(call, Scope.GROUP, check_group(call.args[0]))

    @route("GET", "groups", "*", "connections")
    async def list_group_connections(self, call: Call) -> web.Response:
        group = check_group(call.args[0])
        page_size = _int_param(call, "maxpagesize", 1, MAX_PAGE_SIZE, MAX_PAGE_SIZE) or MAX_PAGE_SIZE
        top = _int_param(call, "top", 1, 2**31 - 1, None)
        after = _decode_continuation(call.query("continuationToken"))
        members = sorted(await self.node.group_members(call.hub, group))
        if after is not None:
            members = [m for m in members if m[0] > after]
        limit = page_size if top is None else min(page_size, top)
        page, more = members[:limit], len(members) > limit and (top is None or top > limit)
        body: dict[str, Any] = {"value": [{"connectionId": c, "userId": u} for c, u in page]}
        if more and page:
            query: dict[str, str] = {
                "maxpagesize": str(page_size),
                "continuationToken": _encode_continuation(page[-1][0]),
            }
            if top is not None:
                query["top"] = str(top - len(page))
            api_version = call.query("api-version")
            if api_version:
                query["api-version"] = api_version
            url = call.request.url
            path = f"/api/hubs/{quote(call.hub, safe='')}/groups/{quote(group, safe='')}/connections"
            body["nextLink"] = f"{url.scheme}://{url.raw_authority}{path}?{urlencode(query)}"
        return web.json_response(body)

    @route("DELETE", "groups", "*", "connections", "*")
    async def remove_connection_from_group(self, call: Call) -> web.Response:
        group, cid = check_group(call.args[0]), check_connection_id(call.args[1])
        return await self._command(call, Op.REMOVE_FROM_GROUPS, Scope.CONNECTION, cid, 204, groups=(group,))

    @route("PUT", "groups", "*", "connections", "*")
    async def add_connection_to_group(self, call: Call) -> web.Response:
        group, cid = check_group(call.args[0]), check_connection_id(call.args[1])
        await self._require_connection(call, cid)
        return await self._command(call, Op.ADD_TO_GROUPS, Scope.CONNECTION, cid, 200, groups=(group,))

    # -- permissions ------------------------------------------------------------------------------

    def _permission_args(self, call: Call) -> tuple[Permission, str, str | None]:
        permission = Permission.parse(call.args[0])
        cid = check_connection_id(call.args[1])
        target = call.query("targetName") or None
        if target is not None:
            check_group(target)
        return permission, cid, target

    @route("PUT", "permissions", "*", "connections", "*")
    async def grant_permission(self, call: Call) -> web.Response:
        permission, cid, target = self._permission_args(call)
        await self._require_connection(call, cid)
        return await self._command(
            call, Op.GRANT, Scope.CONNECTION, cid, 200, permission=permission.value, permission_target=target
        )

    @route("DELETE", "permissions", "*", "connections", "*")
    async def revoke_permission(self, call: Call) -> web.Response:
        permission, cid, target = self._permission_args(call)
        return await self._command(
            call, Op.REVOKE, Scope.CONNECTION, cid, 204, permission=permission.value, permission_target=target
        )

    @route("HEAD", "permissions", "*", "connections", "*")
    async def check_permission(self, call: Call) -> web.Response:
        permission, cid, target = self._permission_args(call)
        has = await self.node.check_permission(call.hub, cid, permission, target)
        return web.Response(status=200 if has else 404)

    # -- users ------------------------------------------------------------------------------------

    @route("HEAD", "users", "*")
    async def user_exists(self, call: Call) -> web.Response:
        return web.Response(status=200 if await self.node.user_exists(call.hub, call.args[0]) else 404)

    @route("POST", "users", "*", ":closeConnections")
    async def close_user(self, call: Call) -> web.Response:
        user = check_user_id(call.args[0])
        return await self._close(call, Scope.USER, user)

    @route("POST", "users", "*", ":send")
    async def send_to_user(self, call: Call) -> web.Response:
        return await self._send(call, Scope.USER, check_user_id(call.args[0]), excluded=False)

    @route("DELETE", "users", "*", "groups")
    async def remove_user_from_all_groups(self, call: Call) -> web.Response:
        user = check_user_id(call.args[0])
        return await self._command(call, Op.REMOVE_FROM_ALL_GROUPS, Scope.USER, user, 204)

    @route("DELETE", "users", "*", "groups", "*")
    async def remove_user_from_group(self, call: Call) -> web.Response:
        user, group = check_user_id(call.args[0]), check_group(call.args[1])
        return await self._command(call, Op.REMOVE_FROM_GROUPS, Scope.USER, user, 204, groups=(group,))

    @route("PUT", "users", "*", "groups", "*")
    async def add_user_to_group(self, call: Call) -> web.Response:
        user, group = check_user_id(call.args[0]), check_group(call.args[1])
        return await self._command(call, Op.ADD_TO_GROUPS, Scope.USER, user, 200, groups=(group,))


def _encode_continuation(connection_id: str) -> str:
    return base64.urlsafe_b64encode(connection_id.encode()).decode().rstrip("=")


def _decode_continuation(token: str | None) -> str | None:
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, ValueError):
        raise BadRequest("Invalid continuationToken.") from None
