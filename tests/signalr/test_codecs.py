"""The hub protocols as Codecs (what fan-out writes), the multi-protocol REST body, tokens, user groups."""

from __future__ import annotations

import base64

import msgpack  # type: ignore[import-untyped]
import orjson
import pytest

from hubbub.auth import mint_client_token as mint_wps_token
from hubbub.errors import BadRequest, InvalidToken
from hubbub.protocols.events import DataMessage, DataType, Disconnected, Payload
from hubbub.protocols.framing import OP_BINARY, OP_TEXT, frame
from hubbub.signalr import protocol_json as pj
from hubbub.signalr import protocol_msgpack as pm
from hubbub.signalr.codecs import JSON, MESSAGEPACK, complete_multi_protocol, frame_payload, invocation_record
from hubbub.signalr.messages import Close, Invocation
from hubbub.signalr.tokens import (
    NAME_IDENTIFIER,
    TransportType,
    client_url,
    mint_client_token,
    user_id_of,
    verify_client_token,
)
from hubbub.signalr.usergroups import UserGroups

KEY = "signalr-test-key-0123456789-0123456789"


def test_invocation_record_is_the_json_wire_form() -> None:
    record = invocation_record("newMessage", ["a", 1])
    assert record == b'{"type":1,"target":"newMessage","arguments":["a",1]}'
    message = DataMessage(Payload(DataType.JSON, record))
    assert JSON.encode_data(message) == (record + b"\x1e", True)
    data, is_text = MESSAGEPACK.encode_data(message)
    assert not is_text
    assert data == pm.encode(Invocation("newMessage", ["a", 1]))


def test_disconnected_becomes_a_close_message_that_allows_reconnect() -> None:
    assert JSON.encode_disconnected(Disconnected("bye")) == (
        b'{"type":7,"error":"bye","allowReconnect":true}\x1e',
        True,
    )
    assert JSON.encode_disconnected(Disconnected("")) == (b'{"type":7,"allowReconnect":true}\x1e', True)
    assert MESSAGEPACK.encode_disconnected(Disconnected("bye")) == (pm.encode(Close("bye", True)), False)


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 70000])
def test_frame_payload_inverts_framing(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert frame_payload(frame(payload, OP_TEXT)) == payload
    assert frame_payload(frame(payload, OP_BINARY)) == payload


class TestMultiProtocol:
    def test_both_entries_kept(self) -> None:
        json_bytes = pj.encode(Invocation("t", [1]))
        pack_bytes = pm.encode(Invocation("t", [1]))
        body = msgpack.packb({"json": json_bytes, "messagepack": pack_bytes, "other": b"x"})
        done = msgpack.unpackb(complete_multi_protocol(body, 1000))
        assert done == {"json": json_bytes, "messagepack": pack_bytes}
        message = DataMessage(Payload(DataType.BINARY, complete_multi_protocol(body, 1000)))
        assert JSON.encode_data(message) == (json_bytes, True)
        assert MESSAGEPACK.encode_data(message) == (pack_bytes, False)

    def test_missing_entry_is_converted(self) -> None:
        done = msgpack.unpackb(
            complete_multi_protocol(msgpack.packb({"json": pj.encode(Invocation("t", [1]))}), 1000)
        )
        assert done["messagepack"] == pm.encode(Invocation("t", [1]))
        pack = pm.encode(Invocation("t", [b"\x01\x02", 3])) + pm.encode(Invocation("u", []))
        done = msgpack.unpackb(complete_multi_protocol(msgpack.packb({"messagepack": pack}), 1000))
        records = done["json"].split(b"\x1e")[:-1]
        assert [orjson.loads(r) for r in records] == [
            {"type": 1, "target": "t", "arguments": [base64.b64encode(b"\x01\x02").decode(), 3]},
            {"type": 1, "target": "u", "arguments": []},
        ]

    @pytest.mark.parametrize(
        "body",
        [
            b"not msgpack \xc1",
            msgpack.packb([1, 2]),
            msgpack.packb({"other": b"x"}),
            msgpack.packb({"json": "a string, not bytes"}),
            msgpack.packb({"json": b'{"type":1}\x1e'}),
            msgpack.packb({"json": b'{"type":6}\x1e'}),
            msgpack.packb({"json": b'{"type":1,"target":"t","arguments":[]}'}),  # no separator
            msgpack.packb({"messagepack": b"\x05\x91"}),
        ],
    )
    def test_malformed(self, body: bytes) -> None:
        with pytest.raises(BadRequest):
            complete_multi_protocol(body, 1000)


class TestTokens:
    def test_sdk_shaped_token(self) -> None:
        token = mint_client_token(KEY, client_url("http://localhost", "Chat"), user_id="alice")
        identity = verify_client_token(token, [KEY], "chat")
        assert identity.user_id == "alice"
        assert identity.claims["aud"] == "http://localhost/client/?hub=chat"
        assert identity.transports is TransportType.ALL

    @pytest.mark.parametrize(
        "aud",
        [
            "http://localhost/client/?hub=chat",
            "http://localhost:8888/client/?hub=CHAT",  # the docs' hand-rolled form keeps the port
            "https://example.service.signalr.net/client/?hub=chat&x=1",
            "https://gateway/prefix/client?hub=chat",
            ["http://other/api/x", "http://localhost/client/?hub=chat"],
        ],
    )
    def test_lenient_audience(self, aud: object) -> None:
        token = mint_client_token(KEY, "placeholder", claims={"sub": "u"})
        token = _resign(token, aud=aud)
        assert verify_client_token(token, [KEY], "chat").user_id == "u"

    @pytest.mark.parametrize(
        "aud",
        [
            "http://localhost/client/?hub=other",
            "http://localhost/client/",
            "http://localhost/client/hubs/chat",  # a Web PubSub client token
            "http://localhost/api/v1/hubs/chat",
            42,
        ],
    )
    def test_wrong_audience(self, aud: object) -> None:
        with pytest.raises(InvalidToken):
            verify_client_token(_resign(mint_client_token(KEY, "x"), aud=aud), [KEY], "chat")

    def test_wrong_key_and_expiry(self) -> None:
        aud = client_url("http://localhost", "chat")
        with pytest.raises(InvalidToken):
            verify_client_token(mint_client_token("another-key", aud), [KEY], "chat")
        assert verify_client_token(mint_client_token(KEY, aud), ["other", KEY], "chat")  # secondary key
        with pytest.raises(InvalidToken, match="expired"):
            verify_client_token(mint_client_token(KEY, aud, now=1_000_000), [KEY], "chat")

    def test_user_id_resolution_order(self) -> None:
        assert user_id_of({"asrs.s.uid": "a", "nameid": "b", "sub": "c"}) == "a"
        assert user_id_of({"nameid": "b", "sub": "c"}) == "b"
        assert user_id_of({NAME_IDENTIFIER: "n", "sub": "c"}) == "n"
        assert user_id_of({"sub": "c"}) == "c"
        assert user_id_of({"nameid": ["x", "y"]}) == "x"
        assert user_id_of({"asrs.s.uid": "", "sub": 5}) is None

    def test_transport_restriction_claim(self) -> None:
        token = mint_client_token(KEY, client_url("http://h", "chat"), claims={"asrs.s.htt": "4"})
        assert verify_client_token(token, [KEY], "chat").transports is TransportType.LONG_POLLING
        token = mint_client_token(KEY, client_url("http://h", "chat"), claims={"asrs.s.htt": "junk"})
        assert verify_client_token(token, [KEY], "chat").transports is TransportType.ALL

    def test_pyjwt_minted_tokens_verify(self) -> None:
        token = mint_wps_token(KEY, client_url("http://localhost", "chat"), user_id="bob")
        assert verify_client_token(token, [KEY], "chat").user_id == "bob"


def _resign(token: str, **changes: object) -> str:
    payload = orjson.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    payload.update(changes)
    aud = payload.pop("aud")
    return mint_client_token(KEY, aud, claims=payload)  # type: ignore[arg-type]


class TestUserGroups:
    def test_membership_and_ttl(self) -> None:
        groups = UserGroups()
        groups.add("Chat", "alice", "a")
        groups.add("chat", "alice", "b", expires_at=10.0)
        assert sorted(groups.groups("CHAT", "alice", now=5.0)) == ["a", "b"]
        assert groups.contains("chat", "alice", "b", now=9.9)
        assert not groups.contains("chat", "alice", "b", now=10.0)
        assert groups.expire(9.0) == []
        assert groups.expire(11.0) == [("chat", "alice", "b")]
        assert groups.groups("chat", "alice", now=11.0) == ["a"]

    def test_renewal_replaces_the_ttl(self) -> None:
        groups = UserGroups()
        groups.add("h", "u", "g", expires_at=10.0)
        groups.add("h", "u", "g")  # forever now
        assert groups.expire(100.0) == []
        assert groups.contains("h", "u", "g", now=100.0)

    def test_remove(self) -> None:
        groups = UserGroups()
        groups.add("h", "u", "g1")
        groups.add("h", "u", "g2")
        groups.remove("h", "u", "g1")
        groups.remove("h", "nobody", "g1")
        assert groups.groups("h", "u", 0.0) == ["g2"]
        groups.remove_all("h", "u")
        assert groups.groups("h", "u", 0.0) == []
        assert groups._hubs == {}
