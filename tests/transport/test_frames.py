"""The frame reader of a taken-over client connection (transport/connection.py ``ClientConnection``).

Unit level: the protocol object is fed bytes as the event loop would feed it, with a recording
transport, a recording node and a recording dispatcher, so every RFC 6455 rule is checked with
the exact close frame it produces: fragmentation (control frames in between), split reads, the
size limit (1009), UTF-8 (1007), and the protocol errors (1002): reserved bits, unknown opcodes,
unmasked client frames, fragmented or oversized control frames, bad continuations, bad close
frames.
"""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

import pytest

from hubbub.core.session import Session
from hubbub.protocols import CODECS, SIMPLE
from hubbub.protocols.events import ClientRequest, UserEvent
from hubbub.transport.connection import (
    CLOSED,
    CLOSING,
    OPEN,
    PING_FRAME,
    ClientConnection,
    Context,
    websocket_mask,
)

LIMIT = 1000


class Transport:
    """Records what the connection writes and does to its socket."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closing = False
        self.aborted = False
        self.eof = False
        self.reading = True
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        assert not self.closing, "write after close"
        self.out += data

    def writelines(self, data: list[bytes]) -> None:
        for d in data:
            self.write(d)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closing = self.eof = True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def frames(self) -> list[tuple[int, bytes]]:
        """The server's (unmasked) frames written so far, as (opcode, payload)."""
        out, pos, frames = bytes(self.out), 0, []
        while pos < len(out):
            b0, b1 = out[pos], out[pos + 1]
            assert b0 & 0x80 and not b1 & 0x80  # FIN, unmasked
            n, pos = b1 & 0x7F, pos + 2
            if n == 126:
                n, pos = struct.unpack_from("!H", out, pos)[0], pos + 2
            elif n == 127:
                n, pos = struct.unpack_from("!Q", out, pos)[0], pos + 8
            frames.append((b0 & 0x0F, out[pos : pos + n]))
            pos += n
        return frames


class Node:
    def __init__(self) -> None:
        self.detached: list[tuple[Session, str | None]] = []
        self.suspended: list[Session] = []
        self.writable = asyncio.Event()

    def detach(self, session: Session, reason: str | None = None) -> None:
        self.detached.append((session, reason))

    def suspend(self, session: Session, retention: float) -> None:
        self.suspended.append(session)


class Harness:
    def __init__(self, codec: Any = SIMPLE, *, slow: bool = False) -> None:
        self.node = Node()
        self.handled: list[ClientRequest] = []
        self.gate = asyncio.Event()
        if not slow:
            self.gate.set()
        self.ctx = Context(
            asyncio.get_running_loop(),
            self.node,  # type: ignore[arg-type]
            self.dispatch,
            max_message=LIMIT,
            retention=30.0,
        )
        self.transport = Transport()
        self.conn = ClientConnection(self.ctx, self.transport)  # type: ignore[arg-type]
        self.session = Session("hub", codec, self.conn)
        self.conn.start(self.session, 60.0)
        assert self.transport.protocol is self.conn

    async def dispatch(self, session: Session, request: ClientRequest) -> None:
        await self.gate.wait()
        self.handled.append(request)

    def feed(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.conn.data_received(chunk)

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    def texts(self) -> list[bytes]:
        return [r.payload.data for r in self.handled if isinstance(r, UserEvent)]

    def close_code(self) -> tuple[int, bytes]:
        """The close frame the server sent (code, reason); it is the last frame."""
        opcode, payload = self.transport.frames()[-1]
        assert opcode == 0x8
        return struct.unpack("!H", payload[:2])[0], payload[2:]


def client_frame(
    payload: bytes, opcode: int = 0x1, *, fin: bool = True, mask: bytes | None = None, rsv: int = 0
) -> bytes:
    """A client frame, masked with a random key unless ``mask`` says otherwise (b"" = unmasked)."""
    key = os.urandom(4) if mask is None else mask
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    bit = 0x80 if key else 0
    if n < 126:
        head = bytes((first, bit | n))
    elif n < 65536:
        head = bytes((first, bit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, bit | 127)) + struct.pack("!Q", n)
    if not key:
        return head + payload
    body = bytearray(payload)
    websocket_mask(key, body)
    return head + key + bytes(body)


# -- messages --------------------------------------------------------------------------------------


async def test_text_and_binary_messages_reach_the_dispatcher_in_order() -> None:
    h = Harness()
    h.feed(client_frame(b"one"), client_frame(b"\x00\x01", 0x2), client_frame("żółw".encode()))
    await h.settle()
    assert h.texts() == [b"one", b"\x00\x01", "żółw".encode()]
    assert h.conn.state == OPEN and h.node.detached == []


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
async def test_length_encodings(size: int) -> None:
    h = Harness()
    h.ctx.max_message = 1 << 20
    payload = bytes(i % 251 for i in range(size))
    h.feed(client_frame(payload, 0x2))
    await h.settle()
    assert h.texts() == [payload]


async def test_a_zero_mask_is_valid() -> None:
    h = Harness()
    h.feed(client_frame(b"plain", mask=b"\x00\x00\x00\x00"))
    await h.settle()
    assert h.texts() == [b"plain"]


async def test_frames_split_at_every_byte_and_several_in_one_read() -> None:
    stream = b"".join(client_frame(f"m{i}".encode() * (i * 40 + 1)) for i in range(5))
    for cut in range(1, len(stream)):
        h = Harness()
        h.ctx.max_message = 1 << 20
        h.feed(stream[:cut], stream[cut:])
        await h.settle()
        assert h.texts() == [f"m{i}".encode() * (i * 40 + 1) for i in range(5)], cut
    h = Harness()
    h.ctx.max_message = 1 << 20
    h.feed(*(stream[i : i + 1] for i in range(len(stream))))  # one byte per read
    await h.settle()
    assert len(h.texts()) == 5


async def test_fragmented_message_with_control_frames_in_between() -> None:
    h = Harness()
    h.feed(
        client_frame(b"frag", 0x1, fin=False),
        client_frame(b"p1", 0x9),  # ping between fragments: answered at once
        client_frame(b"men", 0x0, fin=False),
        client_frame(b"", 0xA),  # pong: ignored
        client_frame("ted ✓".encode(), 0x0, fin=True),
    )
    await h.settle()
    assert h.texts() == ["fragmented ✓".encode()]
    assert h.transport.frames() == [(0xA, b"p1")]


async def test_utf8_is_checked_on_the_whole_fragmented_message() -> None:
    h = Harness()
    snow = "☃".encode()  # 3 bytes, split over two fragments
    h.feed(client_frame(snow[:1], 0x1, fin=False), client_frame(snow[1:], 0x0))
    await h.settle()
    assert h.texts() == [snow]


async def test_ping_is_answered_with_its_payload() -> None:
    h = Harness()
    h.feed(client_frame(b"x" * 125, 0x9), client_frame(b"", 0x9))
    await h.settle()  # the second is coalesced with the first, written at the end of the iteration
    assert h.transport.frames() == [(0xA, b"x" * 125), (0xA, b"")]


async def test_any_frame_counts_as_activity_for_the_keepalive() -> None:
    h = Harness()
    h.conn.heard = False
    h.feed(client_frame(b"", 0xA))
    assert h.conn.heard


# -- closing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "code"), [(struct.pack("!H", 1000) + b"bye", 1000), (b"", 1005)])
async def test_a_client_close_is_answered_with_1000_and_ends_the_session(payload: bytes, code: int) -> None:
    h = Harness()
    h.feed(client_frame(payload, 0x8))
    assert h.close_code() == (1000, b"")
    assert h.transport.closing and h.conn.state == CLOSED and h.conn.close_code == code
    assert h.node.detached == [(h.session, None)] and h.session.closed


async def test_a_reliable_session_is_suspended_unless_the_close_is_normal() -> None:
    codec = CODECS["json.reliable.webpubsub.azure.v1"]
    h = Harness(codec)
    h.feed(client_frame(struct.pack("!H", 1001), 0x8))  # going away: the client may come back
    assert h.node.suspended == [h.session] and h.node.detached == []
    h = Harness(codec)
    h.feed(client_frame(b"", 0x8))  # no status code (the JS client's stop()): kept, as before
    assert h.node.suspended == [h.session] and h.node.detached == []
    h = Harness(codec)
    h.feed(client_frame(struct.pack("!H", 1000), 0x8))
    assert h.node.suspended == [] and h.node.detached == [(h.session, None)]
    h = Harness(codec)
    h.conn.connection_lost(None)  # dropped without a close frame: 1006
    assert h.node.suspended == [h.session] and h.conn.close_code == 1006


async def test_server_close_sends_held_frames_then_the_close_frame_and_waits_for_the_answer() -> None:
    h = Harness()
    h.conn.write(b"\x81\x01a")
    h.conn.write(b"\x81\x01b")  # held until the end of the iteration
    h.conn.close(4000, "reason")
    h.conn.write(b"\x81\x01c")  # after the close: never written
    assert h.transport.frames() == [(1, b"a"), (1, b"b"), (8, struct.pack("!H", 4000) + b"reason")]
    assert h.conn.state == CLOSING and not h.transport.closing
    h.feed(client_frame(b"ignored while closing"), client_frame(b"", 0x9))
    await h.settle()
    assert h.handled == [] and len(h.transport.frames()) == 3
    h.feed(client_frame(struct.pack("!H", 4000), 0x8))
    assert h.transport.closing and h.conn.state == CLOSED
    h.conn.connection_lost(None)
    assert h.conn.timer is None


async def test_an_unanswered_close_frame_drops_the_socket_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("hubbub.transport.connection.CLOSE_TIMEOUT", 0.01)
    h = Harness()
    h.conn.close(1000, "")
    await asyncio.sleep(0.05)
    assert h.transport.aborted


async def test_keepalive_ping_never_follows_a_close_frame() -> None:
    h = Harness()
    h.conn.close(1000, "")
    await asyncio.sleep(0)  # a new loop iteration: the ping would be its first frame
    h.ctx.coalescer.flush()
    h.conn.write(PING_FRAME)
    assert [op for op, _ in h.transport.frames()] == [0x8]


# -- protocol errors -------------------------------------------------------------------------------

VIOLATIONS = {
    "unmasked data frame": (client_frame(b"hi", mask=b""), 1002),
    "unmasked ping": (client_frame(b"", 0x9, mask=b""), 1002),
    "reserved bit 1": (client_frame(b"hi", rsv=0x40), 1002),
    "reserved bit 3": (client_frame(b"hi", rsv=0x10), 1002),
    "opcode 3": (client_frame(b"hi", 0x3), 1002),
    "opcode 7": (client_frame(b"hi", 0x7), 1002),
    "opcode 11": (client_frame(b"", 0xB), 1002),
    "opcode 15": (client_frame(b"", 0xF), 1002),
    "fragmented ping": (client_frame(b"", 0x9, fin=False), 1002),
    "ping of 126 bytes": (client_frame(b"x" * 126, 0x9), 1002),
    "continuation first": (client_frame(b"x", 0x0), 1002),
    "text inside a fragmented message": (
        client_frame(b"a", 0x1, fin=False) + client_frame(b"b", 0x1),
        1002,
    ),
    "binary inside a fragmented message": (
        client_frame(b"a", 0x1, fin=False) + client_frame(b"b", 0x2, fin=False),
        1002,
    ),
    "close with a 1-byte payload": (client_frame(b"\x03", 0x8), 1002),
    "close code 999": (client_frame(struct.pack("!H", 999), 0x8), 1002),
    "close code 1005": (client_frame(struct.pack("!H", 1005), 0x8), 1002),
    "close code 1006": (client_frame(struct.pack("!H", 1006), 0x8), 1002),
    "close code 2999": (client_frame(struct.pack("!H", 2999), 0x8), 1002),
    "close code 5000": (client_frame(struct.pack("!H", 5000), 0x8), 1002),
    "close reason not UTF-8": (client_frame(struct.pack("!H", 1000) + b"\xff", 0x8), 1007),
    "text not UTF-8": (client_frame(b"ok \xc3\x28"), 1007),
    "fragmented text not UTF-8": (
        client_frame(b"\xe2\x98", 0x1, fin=False) + client_frame(b"\x28", 0x0),
        1007,
    ),
    "over the limit": (client_frame(b"x" * (LIMIT + 1), 0x2), 1009),
    "over the limit in fragments": (
        client_frame(b"x" * 600, 0x2, fin=False) + client_frame(b"x" * 401, 0x0),
        1009,
    ),
    "huge 64-bit length": (bytes((0x82, 0xFF)) + struct.pack("!Q", 1 << 62) + b"\x00" * 4, 1009),
}


@pytest.mark.parametrize("name", list(VIOLATIONS))
async def test_protocol_errors_close_with_their_code(name: str) -> None:
    data, code = VIOLATIONS[name]
    h = Harness()
    h.feed(data + client_frame(b"after the error: never read"))
    await h.settle()
    assert h.close_code() == (code, b"")
    assert h.handled == []
    # closed at once (no handshake): our side ends, what the client still sends is not read
    assert h.transport.eof and h.conn.state == CLOSED
    reason = f"Message too big: the limit is {LIMIT} bytes" if code == 1009 else None
    assert h.node.detached == [(h.session, reason)]


async def test_the_limit_is_checked_before_the_payload_arrives() -> None:
    h = Harness()
    frame = client_frame(b"x" * 5000, 0x2)
    h.feed(frame[:8])  # the header only
    assert h.close_code()[0] == 1009


async def test_exactly_the_limit_is_accepted() -> None:
    h = Harness()
    h.feed(client_frame(b"x" * LIMIT, 0x2))
    await h.settle()
    assert h.texts() == [b"x" * LIMIT]


async def test_a_message_the_codec_rejects_closes_with_its_code_and_reason() -> None:
    h = Harness(CODECS["json.webpubsub.azure.v1"])
    h.feed(client_frame(b"not json"))
    code, reason = h.close_code()
    assert code == 1008 and reason == b"the message is not valid JSON"
    assert h.conn.state == CLOSING and h.session.closed  # waits for the client's close frame
    h.feed(client_frame(struct.pack("!H", 1000), 0x8))
    h.conn.connection_lost(None)
    assert h.node.detached == [(h.session, "the message is not valid JSON")]


# -- one message at a time -------------------------------------------------------------------------


async def test_messages_wait_for_the_one_being_handled_and_reading_pauses() -> None:
    h = Harness(slow=True)
    h.feed(client_frame(b"1"), client_frame(b"2"), client_frame(b"3"))
    await h.settle()
    assert h.handled == [] and not h.transport.reading
    h.feed(client_frame(b"", 0x9))  # control frames are still answered
    assert h.transport.frames() == [(0xA, b"")]
    h.gate.set()
    await h.settle()
    assert h.texts() == [b"1", b"2", b"3"] and h.transport.reading


async def test_a_close_frame_waits_for_the_messages_before_it() -> None:
    h = Harness(slow=True)
    h.feed(client_frame(b"1"), client_frame(b"2"), client_frame(struct.pack("!H", 1000), 0x8))
    await h.settle()
    assert h.node.detached == [] and h.transport.frames() == []
    h.gate.set()
    await h.settle()
    assert h.texts() == [b"1", b"2"]
    assert h.close_code() == (1000, b"") and h.node.detached == [(h.session, None)]


async def test_a_lost_connection_ends_the_session_after_the_message_being_handled() -> None:
    h = Harness(slow=True)
    h.feed(client_frame(b"1"))
    await h.settle()
    h.conn.connection_lost(None)
    assert h.node.detached == []
    h.gate.set()
    await h.settle()
    assert h.texts() == [b"1"] and h.node.detached == [(h.session, None)]
