"""RESP2 encoding and incremental parsing (the wire of the subscriber and the ordered writer)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubbub.broker.resp import RespError, RespParser, RespProtocolError, encode_command


def test_encode_command() -> None:
    assert encode_command(b"SET", "k", 5) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n"
    assert encode_command("é") == b"*1\r\n$2\r\n\xc3\xa9\r\n"


def test_parses_every_type() -> None:
    data = b"+OK\r\n-ERR bad\r\n:42\r\n$3\r\na\r\n\r\n$-1\r\n*2\r\n$1\r\nx\r\n*-1\r\n*0\r\n"
    replies = RespParser().feed(data)
    assert replies[0] == b"OK"
    assert isinstance(replies[1], RespError) and str(replies[1]) == "ERR bad"
    assert replies[2:] == [42, b"a\r\n", None, [b"x", None], []]


resp_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.binary(max_size=50),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


def _encode(value: Any) -> bytes:
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    return b"*%d\r\n" % len(value) + b"".join(_encode(v) for v in value)


@given(st.lists(resp_values, max_size=5), st.data())
def test_any_split_gives_the_same_replies(values: list[Any], data: st.DataObject) -> None:
    wire = b"".join(_encode(v) for v in values)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    parser, got, start = RespParser(), [], 0
    for cut in [*cuts, len(wire)]:
        got += parser.feed(wire[start:cut])
        start = cut
    assert got == values


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(RespProtocolError):
        RespParser().feed(b"?what\r\n")
    with pytest.raises(RespProtocolError):
        RespParser().feed(b"$2\r\nabcd\r\n")
