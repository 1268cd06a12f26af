"""HTTP triggers: ``/<routePrefix>/<route>``, keys, ``func.HttpRequest`` in, ``func.HttpResponse`` out.

* A path no function's route matches is 404; a route that matches with a method the function does
  not accept is 405 (with ``Allow``).
* ``authLevel`` ``function``/``admin`` need a key (``?code=`` or ``x-functions-key``) unless key
  checks are off (``--no-auth``, as Core Tools runs locally); a missing or wrong key is 401.
* The request reaches the function as the Python worker builds it: lower-case header names (several
  values joined with ``, ``), query values joined with ``,``, route values, the body as bytes.
* A ``str`` result is a ``text/plain; charset=utf-8`` 200; a ``func.HttpResponse`` keeps its status,
  headers (several ``Set-Cookie`` included) and body, and without a ``Content-Type`` gets its
  ``mimetype`` (``; charset=…`` for ``text/*``); no response at all is 204. An exception (or an
  output binding that fails) is 500 with an empty body; the log has the traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import azure.functions as func
import orjson
from aiohttp import web
from azure.functions import _abc as func_abc
from azure.functions import http as func_http
from multidict import CIMultiDict

from hubbub.functions.expressions import BindingData
from hubbub.functions.invoke import FunctionFailed, Invocation, Invoker
from hubbub.functions.keys import KeyStore
from hubbub.functions.loader import Binding, FunctionDef
from hubbub.functions.routes import RouteError, RouteTemplate

__all__ = ["HttpFunctions", "HttpRoute", "check_http_output", "given_key", "split_path", "to_response"]

log = logging.getLogger("hubbub.functions")

ALL_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE")


@dataclass
class HttpRoute:
    function: FunctionDef
    template: RouteTemplate
    methods: frozenset[str] | None  # None: every method
    auth_level: str

    @property
    def method_list(self) -> list[str]:
        return sorted(self.methods) if self.methods is not None else ["ALL"]


def split_path(raw_path: str) -> list[str]:
    """Decoded path segments (``%2F`` stays inside its segment); a trailing ``/`` is ignored."""
    path = raw_path.split("?", 1)[0].strip("/")
    return [unquote(s) for s in path.split("/")] if path else []


def given_key(request: web.Request) -> str | None:
    """The key a caller passed: ``?code=`` (any case) or the ``x-functions-key`` header."""
    for name, value in request.query.items():
        if name.lower() == "code":
            return value
    return request.headers.get("x-functions-key")


def _joined(pairs: Iterable[tuple[str, str]], sep: str, lower: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in pairs:
        k = key.lower() if lower else key
        out[k] = f"{out[k]}{sep}{value}" if k in out else value
    return out


def to_func_request(
    request: web.Request, body: bytes, route_values: Mapping[str, str], extra_headers: Mapping[str, str]
) -> func.HttpRequest:
    # App Service Authentication sets these; a client's own copies never reach the function
    incoming = (
        (k, v)
        for k, v in request.headers.items()
        if not k.lower().startswith(("x-ms-client-principal", "x-ms-token-"))
    )
    headers = _joined(incoming, ", ", lower=True)
    headers.update({k.lower(): v for k, v in extra_headers.items()})
    return func_http.HttpRequest(
        request.method,
        str(request.url),
        headers=headers,
        params=_joined(request.query.items(), ",", lower=False),
        route_params=dict(route_values),
        body_type="bytes",
        body=body,
    )


def binding_data(req: func.HttpRequest) -> BindingData:
    data = BindingData({"headers": dict(req.headers), "query": dict(req.params)})
    for key, value in req.route_params.items():
        data[key] = value
    body = req.get_body()
    if body.lstrip()[:1] == b"{":
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            for key, value in obj.items():
                data.setdefault(str(key), value)
    return data


async def check_http_output(binding: Binding, value: Any, inv: Invocation) -> None:
    """Output sink for ``http`` bindings: only checks the type, so a wrong one fails the invocation."""
    if not isinstance(value, str | func_abc.HttpResponse):
        raise TypeError(f"an HTTP function must return func.HttpResponse or str, not {type(value).__name__}")


def to_response(value: Any) -> web.Response:
    """The HTTP response for what a function returned (or set on its ``http`` output)."""
    if value is None:
        return web.Response(status=204)
    if isinstance(value, str):
        return web.Response(
            status=200, body=value.encode("utf-8"), headers={"Content-Type": "text/plain; charset=utf-8"}
        )
    if not isinstance(value, func_abc.HttpResponse):
        raise TypeError(f"an HTTP function must return func.HttpResponse or str, not {type(value).__name__}")
    headers: CIMultiDict[str] = CIMultiDict()
    for key, val in value.headers.items():
        headers.add(key, val)
    if "Content-Type" not in headers:
        mimetype = value.mimetype or "text/plain"
        charset = value.charset or "utf-8"
        headers["Content-Type"] = (
            f"{mimetype}; charset={charset}" if mimetype.startswith("text/") else mimetype
        )
    headers.popall("Content-Length", None)
    headers.popall("Transfer-Encoding", None)
    return web.Response(status=int(value.status_code), body=value.get_body() or b"", headers=headers)


class HttpFunctions:
    """The HTTP-triggered functions of an app, by route."""

    def __init__(
        self,
        functions: Iterable[FunctionDef],
        route_prefix: str,
        invoker: Invoker,
        keys: KeyStore,
        enforce_keys: bool = True,
    ) -> None:
        self.prefix = split_path(route_prefix)
        self.invoker = invoker
        self.keys = keys
        self.enforce_keys = enforce_keys
        self.routes: list[HttpRoute] = []
        self.errors: list[tuple[str, str]] = []
        for fn in functions:
            if not fn.is_http:
                continue
            trigger = fn.trigger
            try:
                template = RouteTemplate(str(trigger.get("route") or fn.name))
            except RouteError as exc:
                self.errors.append((fn.name, str(exc)))
                continue
            methods = trigger.get("methods")
            allowed = frozenset(str(m).upper() for m in methods) if methods else None
            level = str(trigger.get("authLevel") or "function").lower()
            self.routes.append(HttpRoute(fn, template, allowed, level))
        self.routes.sort(key=lambda r: r.template.precedence)

    def url_of(self, route: HttpRoute, base: str) -> str:
        path = "/".join([*self.prefix, route.template.template.strip("/")])
        return f"{base}/{path}"

    def match(self, raw_path: str) -> tuple[list[tuple[HttpRoute, dict[str, str]]], bool]:
        """Routes matching ``raw_path`` (most specific first) and whether the path is under the prefix."""
        segments = split_path(raw_path)
        n = len(self.prefix)
        if [s.lower() for s in segments[:n]] != [p.lower() for p in self.prefix]:
            return [], False
        rest = segments[n:]
        found = []
        for route in self.routes:
            values = route.template.match(rest)
            if values is not None:
                found.append((route, values))
        return found, True

    async def handle(self, request: web.Request, principal: Mapping[str, str]) -> web.StreamResponse | None:
        """Serve ``request`` if it is for an HTTP function (None if the path is not one)."""
        candidates, under_prefix = self.match(request.raw_path)
        if not candidates:
            return None if not under_prefix else web.Response(status=404)
        method = request.method.upper()
        chosen = next(
            ((r, v) for r, v in candidates if r.methods is None or method in r.methods),
            None,
        )
        if chosen is None:
            allowed = sorted({m for r, _ in candidates for m in (r.methods or ALL_METHODS)})
            return web.Response(status=405, headers={"Allow": ", ".join(allowed)})
        route, values = chosen
        if self.enforce_keys and not self.keys.allows(
            route.auth_level, given_key(request), route.function.name
        ):
            return web.Response(status=401)
        body = await request.read()
        req = to_func_request(request, body, values, principal)
        inv = Invocation(route.function, req, binding_data(req), request)
        try:
            result = await self.invoker.run(inv)
            http_outputs = [b.name for b in route.function.outputs() if b.type == "http"]
            value = next((result.outputs[n] for n in http_outputs if n in result.outputs), None)
            return to_response(value)
        except FunctionFailed:
            return web.Response(status=500)
