from __future__ import annotations

import pytest

from hubbub.protocols.framing import OP_BINARY, OP_TEXT, close_frame, frame


@pytest.mark.parametrize(
    ("n", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_length_encodings(n: int, header: bytes) -> None:
    data = frame(b"x" * n, OP_TEXT)
    assert data[: len(header)] == header and len(data) == len(header) + n


def test_binary_opcode() -> None:
    assert frame(b"\x00", OP_BINARY) == b"\x82\x01\x00"


def test_close_reason_truncated_on_char_boundary() -> None:
    data = close_frame(1000, "é" * 100)
    assert data[0] == 0x88 and data[1] <= 125
    data[4:].decode("utf-8")
