"""One exception tree for hubbub, and the one table that maps it to the wire.

Every error a client or an app server can cause is a :class:`HubbubError`. Each
subclass says, as class attributes, how it surfaces at each edge:

* ``status`` — HTTP status for REST calls and rejected WebSocket upgrades;
* ``code`` — the ``x-ms-error-code`` header / ``code`` field of the JSON error body;
* ``ack_name`` — the ``error.name`` of a failed ``ack`` frame (json/protobuf clients);
* ``close_code`` — WebSocket close code when the error ends a connection.

Messages are written for the caller; internal details (tracebacks, socket errors)
never go into them.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "BrokerUnavailable",
    "Conflict",
    "Forbidden",
    "HubbubError",
    "InternalError",
    "InvalidFilter",
    "InvalidToken",
    "NotFound",
    "PayloadTooLarge",
    "ProtocolViolation",
    "UnsupportedMediaType",
]


class HubbubError(Exception):
    status = 500
    code = "InternalServerError"
    ack_name = "InternalServerError"
    close_code = 1011

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__name__)

    @property
    def message(self) -> str:
        return str(self.args[0])


class BadRequest(HubbubError):
    """The caller sent something malformed (REST parameter, client message)."""

    status = 400
    code = "BadRequest"
    ack_name = "BadRequest"
    close_code = 1008


class InvalidFilter(BadRequest):
    """An OData ``filter`` that does not parse or does not type-check."""

    code = "InvalidFilter"


class PayloadTooLarge(BadRequest):
    status = 413
    code = "PayloadTooLarge"
    close_code = 1009


class UnsupportedMediaType(BadRequest):
    status = 400
    code = "UnsupportedMediaType"


class ProtocolViolation(BadRequest):
    """The peer broke the subprotocol (unparseable frame, unknown message type)."""

    code = "InvalidMessage"
    close_code = 1008


class InvalidToken(HubbubError):
    """Missing, malformed, expired, wrongly signed or wrong-audience JWT."""

    status = 401
    code = "Unauthorized"
    ack_name = "Unauthorized"
    close_code = 1008


class Forbidden(HubbubError):
    """Authenticated, but the connection's roles do not allow the operation."""

    status = 403
    code = "Forbidden"
    ack_name = "Forbidden"
    close_code = 1008


class NotFound(HubbubError):
    status = 404
    code = "NotFound"
    ack_name = "NotFound"
    close_code = 1008


class Conflict(HubbubError):
    status = 409
    code = "Conflict"
    ack_name = "Conflict"


class InternalError(HubbubError):
    pass


class BrokerUnavailable(HubbubError):
    """The backplane could not accept a publish; the caller should retry."""

    status = 503
    code = "ServiceUnavailable"
    ack_name = "InternalServerError"
