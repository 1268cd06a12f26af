"""The pure parts of the SignalR extension: header parsing, completion framing, connection strings,
output items to REST calls (the end-to-end behaviour is in test_signalr_trigger/bindings)."""

from __future__ import annotations

import json

import jwt
import msgpack  # type: ignore[import-untyped]
import pytest

from hubbub.functions.appconfig import ConfigError
from hubbub.functions.signalr import SignalRExtension
from hubbub.functions.signalr_actions import (
    RestCall,
    SignalRActionError,
    parse_signalr_connection_string,
    to_call,
)
from hubbub.functions.signalr_events import (
    MSGPACK_TYPE,
    UpstreamRequest,
    completion,
    parse_claims,
    parse_query,
)


def test_claims_header() -> None:
    assert parse_claims("a: 1, b: x, a: 2") == {"a": "1", "b": "x"}
    # as .NET splits: " : v" has a (blank) type, "e: " has no value
    assert parse_claims("url: http://x, bad, c: d: e, : v, e: ") == {"url": "http://x", "": "v"}
    assert parse_claims(None) is None and parse_claims("") is None


def test_client_query() -> None:
    assert parse_query("?a=1&b=&a=2&c=%20x") == {"a": "1,2", "b": "", "c": " x"}
    assert parse_query("a=1") == {"a": "1"}
    assert parse_query("") is None


def test_long_messagepack_completion_has_a_multi_byte_length() -> None:
    request = UpstreamRequest("h", "messages", "e", "c", content_type=MSGPACK_TYPE, invocation_id="1")
    framed = completion(request, result="x" * 300)
    body = msgpack.packb([3, {}, "1", 3, "x" * 300])
    length = len(body)
    assert framed[:2] == bytes([(length & 0x7F) | 0x80, length >> 7])
    assert msgpack.unpackb(framed[2:]) == [3, {}, "1", 3, "x" * 300]


def test_json_completion() -> None:
    request = UpstreamRequest("h", "messages", "e", "c", invocation_id="7")
    assert (
        completion(request, result={"ü": 1}) == '{"type":3,"invocationId":"7","result":{"ü":1}}\x1e'.encode()
    )
    assert json.loads(completion(request, error="no")[:-1]) == {"type": 3, "invocationId": "7", "error": "no"}


def test_connection_strings() -> None:
    cs = parse_signalr_connection_string(
        "Endpoint=https://x.service.signalr.net/;AccessKey=k;Version=1.0;ClientEndpoint=https://edge/"
    )
    assert (cs.endpoint, cs.client_endpoint, cs.server_endpoint) == (
        "https://x.service.signalr.net",
        "https://edge",
        "https://x.service.signalr.net",
    )
    local = parse_signalr_connection_string("endpoint=http://localhost;port=8888;accesskey=k;")
    assert (local.endpoint, local.audience_base) == ("http://localhost:8888", "http://localhost")
    for bad in ("AccessKey=k", "Endpoint=ftp://x;AccessKey=k", "Endpoint=http://x", "Endpoint=http://x;Port=0;AccessKey=k",
                "Endpoint=http://x;AccessKey=k;accesskey=j"):  # fmt: skip
        with pytest.raises(ConfigError):
            parse_signalr_connection_string(bad)


def test_output_items_to_rest_calls() -> None:
    message = {"target": "t", "arguments": [1]}

    def call(item: dict[str, object]) -> RestCall:
        found = to_call(item)
        assert found is not None
        return found

    assert call(message).path == "/:send"
    assert call({**message, "groupName": "g"}).path == "/groups/g/:send"
    assert call({**message, "groupName": "g", "userId": "u/1"}).path == "/users/u%2F1/:send"
    assert call({**message, "userId": "u", "connectionId": "c"}).path == "/connections/c/:send"
    assert json.loads(call({"Target": "t", "Arguments": None}).body or b"") == {
        "target": "t",
        "arguments": [],
    }
    add = call({"action": "add", "groupName": "g", "userId": "u", "connectionId": "c"})
    assert (add.method, add.path, add.tolerated) == (
        "PUT",
        "/groups/g/connections/c",
        "Error.Connection.NotExisted",
    )
    assert call({"action": "remove", "groupName": "g", "userId": "u"}).path == "/users/u/groups/g"
    assert call({"action": "removeAll", "userId": "u"}).method == "DELETE"
    assert to_call({"action": "RemoveAll", "connectionId": "c", "groupName": "g"}) is None  # users only
    assert json.loads(call({"target": "t"}).body or b"") == {"target": "t", "arguments": []}
    with pytest.raises(SignalRActionError):
        to_call({"target": "", "arguments": []})


def test_id_token_claims_need_a_claim_type_list() -> None:
    token = jwt.encode({"role": "r", "nameid": "n"}, "an id token key, 32 bytes or more", algorithm="HS256")
    read = SignalRExtension._id_token_claims
    assert read(token, None) == {} and read(token, []) == {}
    assert read(f"Bearer {token}", ["role"]) == {"role": "r"}
    assert read("not a jwt", None) == {}  # not even read without a list
    with pytest.raises(ValueError, match="idToken is not a JWT"):
        read("not a jwt", ["role"])
