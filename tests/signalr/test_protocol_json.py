"""The SignalR JSON hub protocol and handshake: golden bytes, decoding rules, garbage."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubbub.errors import HubbubError, PayloadTooLarge, ProtocolViolation
from hubbub.signalr import protocol_json as pj
from hubbub.signalr.messages import (
    Ack,
    CancelInvocation,
    Close,
    Completion,
    HandshakeRequest,
    Invocation,
    Ping,
    Sequence,
    StreamInvocation,
    StreamItem,
)

RS = b"\x1e"


class TestHandshake:
    def test_request(self) -> None:
        assert pj.parse_handshake(b'{"protocol":"json","version":1}') == HandshakeRequest("json", 1)
        assert pj.read_handshake(b'{"protocol":"messagepack","version":1}\x1e\x02\x91\x06', 100) == (
            HandshakeRequest("messagepack", 1),
            b"\x02\x91\x06",
        )

    def test_incomplete(self) -> None:
        assert pj.read_handshake(b'{"protocol":"json"', 100) is None

    def test_too_large_without_separator(self) -> None:
        with pytest.raises(PayloadTooLarge):
            pj.read_handshake(b"x" * 101, 100)

    @pytest.mark.parametrize(
        ("record", "error"),
        [
            (b'{"version":1}', "Missing required property 'protocol'."),
            (b'{"protocol":"json"}', "Missing required property 'version'."),
            (b'{"protocol":1,"version":1}', "Expected 'protocol' to be of type String."),
            (b'{"protocol":"json","version":"1"}', "Expected 'version' to be of type Integer."),
            (b'{"protocol":"json","version":true}', "Expected 'version' to be of type Integer."),
            (b"[]", "Unexpected JSON Token Type 'Array'. Expected a JSON Object."),
            (b"{", "Error reading JSON: the message is not valid JSON."),
        ],
    )
    def test_malformed(self, record: bytes, error: str) -> None:
        with pytest.raises(ProtocolViolation) as info:
            pj.parse_handshake(record)
        assert info.value.message == error

    def test_responses(self) -> None:
        assert pj.handshake_response() == b"{}\x1e"
        assert pj.handshake_response("nope") == b'{"error":"nope"}\x1e'


# (message, exact bytes): the examples of ASP.NET Core's HubProtocol.md, compact
GOLDEN = [
    (Invocation("Send", [42, "Test"]), b'{"type":1,"target":"Send","arguments":[42,"Test"]}'),
    (
        Invocation("Send", [42], "123", headers={"Foo": "Bar"}),
        b'{"type":1,"headers":{"Foo":"Bar"},"invocationId":"123","target":"Send","arguments":[42]}',
    ),
    (
        Invocation("S", [], "1", ("a",)),
        b'{"type":1,"invocationId":"1","target":"S","arguments":[],"streamIds":["a"]}',
    ),
    (StreamItem("123", 42), b'{"type":2,"invocationId":"123","item":42}'),
    (Completion.void("123"), b'{"type":3,"invocationId":"123"}'),
    (Completion.ok("123", 42), b'{"type":3,"invocationId":"123","result":42}'),
    (Completion.ok("123", None), b'{"type":3,"invocationId":"123","result":null}'),
    (
        Completion.failed("123", "It didn't work!"),
        b'{"type":3,"invocationId":"123","error":"It didn\'t work!"}',
    ),
    (
        StreamInvocation("123", "Send", [42]),
        b'{"type":4,"invocationId":"123","target":"Send","arguments":[42]}',
    ),
    (CancelInvocation("123"), b'{"type":5,"invocationId":"123"}'),
    (Ping(), b'{"type":6}'),
    (Close(), b'{"type":7}'),
    (
        Close("Connection closed because of an error!", True),
        b'{"type":7,"error":"Connection closed because of an error!","allowReconnect":true}',
    ),
    (Ack(1394), b'{"type":8,"sequenceId":1394}'),
    (Sequence(1394), b'{"type":9,"sequenceId":1394}'),
]


@pytest.mark.parametrize(("message", "record"), GOLDEN)
def test_golden_encode(message: object, record: bytes) -> None:
    assert pj.encode(message) == record + RS  # type: ignore[arg-type]


@pytest.mark.parametrize(("message", "record"), GOLDEN)
def test_golden_decode(message: object, record: bytes) -> None:
    assert pj.decode_record(record) == message


def test_ping_constant() -> None:
    assert pj.PING == b'{"type":6}\x1e'


class TestDecode:
    def test_unknown_type_and_properties_are_ignored(self) -> None:
        assert pj.decode_record(b'{"type":99,"x":1}') is None
        assert pj.decode_record(b'{"type":6,"future":[1]}') == Ping()

    def test_invocation_id_optional_arguments_required(self) -> None:
        assert pj.decode_record(b'{"type":1,"target":"t","arguments":[]}') == Invocation("t", [])
        with pytest.raises(ProtocolViolation, match="Missing required property 'arguments'"):
            pj.decode_record(b'{"type":1,"target":"t"}')
        with pytest.raises(ProtocolViolation, match="Missing required property 'target'"):
            pj.decode_record(b'{"type":1,"arguments":[]}')

    @pytest.mark.parametrize(
        "record",
        [
            b'{"target":"t","arguments":[]}',
            b'{"type":"1","target":"t","arguments":[]}',
            b'{"type":1,"target":"t","arguments":{}}',
            b'{"type":1,"target":"t","arguments":[],"invocationId":5}',
            b'{"type":1,"target":"t","arguments":[],"streamIds":[1]}',
            b'{"type":1,"target":"t","arguments":[],"headers":{"a":1}}',
            b'{"type":1,"target":"t","arguments":[],"headers":[]}',
            b'{"type":3,"invocationId":"1","result":1,"error":"e"}',
            b'{"type":3}',
            b'{"type":7,"allowReconnect":"yes"}',
            b'{"type":8}',
            b"42",
            b"",
        ],
    )
    def test_malformed(self, record: bytes) -> None:
        with pytest.raises(ProtocolViolation):
            pj.decode_record(record)


class TestReader:
    def test_records_split_across_feeds(self) -> None:
        reader = pj.JsonReader(1000)
        assert reader.feed(b'{"type":6}\x1e{"type":1,"tar') == [(Ping(), b'{"type":6}')]
        parsed = reader.feed(b'get":"a","arguments":[]}\x1e{"type":6}\x1e')
        assert [p.message for p in parsed] == [Invocation("a", []), Ping()]
        assert parsed[0].raw == b'{"type":1,"target":"a","arguments":[]}'

    def test_size_limit(self) -> None:
        with pytest.raises(PayloadTooLarge):
            pj.JsonReader(10).feed(b'{"type":6,"padding":"xxxxxxxx"}\x1e')
        reader = pj.JsonReader(10)
        with pytest.raises(PayloadTooLarge):
            reader.feed(b"x" * 11)  # an unfinished record counts too
        assert pj.JsonReader(10).feed(b'{"type":6}\x1e') == [(Ping(), b'{"type":6}')]


@given(st.binary(max_size=300))
def test_garbage_is_a_protocol_error_never_a_crash(data: bytes) -> None:
    reader = pj.JsonReader(200)
    with contextlib.suppress(HubbubError):
        reader.feed(data)
    with contextlib.suppress(HubbubError):
        pj.read_handshake(data, 200)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)


@given(
    st.text(min_size=1, max_size=20),
    st.lists(_json, max_size=5),
    st.none() | st.text(max_size=10),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
def test_invocation_roundtrip(
    target: str, arguments: list[object], invocation_id: str | None, headers: dict[str, str]
) -> None:
    message = Invocation(target, arguments, invocation_id, headers=headers)
    (parsed,) = pj.JsonReader(10_000).feed(pj.encode(message))
    assert parsed.message == message
