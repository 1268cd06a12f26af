"""Server-side WebSocket framing (RFC 6455 §5.2), pure.

Server frames are never masked, so a frame built once can be written to every
connection that negotiated no extension: this is what lets a broadcast encode
and frame each message once (see :mod:`hubbub.core.fanout`).
"""

from __future__ import annotations

import struct

__all__ = ["OP_BINARY", "OP_CLOSE", "OP_TEXT", "close_frame", "frame"]

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8

_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")


def frame(payload: bytes, opcode: int) -> bytes:
    """Return a complete, unfragmented, unmasked frame (FIN set) carrying ``payload``."""
    first = 0x80 | opcode
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return _H16.pack(first, 126, n) + payload
    return _H64.pack(first, 127, n) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is truncated to fit the 123-byte control-frame limit."""
    raw = reason.encode("utf-8")[:123]
    # do not cut a UTF-8 sequence in half
    while raw:
        try:
            raw.decode("utf-8")
            break
        except UnicodeDecodeError:
            raw = raw[:-1]
    return frame(struct.pack("!H", code) + raw, OP_CLOSE)
