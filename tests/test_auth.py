"""hubbub.auth: tokens minted by the real SDKs (and hostile ones), roles, wildcard groups, grants."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from azure.core.pipeline.transport import HttpRequest, HttpTransport
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from hypothesis import given, settings
from hypothesis import strategies as st

from hubbub.auth import (
    CLOCK_SKEW_SECONDS,
    DEV_ACCESS_KEY,
    ClientIdentity,
    Permission,
    Permissions,
    client_audience,
    compile_group_pattern,
    mint_client_token,
    parse_bearer,
    verify_client_token,
    verify_rest_token,
)
from hubbub.errors import BadRequest, InvalidToken

KEY = DEV_ACCESS_KEY
SECONDARY = "secondary-key-0123456789-abcdefghijklmnopqrs"
KEYS = (KEY, SECONDARY)
NOW = 1_700_000_000
AUD = "http://localhost:8080/client/hubs/Chat"
SEND, JOIN = Permission.SEND_TO_GROUP, Permission.JOIN_LEAVE_GROUP


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(
    payload: Any,
    key: str = KEY,
    header: Any = None,
    digest: Callable[[], Any] = hashlib.sha256,
) -> str:
    """A JWT built by hand, so that any header, payload or algorithm can be produced."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"} if header is None else header).encode())
    body = b64(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    mac = hmac.new(key.encode(), f"{head}.{body}".encode(), digest).digest()
    return f"{head}.{body}.{b64(mac)}"


def claims(**extra: Any) -> dict[str, Any]:
    return {"aud": AUD, "iat": NOW, "exp": NOW + 3600, **extra}


def verify(token: str, hub: str = "Chat", **kwargs: Any) -> ClientIdentity:
    kwargs.setdefault("now", NOW)
    return verify_client_token(token, KEYS, hub, **kwargs)


def sdk(endpoint: str = "http://localhost", port: int | None = 8080, **kwargs: Any) -> WebPubSubServiceClient:
    port_part = f"Port={port};" if port else ""
    conn = f"Endpoint={endpoint};{port_part}AccessKey={KEY};Version=1.0;"
    return WebPubSubServiceClient.from_connection_string(conn, hub=kwargs.pop("hub", "Chat"), **kwargs)


# --- client tokens ---------------------------------------------------------------------------------


class TestSdkClientTokens:
    @pytest.mark.parametrize("hub", ["Chat", "chat", "CHAT"])
    def test_python_sdk_round_trip(self, hub: str) -> None:
        token = sdk().get_client_access_token(
            user_id="u1", roles=["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup.g1"], groups=["g1", "g2"]
        )["token"]
        identity = verify_client_token(token, KEYS, hub)
        assert identity.user_id == "u1"
        assert identity.roles == ("webpubsub.sendToGroup", "webpubsub.joinLeaveGroup.g1")
        assert identity.groups == ("g1", "g2")
        assert identity.claims["aud"] == [
            "http://localhost:8080/client/hubs/Chat"
        ]  # endpoint lower, hub kept
        assert identity.claims["sub"] == ["u1"] and identity.claims["role"] == list(identity.roles)
        assert all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in identity.claims.values()
        )
        assert int(identity.claims["exp"][0]) - int(identity.claims["iat"][0]) == 3600

    def test_python_sdk_anonymous_token(self) -> None:
        identity = verify_client_token(sdk().get_client_access_token()["token"], KEYS, "Chat")
        assert identity == ClientIdentity(None, (), (), identity.claims)
        assert set(identity.claims) == {"aud", "iat", "exp"}

    def test_python_sdk_upper_case_endpoint_with_path_prefix(self) -> None:
        client = sdk("https://Gateway.Example.com/API/WebPubSub/", port=None)
        token = client.get_client_access_token(user_id="u")["token"]
        assert verify_client_token(token, KEYS, "Chat").user_id == "u"

    @pytest.mark.parametrize("protocol", ["MQTT", "mqtt", "SocketIO", "socketio"])
    def test_python_sdk_client_protocols(self, protocol: str) -> None:
        token = sdk().get_client_access_token(client_protocol=protocol)["token"]
        verify_client_token(token, KEYS, "Chat", client_type=protocol.upper())
        with pytest.raises(InvalidToken, match="invalid audience"):
            verify_client_token(token, KEYS, "Chat")
        default = sdk().get_client_access_token()["token"]
        with pytest.raises(InvalidToken, match="invalid audience"):
            verify_client_token(default, KEYS, "Chat", client_type=protocol)

    def test_python_sdk_kid_header_is_ignored(self) -> None:
        token = sdk().get_client_access_token(jwt_headers={"kid": "key-1", "x-custom": 1})["token"]
        verify_client_token(token, KEYS, "Chat")

    def test_js_sdk_shape(self) -> None:
        # new URL(endpoint).toString() + "client/hubs/" + hub; jsonwebtoken adds iat; role list
        token = jwt.encode(claims(aud="http://localhost:8080/client/hubs/Chat", sub="u", role=["r"]), KEY)
        assert verify(token).roles == ("r",)

    def test_dotnet_sdk_shape(self) -> None:
        # Endpoint.AbsoluteUri + "client/hubs/" + hub; nbf; a single role serialised as a string
        payload = claims(aud="https://contoso.webpubsub.azure.com/client/hubs/Chat", nbf=NOW, role="r1")
        payload["webpubsub.group"] = "g1"
        identity = verify(jwt.encode(payload, KEY))
        assert identity.roles == ("r1",) and identity.groups == ("g1",)
        assert identity.claims["role"] == ["r1"] and identity.claims["nbf"] == [str(NOW)]

    @pytest.mark.parametrize(
        "aud",
        [
            "http://localhost:8080/client/hubs/Chat",
            "https://LOCALHOST/CLIENT/HUBS/chat/",
            "ws://127.0.0.1:9999/client/hubs/chat",
            "wss://host/client/hubs/chat?access_token=x#frag",
            "https://proxy.example/api/webpubsub/client/hubs/chat",
            "localhost:8080/client/hubs/chat",
            "//host/client/hubs/chat",
            "/client/hubs/chat",
            "http://host/client/hubs/%43hat",
            ["http://other/client/hubs/x", "http://host/client/hubs/chat"],
        ],
    )
    def test_audience_leniency(self, aud: Any) -> None:
        verify(jwt.encode(claims(aud=aud), KEY))

    @pytest.mark.parametrize(
        "aud",
        [
            "http://localhost:8080/client/hubs/Chat2",
            "http://localhost:8080/client/hubs/xChat",
            "http://localhost:8080/client/hubs/other",
            "http://localhost:8080/client/hubs/",
            "http://localhost:8080/myclient/hubs/Chat",
            "http://localhost:8080/clients/mqtt/hubs/Chat",
            "http://localhost:8080/client/hubs/Chat/extra",
            "http://localhost:8080/?hub=Chat",
            "http://[::1/client/hubs/Chat",
            "",
            [],
            ["http://localhost/client/hubs/other"],
            42,
            ["http://localhost/client/hubs/Chat", 1],
        ],
    )
    def test_wrong_audience_rejected(self, aud: Any) -> None:
        with pytest.raises(InvalidToken, match="aud"):
            verify(jwt.encode(claims(aud=aud), KEY))

    def test_missing_audience_rejected(self) -> None:
        payload = claims()
        del payload["aud"]
        with pytest.raises(InvalidToken, match="'aud' claim is missing"):
            verify(jwt.encode(payload, KEY))


class TestMintAndAudience:
    def test_mint_is_byte_identical_to_the_sdk_encoding(self) -> None:
        aud = client_audience("http://localhost:8080", "Chat")
        token = mint_client_token(KEY, aud, user_id="u1", roles=["a", "b"], groups=["g"], now=NOW + 0.9)
        sdk_payload = {
            "aud": aud,
            "iat": NOW,
            "exp": NOW + 3600,
            "sub": "u1",
            "role": ["a", "b"],
            "webpubsub.group": ["g"],
        }
        assert token == jwt.encode(sdk_payload, KEY, algorithm="HS256")
        assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}

    def test_mint_omits_empty_claims(self) -> None:
        token = mint_client_token(KEY, AUD, user_id="", minutes_to_expire=5, now=NOW)
        assert jwt.decode(token, options={"verify_signature": False}) == {
            "aud": AUD,
            "iat": NOW,
            "exp": NOW + 300,
        }

    def test_mint_then_verify(self) -> None:
        token = mint_client_token(KEY, client_audience("http://h", "Chat"), user_id="u", roles=["r"])
        identity = verify_client_token(token, KEYS, "chat")
        assert (identity.user_id, identity.roles, identity.groups) == ("u", ("r",), ())

    @pytest.mark.parametrize(
        ("client_type", "expected"),
        [
            ("Default", "http://localhost:8080/client/hubs/chat"),
            ("default", "http://localhost:8080/client/hubs/chat"),
            ("MQTT", "http://localhost:8080/clients/mqtt/hubs/chat"),
            ("socketIO", "http://localhost:8080/clients/socketio/hubs/chat"),
        ],
    )
    def test_client_audience(self, client_type: str, expected: str) -> None:
        assert client_audience("http://localhost:8080/", "chat", client_type) == expected
        token = mint_client_token(KEY, expected, now=NOW)
        verify_client_token(token, KEYS, "chat", client_type=client_type, now=NOW)

    def test_client_audience_like_python_sdk(self) -> None:
        assert (
            client_audience("HTTPS://Host.Example/Prefix", "Chat")
            == "https://host.example/prefix/client/hubs/Chat"
        )

    def test_unknown_client_type(self) -> None:
        with pytest.raises(BadRequest, match="client type"):
            client_audience("http://h", "chat", "signalr")
        with pytest.raises(BadRequest, match="client type"):
            verify_client_token(mint_client_token(KEY, AUD), KEYS, "Chat", client_type="signalr")


class TestTimes:
    @pytest.mark.parametrize("age", [0, 3599, 3600, 3600 + CLOCK_SKEW_SECONDS - 1])
    def test_valid_or_within_skew(self, age: int) -> None:
        verify(jwt.encode(claims(), KEY), now=NOW + age)

    @pytest.mark.parametrize("age", [3600 + CLOCK_SKEW_SECONDS, 3600 + CLOCK_SKEW_SECONDS + 1, 10**6])
    def test_expired_beyond_skew(self, age: int) -> None:
        with pytest.raises(InvalidToken, match="token expired"):
            verify(jwt.encode(claims(), KEY), now=NOW + age)

    def test_python_sdk_token_expiry_with_default_clock(self) -> None:
        token = sdk().get_client_access_token(minutes_to_expire=1)["token"]
        verify_client_token(token, KEYS, "Chat", now=time.time() + 60 + CLOCK_SKEW_SECONDS - 5)
        with pytest.raises(InvalidToken, match="expired"):
            verify_client_token(token, KEYS, "Chat", now=time.time() + 60 + CLOCK_SKEW_SECONDS + 5)

    def test_nbf_and_iat(self) -> None:
        verify(jwt.encode(claims(nbf=NOW + CLOCK_SKEW_SECONDS - 1, iat=NOW + CLOCK_SKEW_SECONDS), KEY))
        with pytest.raises(InvalidToken, match="not yet valid"):
            verify(jwt.encode(claims(nbf=NOW + CLOCK_SKEW_SECONDS + 1), KEY))
        with pytest.raises(InvalidToken, match="issued in the future"):
            verify(jwt.encode(claims(iat=NOW + CLOCK_SKEW_SECONDS + 1), KEY))

    def test_exp_is_optional(self) -> None:
        payload = claims()
        del payload["exp"], payload["iat"]
        verify(jwt.encode(payload, KEY), now=NOW + 10**9)

    @pytest.mark.parametrize("value", ["1700003600", True, None, [NOW], {"t": NOW}])
    def test_non_numeric_times_rejected(self, value: Any) -> None:
        for name in ("exp", "nbf", "iat"):
            with pytest.raises(InvalidToken, match=f"'{name}' claim is not a number"):
                verify(sign(claims(**{name: value})))

    def test_odd_but_valid_numbers(self) -> None:
        verify(sign(claims(exp=10**400)))  # no OverflowError converting to float
        verify(sign(claims(exp=NOW + 0.5, iat=float(NOW))))
        with pytest.raises(InvalidToken, match="expired"):
            verify(sign(claims(exp=-(10**400))))
        for constant in (b"NaN", b"Infinity", b"-Infinity"):
            body = b'{"aud":"' + AUD.encode() + b'","exp":' + constant + b"}"
            with pytest.raises(InvalidToken, match="not valid JSON"):
                verify(sign(body))


class TestSignature:
    def test_secondary_key_accepted(self) -> None:
        assert verify(jwt.encode(claims(sub="u"), SECONDARY)).user_id == "u"
        assert verify_client_token(jwt.encode(claims(), KEY), (SECONDARY, KEY), "Chat", now=NOW)

    def test_wrong_key_rejected(self) -> None:
        with pytest.raises(InvalidToken, match="invalid token signature"):
            verify(jwt.encode(claims(), "another-key-that-is-long-enough-for-hs256!!"))
        with pytest.raises(InvalidToken, match="signature"):
            verify_client_token(jwt.encode(claims(), KEY), (), "Chat", now=NOW)

    def test_empty_key_never_verifies(self) -> None:
        with pytest.raises(InvalidToken, match="signature"):
            verify_client_token(sign(claims(), key=""), ("",), "Chat", now=NOW)

    def test_tampered_payload_rejected(self) -> None:
        head, _, mac = jwt.encode(claims(sub="u"), KEY).split(".")
        forged = b64(json.dumps(claims(sub="admin", role=["webpubsub.sendToGroup"])).encode())
        with pytest.raises(InvalidToken, match="signature"):
            verify(f"{head}.{forged}.{mac}")

    @pytest.mark.parametrize(
        "header",
        [
            {"alg": "none"},
            {"alg": "none", "typ": "JWT"},
            {"alg": "None"},
            {"alg": "RS256", "typ": "JWT"},
            {"alg": "HS512", "typ": "JWT"},
            {"alg": "hs256"},
            {"alg": "HS256 "},
            {"alg": ["HS256"]},
            {"typ": "JWT"},
        ],
    )
    def test_other_algorithms_rejected(self, header: dict[str, Any]) -> None:
        # HMAC-SHA256 signature with the right key: only the header's alg is wrong (alg confusion)
        with pytest.raises(InvalidToken, match="only HS256"):
            verify(sign(claims(), header=header))

    def test_alg_none_without_signature_rejected(self) -> None:
        unsigned = b64(b'{"alg":"none"}') + "." + b64(json.dumps(claims()).encode()) + "."
        with pytest.raises(InvalidToken, match="only HS256"):
            verify(unsigned)

    def test_hs512_signed_with_the_key_rejected(self) -> None:
        token = sign(claims(), header={"alg": "HS512", "typ": "JWT"}, digest=hashlib.sha512)
        with pytest.raises(InvalidToken, match="only HS256"):
            verify(token)

    def test_crit_header_rejected(self) -> None:
        with pytest.raises(InvalidToken, match="crit"):
            verify(sign(claims(), header={"alg": "HS256", "crit": ["exp"], "exp": 1}))

    def test_unknown_header_fields_ignored(self) -> None:
        verify(sign(claims(), header={"alg": "HS256", "kid": 7, "x5u": "https://evil", "typ": "at+jwt"}))


class TestClaims:
    def test_role_and_group_as_string_or_list(self) -> None:
        payload = claims(role="webpubsub.sendToGroup", **{"webpubsub.group": ["a", "b", "a", ""]})
        identity = verify(jwt.encode(payload, KEY))
        assert identity.roles == ("webpubsub.sendToGroup",) and identity.groups == ("a", "b")

    @pytest.mark.parametrize(
        "extra",
        [
            {"role": [1]},
            {"role": {"r": 1}},
            {"webpubsub.group": 5},
            {"webpubsub.group": ["g", None]},
            {"sub": 5},
        ],
    )
    def test_malformed_claims_rejected(self, extra: dict[str, Any]) -> None:
        with pytest.raises(InvalidToken, match="claim is not a string"):
            verify(jwt.encode(claims(**extra), KEY))

    def test_empty_sub_is_anonymous(self) -> None:
        assert verify(jwt.encode(claims(sub=""), KEY)).user_id is None

    def test_claims_as_lists_of_strings(self) -> None:
        payload = claims(sub="ü", custom={"a": [1, "ü"]}, flag=True, nothing=None, many=[1, "x", 2.5])
        assert verify(jwt.encode(payload, KEY)).claims == {
            "aud": [AUD],
            "iat": [str(NOW)],
            "exp": [str(NOW + 3600)],
            "sub": ["ü"],
            "custom": ['{"a":[1,"ü"]}'],
            "flag": ["true"],
            "nothing": ["null"],
            "many": ["1", "x", "2.5"],
        }

    def test_escaped_non_bmp_user_id(self) -> None:
        token = sign(claims(sub="😀"))  # json.dumps writes a surrogate pair escape
        assert "\\ud83d" in base64.urlsafe_b64decode(token.split(".")[1] + "==").decode()
        assert verify(token).user_id == "😀"

    def test_lone_surrogate_rejected(self) -> None:
        body = json.dumps(claims(sub="x")).replace('"x"', '"\\ud800"').encode()
        with pytest.raises(InvalidToken, match="not valid JSON"):
            verify(sign(body))


GARBAGE = [
    "",
    " ",
    "abc",
    "a.b",
    "a.b.c",
    "..",
    "...",
    "a.b.c.d",
    "Bearer x.y.z",
    "é.é.é",
    "eyJhbGciOiJIUzI1NiJ9",
    "eyJhbGciOiJIUzI1NiJ9.e30",
    "eyJhbGciOiJIUzI1NiJ9.e30.",
    "eyJhbGciOiJIUzI1NiJ9.e30.a",
    "eyJhbGciOiJIUzI1NiJ9.e30.!!!!",
    "eyJhbGciOiJIUzI1NiJ9.e30.a+b/",
    "e30.e30.e30",
    "W10.e30.e30",
    b64(b"not json") + ".e30.e30",
    b64(b'{"alg":"HS256"') + ".e30.e30",
    b64(b"\xff\xfe") + ".e30.e30",
    b64(b"[" * 100_000) + ".e30.e30",
]


class TestGarbage:
    @pytest.mark.parametrize("token", GARBAGE)
    def test_garbage_is_invalid_token(self, token: str) -> None:
        with pytest.raises(InvalidToken):
            verify(token)
        with pytest.raises(InvalidToken):
            verify_rest_token(token, KEYS, "/api/hubs/chat/:send", now=NOW)

    @pytest.mark.parametrize(
        "payload",
        [b"[]", b'"x"', b"1", b"null", b"not json", b"\xff", b"[" * 100_000, b"{" * 50_000, b'{"a":1'],
    )
    def test_signed_garbage_payload_is_invalid_token(self, payload: bytes) -> None:
        with pytest.raises(InvalidToken):
            verify(sign(payload))
        with pytest.raises(InvalidToken):
            verify_rest_token(sign(payload), KEYS, "/api/hubs/chat/:send", now=NOW)

    def test_truncated_sdk_token(self) -> None:
        token = sdk().get_client_access_token()["token"]
        for cut in range(0, len(token), 7):
            with pytest.raises(InvalidToken):
                verify_client_token(token[:cut], KEYS, "Chat")

    @settings(max_examples=400, deadline=None)
    @given(st.text())
    def test_any_text_is_invalid_token(self, token: str) -> None:
        with pytest.raises(InvalidToken):
            verify_client_token(token, KEYS, "Chat")
        with pytest.raises(InvalidToken):
            verify_rest_token(token, KEYS, "/api/hubs/chat/:send")

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.text(alphabet="abcxyzABCXYZ019_-.=+/!é "), min_size=0, max_size=6).map(".".join))
    def test_token_shaped_text_is_invalid_token(self, token: str) -> None:
        with pytest.raises(InvalidToken):
            verify_client_token(token, KEYS, "Chat")

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    )
    claim_names = st.sampled_from(["aud", "sub", "role", "webpubsub.group", "exp", "nbf", "iat", "x"])

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(claim_names, json_values), json_values)
    def test_signed_arbitrary_claims_never_raise_anything_else(
        self, payload: dict[str, Any], header: Any
    ) -> None:
        for token in (sign(payload), sign(payload, header=header)):
            try:
                identity = verify(token)
            except InvalidToken:
                continue
            assert isinstance(identity.user_id, str | None)
            assert all(isinstance(r, str) for r in identity.roles + identity.groups)
            with suppress(InvalidToken):
                verify_rest_token(token, KEYS, "/api/hubs/chat", now=NOW)

    def test_messages_never_echo_secrets(self) -> None:
        good = jwt.encode(claims(), KEY)
        bad = [
            (jwt.encode(claims(), SECONDARY), (KEY,)),
            (jwt.encode(claims(exp=NOW - 10**4), KEY), KEYS),
            (jwt.encode(claims(aud="http://h/client/hubs/other"), KEY), KEYS),
            (good[:-3], KEYS),
            (sign(claims(), header={"alg": "none"}), KEYS),
        ]
        for token, keys in bad:
            with pytest.raises(InvalidToken) as info:
                verify_client_token(token, keys, "Chat", now=NOW)
            message = info.value.message
            assert message and token not in message and token.split(".")[-1] not in message
            assert KEY not in message and SECONDARY not in message


# --- REST tokens -----------------------------------------------------------------------------------


class _Captured(Exception):
    pass


class CapturingTransport(HttpTransport):
    """Records the request the SDK pipeline would send, then stops it."""

    def __init__(self) -> None:
        self.requests: list[HttpRequest] = []

    def send(self, request: HttpRequest, **kwargs: Any) -> Any:
        self.requests.append(request)
        raise _Captured

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> CapturingTransport:
        return self

    def __exit__(self, *args: object) -> None:
        pass


@contextmanager
def sdk_request(**kwargs: Any) -> Iterator[tuple[WebPubSubServiceClient, CapturingTransport]]:
    transport = CapturingTransport()
    yield sdk(transport=transport, **kwargs), transport


def capture(call: Callable[[WebPubSubServiceClient], object], **kwargs: Any) -> tuple[str, str]:
    """(bearer token, request URL) of one REST call made by the real Python SDK."""
    with sdk_request(**kwargs) as (client, transport):
        with pytest.raises(_Captured):
            call(client)
        request = transport.requests[-1]
    token = parse_bearer(request.headers["Authorization"])
    assert token is not None
    return token, request.url


SDK_CALLS: list[Callable[[WebPubSubServiceClient], object]] = [
    lambda c: c.send_to_all({"hello": "world"}, excluded=["c1", "c2"], filter="userId eq 'u''1'"),
    lambda c: c.send_to_group("my group/ä", "hi", content_type="text/plain"),
    lambda c: c.send_to_user("user@example.com", b"\x00", content_type="application/octet-stream"),
    lambda c: c.grant_permission("sendToGroup", "conn1", target_name="g 1"),
    lambda c: c.close_connection("conn1", reason="bye"),
    lambda c: c.remove_connection_from_group(group="g1", connection_id="conn1"),
]


class TestRestTokens:
    @pytest.mark.parametrize("call", SDK_CALLS)
    def test_python_sdk_requests(self, call: Callable[[WebPubSubServiceClient], object]) -> None:
        token, url = capture(call)
        parts = urlsplit(url)
        assert parts.query  # api-version and friends are part of aud, and ignored
        claims_ = verify_rest_token(token, KEYS, parts.path)  # the raw (still encoded) path
        assert claims_["aud"] == url
        assert verify_rest_token(token, KEYS, parts.path + "?" + parts.query)

    def test_python_sdk_token_rejected_for_another_path(self) -> None:
        token, _ = capture(SDK_CALLS[0])
        for path in ("/api/hubs/Chat/:closeConnections", "/api/hubs/other/:send", "/api/hubs/Chat", "/", ""):
            with pytest.raises(InvalidToken, match="invalid audience"):
                verify_rest_token(token, KEYS, path)

    def test_encoded_slash_cannot_fake_another_url(self) -> None:
        token, url = capture(lambda c: c.send_to_group("a/api/hubs/Chat", "x", content_type="text/plain"))
        assert "/groups/a%2Fapi%2Fhubs%2FChat/:send" in url
        verify_rest_token(token, KEYS, urlsplit(url).path)
        with pytest.raises(InvalidToken, match="invalid audience"):
            verify_rest_token(token, KEYS, "/api/hubs/Chat/:send")

    def test_python_sdk_endpoint_with_path_prefix(self) -> None:
        token, url = capture(SDK_CALLS[1], endpoint="http://gateway/api/webpubsub", port=None)
        path = urlsplit(url).path
        assert path.startswith("/api/webpubsub/api/hubs/Chat/groups/")
        verify_rest_token(token, KEYS, path)  # the server sees the full path
        verify_rest_token(token, KEYS, path.removeprefix("/api/webpubsub"))  # a proxy stripped the prefix

    def test_python_sdk_reverse_proxy(self) -> None:
        token, url = capture(SDK_CALLS[0], reverse_proxy_endpoint="http://proxy.internal:9000")
        assert url.startswith("http://proxy.internal:9000/")
        claims_ = verify_rest_token(token, KEYS, urlsplit(url).path)
        assert claims_["aud"].startswith("http://localhost:8080/")

    def test_python_sdk_rest_token_expiry(self) -> None:
        token, url = capture(SDK_CALLS[0])
        path = urlsplit(url).path
        verify_rest_token(token, KEYS, path, now=time.time() + 60 + CLOCK_SKEW_SECONDS - 5)
        with pytest.raises(InvalidToken, match="expired"):
            verify_rest_token(token, KEYS, path, now=time.time() + 60 + CLOCK_SKEW_SECONDS + 5)

    @pytest.mark.parametrize(
        "aud",
        [
            # JS: request.url; .NET: Request.Uri.AbsoluteUri; all with query strings
            "https://localhost/api/hubs/chat/:send?api-version=2024-12-01",
            "http://127.0.0.1:8080/api/hubs/chat/:send?api-version=2021-10-01&excluded=a&excluded=b",
            "HTTP://LOCALHOST:8080/API/HUBS/CHAT/:SEND/",
            "https://contoso.webpubsub.azure.com/api/hubs/Chat/%3Asend?api-version=2024-12-01",
            "https://gateway.example/prefix/api/hubs/chat/:send",
            ["https://h/api/hubs/other/:send", "https://h/api/hubs/chat/:send"],
        ],
    )
    def test_other_sdk_shapes(self, aud: Any) -> None:
        for path in ("/api/hubs/chat/:send", "/api/hubs/Chat/:send/", "/api/hubs/chat/%3Asend"):
            payload = {"aud": aud, "exp": NOW + 300, "nbf": NOW, "iat": NOW}
            assert verify_rest_token(jwt.encode(payload, KEY), KEYS, path, now=NOW)["aud"] == aud

    @pytest.mark.parametrize(
        "aud",
        [
            "https://localhost/api/hubs/chat/:sendx",
            "https://localhost/api/hubs/chat",
            "https://localhost/xapi/hubs/chat/:send",
            "https://localhost/",
            "",
            None,
            7,
        ],
    )
    def test_wrong_rest_audience(self, aud: Any) -> None:
        with pytest.raises(InvalidToken, match="aud"):
            verify_rest_token(
                jwt.encode({"aud": aud, "exp": NOW + 60}, KEY), KEYS, "/api/hubs/chat/:send", now=NOW
            )

    def test_rest_keys_and_algorithms(self) -> None:
        payload = {"aud": "http://h/api/hubs/chat/:send", "exp": NOW + 60}
        assert verify_rest_token(jwt.encode(payload, SECONDARY), KEYS, "/api/hubs/chat/:send", now=NOW)
        with pytest.raises(InvalidToken, match="signature"):
            verify_rest_token(jwt.encode(payload, SECONDARY), (KEY,), "/api/hubs/chat/:send", now=NOW)
        with pytest.raises(InvalidToken, match="HS256"):
            verify_rest_token(sign(payload, header={"alg": "none"}), KEYS, "/api/hubs/chat/:send", now=NOW)
        with pytest.raises(InvalidToken, match="expired"):
            verify_rest_token(jwt.encode(payload, KEY), KEYS, "/api/hubs/chat/:send", now=NOW + 60 + 300)

    def test_name_claim_returned(self) -> None:
        token, url = capture(SDK_CALLS[0], user="admin")
        claims_ = verify_rest_token(token, KEYS, urlsplit(url).path)
        assert claims_["http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"] == "admin"


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("  Bearer abc", "abc"),
        ("Bearer\tabc", "abc"),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("abc", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_bearer(header: str | None, token: str | None) -> None:
    assert parse_bearer(header) == token


# --- permissions -----------------------------------------------------------------------------------


SPEC_EXAMPLES = [
    ("chat-*", ["chat-1", "chat-room", "chat-"], ["chat.1", "xchat-1", "chat-1.x"]),
    ("clientA.*", ["clientA.alpha", "clientA.1", "clientA."], ["clientA.alpha.room1", "clientB.alpha"]),
    ("clientA.**", ["clientA.alpha", "clientA.alpha.room1", "clientA."], ["clientB.anything", "clientA"]),
    ("clientA.rooms.?1", ["clientA.rooms.a1", "clientA.rooms.11"], ["clientA.rooms.1", "clientA.rooms.a.1"]),
    ("literal\\*star", ["literal*star"], ["literalXstar", "literal\\*star", "literalstar"]),
    ("a\\?b\\\\c", ["a?b\\c"], ["aXb\\c", "a?bc"]),
    ("**", ["", "x", "a.b.c"], []),
    ("*", ["", "abc"], ["a.b", "."]),
    ("?", ["x", "é"], ["", ".", "xy"]),
    ("a+b(c)[d]$^|{1}", ["a+b(c)[d]$^|{1}"], ["aab(c)[d]$^|{1}"]),
    ("*.*.**", ["a.b.c.d", "..", "a.b."], ["a.b", "abc"]),
    ("**.x.*", ["a.b.x.c", ".x."], ["a.x.c.d", "x.c"]),
    ("t*-**-*", ["t1-a.b-c", "t--", "t-x-y-z"], ["t.1-a-c", "t1-a-b.c"]),
    ("*\\**", ["*", "a*b"], ["ab", "a*.b"]),
    ("line\n*", ["line\nbreak", "line\n"], ["line"]),
]


class TestGroupPatterns:
    @pytest.mark.parametrize(("pattern", "matches", "misses"), SPEC_EXAMPLES)
    def test_compiled_pattern(self, pattern: str, matches: list[str], misses: list[str]) -> None:
        regex = compile_group_pattern(pattern)
        assert all(regex.fullmatch(g) and regex.match(g) for g in matches)
        assert not any(regex.fullmatch(g) or regex.match(g) or regex.search(g) for g in misses)

    @pytest.mark.parametrize(("pattern", "matches", "misses"), SPEC_EXAMPLES)
    @pytest.mark.parametrize("permission", [SEND, JOIN])
    def test_pattern_roles(
        self, pattern: str, matches: list[str], misses: list[str], permission: Permission
    ) -> None:
        role = f"webpubsub.{permission.value}s.{pattern}"
        perms = Permissions([role])
        other = JOIN if permission is SEND else SEND
        assert all(perms.allows(permission, g) for g in matches)
        assert not any(perms.allows(permission, g) for g in misses)
        assert not any(perms.allows(other, g) for g in matches)
        assert not perms.check(permission, None)
        assert perms.roles() == (role,)

    def test_compiled_patterns_are_cached(self) -> None:
        assert compile_group_pattern("cache-*") is compile_group_pattern("cache-*")

    @pytest.mark.parametrize("pattern", ["*****", "**.**.*", "\\*\\*\\*\\*\\*\\******", "a*b*c*d*e*"])
    def test_five_stars_allowed(self, pattern: str) -> None:
        compile_group_pattern(pattern)
        assert Permissions([f"webpubsub.sendToGroups.{pattern}"]).allows(SEND, pattern.replace("\\", ""))

    @pytest.mark.parametrize("pattern", ["******", "***.***", "a*b*c*d*e*f*", "**.**.**"])
    def test_more_than_five_stars(self, pattern: str) -> None:
        with pytest.raises(BadRequest, match="more than 5"):
            compile_group_pattern(pattern)
        role = f"webpubsub.sendToGroups.{pattern}"
        perms = Permissions([role])
        assert perms.roles() == (role,)  # kept ...
        assert not perms.allows(SEND, pattern) and not perms.allows(SEND, "x")  # ... but grants nothing

    @pytest.mark.parametrize("pattern", ["a\\", "a\\b", "\\.", "\\"])
    def test_invalid_escapes(self, pattern: str) -> None:
        with pytest.raises(BadRequest, match="escapes only"):
            compile_group_pattern(pattern)
        assert not Permissions([f"webpubsub.joinLeaveGroups.{pattern}"]).allows(JOIN, pattern)

    @pytest.mark.parametrize(
        ("pattern", "group"),
        [
            ("*a*a*a*a*a", "a" * 1023 + "b"),
            ("**a**a*", "a" * 1023 + "."),
            ("*?*?*?*?*?x", "ab" * 512),
            ("**.**.*", "." * 1024),
        ],
    )
    def test_hostile_group_names_are_matched_in_linear_time(self, pattern: str, group: str) -> None:
        perms = Permissions([f"webpubsub.sendToGroups.{pattern}"])
        started = time.perf_counter()
        perms.allows(SEND, group)
        assert time.perf_counter() - started < 1.0  # the backtracking regex would take hours

    @settings(max_examples=1500, deadline=None)
    @given(
        st.text(alphabet="ab.*?\\", max_size=10),
        st.text(alphabet="ab.*?\\", max_size=10),
    )
    def test_linear_matcher_agrees_with_the_regex(self, pattern: str, group: str) -> None:
        try:
            regex = compile_group_pattern(pattern)
        except BadRequest:
            return
        expected = regex.fullmatch(group) is not None
        assert Permissions([f"webpubsub.sendToGroups.{pattern}"]).allows(SEND, group) is expected


class TestPermissions:
    def test_no_roles(self) -> None:
        perms = Permissions()
        assert perms.roles() == ()
        for permission in Permission:
            assert not perms.allows(permission, "g") and not perms.check(permission, None)

    @pytest.mark.parametrize("permission", [SEND, JOIN])
    def test_all_groups_role(self, permission: Permission) -> None:
        perms = Permissions([f"webpubsub.{permission.value}"])
        assert perms.allows(permission, "any") and perms.allows(permission, "a.b.c")
        assert perms.check(permission, None) and perms.check(permission, "x")
        other = JOIN if permission is SEND else SEND
        assert not perms.allows(other, "any") and not perms.check(other, None)

    @pytest.mark.parametrize("permission", [SEND, JOIN])
    def test_single_group_role(self, permission: Permission) -> None:
        perms = Permissions([f"webpubsub.{permission.value}.room.1", f"webpubsub.{permission.value}.g*"])
        assert perms.allows(permission, "room.1") and perms.allows(permission, "g*")
        assert not perms.allows(permission, "room") and not perms.allows(permission, "room.1.x")
        assert not perms.allows(permission, "gx")  # '*' is literal in the singular role
        assert not perms.check(permission, None) and perms.check(permission, "room.1")

    @pytest.mark.parametrize(
        "role",
        [
            "admin",
            "webpubsub",
            "webpubsub.sendToGroups",
            "webpubsub.SendToGroup",
            "WEBPUBSUB.sendToGroup",
            "webpubsub.sendToGroupX",
            "webpubsub.sendToGroup.",
            "webpubsub.joinLeaveGroupx.g",
            "webpubsub.sendToGroup ",
            "",
        ],
    )
    def test_unknown_roles_kept_but_grant_nothing(self, role: str) -> None:
        perms = Permissions([role, "custom.role"])
        assert perms.roles() == (role, "custom.role")
        for permission in Permission:
            for group in ("g", "X", "", "sendToGroup", "admin"):
                assert not perms.allows(permission, group)
            assert not perms.check(permission, None)

    def test_roles_are_deduplicated_and_ordered(self) -> None:
        perms = Permissions(["b", "webpubsub.sendToGroup", "b"])
        perms.add_roles(["a", "b", "webpubsub.joinLeaveGroup.g"])
        assert perms.roles() == ("b", "webpubsub.sendToGroup", "a", "webpubsub.joinLeaveGroup.g")
        assert perms.allows(JOIN, "g") and perms.allows(SEND, "zz")

    @pytest.mark.parametrize(
        "text", ["sendToGroup", "SENDTOGROUP", "sendtogroup", "joinLeaveGroup", "JoinLeaveGroup"]
    )
    def test_permission_parse(self, text: str) -> None:
        assert Permission.parse(text).value.lower() == text.lower()

    @pytest.mark.parametrize("text", ["", "send", "sendToGroups", "joinLeaveGroups", "sendToGroup ", "admin"])
    def test_permission_parse_rejects(self, text: str) -> None:
        with pytest.raises(BadRequest, match="Unknown permission"):
            Permission.parse(text)


class TestGrantRevokeCheck:
    def test_grant_all_then_revoke_all(self) -> None:
        perms = Permissions()
        perms.grant(SEND, None)
        assert perms.check(SEND, None) and perms.check(SEND, "g") and perms.allows(SEND, "x.y")
        assert not perms.check(JOIN, None) and not perms.allows(JOIN, "g")
        assert perms.roles() == ("webpubsub.sendToGroup",)
        perms.revoke(SEND, None)
        assert not perms.check(SEND, None) and not perms.allows(SEND, "g") and perms.roles() == ()

    def test_grant_specific_group(self) -> None:
        perms = Permissions()
        perms.grant(JOIN, "g1")
        perms.grant(JOIN, "g1")  # idempotent
        assert perms.check(JOIN, "g1") and perms.allows(JOIN, "g1")
        assert not perms.check(JOIN, None) and not perms.check(JOIN, "g2") and not perms.check(SEND, "g1")
        assert perms.roles() == ("webpubsub.joinLeaveGroup.g1",)
        perms.revoke(JOIN, "g1")
        assert not perms.check(JOIN, "g1") and perms.roles() == ()

    def test_granted_target_is_a_literal_group_not_a_pattern(self) -> None:
        perms = Permissions()
        perms.grant(SEND, "chat-*")
        assert perms.check(SEND, "chat-*") and not perms.check(SEND, "chat-1")

    def test_revoke_all_removes_every_grant_of_that_permission(self) -> None:
        roles = [
            "webpubsub.sendToGroup",
            "webpubsub.sendToGroup.g1",
            "webpubsub.sendToGroups.chat-*",
            "webpubsub.sendToGroups.******",  # invalid pattern: also removed
            "webpubsub.sendToGroup.",
            "webpubsub.joinLeaveGroup.g1",
            "other",
        ]
        perms = Permissions(roles)
        perms.grant(SEND, "g2")
        perms.revoke(SEND, None)
        for group in ("g1", "g2", "chat-1", "x"):
            assert not perms.allows(SEND, group) and not perms.check(SEND, group)
        assert perms.allows(JOIN, "g1")
        assert perms.roles() == ("webpubsub.joinLeaveGroup.g1", "other")

    def test_revoke_specific_group_keeps_the_all_groups_grant(self) -> None:
        perms = Permissions(["webpubsub.sendToGroup", "webpubsub.sendToGroup.g1"])
        perms.revoke(SEND, "g1")
        assert perms.check(SEND, None) and perms.check(SEND, "g1") and perms.allows(SEND, "g1")
        assert perms.roles() == ("webpubsub.sendToGroup",)

    def test_revoke_specific_group_keeps_matching_patterns(self) -> None:
        perms = Permissions(["webpubsub.joinLeaveGroups.room-*", "webpubsub.joinLeaveGroup.room-1"])
        perms.revoke(JOIN, "room-1")
        assert perms.allows(JOIN, "room-1") and perms.check(JOIN, "room-1")
        assert perms.roles() == ("webpubsub.joinLeaveGroups.room-*",)

    def test_revoke_what_was_never_granted(self) -> None:
        perms = Permissions(["webpubsub.joinLeaveGroup.g"])
        perms.revoke(SEND, None)
        perms.revoke(SEND, "g")
        perms.revoke(JOIN, "other")
        assert perms.roles() == ("webpubsub.joinLeaveGroup.g",) and perms.allows(JOIN, "g")

    def test_grant_after_revoke(self) -> None:
        perms = Permissions(["webpubsub.sendToGroup"])
        perms.revoke(SEND, None)
        perms.grant(SEND, None)
        assert perms.check(SEND, None)

    def test_token_roles_can_be_revoked(self) -> None:
        token = sdk().get_client_access_token(roles=["webpubsub.sendToGroup.g", "webpubsub.joinLeaveGroup"])[
            "token"
        ]
        perms = Permissions(verify_client_token(token, KEYS, "Chat").roles)
        assert perms.allows(SEND, "g") and perms.allows(JOIN, "anything")
        perms.revoke(SEND, "g")
        perms.revoke(JOIN, None)
        assert not perms.allows(SEND, "g") and not perms.allows(JOIN, "anything")

    @pytest.mark.parametrize("action", ["grant", "revoke"])
    def test_empty_target_is_bad_request(self, action: str) -> None:
        with pytest.raises(BadRequest, match="must not be empty"):
            getattr(Permissions(), action)(SEND, "")
