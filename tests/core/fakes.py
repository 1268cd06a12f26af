"""A recording Link for core tests (stands in for the socket, not for hubbub)."""

from __future__ import annotations


class RecordingLink:
    def __init__(self, buffered: int = 0) -> None:
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self._buffered = buffered

    def write(self, data: bytes) -> None:
        self.frames.append(data)

    def hold(self, data: bytes) -> int:
        self.frames.append(data)
        return self._buffered

    def buffered(self) -> int:
        return self._buffered

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
