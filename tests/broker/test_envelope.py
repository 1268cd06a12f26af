"""The inter-node envelope: exact round trips, binary payloads, versioning."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubbub.broker.base import Command, Op, Scope
from hubbub.broker.envelope import VERSION, EnvelopeError, decode, encode, origin_of
from hubbub.protocols.events import DataType, Payload, StreamInfo

texts = st.text(max_size=40)
opt_texts = st.none() | texts
payloads = st.none() | st.builds(Payload, st.sampled_from(list(DataType)), st.binary(max_size=300))
commands = st.builds(
    Command,
    op=st.sampled_from(list(Op)),
    hub=st.text(min_size=1, max_size=20),
    scope=st.sampled_from(list(Scope)),
    target=opt_texts,
    payload=payloads,
    excluded=st.lists(texts, max_size=4).map(tuple),
    filter=opt_texts,
    groups=st.lists(texts, max_size=4).map(tuple),
    reason=opt_texts,
    from_user_id=opt_texts,
    from_connection_id=opt_texts,
    no_echo=st.booleans(),
    permission=opt_texts,
    permission_target=opt_texts,
    stream=st.none()
    | st.builds(StreamInfo, texts, st.integers(1, 2**63), st.booleans(), opt_texts, opt_texts, opt_texts),
)
node_ids = st.text(min_size=1, max_size=30)


@given(commands, node_ids)
def test_round_trip(command: Command, node: str) -> None:
    data = encode(command, node)
    assert decode(data) == (command, node)
    assert origin_of(data) == node.encode("utf-8")


def test_payload_bytes_travel_raw() -> None:
    blob = bytes(range(256)) * 4
    data = encode(Command(Op.SEND, "h", Scope.ALL, payload=Payload(DataType.BINARY, blob)), "n1")
    assert data.endswith(blob)  # no base64, no escaping
    assert len(data) < len(blob) + 64


def test_layout_is_version_origin_header_payload() -> None:
    data = encode(Command(Op.SEND, "Hub", Scope.GROUP, "g", payload=Payload(DataType.TEXT, b"hi")), "node-7")
    assert data[0] == VERSION == 1
    assert data[1] == len(b"node-7") and data[2:8] == b"node-7"
    length = int.from_bytes(data[8:12], "big")
    assert data[12 : 12 + length] == b'{"o":"send","h":"Hub","s":"group","t":"g","d":"text"}'
    assert data[12 + length :] == b"hi"


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_version_is_rejected(version: int) -> None:
    data = bytearray(encode(Command(Op.CLOSE, "h", Scope.ALL), "n"))
    data[0] = version
    with pytest.raises(EnvelopeError, match="version"):
        decode(bytes(data))
    with pytest.raises(EnvelopeError):
        origin_of(bytes(data))


def _env(header: bytes, body: bytes = b"") -> bytes:
    return b"\x01\x01n" + len(header).to_bytes(4, "big") + header + body


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01",
        b"\x01\x05ab",
        b"\x01\x01n\x00\x00\x00\x09{}",  # header longer than the data
        _env(b"[]"),
        _env(b"{}"),
        _env(b"not json"),
        _env(b'{"o":"nope","h":"h","s":"all"}'),
        _env(b'{"o":"send","h":"h","s":"everyone"}'),
        _env(b'{"o":"send","h":"h","s":"all"}', b"payload without a data type"),
        _env(b'{"o":"send","h":"h","s":"all","d":"nope"}'),
        _env(b'{"o":"send","h":"h","s":"all","t":5}'),
        _env(b'{"o":"send","h":"h","s":"all","x":"not a list"}'),
        _env(b'{"o":"send","h":"h","s":"all","st":["s",1]}'),
        _env(b'{"o":"send","h":"h","s":"all","st":["s","1",false,null,null,null]}'),
        _env(b'{"o":"send","h":"h","s":"all","st":["s",1,false,5,null,null]}'),
    ],
)
def test_malformed_is_rejected(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        decode(data)


def test_valid_minimal_envelope() -> None:
    assert decode(_env(b'{"o":"close","h":"h","s":"all"}')) == (Command(Op.CLOSE, "h", Scope.ALL), "n")


@given(st.binary(max_size=200))
def test_garbage_never_crashes(data: bytes) -> None:
    with contextlib.suppress(EnvelopeError):
        decode(data)


def test_node_id_length_is_bounded() -> None:
    with pytest.raises(ValueError):
        encode(Command(Op.CLOSE, "h", Scope.ALL), "x" * 256)
