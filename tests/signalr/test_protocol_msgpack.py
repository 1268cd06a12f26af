"""The SignalR MessagePack hub protocol: VarInt framing, golden bytes, decoding rules, garbage."""

from __future__ import annotations

import contextlib

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubbub.errors import HubbubError, PayloadTooLarge, ProtocolViolation
from hubbub.signalr import protocol_msgpack as pm
from hubbub.signalr.messages import (
    Ack,
    CancelInvocation,
    Close,
    Completion,
    Invocation,
    Ping,
    Sequence,
    StreamInvocation,
    StreamItem,
)


@pytest.mark.parametrize(
    ("length", "prefix"),
    [
        (0, b"\x00"),
        (0x7F, b"\x7f"),
        (0x80, b"\x80\x01"),
        (0x3FFF, b"\xff\x7f"),
        (0x4000, b"\x80\x80\x01"),
        (2**31 - 1, b"\xff\xff\xff\xff\x07"),
    ],
)
def test_varint(length: int, prefix: bytes) -> None:
    assert pm.varint(length) == prefix
    assert pm.read_varint(prefix + b"rest") == (length, len(prefix))


def test_varint_limits() -> None:
    assert pm.read_varint(b"\x80\x80") is None  # incomplete
    with pytest.raises(ProtocolViolation, match="2GB"):
        pm.read_varint(b"\xff\xff\xff\xff\x08")
    with pytest.raises(ProtocolViolation, match="2GB"):
        pm.read_varint(b"\x80\x80\x80\x80\x80\x01")
    with pytest.raises(ValueError):
        pm.varint(2**31)


# Bodies from ASP.NET Core's HubProtocol.md (MessagePack encoding section) and the JS client.
GOLDEN_DECODE = [
    (  # [1, {}, nil, "Target", [1, "Test"]]: a non-blocking invocation as the JS client writes it
        b"\x95\x01\x80\xc0\xa6Target\x92\x01\xa4Test",
        Invocation("Target", [1, "Test"]),
    ),
    (  # [1, {}, "xyz", "method", [42, "string", {"prop": "value"}]]
        b"\x95\x01\x80\xa3xyz\xa6method\x93\x2a\xa6string\x81\xa4prop\xa5value",
        Invocation("method", [42, "string", {"prop": "value"}], "xyz"),
    ),
    (  # [1, {"Foo": "Bar"}, "xyz", "method", [], ["a"]]
        b"\x96\x01\x81\xa3Foo\xa3Bar\xa3xyz\xa6method\x90\x91\xa1a",
        Invocation("method", [], "xyz", ("a",), {"Foo": "Bar"}),
    ),
    (b"\x95\x01\x80\xa0\xa1t\x90", Invocation("t", [])),  # empty invocationId = non-blocking
    (b"\x94\x02\x80\xa3xyz\x2a", StreamItem("xyz", 42)),
    (b"\x95\x03\x80\xa3xyz\x01\xa5Error", Completion.failed("xyz", "Error")),
    (b"\x94\x03\x80\xa3xyz\x02", Completion.void("xyz")),
    (b"\x95\x03\x80\xa3xyz\x03\x2a", Completion.ok("xyz", 42)),
    (b"\x95\x04\x80\xa3xyz\xa6method\x91\x2a", StreamInvocation("xyz", "method", [42])),
    (b"\x93\x05\x80\xa3xyz", CancelInvocation("xyz")),
    (b"\x91\x06", Ping()),
    (b"\x92\x07\xc0", Close()),
    (b"\x93\x07\xa5Error\xc3", Close("Error", True)),
    (b"\x92\x08\xcd\x05\x72", Ack(1394)),
    (b"\x92\x09\xcd\x05\x72", Sequence(1394)),
]


@pytest.mark.parametrize(("body", "message"), GOLDEN_DECODE)
def test_golden_decode(body: bytes, message: object) -> None:
    assert pm.decode_body(body) == message
    (parsed,) = pm.MsgpackReader(1000).feed(pm.varint(len(body)) + body)
    assert parsed.message == message
    assert parsed.raw == body


GOLDEN_ENCODE = [
    # what ASP.NET Core writes: six items, an empty streamIds array
    (Invocation("Target", [1, "Test"]), b"\x96\x01\x80\xc0\xa6Target\x92\x01\xa4Test\x90"),
    (Completion.void("xyz"), b"\x94\x03\x80\xa3xyz\x02"),
    (Completion.failed("xyz", "Error"), b"\x95\x03\x80\xa3xyz\x01\xa5Error"),
    (Completion.ok("xyz", 42), b"\x95\x03\x80\xa3xyz\x03\x2a"),
    (Completion.ok("xyz", None), b"\x95\x03\x80\xa3xyz\x03\xc0"),
    (Ping(), b"\x91\x06"),
    (Close(), b"\x93\x07\xc0\xc2"),
    (Close("Error", True), b"\x93\x07\xa5Error\xc3"),
    (StreamItem("xyz", 42), b"\x94\x02\x80\xa3xyz\x2a"),
    (CancelInvocation("xyz"), b"\x93\x05\x80\xa3xyz"),
    (Ack(1394), b"\x92\x08\xcd\x05\x72"),
]


@pytest.mark.parametrize(("message", "body"), GOLDEN_ENCODE)
def test_golden_encode(message: object, body: bytes) -> None:
    assert pm.encode(message) == pm.varint(len(body)) + body  # type: ignore[arg-type]


def test_ping_constant() -> None:
    assert pm.PING == b"\x02\x91\x06"


def test_binary_arguments_survive() -> None:
    message = Invocation("t", [b"\x00\xff", {"k": b"v"}])
    (parsed,) = pm.MsgpackReader(100).feed(pm.encode(message))
    assert parsed.message == message


class TestDecode:
    def test_unknown_type_and_extra_items_are_ignored(self) -> None:
        assert pm.decode_body(b"\x92\x63\x01") is None
        assert pm.decode_body(b"\x92\x06\x01") == Ping()

    @pytest.mark.parametrize(
        "items",
        [
            [],
            ["1"],
            [1, {}, None, "t"],  # no arguments
            [1, [], None, "t", []],  # headers not a map
            [1, {"a": 1}, None, "t", []],  # header value not a string
            [1, {}, 5, "t", []],
            [1, {}, None, 5, []],
            [1, {}, None, "t", {}],
            [1, {}, None, "t", [], [1]],
            [3, {}, "x", 9],
            [3, {}, "x", 1],  # error kind without the error
            [3, {}, "x", 3],  # result kind without the result
            [3, {}, None, 2],
            [7, 5],
            [7, None, "yes"],
            [8],
            [True],
        ],
    )
    def test_malformed(self, items: list[object]) -> None:
        with pytest.raises(ProtocolViolation):
            pm.decode_body(msgpack.packb(items))

    @pytest.mark.parametrize(
        "body", [b"", b"\xc1", b"\x91", b"\x91\x06\x06", b"\x81\xa1a\x01", b"\xa3\xff\xfe\xfd"]
    )
    def test_not_messagepack(self, body: bytes) -> None:
        with pytest.raises(ProtocolViolation):
            pm.decode_body(body)


class TestReader:
    def test_split_feeds(self) -> None:
        data = pm.encode(Invocation("a", [1])) + pm.PING
        reader = pm.MsgpackReader(100)
        assert reader.feed(data[:1]) == []
        assert reader.feed(data[1:5]) == []
        assert [p.message for p in reader.feed(data[5:])] == [Invocation("a", [1]), Ping()]

    def test_size_limit_is_checked_on_the_prefix(self) -> None:
        with pytest.raises(PayloadTooLarge):
            pm.MsgpackReader(10).feed(pm.varint(11))


@given(st.binary(max_size=300))
def test_garbage_is_a_protocol_error_never_a_crash(data: bytes) -> None:
    with contextlib.suppress(HubbubError):
        pm.MsgpackReader(200).feed(data)
    with contextlib.suppress(HubbubError):
        pm.decode_body(data)


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=10,
)


@given(st.text(max_size=20), st.lists(_values, max_size=4), st.none() | st.text(min_size=1, max_size=8))
def test_invocation_roundtrip(target: str, arguments: list[object], invocation_id: str | None) -> None:
    message = Invocation(target, arguments, invocation_id)
    (parsed,) = pm.MsgpackReader(10_000).feed(pm.encode(message))
    assert parsed.message == message
