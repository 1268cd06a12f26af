"""Web PubSub upstream requests as the Functions extension reads them, and the answers it builds. Pure.

:func:`parse_event` turns the CloudEvents request the service sends into a :class:`WpsEvent` (or
raises :class:`EventRejected` with the HTTP status the extension answers); :func:`trigger_value`
gives a function parameter its value by name (``request``, ``connectionContext``, ``data``,
``dataType``, ``claims``, ``query``, ``reason``, ``subprotocols``, ``clientCertificates``; any other
name gets None); :func:`build_response` turns a connect or user-event function's return value into
the HTTP answer (error object → 401/400/500 with the message as text; connect → the JSON the service
reads; user event → the message bytes with the content type of ``dataType``; ``states`` merged into
``ce-connectionState``).

Leniency (documented): a ``str``/``bytes`` return value is parsed as JSON when it is JSON (the real
extension would ignore it and answer an empty 200); ``message`` is read when ``data`` is absent (the
2021 beta name).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hubbub.functions.appconfig import ServiceEndpoint

__all__ = [
    "EventRejected",
    "WpsEvent",
    "build_response",
    "origins",
    "parse_event",
    "preflight_origin",
    "signature_ok",
    "trigger_value",
]

SYSTEM_PREFIX = "azure.webpubsub.sys."
_REQUIRED = ("ce-connectionId", "ce-hub", "ce-type", "ce-eventName", "WebHook-Request-Origin")
_DATA_TYPES = {"text/plain": "text", "application/json": "json", "application/octet-stream": "binary"}
_CONTENT_TYPES = {"text": "text/plain", "json": "application/json", "binary": "application/octet-stream"}
_ERROR_STATUS = {"unauthorized": 401, "usererror": 400, "servererror": 500}
TRIGGER_NAMES = (
    "request",
    "connectionContext",
    "data",
    "dataType",
    "claims",
    "query",
    "reason",
    "subprotocols",
    "clientCertificates",
)


class EventRejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class WpsEvent:
    event_type: str  # "system" | "user"
    event_name: str
    hub: str
    connection_id: str
    protocol: str  # "webpubsub" | "mqtt"
    context: dict[str, Any]
    #: the request object the function sees as ``request`` (context included)
    request: dict[str, Any]
    states: dict[str, Any] = field(default_factory=dict)
    data: bytes = b""
    data_type: str | None = None

    @property
    def kind(self) -> str:
        """``connect``, ``connected``, ``disconnected``, ``user`` or ``ignored`` (other system events)."""
        if self.event_type == "user":
            return "user"
        name = self.event_name.lower()
        return name if name in ("connect", "connected", "disconnected") else "ignored"

    @property
    def blocking(self) -> bool:
        return self.kind in ("connect", "user")


def origins(header: str | None) -> list[str]:
    return [o for o in (header or "").replace(",", " ").split() if o]


def preflight_origin(header: str | None, endpoints: Sequence[ServiceEndpoint]) -> str | None:
    """``WebHook-Allowed-Origin`` for an abuse-protection request, None to refuse it (400)."""
    if not endpoints:
        return "*"
    hosts = {e.host for e in endpoints}
    return next((o for o in origins(header) if o.lower() in hosts), None)


def _expected(key: str, connection_id: str) -> str:
    digest = hmac.new(key.encode("utf-8"), connection_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return "sha256=" + digest


def signature_ok(
    headers: Mapping[str, str], connection_id: str, endpoints: Sequence[ServiceEndpoint]
) -> bool:
    """The extension's check: some origin maps to a configured endpoint whose key signed the id."""
    if not endpoints:
        return True
    given = [s.strip().lower() for s in (headers.get("ce-signature") or "").split(",") if s.strip()]
    for origin in origins(headers.get("WebHook-Request-Origin")):
        for endpoint in endpoints:
            if endpoint.host != origin.lower():
                continue
            if not endpoint.access_key:
                return True
            expected = _expected(endpoint.access_key, connection_id)
            if any(hmac.compare_digest(expected, g) for g in given):
                return True
    return False


def _states(header: str | None) -> dict[str, Any]:
    if not header:
        return {}
    try:
        obj = json.loads(base64.b64decode(header, validate=True))
    except (binascii.Error, ValueError):
        raise EventRejected(400, "ce-connectionState is not base64-encoded JSON") from None
    if not isinstance(obj, dict):
        raise EventRejected(400, "ce-connectionState is not a JSON object")
    return obj


def _header_map(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in headers:
        out.setdefault(key, []).append(value)
    return out


def _json_body(body: bytes, what: str) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        obj = json.loads(body)
    except ValueError:
        raise EventRejected(400, f"the {what} request body is not JSON") from None
    if not isinstance(obj, dict):
        raise EventRejected(400, f"the {what} request body is not a JSON object")
    return obj


def parse_event(headers: Mapping[str, str], header_items: Iterable[tuple[str, str]], body: bytes) -> WpsEvent:
    """A POSTed CloudEvents request (``headers``: case-insensitive; ``header_items``: all of them)."""
    missing = [h for h in _REQUIRED if not headers.get(h)]
    if missing:
        raise EventRejected(400, f"missing header(s): {', '.join(missing)}")
    ce_type = headers["ce-type"]
    event_type = "system" if ce_type.lower().startswith(SYSTEM_PREFIX) else "user"
    subprotocol = headers.get("ce-subprotocol") or ""
    mqtt = "mqtt" in subprotocol.lower() and bool(headers.get("ce-physicalConnectionId"))
    states = _states(headers.get("ce-connectionState"))
    context: dict[str, Any] = {
        "eventType": event_type,
        "eventName": headers["ce-eventName"],
        "hub": headers["ce-hub"],
        "connectionId": headers["ce-connectionId"],
        "userId": headers.get("ce-userId"),
        "signature": headers.get("ce-signature"),
        "origin": headers["WebHook-Request-Origin"],
        "states": states,
        "headers": _header_map(header_items),
    }
    if mqtt:
        context["physicalConnectionId"] = headers.get("ce-physicalConnectionId")
        context["sessionId"] = headers.get("ce-sessionId")
    event = WpsEvent(
        event_type,
        headers["ce-eventName"],
        headers["ce-hub"],
        headers["ce-connectionId"],
        "mqtt" if mqtt else "webpubsub",
        context,
        {"connectionContext": context},
        states,
    )
    kind = event.kind
    if kind == "connect":
        obj = _json_body(body, "connect")
        for key in ("claims", "query", "headers"):
            event.request[key] = obj.get(key) or {}
        event.request["subprotocols"] = obj.get("subprotocols") or []
        event.request["clientCertificates"] = obj.get("clientCertificates") or []
        if mqtt and "mqtt" in obj:
            event.request["mqtt"] = obj["mqtt"]
    elif kind == "disconnected":
        event.request["reason"] = _json_body(body, "disconnected").get("reason")
    elif kind == "user":
        media = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        data_type = _DATA_TYPES.get(media)
        if data_type is None:
            raise EventRejected(
                400, f"Message data only supports text, binary, json. Current value is: {media}"
            )
        event.data, event.data_type = body, data_type
        event.request["data"] = body.decode("utf-8", "replace")
        event.request["dataType"] = data_type
    return event


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def binding_values(event: WpsEvent) -> dict[str, Any]:
    """The nine values the trigger publishes (also binding data for expressions)."""
    values: dict[str, Any] = {"request": event.request, "connectionContext": event.context}
    for key in ("claims", "query", "subprotocols", "clientCertificates", "reason", "dataType"):
        if key in event.request:
            values[key] = event.request[key]
    if event.kind == "user":
        values["data"] = event.request["data"]
    return values


def trigger_value(event: WpsEvent, name: str, data_type: str | None) -> Any:
    """The value a parameter named ``name`` receives (objects as JSON text; ``data`` as str or bytes)."""
    wanted = name.lower()
    key = next((k for k in TRIGGER_NAMES if k.lower() == wanted), None)
    if key is None:
        return None
    if key == "data":
        if event.kind != "user":
            return None
        return event.data if data_type == "binary" else event.data.decode("utf-8", "replace")
    value = binding_values(event).get(key)
    if value is None or isinstance(value, str):
        return value
    return _dumps(value)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _state_header(incoming: Mapping[str, Any], returned: Any) -> dict[str, str]:
    merged = dict(incoming)
    if isinstance(returned, dict):
        merged.update(returned)
    if not merged:
        return {}
    return {"ce-connectionState": base64.b64encode(_dumps(merged).encode("utf-8")).decode("ascii")}


def _message_bytes(data: Any) -> bytes:
    if data is None:
        return b""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, dict) and str(data.get("type", "")).lower() == "buffer":
        try:
            return bytes(data.get("data") or [])
        except (TypeError, ValueError):
            pass
    raise ValueError("Message data should be string, please stringify object.")


def build_response(event: WpsEvent, value: Any) -> Answer:
    """The answer to a blocking event (connect or user event) from the function's return value."""
    if value is None:
        return Answer()
    if isinstance(value, bytes | bytearray | str):
        try:
            value = json.loads(value)
        except ValueError:
            return Answer()  # not a response object: ignored, as the extension does
    if not isinstance(value, dict):
        return Answer(500, b"Invalid response: expected a JSON object", "text/plain")
    code = value.get("code")
    if code is not None and str(code).lower() != "success":
        status = _ERROR_STATUS.get(str(code).lower(), 500)
        message = value.get("errorMessage")
        return Answer(status, str(message or "").encode("utf-8"), "text/plain")
    states = _state_header(event.states, value.get("states"))
    if event.kind == "connect":
        body = {k: value.get(k) for k in ("userId", "groups", "subprotocol", "roles")}
        return Answer(200, _dumps(body).encode("utf-8"), "application/json", states)
    data = value.get("data", value.get("message"))
    try:
        payload = _message_bytes(data)
    except ValueError as exc:
        return Answer(500, str(exc).encode("utf-8"), "text/plain")
    data_type = str(value.get("dataType") or "binary").lower()
    content_type = _CONTENT_TYPES.get(data_type, "application/octet-stream")
    return Answer(200, payload, content_type if payload else None, states)
