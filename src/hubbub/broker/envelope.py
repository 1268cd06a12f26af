"""The wire form of a :class:`~hubbub.broker.base.Command` between nodes: pure, binary-safe.

Layout (version 1)::

    +---------+----------+-------------+-------------+-------------+-----------------+
    | version | origin   | origin id   | header len  | header      | payload bytes   |
    | 1 byte  | len (1B) | (UTF-8)     | u32, BE     | JSON object | (raw, the rest) |
    +---------+----------+-------------+-------------+-------------+-----------------+

A SEND is published by a Redis script that gives it the next position in the
cluster-wide order and prefixes the envelope with it: ``0x02``, the position in ASCII
decimal, ``:``, then the envelope (:func:`split_sequenced`). The streams that keep SENDs
for reliable-session failover hold the bare envelope under the entry id ``{position}-0``.

The origin (the publishing node's id) sits at a fixed offset so a reader can skip its
own echoes without parsing anything. The header holds the command's fields under short
keys, omitting defaults; the payload is never base64-encoded. A reader rejects a version
it does not know (:class:`EnvelopeError`) instead of guessing: rolling upgrades bump the
version only together with a reader that accepts both.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from hubbub.broker.base import Command, Op, Scope
from hubbub.protocols.events import DataType, Payload, StreamInfo

__all__ = ["SEQUENCED", "VERSION", "EnvelopeError", "decode", "encode", "origin_of", "split_sequenced"]

VERSION = 1
#: first byte of a SEND that carries its cluster-wide position
SEQUENCED = 2
_HEADER_LEN = struct.Struct(">I")
_OPS = {op.value: op for op in Op}
_SCOPES = {scope.value: scope for scope in Scope}
_DATA_TYPES = {t.value: t for t in DataType}


class EnvelopeError(ValueError):
    """Bytes that are not an envelope this version of hubbub can read."""


def encode(command: Command, origin: str) -> bytes:
    """The envelope of ``command`` published by node ``origin`` (at most 255 UTF-8 bytes)."""
    node = origin.encode("utf-8")
    if len(node) > 255:
        raise ValueError("a node id is at most 255 UTF-8 bytes")
    header: dict[str, Any] = {"o": command.op.value, "h": command.hub, "s": command.scope.value}
    if command.target is not None:
        header["t"] = command.target
    body = b""
    if command.payload is not None:
        header["d"] = command.payload.data_type.value
        body = command.payload.data
    if command.excluded:
        header["x"] = command.excluded
    if command.filter is not None:
        header["f"] = command.filter
    if command.groups:
        header["g"] = command.groups
    if command.reason is not None:
        header["r"] = command.reason
    if command.from_user_id is not None:
        header["fu"] = command.from_user_id
    if command.from_connection_id is not None:
        header["fc"] = command.from_connection_id
    if command.no_echo:
        header["ne"] = True
    if command.permission is not None:
        header["p"] = command.permission
    if command.permission_target is not None:
        header["pt"] = command.permission_target
    if command.stream is not None:
        st = command.stream
        header["st"] = (
            st.stream_id,
            st.sequence_id,
            st.end,
            st.error_name,
            st.error_message,
            st.user_error_code,
        )
    head = orjson.dumps(header)
    return b"".join((bytes((VERSION, len(node))), node, _HEADER_LEN.pack(len(head)), head, body))


def origin_of(data: bytes) -> bytes:
    """The origin node id (raw bytes) of an envelope, without decoding the rest."""
    if len(data) < 2 or data[0] != VERSION:
        raise EnvelopeError("not a version 1 envelope")
    return data[2 : 2 + data[1]]


def split_sequenced(data: bytes) -> tuple[int, bytes]:
    """``(position, envelope)`` of a sequenced SEND (``0x02 <digits> : envelope``)."""
    end = data.find(b":", 1, 24)
    if data[:1] != b"\x02" or end < 2:
        raise EnvelopeError("not a sequenced envelope")
    try:
        return int(data[1:end]), data[end + 1 :]
    except ValueError:
        raise EnvelopeError("malformed sequence number") from None


def _str(header: dict[str, Any], key: str) -> str | None:
    value = header.get(key)
    if value is None or isinstance(value, str):
        return value
    raise EnvelopeError(f"field {key!r} must be a string")


def _strs(header: dict[str, Any], key: str) -> tuple[str, ...]:
    value = header.get(key, ())
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise EnvelopeError(f"field {key!r} must be a list of strings")
    return tuple(value)


def _stream(header: dict[str, Any]) -> StreamInfo | None:
    value = header.get("st")
    if value is None:
        return None
    try:
        stream_id, sequence_id, end, name, message, code = value
    except (TypeError, ValueError):
        raise EnvelopeError("field 'st' must be a list of 6 items") from None
    if not isinstance(stream_id, str) or not isinstance(sequence_id, int) or not isinstance(end, bool):
        raise EnvelopeError("malformed field 'st'")
    if not all(v is None or isinstance(v, str) for v in (name, message, code)):
        raise EnvelopeError("malformed field 'st'")
    return StreamInfo(stream_id, sequence_id, end, name, message, code)


def decode(data: bytes, seq: int = 0, echo: bool = False) -> tuple[Command, str]:
    """``(command, origin node id)`` of an envelope; :class:`EnvelopeError` if it is not one.

    ``seq`` and ``echo`` are copied into the command (they are not part of the envelope).
    """
    if not data:
        raise EnvelopeError("empty envelope")
    if data[0] != VERSION:
        raise EnvelopeError(f"unknown envelope version {data[0]}")
    try:
        start = 2 + data[1]
        origin = data[2:start].decode("utf-8")
        (length,) = _HEADER_LEN.unpack_from(data, start)
        start += _HEADER_LEN.size
        if start + length > len(data):
            raise EnvelopeError("truncated envelope")
        header = orjson.loads(data[start : start + length])
        body = data[start + length :]
    except (IndexError, struct.error, UnicodeDecodeError, orjson.JSONDecodeError):
        raise EnvelopeError("malformed envelope") from None
    if not isinstance(header, dict):
        raise EnvelopeError("the header is not an object")
    op, scope = _OPS.get(str(header.get("o"))), _SCOPES.get(str(header.get("s")))
    hub = header.get("h")
    if op is None or scope is None or not isinstance(hub, str):
        raise EnvelopeError("missing or unknown op, scope or hub")
    payload = None
    if "d" in header:
        data_type = _DATA_TYPES.get(header["d"])
        if data_type is None:
            raise EnvelopeError("unknown data type")
        payload = Payload(data_type, bytes(body))
    elif body:
        raise EnvelopeError("payload bytes without a data type")
    command = Command(
        op,
        hub,
        scope,
        _str(header, "t"),
        payload=payload,
        excluded=_strs(header, "x"),
        filter=_str(header, "f"),
        groups=_strs(header, "g"),
        reason=_str(header, "r"),
        from_user_id=_str(header, "fu"),
        from_connection_id=_str(header, "fc"),
        no_echo=header.get("ne") is True,
        permission=_str(header, "p"),
        permission_target=_str(header, "pt"),
        stream=_stream(header),
        seq=seq,
        echo=echo,
    )
    return command, origin
