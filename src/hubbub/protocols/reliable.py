"""Reliable-subprotocol bookkeeping as a pure state machine (spec §4.6).

One :class:`ReliableState` per reliable connection. It numbers outgoing data
messages with strictly increasing sequence ids (from 1, :attr:`next_id` is the
one the next frame carries), keeps every stamped
frame until the client's cumulative ``sequenceAck`` covers it, and answers
"what must be resent" when the client resumes. No I/O, no clock.
"""

from __future__ import annotations

__all__ = ["MAX_BUFFERED_BYTES", "MAX_BUFFERED_MESSAGES", "ReliableState"]

MAX_BUFFERED_MESSAGES = 1000
MAX_BUFFERED_BYTES = 16 * 1024 * 1024


class ReliableState:
    __slots__ = (
        "_bytes",
        "_first",
        "_pending",
        "acked",
        "max_bytes",
        "max_messages",
        "next_id",
        "overflowed",
    )

    def __init__(
        self, max_messages: int = MAX_BUFFERED_MESSAGES, max_bytes: int = MAX_BUFFERED_BYTES
    ) -> None:
        self.next_id = 1
        self.acked = 0
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        # frames of sequence ids _first, _first + 1, ... (recorded in order); plain bytes, no (id, frame)
        # tuples, so thousands of buffered frames cost the cyclic GC nothing; a list, as an ack drops a
        # prefix (one memmove) and the buffer is small (MAX_BUFFERED_MESSAGES)
        self._pending: list[bytes] = []
        self._first = 1
        self._bytes = 0
        self.overflowed = False

    def record(self, data: bytes) -> bool:
        """Keep ``data``, the frame stamped with :attr:`next_id`, until it is acknowledged, and move
        :attr:`next_id` on; False once the buffer overflowed.

        An overflowed session cannot be recovered: the caller closes it with 1008.
        """
        if not self._pending:  # the buffer restarts at this id (also after next_id was set: a takeover)
            self._first = self.next_id
        self.next_id += 1
        self._pending.append(data)
        self._bytes += len(data)
        if len(self._pending) > self.max_messages or self._bytes > self.max_bytes:
            self.overflowed = True
        return not self.overflowed

    def ack(self, sequence_id: int) -> None:
        """Cumulative acknowledgement: everything up to ``sequence_id`` was received."""
        if sequence_id <= self.acked:
            return
        self.acked = min(sequence_id, self.next_id - 1)
        pending = self._pending
        done = self.acked - self._first + 1  # how many of the kept frames that covers
        if done > 0:
            self._bytes -= sum(map(len, pending[:done]))
            del pending[:done]
            self._first += done
        if self.overflowed and len(pending) <= self.max_messages and self._bytes <= self.max_bytes:
            self.overflowed = False

    def unacked(self) -> list[bytes]:
        """Frames to resend after a resume, in order."""
        return list(self._pending)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._bytes
