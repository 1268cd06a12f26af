"""Binary-mode CloudEvents for Web PubSub event handlers (spec §6), pure: no I/O, no clock.

Builds the request headers and bodies the service sends upstream and parses what the
handler answers. :mod:`hubbub.upstream.webhook` does the HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from hubbub.errors import HubbubError
from hubbub.protocols.events import DataType, Payload

__all__ = [
    "MAX_CONNECTION_STATE_BYTES",
    "ConnectResult",
    "NoEventHandler",
    "UpstreamError",
    "event_headers",
    "parse_connect_response",
    "reply_payload",
    "signature",
    "user_event_body",
]

#: ``ce-connectionState`` travels in a header; larger values are an upstream error.
MAX_CONNECTION_STATE_BYTES = 8 * 1024
SYSTEM = "sys"
USER = "user"

_CONTENT_TYPES = {
    DataType.TEXT: "text/plain; charset=utf-8",
    DataType.JSON: "application/json; charset=utf-8",
    DataType.BINARY: "application/octet-stream",
    DataType.PROTOBUF: "application/x-protobuf",
}
_REPLY_TYPES = {
    "text/plain": DataType.TEXT,
    "application/json": DataType.JSON,
    "application/octet-stream": DataType.BINARY,
}


class UpstreamError(HubbubError):
    """The event handler rejected, failed, timed out or answered something malformed.

    ``status`` is what a rejected ``connect`` answers the client (401/403/400/500).
    """

    code = "InvocationFailed"
    ack_name = "InvocationFailed"

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


class NoEventHandler(UpstreamError):
    """No event handler takes this user event.

    The ack error is ``InternalServerError``: that is what the official client SDK's live tests
    see from the real service when no handler is registered.
    """

    ack_name = "InternalServerError"


def signature(keys: Sequence[str], connection_id: str) -> str:
    """``sha256=<hex>`` per access key, comma separated (primary first).

    The value depends only on the keys and the connection id, so it is computed once per connection
    (a bounded cache: every event of a connection carries the same signature).
    """
    return _signature(tuple(keys), connection_id)


@lru_cache(maxsize=16384)
def _signature(keys: tuple[str, ...], connection_id: str) -> str:
    cid = connection_id.encode("utf-8")
    return ",".join(
        "sha256=" + hmac.new(key.encode("utf-8"), cid, hashlib.sha256).hexdigest() for key in keys if key
    )


def event_headers(
    *,
    kind: str,
    event: str,
    hub: str,
    connection_id: str,
    user_id: str | None,
    origin: str,
    keys: Sequence[str],
    event_id: str,
    time: str,
    subprotocol: str | None = None,
    connection_state: str | None = None,
    content_type: str = "application/json; charset=utf-8",
) -> dict[str, str]:
    headers = {
        "Content-Type": content_type,
        "WebHook-Request-Origin": origin,
        "ce-specversion": "1.0",
        "ce-awpsversion": "1.0",
        "ce-type": f"azure.webpubsub.{kind}.{event}",
        "ce-source": f"/hubs/{hub}/client/{connection_id}",
        "ce-id": event_id,
        "ce-time": time,
        "ce-signature": signature(keys, connection_id),
        "ce-connectionId": connection_id,
        "ce-hub": hub,
        "ce-eventName": event,
    }
    if user_id is not None:
        headers["ce-userId"] = user_id
    if subprotocol:
        headers["ce-subprotocol"] = subprotocol
    if connection_state is not None:
        headers["ce-connectionState"] = connection_state
    return headers


def user_event_body(payload: Payload) -> tuple[str, bytes]:
    """Content-Type and body of a user event request (spec §6.5)."""
    return _CONTENT_TYPES[payload.data_type], payload.data


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def reply_payload(status: int, content_type: str | None, body: bytes) -> Payload | None:
    """What a user-event response sends back to the client, if anything."""
    if status == 204 or not body:
        return None
    data_type = _REPLY_TYPES.get(media_type(content_type), DataType.BINARY)
    if data_type is DataType.JSON:
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamError("the handler answered application/json with a non-JSON body") from None
    elif data_type is DataType.TEXT:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise UpstreamError("the handler answered text/plain with a body that is not UTF-8") from None
    return Payload(data_type, body)


@dataclass(frozen=True, slots=True)
class ConnectResult:
    user_id: str | None = None
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    subprotocol: str | None = None


def _strings(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UpstreamError(f"the connect response field '{key}' must be a list of strings")
    return tuple(value)


def parse_connect_response(status: int, content_type: str | None, body: bytes) -> ConnectResult:
    """Interpret the handler's answer to ``connect`` (spec §6.2)."""
    if status in (401, 403, 400):
        detail = body[:200].decode("utf-8", "replace").strip()
        suffix = f": {detail}" if detail else ""
        raise UpstreamError(f"the connect handler rejected the client with {status}{suffix}", status)
    if not 200 <= status < 300:
        raise UpstreamError(f"the connect handler answered {status}", 500)
    if status == 204 or not body.strip():
        return ConnectResult()
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError("the connect handler answered a body that is not JSON", 500) from None
    if not isinstance(obj, dict):
        raise UpstreamError("the connect handler answered JSON that is not an object", 500)
    user_id = obj.get("userId")
    subprotocol = obj.get("subprotocol")
    if user_id is not None and not isinstance(user_id, str):
        raise UpstreamError("the connect response field 'userId' must be a string", 500)
    if subprotocol is not None and (not isinstance(subprotocol, str) or not subprotocol):
        raise UpstreamError("the connect response field 'subprotocol' must be a non-empty string", 500)
    try:
        return ConnectResult(user_id or None, _strings(obj, "groups"), _strings(obj, "roles"), subprotocol)
    except UpstreamError as exc:
        raise UpstreamError(exc.message, 500) from None


def check_connection_state(value: str | None) -> str | None:
    if value is not None and len(value.encode("utf-8", "surrogateescape")) > MAX_CONNECTION_STATE_BYTES:
        raise UpstreamError(f"ce-connectionState is larger than {MAX_CONNECTION_STATE_BYTES} bytes")
    return value
