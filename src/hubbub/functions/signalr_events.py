"""The SignalR extension's upstream side, pure: parse and check an upstream request, build the
``InvocationContext`` a function receives, and frame the answer. No I/O.

An upstream request (digest §4.2-4.3) is checked in the trigger's order (§5.5): content type
(``application/json`` or ``application/x-msgpack``, else 415), non-empty ``X-ASRS-Hub`` /
``X-ASRS-Category`` / ``X-ASRS-Event`` (400; an absent one 500), the function lookup (404, done by
the caller), the connection id and the body (500 when missing or unreadable, or when the invocation's
target is not the event, or the arguments do not fit ``parameterNames``), the signature (401) and,
a hubbub addition, the upstream ``Authorization`` bearer token (401).

The answer to a blocking invocation is a framed hub-protocol Completion in the client's protocol:
JSON ``{"type":3,"invocationId":…,"result":…}`` + ``0x1E``, or MessagePack ``[3,{},id,3,result]``
with its VarInt length prefix (``[3,{},id,1,error]`` when the function raised).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import jwt
import msgpack  # type: ignore[import-untyped]

__all__ = [
    "JSON_TYPE",
    "MSGPACK_TYPE",
    "SignalRRejected",
    "UpstreamRequest",
    "check_signature",
    "completion",
    "invocation_context",
    "parse_claims",
    "parse_query",
    "parse_request",
    "result_value",
    "verify_upstream_token",
]

JSON_TYPE = "application/json"
MSGPACK_TYPE = "application/x-msgpack"
RECORD_SEPARATOR = b"\x1e"
INVOCATION, COMPLETION, OPEN_CONNECTION, CLOSE_CONNECTION = 1, 3, 10, 11
#: clock skew allowed on the upstream token's ``exp``/``nbf``/``iat``
TOKEN_LEEWAY_SECONDS = 30


class SignalRRejected(Exception):
    """The upstream request is refused with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class UpstreamRequest:
    hub: str
    category: str
    event: str
    connection_id: str = ""
    user_id: str | None = None
    content_type: str = JSON_TYPE
    #: the invocation (messages): id (None: non-blocking) and arguments
    invocation_id: str | None = None
    arguments: list[Any] | None = None
    #: the ``error`` of a disconnected event
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] | None = None
    claims: dict[str, str] | None = None

    @property
    def blocking(self) -> bool:
        return self.category == "messages" and self.invocation_id is not None


def media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def check_content_type(headers: Mapping[str, str]) -> str:
    """Step 1: the media type, or 415."""
    kind = media_type(headers.get("Content-Type"))
    if kind not in (JSON_TYPE, MSGPACK_TYPE):
        raise SignalRRejected(415, f"Unsupported content type '{kind}'.")
    return kind


def dispatch_key(headers: Mapping[str, str]) -> tuple[str, str, str]:
    """Step 2: (hub, category, event); 400 when one is empty, 500 when one is absent."""
    values = []
    for name in ("X-ASRS-Hub", "X-ASRS-Category", "X-ASRS-Event"):
        value = headers.get(name)
        if value is None:
            raise SignalRRejected(500, f"Header '{name}' is missing.")
        if not value:
            raise SignalRRejected(400, f"Header '{name}' is empty.")
        values.append(value)
    return values[0], values[1], values[2]


def parse_claims(header: str | None) -> dict[str, str] | None:
    """``X-ASRS-User-Claims``: ``type: value`` entries joined by ``,`` (empty pieces dropped, entries
    not of two parts ignored, both trimmed); the first value per type wins. None when absent."""
    if not header:
        return None
    out: dict[str, str] = {}
    for entry in header.split(","):
        parts = [p for p in entry.split(": ") if p]
        if len(parts) == 2:
            out.setdefault(parts[0].strip(), parts[1].strip())
    return out


def parse_query(header: str | None) -> dict[str, str] | None:
    """``X-ASRS-Client-Query`` (leading ``?`` allowed); repeated keys joined with ``,``. None when absent."""
    if not header:
        return None
    out: dict[str, str] = {}
    for key, value in parse_qsl(header.removeprefix("?"), keep_blank_values=True):
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


#: content headers: .NET keeps them on the request's content, not in the headers the context gets
_CONTENT_HEADERS = frozenset(
    {
        "allow",
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "expires",
        "last-modified",
    }
)


def _header_map(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in items:
        if name.lower() in _CONTENT_HEADERS:
            continue
        found = next((k for k in out if k.lower() == name.lower()), None)
        if found is None:
            out[name] = value
        else:
            out[found] = f"{out[found]},{value}"
    return out


def _field(obj: Mapping[str, Any], name: str) -> Any:
    return next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == name.lower()), None)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        raise SignalRRejected(500, "The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise SignalRRejected(500, "The request body is not a JSON object.")
    return value


def _invocation(body: bytes, content_type: str) -> tuple[str | None, str, list[Any]]:
    """(invocationId, target, arguments) of a JSON object or a MessagePack array without prefix."""
    if content_type == MSGPACK_TYPE:
        try:
            items = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            raise SignalRRejected(500, "The request body is not valid MessagePack.") from None
        if not isinstance(items, list) or len(items) < 5 or items[0] != INVOCATION:
            raise SignalRRejected(500, "The request body is not a MessagePack invocation message.")
        invocation_id, target, arguments = items[2], items[3], items[4]
    else:
        obj = _json_object(body)
        if _field(obj, "type") != INVOCATION:
            raise SignalRRejected(500, "The request body is not an invocation message.")
        invocation_id, target, arguments = (
            _field(obj, "invocationId"),
            _field(obj, "target"),
            _field(obj, "arguments"),
        )
    if not isinstance(target, str) or not target:
        raise SignalRRejected(500, "The invocation has no target.")
    if invocation_id is not None and not isinstance(invocation_id, str):
        raise SignalRRejected(500, "The invocation id must be a string.")
    if arguments is None:
        arguments = []
    if not isinstance(arguments, list):
        raise SignalRRejected(500, "The invocation's arguments must be an array.")
    return invocation_id, target, arguments


def _close_error(body: bytes, content_type: str) -> str | None:
    if content_type == MSGPACK_TYPE:
        try:
            items = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            raise SignalRRejected(500, "The request body is not valid MessagePack.") from None
        if not isinstance(items, list) or not items or items[0] != CLOSE_CONNECTION:
            raise SignalRRejected(500, "The request body is not a close-connection message.")
        error = items[1] if len(items) > 1 else None
    else:
        obj = _json_object(body)
        if _field(obj, "type") != CLOSE_CONNECTION:
            raise SignalRRejected(500, "The request body is not a close-connection message.")
        error = _field(obj, "error")
    return str(error) if error else None


def parse_request(
    headers: Mapping[str, str], header_items: Iterable[tuple[str, str]], body: bytes
) -> UpstreamRequest:
    """Steps 1, 2, 4 and 5 (the lookup, step 3, is between :func:`dispatch_key` and this)."""
    content_type = check_content_type(headers)
    hub, category, event = dispatch_key(headers)
    connection_id = headers.get("X-ASRS-Connection-Id")
    if not connection_id:
        raise SignalRRejected(500, "Header 'X-ASRS-Connection-Id' is missing.")
    request = UpstreamRequest(
        hub=hub,
        category=category.lower(),
        event=event,
        connection_id=connection_id,
        user_id=headers.get("X-ASRS-User-Id") or None,
        content_type=content_type,
        headers=_header_map(header_items),
        query=parse_query(headers.get("X-ASRS-Client-Query")),
        claims=parse_claims(headers.get("X-ASRS-User-Claims")),
    )
    if request.category == "messages":
        invocation_id, target, arguments = _invocation(body, content_type)
        if target.lower() != event.lower():
            raise SignalRRejected(500, f"The invocation target '{target}' is not the event '{event}'.")
        request.invocation_id, request.arguments = invocation_id, arguments
    elif request.category == "connections" and event.lower() == "disconnected":
        request.error = _close_error(body, content_type)
    return request


def _expected(key: str, connection_id: str) -> str:
    digest = hmac.new(key.encode("utf-8"), connection_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return "sha256=" + digest.upper()


def check_signature(headers: Mapping[str, str], connection_id: str, keys: Sequence[str]) -> None:
    """Step 6: one of the comma-separated entries (trimmed, as the current extension does) matches
    one key's signature, case-insensitively; else 401."""
    given = [entry.strip().lower() for entry in (headers.get("X-ASRS-Signature") or "").split(",")]
    for key in keys:
        if _expected(key, connection_id).lower() in given:
            return
    raise SignalRRejected(401, "Signature validation failed.")


def verify_upstream_token(
    authorization: str | None, keys: Sequence[str], *, required: bool, audience: str | None
) -> dict[str, Any] | None:
    """The upstream ``Authorization: Bearer <JWT>`` (HS256 over a key's UTF-8 bytes); 401 when bad.

    Absent: None, or 401 when ``required``. ``exp`` is required, ``exp``/``nbf``/``iat`` are checked
    with :data:`TOKEN_LEEWAY_SECONDS` of leeway; ``aud`` only when an ``audience`` is configured.
    """
    if not authorization:
        if required:
            raise SignalRRejected(401, "The upstream request has no Authorization token.")
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SignalRRejected(401, "The Authorization header is not a bearer token.")
    why = "no access key is configured"
    for key in keys:
        try:
            with warnings.catch_warnings():  # short keys are the user's choice, not ours to warn about
                warnings.simplefilter("ignore")
                claims: dict[str, Any] = jwt.decode(
                    token.strip(),
                    key,
                    algorithms=["HS256"],
                    audience=audience or None,
                    leeway=TOKEN_LEEWAY_SECONDS,
                    options={"require": ["exp"], "verify_aud": bool(audience)},
                )
            return claims
        except jwt.InvalidSignatureError:
            why = "signature validation failed"
        except jwt.PyJWTError as exc:
            raise SignalRRejected(401, f"Upstream token rejected: {exc}") from None
    raise SignalRRejected(401, f"Upstream token rejected: {why}")


def invocation_context(request: UpstreamRequest) -> dict[str, Any]:
    """The trigger value: ``InvocationContext`` with the extension's PascalCase names."""
    return {
        "Arguments": request.arguments,
        "Error": request.error,
        "Category": request.category,
        "Event": request.event,
        "Hub": request.hub,
        "ConnectionId": request.connection_id,
        "UserId": request.user_id,
        "Headers": request.headers,
        "Query": request.query,
        "Claims": request.claims,
    }


def result_value(value: Any) -> Any:
    """A Python return value as the host carries it (the worker's typed data, then JSON).

    ``str`` stays a string, ``dict``/``list`` are JSON values, ``bytes`` are base64 (a .NET byte
    array), ``bool`` is an int (the worker sends booleans as int), numbers are numbers.
    """
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, bool):
        return int(value)
    if value is None or isinstance(value, str | int | float | dict | list):
        return value
    raise TypeError(f"a SignalR invocation result cannot be a {type(value).__name__}")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def completion(request: UpstreamRequest, *, result: Any = None, error: str | None = None) -> bytes:
    """The framed Completion answering a blocking invocation, in the request's protocol."""
    assert request.invocation_id is not None
    if request.content_type == MSGPACK_TYPE:
        items: list[Any] = [COMPLETION, {}, request.invocation_id]
        items += [1, error] if error is not None else [3, result]
        body: bytes = msgpack.packb(items, use_bin_type=True)
        return _varint(len(body)) + body
    message: dict[str, Any] = {"type": COMPLETION, "invocationId": request.invocation_id}
    if error is not None:
        message["error"] = error
    else:
        message["result"] = result
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + RECORD_SEPARATOR
