"""RESP2, the Redis wire protocol: a command encoder and an incremental reply parser. Pure.

Used by :mod:`hubbub.broker.wire` for the two connections whose writes must leave the
node synchronously (see there); everything request/response goes through redis-py.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RespError", "RespParser", "RespProtocolError", "encode_command"]

Arg = bytes | str | int | float


class RespError(Exception):
    """An error reply (``-ERR ...``) from Redis."""


class RespProtocolError(Exception):
    """Bytes that are not RESP2: the connection cannot be trusted any more."""


def _bytes(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode("utf-8")
    return repr(arg).encode("ascii")


def encode_command(*args: Arg) -> bytes:
    """``*<n>\\r\\n`` followed by one bulk string per argument."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _bytes(arg)
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


class _Incomplete(Exception):
    pass


_INCOMPLETE = _Incomplete()


class RespParser:
    """Feed bytes, take complete replies.

    Replies are ``bytes`` (simple and bulk strings), ``int``, ``None`` (null bulk/array),
    ``list`` (arrays) or a :class:`RespError` instance (error replies are values, not raised).
    """

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> list[Any]:
        """Add ``data``; return every reply it completed, in order."""
        self._buf += data
        replies: list[Any] = []
        buf = self._buf
        while self._pos < len(buf):
            try:
                value, end = self._parse(buf, self._pos)
            except _Incomplete:
                break
            replies.append(value)
            self._pos = end
        if self._pos:
            del buf[: self._pos]
            self._pos = 0
        return replies

    def _line(self, buf: bytearray, pos: int) -> tuple[bytes, int]:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            raise _INCOMPLETE
        return bytes(buf[pos:end]), end + 2

    def _parse(self, buf: bytearray, pos: int) -> tuple[Any, int]:
        kind = buf[pos]
        line, pos = self._line(buf, pos + 1)
        if kind == 0x24:  # $ bulk string
            length = self._int(line)
            if length < 0:
                return None, pos
            end = pos + length
            if end + 2 > len(buf):
                raise _INCOMPLETE
            if buf[end : end + 2] != b"\r\n":
                raise RespProtocolError("bulk string not terminated by CRLF")
            return bytes(buf[pos:end]), end + 2
        if kind == 0x2A:  # * array
            count = self._int(line)
            if count < 0:
                return None, pos
            items = []
            for _ in range(count):
                if pos >= len(buf):
                    raise _INCOMPLETE
                item, pos = self._parse(buf, pos)
                items.append(item)
            return items, pos
        if kind == 0x2B:  # + simple string
            return line, pos
        if kind == 0x3A:  # : integer
            return self._int(line), pos
        if kind == 0x2D:  # - error
            return RespError(line.decode("utf-8", "replace")), pos
        raise RespProtocolError(f"unexpected RESP type byte {kind!r}")

    @staticmethod
    def _int(line: bytes) -> int:
        try:
            return int(line)
        except ValueError:
            raise RespProtocolError(f"bad RESP integer {line[:20]!r}") from None
