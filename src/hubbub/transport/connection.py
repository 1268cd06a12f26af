"""One client WebSocket connection once the upgrade is done: our own small asyncio protocol.

aiohttp parses the HTTP request, the endpoint authenticates it and aiohttp writes the 101
response; then :class:`~hubbub.transport.websocket.ClientEndpoint` takes the transport over
(``transport.set_protocol``) and a :class:`ClientConnection` is all that is left of the
connection: one object with ``__slots__`` that parses the client's frames (RFC 6455 §5:
masking, fragmentation, control frames, size limit, UTF-8 of text messages) and holds the
pre-built frames of a fan-out for the per-loop :class:`Coalescer`, which writes them. No task,
queue, stream reader or coroutine frame is kept while the connection is idle; a task exists only
while a client message is being handled (messages of one connection are handled one at a time, in order).

Close codes follow RFC 6455 §7.4 and what aiohttp answered before: protocol errors 1002 (reserved
bits, unknown opcode, fragmented or oversized control frame, bad continuation, unmasked frame,
bad close frame), invalid UTF-8 in a text message or close reason 1007, a message over the size
limit 1009; a client's close frame is answered with 1000.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from hubbub.errors import HubbubError
from hubbub.protocols.framing import close_frame, frame

if TYPE_CHECKING:
    from hubbub.core.node import Node
    from hubbub.core.session import Session
    from hubbub.protocols.events import ClientRequest

try:  # aiohttp's C (Cython) unmasking; the same XOR in Python otherwise
    from aiohttp._websocket.mask import _websocket_mask_cython as _mask_c  # type: ignore[import-not-found]

    websocket_mask: Callable[[bytes, bytearray], None] = _mask_c
except ImportError:  # pragma: no cover - aiohttp without its extensions

    def websocket_mask(mask: bytes, data: bytearray) -> None:
        """XOR ``data`` in place with the 4-byte ``mask`` repeated (RFC 6455 §5.3)."""
        n = len(data)
        key = int.from_bytes(mask * (n // 4 + 1), "little") >> (8 * (4 - n % 4) % 32)
        data[:] = (int.from_bytes(data, "little") ^ (key & ((1 << (8 * n)) - 1))).to_bytes(n, "little")


__all__ = [
    "CLOSE_TIMEOUT",
    "PING_FRAME",
    "ClientConnection",
    "Coalescer",
    "Context",
    "Keepalive",
    "websocket_mask",
]

log = logging.getLogger("hubbub.websocket")

#: How long a close handshake may take before the socket is simply dropped (aiohttp's default).
CLOSE_TIMEOUT = 10.0

OPEN, CLOSING, CLOSED = 0, 1, 2

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

#: How many connections the :class:`Coalescer` writes to per loop iteration (~1 ms of sends here).
CHUNK = 128
#: Fan-out frames one connection may hold before the publishers that can wait are held back.
DEPTH = 2
#: Held frames up to this many bytes in all are joined into one buffer for the write.
JOIN_BYTES = 64 * 1024
#: An empty, unmasked ping frame (RFC 6455 §5.5.2), the same bytes for every connection.
PING_FRAME = bytes((0x89, 0))
#: The answer to a client's close frame (what aiohttp answered: 1000, no reason).
CLOSE_REPLY = close_frame(1000)

_ZERO_MASK = b"\x00\x00\x00\x00"
#: close codes a client may send (RFC 6455 §7.4.1 and the IANA registry; 3000-4999 are free to use)
_CLIENT_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))

_EAGER = sys.version_info >= (3, 12)


class Violation(Exception):
    """The client broke the WebSocket protocol: the connection ends with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Coalescer:
    """Per event loop: writes the connections' fan-out frames, a few connections at a time.

    A fan-out frame (:meth:`ClientConnection.hold`) is not written at once: a connection that
    starts holding frames joins the end of a queue, and a callback takes :data:`CHUNK` connections
    from its front per loop iteration, handing each one's frames to its transport together (one
    system call). Between steps the loop serves everything else (REST calls, client messages,
    broker commands), and what those add to a connection still in the queue rides in the same
    send. So an idle service writes a message in the next loop iteration, and a busy one makes one
    system call per connection per round of the queue instead of one per message: the busier, the
    more frames each send carries, with no timer to tune.

    Publishers that can wait (REST calls, a client's own messages) are held back while some
    connection has :data:`DEPTH` frames waiting (``gate`` is cleared until they are written): a
    publisher cannot run ahead of the writing by more than that, which bounds the queue and with
    it the time a frame waits (about one round).
    """

    __slots__ = ("full", "gate", "held", "loop", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop, gate: asyncio.Event) -> None:
        self.loop = loop
        self.gate = gate
        self.held: deque[ClientConnection] = deque()
        self.scheduled = False
        #: connections holding DEPTH frames or more (the gate is closed while there are any)
        self.full = 0

    def add(self, conn: ClientConnection) -> None:
        self.held.append(conn)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def filled(self) -> None:
        """A connection reached :data:`DEPTH` held frames."""
        self.full += 1
        self.gate.clear()

    def drained(self) -> None:
        """A connection that held :data:`DEPTH` frames or more let them go."""
        self.full -= 1
        if not self.full:
            self.gate.set()

    def flush(self) -> None:
        held = self.held
        popleft = held.popleft
        try:
            for _ in range(min(len(held), CHUNK)):
                popleft().flush()
        finally:  # a failed write (logged by the loop) must not stop the writer
            if held:
                self.loop.call_soon(self.flush)
            else:
                self.scheduled = False


class Keepalive:
    """Per event loop: one timer per keepalive interval pings every connection on that interval.

    Replaces a per-connection heartbeat (a timer, and a task per ping, for each connection). At
    each tick a connection from which nothing (no frame of any kind, pong included) arrived since
    the previous tick's ping is dropped as dead; the others get the shared :data:`PING_FRAME`. So
    a silent peer is dropped between one and two intervals after its last frame. A connection is
    on its ring from the takeover until its socket is gone: the rings are also the list of the
    live connections (graceful shutdown waits for them).
    """

    __slots__ = ("loop", "rings")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.rings: dict[float, set[ClientConnection]] = {}

    def add(self, conn: ClientConnection, interval: float) -> None:
        ring = self.rings.get(interval)
        if ring is None:
            ring = self.rings[interval] = set()
            self.loop.call_later(interval, self._tick, interval)
        conn.heard = True
        ring.add(conn)

    def remove(self, conn: ClientConnection, interval: float) -> None:
        ring = self.rings.get(interval)
        if ring is not None:
            ring.discard(conn)

    def connections(self) -> list[ClientConnection]:
        return [conn for ring in self.rings.values() for conn in ring]

    def _tick(self, interval: float) -> None:
        ring = self.rings.get(interval)
        if not ring:  # nobody on this interval any more: the timer stops until someone comes
            self.rings.pop(interval, None)
            return
        dead = []
        for conn in ring:
            if conn.heard:
                conn.heard = False
                conn.write(PING_FRAME)
            else:
                dead.append(conn)
        for conn in dead:
            ring.discard(conn)
            conn.abort()
        self.loop.call_later(interval, self._tick, interval)


class Context:
    """What every connection of one endpoint and event loop shares (one reference per connection)."""

    __slots__ = ("coalescer", "dispatch", "keepalive", "loop", "max_message", "node", "retention")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        node: Node,
        dispatch: Callable[[Session, ClientRequest], Awaitable[None]],
        *,
        max_message: int,
        retention: float,
    ) -> None:
        self.loop = loop
        self.node = node
        self.dispatch = dispatch
        self.max_message = max_message
        self.retention = retention
        self.coalescer = Coalescer(loop, node.writable)
        self.keepalive = Keepalive(loop)


class ClientConnection(asyncio.Protocol):
    """A client connection after the upgrade: the frame reader, and the session's :class:`Link`."""

    __slots__ = (
        "backlog",
        "buf",
        "close_code",
        "ctx",
        "frag",
        "frag_op",
        "heard",
        "held",
        "held_bytes",
        "interval",
        "need",
        "reason",
        "session",
        "state",
        "task",
        "timer",
        "transport",
        "unsent",
    )

    def __init__(self, ctx: Context, transport: asyncio.Transport) -> None:
        self.ctx = ctx
        self.transport = transport
        self.session: Session | None = None
        self.state = OPEN
        #: something arrived since the last keepalive ping (see :class:`Keepalive`)
        self.heard = True
        self.interval = 0.0
        # fan-out frames waiting for the coalescer's flush
        self.held: list[bytes] | None = None
        self.held_bytes = 0
        #: the transport's buffer is over its high-water mark (between pause_writing and resume_writing)
        self.unsent = False
        # reading: unparsed bytes, how many the next frame needs, the fragmented message so far
        self.buf: bytearray | None = None
        self.need = 0
        self.frag: bytearray | None = None
        self.frag_op = 0
        # handling: the task of the message being handled, and the messages that came meanwhile
        self.task: asyncio.Task[None] | None = None
        self.backlog: deque[tuple[bytes | None, int]] | None = None
        # ending: the close code (received, or of the protocol error) and the `disconnected` reason
        self.close_code: int | None = None
        self.reason: str | None = None
        self.timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<ClientConnection {self.session!r} state={self.state}>"

    # -- taking over -----------------------------------------------------------------

    def start(self, session: Session | None, interval: float, pending: bytes = b"") -> None:
        """Become the transport's protocol; ``pending``: bytes that arrived before the takeover."""
        self.session = session
        self.interval = interval
        transport = self.transport
        if transport.is_closing():  # the client left during the upgrade
            self.state = CLOSED
            self.close_code = 1006
            self._finish()
            return
        self.ctx.keepalive.add(self, interval)
        transport.set_protocol(self)
        if not transport.is_reading():
            transport.resume_reading()
        if pending:
            self.data_received(pending)

    # -- Link: what the session writes through -------------------------------------------

    def write(self, data: bytes) -> None:
        """Write now (replies, acks, control frames), after the frames this connection holds."""
        if self.held:
            self.flush()
        if self.state == OPEN and not self.transport.is_closing():
            self.transport.write(data)

    def hold(self, data: bytes) -> int:
        """A fan-out frame: written when the :class:`Coalescer` reaches this connection.

        Returns the bytes waiting: those held plus the transport's buffer (asked only while the
        transport has told us to pause writing: below its high-water mark it does not matter).
        """
        held = self.held
        if not held:
            if held is None:  # one list per connection, reused: no garbage per message
                held = self.held = []
            held.append(data)
            self.held_bytes = len(data)
            self.ctx.coalescer.add(self)
        else:
            held.append(data)
            self.held_bytes += len(data)
            if len(held) == DEPTH:
                self.ctx.coalescer.filled()
        if self.unsent:
            return self.held_bytes + self.transport.get_write_buffer_size()
        return self.held_bytes

    def flush(self) -> None:
        """Hand the held frames to the transport in one call; frames never follow a close."""
        held = self.held
        if not held:
            return
        if len(held) == 1:
            data: bytes | list[bytes] = held[0]
        elif self.held_bytes <= JOIN_BYTES:  # a few small frames: copying is cheaper than a writev
            data = b"".join(held)
        else:
            data = held.copy()
        self._drop()  # first: the bookkeeping stays right even if the write fails
        transport = self.transport
        if self.state == OPEN and not transport.is_closing():
            if isinstance(data, list):
                transport.writelines(data)
            else:
                transport.write(data)

    def _drop(self) -> None:
        """Forget the held frames."""
        held = self.held
        if held:
            if len(held) >= DEPTH:
                self.ctx.coalescer.drained()
            held.clear()
            self.held_bytes = 0

    def buffered(self) -> int:
        """Unsent bytes: the transport's buffer plus the frames held for the coalescer."""
        return self.transport.get_write_buffer_size() + self.held_bytes

    def abort(self) -> None:
        """Drop the connection at once (no close handshake: the peer stopped answering)."""
        self._drop()
        self.transport.abort()

    def close(self, code: int, reason: str) -> None:
        """Start the close handshake: held frames, then the close frame; the socket closes when
        the client answers (or after :data:`CLOSE_TIMEOUT`)."""
        if self.state != OPEN:
            return
        self.flush()
        self.state = CLOSING
        if not self.transport.is_closing():
            self.transport.write(close_frame(code, reason))
        self._arm_timeout()

    # -- asyncio.Protocol --------------------------------------------------------------

    def pause_writing(self) -> None:
        self.unsent = True

    def resume_writing(self) -> None:
        self.unsent = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        self._drop()
        self.buf = self.frag = None
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()
        self.ctx.keepalive.remove(self, self.interval)
        if self.close_code is None:
            self.close_code = 1006  # no close frame from the client
        self._finish()

    def data_received(self, data: bytes) -> None:
        self.heard = True
        if self.state == CLOSED:
            return
        buf = self.buf
        chunk: bytes | bytearray = data
        if buf is not None:
            buf += data
            if len(buf) < self.need:
                return
            self.buf = None
            chunk = buf
        try:
            self._parse(chunk)
        except Violation as v:
            self._violation(v.code, str(v))

    # -- reading ------------------------------------------------------------------------

    def _parse(self, data: bytes | bytearray) -> None:
        """Handle every complete frame in ``data``; keep the rest for the next read."""
        n = len(data)
        pos = 0
        limit = self.ctx.max_message
        while self.state != CLOSED:
            avail = n - pos
            if avail < 2:
                need = 2
                break
            b0 = data[pos]
            b1 = data[pos + 1]
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            if b0 & 0x70:
                raise Violation(1002, "Received frame with non-zero reserved bits")
            if not b1 & 0x80:
                raise Violation(1002, "Received an unmasked frame: client frames must be masked")
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG:
                    raise Violation(1002, f"Unexpected opcode={opcode}")
                if not b0 & 0x80:
                    raise Violation(1002, "Received fragmented control frame")
                if length > 125:
                    raise Violation(1002, "Control frame payload cannot be larger than 125 bytes")
                head = 6
            else:
                if opcode > OP_BINARY:
                    raise Violation(1002, f"Unexpected opcode={opcode}")
                if length < 126:
                    head = 6
                elif length == 126:
                    if avail < 4:
                        need = 4
                        break
                    length = data[pos + 2] << 8 | data[pos + 3]
                    head = 8
                else:
                    if avail < 10:
                        need = 10
                        break
                    length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                    head = 14
                frag = self.frag
                if opcode == OP_CONTINUATION:
                    if frag is None:
                        raise Violation(1002, "Continuation frame for non started message")
                elif frag is not None:
                    raise Violation(1002, f"Expected a continuation frame, got opcode={opcode}")
                if length + (len(frag) if frag is not None else 0) > limit:
                    raise Violation(1009, f"Message size exceeds the limit of {limit} bytes")
            end = pos + head + length
            if end > n:
                need = end - pos
                break
            mask = data[end - length - 4 : end - length]
            payload = data[end - length : end]
            pos = end
            if mask != _ZERO_MASK:
                if type(payload) is not bytearray:
                    payload = bytearray(payload)
                websocket_mask(bytes(mask), payload)
            if opcode >= OP_CLOSE:
                self._control(opcode, payload)
            elif opcode == OP_CONTINUATION:
                frag = self.frag
                assert frag is not None  # checked with the header
                frag += payload
                if b0 & 0x80:  # the last fragment
                    self.frag = None
                    self._message(frag, self.frag_op == OP_TEXT)
            elif not b0 & 0x80:  # the first fragment: more of this message follows
                self.frag = bytearray(payload)
                self.frag_op = opcode
            else:
                self._message(payload, opcode == OP_TEXT)
        else:
            return
        if pos < n:
            self.buf = (
                bytearray(data[pos:]) if pos else (data if type(data) is bytearray else bytearray(data))
            )
            self.need = need

    def _control(self, opcode: int, payload: bytes | bytearray) -> None:
        if opcode == OP_PING:
            if self.state == OPEN:
                self.write(frame(bytes(payload), OP_PONG))
            return
        if opcode == OP_PONG:
            return  # `heard` is all a pong is for
        if len(payload) >= 2:
            code = payload[0] << 8 | payload[1]
            if code not in _CLIENT_CLOSE_CODES and not 3000 <= code < 5000:
                raise Violation(1002, f"Invalid close code: {code}")
            try:
                bytes(payload[2:]).decode("utf-8")
            except UnicodeDecodeError:
                raise Violation(1007, "Invalid UTF-8 in the close reason") from None
        elif payload:
            raise Violation(1002, "Invalid close frame")
        else:
            code = 1005  # no status code
        if self.state == CLOSING:  # the answer to our close frame: the handshake is done
            self._shutdown()
        elif self.backlog is not None:  # after the messages that came before it
            self.backlog.append((None, code))
        else:
            self._closed_by_client(code)

    def _message(self, payload: bytes | bytearray, is_text: bool) -> None:
        if is_text and not payload.isascii():
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                raise Violation(1007, "Invalid UTF-8 text message") from None
        if self.state != OPEN or self.session is None:
            return  # closing: data is read past, only the client's close frame matters
        data = payload if type(payload) is bytes else bytes(payload)
        if self.task is None:
            self._handle(data, is_text)
            return
        backlog = self.backlog
        if backlog is None:
            backlog = self.backlog = deque()
        backlog.append((data, is_text))
        if self.transport.is_reading():  # one message at a time: stop reading until they are handled
            self.transport.pause_reading()

    # -- handling --------------------------------------------------------------------------

    def _decode(self, data: bytes, is_text: bool) -> ClientRequest | None:
        session = self.session
        assert session is not None
        try:
            return session.codec.decode(data, is_text)
        except HubbubError as exc:
            log.info("closing %s: %s", session, exc.message)
            session.closed = True
            self.reason = exc.message
            self.close(exc.close_code, exc.message)
            return None

    def _handle(self, data: bytes, is_text: bool) -> None:
        request = self._decode(data, is_text)
        if request is None:
            return
        if self.backlog is None:
            self.backlog = deque()
        coro = self._run(request)
        if _EAGER:  # pragma: no cover - Python >= 3.12: runs at once, a task only if it waits
            self.task = asyncio.Task(coro, loop=self.ctx.loop, eager_start=True)  # type: ignore[call-arg]
            if self.task.done():
                self.task = None
        else:
            self.task = self.ctx.loop.create_task(coro)

    async def _run(self, request: ClientRequest) -> None:
        """Handle ``request``, then the messages that arrived meanwhile, one at a time."""
        session = self.session
        assert session is not None
        dispatch = self.ctx.dispatch
        backlog = self.backlog
        assert backlog is not None
        try:
            next_request: ClientRequest | None = request
            while next_request is not None:
                try:
                    await dispatch(session, next_request)
                except Exception:  # the dispatcher never raises; if it did, this connection ends
                    log.exception("internal error while handling a message of %s", session)
                    self.close(1011, "Internal server error")
                    break
                next_request = None
                while backlog and next_request is None:
                    data, arg = backlog.popleft()
                    if data is None:
                        self._closed_by_client(arg)
                    elif not session.closed:
                        next_request = self._decode(data, bool(arg))
        finally:
            self.task = None
            self.backlog = None
            if self.state == OPEN and not self.transport.is_reading():
                self.transport.resume_reading()
            elif self.state == CLOSED:
                self._finish()

    # -- ending ----------------------------------------------------------------------------

    def _arm_timeout(self) -> None:
        if self.timer is None:
            self.timer = self.ctx.loop.call_later(CLOSE_TIMEOUT, self.abort)

    def _shutdown(self, linger: bool = False) -> None:
        """Close the socket (after what is buffered is sent); drop it if that takes too long.

        ``linger``: only end our side (FIN after the close frame) and read past what the client
        still sends until it closes too: closing with unread input would reset the connection,
        and the client could lose the close frame that says why.
        """
        self.state = CLOSED
        self.buf = self.frag = None
        transport = self.transport
        if linger and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()
        self._arm_timeout()

    def _closed_by_client(self, code: int) -> None:
        """The client's close frame: answer it and close (aiohttp's ``autoclose``)."""
        if self.state != OPEN:
            return
        self.close_code = code
        self._drop()
        if not self.transport.is_closing():
            self.transport.write(CLOSE_REPLY)
        self._shutdown()
        self._finish()

    def _violation(self, code: int, message: str) -> None:
        """A protocol error: close frame with ``code``, then our end of the socket; what the
        client sends after it is not read any more."""
        log.info("closing %s: %s (%d)", self.session, message, code)
        if self.close_code is None:
            self.close_code = code
        if code == 1009 and self.reason is None:
            self.reason = f"Message too big: the limit is {self.ctx.max_message} bytes"
        if self.state == OPEN:
            self.flush()
            if not self.transport.is_closing():
                self.transport.write(close_frame(code))
        self._shutdown(linger=True)
        self._finish()

    def _finish(self) -> None:
        """The connection is over for its session: detach it, or suspend a reliable one (once,
        after the message being handled, if any)."""
        session = self.session
        if session is None or self.task is not None:
            return
        self.session = None
        if session.link is not self:  # a resumed connection took the session over
            return
        # only a normal closure (1000) ends a reliable session at once: 1001 ("going away"), a close
        # frame without a status code (1005: what the JS client's stop() sends; aiohttp reported
        # it as 0 and the session was kept) and every abnormal end keep it for the retention time
        clean = self.close_code == 1000 and self.reason is None
        node = self.ctx.node
        if session.reliable is not None and not session.closed and not clean:
            node.suspend(session, self.ctx.retention)
        else:
            session.closed = True
            node.detach(session, self.reason)
