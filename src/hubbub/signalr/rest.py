"""The SignalR data-plane REST API for serverless apps (digest §3): both path families.

``/api/v1/hubs/{hub}/…`` (API 1.0) and ``/api/hubs/{hub}/…`` (``api-version=2022-06-01`` and
later; the version is not required). As the emulator does, the ``:send`` suffix is optional and
both orders of ``groups/{g}/users/{u}`` ⇄ ``users/{u}/groups/{g}`` and ``groups/{g}/connections/{c}``
⇄ ``connections/{c}/groups/{g}`` are accepted. Routing works on the raw, percent-encoded path one
segment at a time, so ids and group names may contain ``/``. Every handler is thin: validate, then
publish a :class:`~hubbub.broker.base.Command` or ask the node.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from hubbub.auth import verify_rest_request
from hubbub.broker.base import Command, Op, Scope
from hubbub.errors import BadRequest, HubbubError, NotFound, PayloadTooLarge
from hubbub.protocols.events import DataType, Payload
from hubbub.signalr.codecs import complete_multi_protocol, invocation_record
from hubbub.signalr.service import SignalRService
from hubbub.signalr.tokens import client_url, mint_client_token
from hubbub.validation import check_connection_id, check_group, check_hub, check_user_id

__all__ = ["SignalRRestApi", "UnsupportedContentType", "error_response"]

log = logging.getLogger("hubbub.signalr.rest")

MISSING_MESSAGE = "Message in request body is required."


class UnsupportedContentType(BadRequest):
    """SignalR's REST API is ASP.NET Core MVC: an unknown body type is 415, not 400."""

    status = 415
    code = "UnsupportedMediaType"


class _Missing(NotFound):
    """A 404 whose code the SDK reads from ``x-ms-error-code`` (HEAD responses have no body)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def error_response(exc: HubbubError, *, head: bool = False) -> web.Response:
    headers = {"x-ms-error-code": exc.code}
    if head:
        return web.Response(status=exc.status, headers=headers)
    body = orjson.dumps({"code": exc.code, "message": exc.message, "target": None, "details": None})
    return web.Response(status=exc.status, body=body, content_type="application/json", headers=headers)


@dataclass(frozen=True, slots=True)
class Call:
    request: web.Request
    hub: str
    args: tuple[str, ...]
    v1: bool

    def query(self, name: str) -> str | None:
        return self.request.query.get(name)

    def excluded(self) -> tuple[str, ...]:
        return tuple(self.request.query.getall("excluded", []))


Handler = Callable[["SignalRRestApi", Call], Awaitable[web.Response]]
_ROUTES: list[tuple[str, tuple[str, ...], Handler, tuple[int, ...]]] = []


def route(method: str, *pattern: str, order: tuple[int, ...] | None = None) -> Callable[[Handler], Handler]:
    """Register ``pattern`` (``*`` = one segment); ``order`` maps captured values to arguments."""

    def register(fn: Handler) -> Handler:
        stars = sum(p == "*" for p in pattern)
        _ROUTES.append((method, pattern, fn, order or tuple(range(stars))))
        return fn

    return register


def _match(segments: list[str]) -> dict[str, tuple[Handler, tuple[str, ...]]]:
    found: dict[str, tuple[Handler, tuple[str, ...]]] = {}
    for method, pattern, fn, order in _ROUTES:
        if len(pattern) != len(segments):
            continue
        captured = []
        for want, got in zip(pattern, segments, strict=True):
            if want == "*":
                captured.append(got)
            elif want != got:
                break
        else:
            found.setdefault(method, (fn, tuple(captured[i] for i in order)))
    return found


class SignalRRestApi:
    def __init__(self, service: SignalRService) -> None:
        self.service = service
        self.node = service.node
        self.config = service.config

    # -- entry points -------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.node.broker.healthy() else 503)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        head = request.method == "HEAD"
        try:
            raw = request.raw_path.split("?", 1)[0]
            parts = raw.split("/")  # ['', 'api', 'hubs', hub, ...] or ['', 'api', 'v1', 'hubs', hub, ...]
            v1 = parts[2] == "v1"
            segments = [unquote(s) for s in parts[4 if v1 else 3 :]]
            if not segments or not segments[0]:
                raise NotFound("No such API.")
            handlers = _match(segments[1:])
            if not handlers:
                raise NotFound(f"No such API: {request.method} {request.path}")
            entry = handlers.get("GET" if head and "HEAD" not in handlers else request.method)
            if entry is None:
                return web.Response(status=405, headers={"Allow": ", ".join(sorted(handlers))})
            self._authenticate(request)
            hub = check_hub(segments[0])
            application = request.query.get("application")
            if application:
                hub = check_hub(f"{check_hub(application)}_{hub}".lower())
            fn, args = entry
            return await fn(self, Call(request, hub, args, v1))
        except HubbubError as exc:
            if exc.status >= 500:
                log.warning("%s %s failed: %s", request.method, request.path, exc.message)
            return error_response(exc, head=head)

    def _authenticate(self, request: web.Request) -> None:
        verify_rest_request(request.headers.get("Authorization"), self.config.access_keys, request.raw_path)

    # -- helpers ------------------------------------------------------------------------------

    async def _payload(self, call: Call) -> Payload:
        request = call.request
        limit = self.config.max_rest_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        body = await request.content.read(limit + 1)
        if len(body) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        media = request.content_type.lower() if "Content-Type" in request.headers else "application/json"
        if media == "application/json":
            return Payload(DataType.JSON, _invocation(body))
        if media == "application/octet-stream":
            return Payload(DataType.BINARY, complete_multi_protocol(body, limit))
        raise UnsupportedContentType(
            f"Unsupported Content-Type '{media[:100]}': use application/json (or the SDK's "
            "application/octet-stream multi-protocol body)."
        )

    async def _send(
        self, call: Call, scope: Scope, target: str | None, *, excluded: bool = False
    ) -> web.Response:
        payload = await self._payload(call)
        await self.node.send(call.hub, scope, target, payload, excluded=call.excluded() if excluded else ())
        return web.Response(status=202)

    async def _publish(self, call: Call, status: int, command: Command) -> web.Response:
        await self.node.publish(command)
        return web.Response(status=status)

    def _close(self, call: Call, scope: Scope, target: str | None) -> Command:
        return Command(
            Op.CLOSE, call.hub, scope, target, excluded=call.excluded(), reason=call.query("reason")
        )

    @staticmethod
    def _found(exists: bool, code: str, message: str) -> web.Response:
        if not exists:
            raise _Missing(code, message)
        return web.Response(status=200)

    # -- hub ------------------------------------------------------------------------------------

    @route("POST")
    @route("POST", ":send")
    async def broadcast(self, call: Call) -> web.Response:
        return await self._send(call, Scope.ALL, None, excluded=True)

    @route("POST", ":closeConnections")
    async def close_all(self, call: Call) -> web.Response:
        return await self._publish(call, 204, self._close(call, Scope.ALL, None))

    @route("POST", ":generateToken")
    async def generate_token(self, call: Call) -> web.Response:
        raw = call.query("minutesToExpire") or "60"
        try:
            minutes = int(raw)
        except ValueError:
            minutes = 0
        if not 1 <= minutes <= 2**31 - 1:
            raise BadRequest("'minutesToExpire' must be a positive integer.")
        url = call.request.url
        audience = client_url(f"{url.scheme}://{url.host}", call.hub)
        token = mint_client_token(
            self.config.primary_key, audience, user_id=call.query("userId"), minutes_to_expire=minutes
        )
        return web.json_response({"token": token})

    # -- connections ------------------------------------------------------------------------------

    @route("POST", "connections", "*")
    @route("POST", "connections", "*", ":send")
    async def send_to_connection(self, call: Call) -> web.Response:
        return await self._send(call, Scope.CONNECTION, check_connection_id(call.args[0]))

    @route("GET", "connections", "*")
    async def connection_exists(self, call: Call) -> web.Response:
        exists = await self.node.connection_exists(call.hub, check_connection_id(call.args[0]))
        return self._found(exists, "Warning.Connection.NotExisted", "The connection does not exist.")

    @route("DELETE", "connections", "*")
    async def close_connection(self, call: Call) -> web.Response:
        command = self._close(call, Scope.CONNECTION, check_connection_id(call.args[0]))
        return await self._publish(call, 202 if call.v1 else 200, command)

    @route("DELETE", "connections", "*", "groups")
    async def remove_connection_from_all_groups(self, call: Call) -> web.Response:
        cid = check_connection_id(call.args[0])
        return await self._publish(
            call, 200, Command(Op.REMOVE_FROM_ALL_GROUPS, call.hub, Scope.CONNECTION, cid)
        )

    @route("PUT", "groups", "*", "connections", "*")
    @route("PUT", "connections", "*", "groups", "*", order=(1, 0))
    async def add_connection_to_group(self, call: Call) -> web.Response:
        group, cid = check_group(call.args[0]), check_connection_id(call.args[1])
        if not await self.node.connection_exists(call.hub, cid):
            raise _Missing("Error.Connection.NotExisted", f"Connection '{cid[:64]}' does not exist.")
        command = Command(Op.ADD_TO_GROUPS, call.hub, Scope.CONNECTION, cid, groups=(group,))
        return await self._publish(call, 200, command)

    @route("DELETE", "groups", "*", "connections", "*")
    @route("DELETE", "connections", "*", "groups", "*", order=(1, 0))
    async def remove_connection_from_group(self, call: Call) -> web.Response:
        group, cid = check_group(call.args[0]), check_connection_id(call.args[1])
        command = Command(Op.REMOVE_FROM_GROUPS, call.hub, Scope.CONNECTION, cid, groups=(group,))
        return await self._publish(call, 200, command)

    # -- groups -----------------------------------------------------------------------------------

    @route("POST", "groups", "*")
    @route("POST", "groups", "*", ":send")
    async def send_to_group(self, call: Call) -> web.Response:
        return await self._send(call, Scope.GROUP, check_group(call.args[0]), excluded=True)

    @route("GET", "groups", "*")
    async def group_exists(self, call: Call) -> web.Response:
        exists = await self.node.group_exists(call.hub, check_group(call.args[0]))
        return self._found(exists, "Warning.Group.NotExisted", "The group does not exist.")

    @route("POST", "groups", "*", ":closeConnections")
    async def close_group(self, call: Call) -> web.Response:
        return await self._publish(call, 204, self._close(call, Scope.GROUP, check_group(call.args[0])))

    # -- users ------------------------------------------------------------------------------------

    @route("POST", "users", "*")
    @route("POST", "users", "*", ":send")
    async def send_to_user(self, call: Call) -> web.Response:
        return await self._send(call, Scope.USER, check_user_id(call.args[0]))

    @route("GET", "users", "*")
    async def user_exists(self, call: Call) -> web.Response:
        exists = await self.node.user_exists(call.hub, check_user_id(call.args[0]))
        return self._found(exists, "Warning.User.NotExisted", "The user does not exist.")

    @route("POST", "users", "*", ":closeConnections")
    async def close_user(self, call: Call) -> web.Response:
        return await self._publish(call, 204, self._close(call, Scope.USER, check_user_id(call.args[0])))

    @route("GET", "users", "*", "groups", "*")
    @route("GET", "groups", "*", "users", "*", order=(1, 0))
    async def user_in_group(self, call: Call) -> web.Response:
        user, group = check_user_id(call.args[0]), check_group(call.args[1])
        exists = await self.service.user_in_group(call.hub, user, group)
        return self._found(exists, "Info.User.NotInGroup", "The user is not in the group.")

    @route("PUT", "users", "*", "groups", "*")
    @route("PUT", "groups", "*", "users", "*", order=(1, 0))
    async def add_user_to_group(self, call: Call) -> web.Response:
        user, group = check_user_id(call.args[0]), check_group(call.args[1])
        await self.service.add_user_to_group(call.hub, user, group, _ttl(call.query("ttl")))
        return web.Response(status=202 if call.v1 else 200)

    @route("DELETE", "users", "*", "groups", "*")
    @route("DELETE", "groups", "*", "users", "*", order=(1, 0))
    async def remove_user_from_group(self, call: Call) -> web.Response:
        user, group = check_user_id(call.args[0]), check_group(call.args[1])
        await self.service.remove_user_from_group(call.hub, user, group)
        return web.Response(status=202 if call.v1 else 204)

    @route("DELETE", "users", "*", "groups")
    async def remove_user_from_all_groups(self, call: Call) -> web.Response:
        await self.service.remove_user_from_all_groups(call.hub, check_user_id(call.args[0]))
        return web.Response(status=200 if call.v1 else 204)


def _ttl(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        ttl = int(raw)
    except ValueError:
        ttl = -1
    if not 0 <= ttl <= 2**31 - 1:
        raise BadRequest("'ttl' must be a number of seconds between 0 and 2147483647.")
    return ttl


def _invocation(body: bytes) -> bytes:
    """The JSON Invocation record of a send body ``{"target": …, "arguments": […]}``.

    Property names are matched case-insensitively (the .NET SDK writes ``Target``/``Arguments``);
    ``arguments`` may be missing or null (no arguments).
    """
    if not body.strip():
        raise BadRequest(MISSING_MESSAGE)
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(obj, dict):
        raise BadRequest(MISSING_MESSAGE)
    fields: dict[str, Any] = {}
    for key, value in obj.items():
        fields.setdefault(key.lower(), value)
    target = fields.get("target")
    if not isinstance(target, str) or not target:
        raise BadRequest("The 'target' of the message is required and must be a non-empty string.")
    arguments = fields.get("arguments")
    if arguments is None:
        arguments = []
    if not isinstance(arguments, list):
        raise BadRequest("The 'arguments' of the message must be an array.")
    return invocation_record(target, arguments)
