"""``/.auth/login/<provider>`` with a real OpenID Connect provider (authorization code, PKCE).

The identity provider is a small OpenID provider run in this process (discovery, JWKS from a fresh RSA
key, an authorize endpoint that consents at once, a token endpoint checking client secret and PKCE);
hubbub's functions host is driven over HTTP, redirects followed by hand.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from yarl import URL

from hubbub.functions.appconfig import ConfigError
from hubbub.functions.easyauth import COOKIE, FLOW_COOKIE
from hubbub.functions.host import FunctionsHost
from hubbub.functions.oidc import load_providers
from tests.functions.support import running_host, write_app
from tests.support.server import free_port

APP = """
    import json
    import azure.functions as func

    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="whoami")
    def whoami(req: func.HttpRequest) -> func.HttpResponse:
        principal = {k: v for k, v in req.headers.items() if k.startswith("x-ms-")}
        return func.HttpResponse(json.dumps(principal), mimetype="application/json")
"""
CLIENT_ID = "hubbub-test-client"
CLIENT_SECRET = "s3cret-" + "x" * 20


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Provider:
    """A minimal OpenID provider; ``tamper`` changes the next id_tokens (claims, key)."""

    port: int = field(default_factory=free_port)
    key: rsa.RSAPrivateKey = field(default_factory=_key)
    tamper: dict[str, Any] = field(default_factory=dict)
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}/realm"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/realm/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/realm/jwks", self.jwks)
        app.router.add_get("/realm/authorize", self.authorize)
        app.router.add_post("/realm/token", self.token)
        return app

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def jwks(self, request: web.Request) -> web.Response:
        jwk = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk.update(kid="k1", use="sig", alg="RS256")
        return web.json_response({"keys": [jwk]})

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        assert q["response_type"] == "code" and q["client_id"] == CLIENT_ID
        assert q["code_challenge_method"] == "S256" and "openid" in q["scope"].split()
        code = secrets.token_urlsafe(8)
        self.codes[code] = {
            "nonce": q["nonce"],
            "challenge": q["code_challenge"],
            "redirect_uri": q["redirect_uri"],
        }
        target = URL(q["redirect_uri"]).update_query(code=code, state=q["state"])
        raise web.HTTPFound(str(target))

    async def token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append(form)
        grant = self.codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "").encode()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
        if (
            grant is None
            or form.get("client_id") != CLIENT_ID
            or form.get("client_secret") != CLIENT_SECRET
            or challenge != grant["challenge"]
            or form.get("redirect_uri") != grant["redirect_uri"]
        ):
            return web.json_response({"error": "invalid_grant"}, status=400)
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "sub": "user-42",
            "iat": now,
            "exp": now + 300,
            "nonce": grant["nonce"],
            "preferred_username": "carol@example.org",
            "email": "carol@example.org",
            "roles": ["admin", "reader"],
        }
        claims.update(self.tamper.get("claims", {}))
        key = self.tamper.get("key", self.key)
        id_token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        return web.json_response({"access_token": "at", "token_type": "Bearer", "id_token": id_token})


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    idp = Provider()
    runner = web.AppRunner(idp.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", idp.port).start()
    try:
        yield idp
    finally:
        await runner.cleanup()


@pytest.fixture
async def host(tmp_path: Path, provider: Provider) -> AsyncIterator[FunctionsHost]:
    values = {
        "HUBBUB_AUTH_KEYCLOAK_ISSUER": provider.issuer,
        "HUBBUB_AUTH_KEYCLOAK_CLIENT_ID": CLIENT_ID,
        "HUBBUB_AUTH_KEYCLOAK_CLIENT_SECRET": CLIENT_SECRET,
    }
    root = write_app(tmp_path / "oidcapp", {"function_app.py": APP}, values=values)
    async with running_host(root) as h:
        yield h


async def start_login(http: aiohttp.ClientSession, host: FunctionsHost, redirect: str = "/api/whoami") -> str:
    """Follow /.auth/login/keycloak through the provider; the callback URL it sends the browser to."""
    url = f"{host.base_url}/.auth/login/keycloak?post_login_redirect_uri={redirect}"
    async with http.get(url, allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        authorize = r.headers["Location"]
        assert FLOW_COOKIE in r.cookies
    assert authorize.startswith(f"http://127.0.0.1:{urlsplit(authorize).port}/realm/authorize?")
    async with http.get(authorize, allow_redirects=False) as r:
        assert r.status == 302
        callback = r.headers["Location"]
    assert callback.startswith(f"{host.base_url}/.auth/login/keycloak/callback?")
    return callback


async def test_login_with_openid_provider(host: FunctionsHost, provider: Provider) -> None:
    async with aiohttp.ClientSession() as http:
        callback = await start_login(http, host, "/api/whoami?x=1")
        async with http.get(callback, allow_redirects=False) as r:
            assert r.status == 302, await r.text()
            assert r.headers["Location"] == "/api/whoami?x=1"
            assert r.cookies[COOKIE]["httponly"]
        # the token request: client_secret_post with the PKCE verifier
        (form,) = provider.token_requests
        assert form["client_secret"] == CLIENT_SECRET and form["code_verifier"]

        async with http.get(f"{host.base_url}/.auth/me") as r:
            me = await r.json()
        assert me[0]["provider_name"] == "keycloak" and me[0]["user_id"] == "carol@example.org"
        assert {"typ": "roles", "val": "admin"} in me[0]["user_claims"]
        assert {"typ": "sub", "val": "user-42"} in me[0]["user_claims"]

        async with http.get(f"{host.base_url}/api/whoami", headers={"X-MS-CLIENT-PRINCIPAL-NAME": "x"}) as r:
            seen = await r.json()
        assert seen["x-ms-client-principal-name"] == "carol@example.org"
        assert seen["x-ms-client-principal-idp"] == "keycloak"
        assert seen["x-ms-client-principal-id"] == "user-42"
        principal = json.loads(base64.b64decode(seen["x-ms-client-principal"]))
        assert principal["auth_typ"] == "keycloak" and principal["name_typ"] == "preferred_username"

        # the flow cookie is spent: replaying the callback is refused
        async with http.get(callback, allow_redirects=False) as r:
            assert r.status == 400


async def test_bad_state(host: FunctionsHost) -> None:
    async with aiohttp.ClientSession() as http:
        callback = await start_login(http, host)
        parts = urlsplit(callback)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        body, mac = query["state"].rsplit(".", 1)
        forged = json.dumps({"p": "keycloak", "r": "https://evil.example/", "b": "x", "exp": 2**40})
        tampered = base64.urlsafe_b64encode(forged.encode()).rstrip(b"=").decode() + "." + mac
        for state in (tampered, body + "." + mac[:-2] + "AA", "garbage", ""):
            url = f"{host.base_url}/.auth/login/keycloak/callback"
            async with http.get(url, params={"code": query["code"], "state": state}) as r:
                assert r.status == 400, state
                assert "Sign-in failed" in await r.text()

    # a valid state without the browser's flow cookie (login CSRF) is refused too
    async with aiohttp.ClientSession() as other, other.get(callback, allow_redirects=False) as r:
        assert r.status == 400


@pytest.mark.parametrize(
    "tamper",
    [
        {"claims": {"nonce": "not-the-nonce"}},
        {"claims": {"aud": "someone-else"}},
        {"claims": {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}},
        {"claims": {"iss": "http://127.0.0.1:1/other"}},
        {"key": _key()},
    ],
    ids=["nonce", "aud", "expired", "iss", "signature"],
)
async def test_bad_id_token(host: FunctionsHost, provider: Provider, tamper: dict[str, Any]) -> None:
    provider.tamper = tamper
    async with aiohttp.ClientSession() as http:
        callback = await start_login(http, host)
        async with http.get(callback, allow_redirects=False) as r:
            assert r.status == 401
            assert COOKIE not in r.cookies
        async with http.get(f"{host.base_url}/.auth/me") as r:
            assert r.status == 401


async def test_provider_errors(host: FunctionsHost, provider: Provider) -> None:
    async with aiohttp.ClientSession() as http:
        # the provider refused consent
        callback = await start_login(http, host)
        state = parse_qs(urlsplit(callback).query)["state"][0]
        url = f"{host.base_url}/.auth/login/keycloak/callback"
        params = {"state": state, "error": "access_denied", "error_description": "user said no"}
        async with http.get(url, params=params) as r:
            assert r.status == 401 and "user said no" in await r.text()
        # a code the token endpoint does not know
        callback = await start_login(http, host)
        async with http.get(callback.replace("code=", "code=x"), allow_redirects=False) as r:
            assert r.status == 401
        # the development form cannot sign in as a configured provider
        async with http.post(url, data={"name": "mallory"}, allow_redirects=False) as r:
            assert r.status == 404
        async with http.get(
            f"{host.base_url}/.auth/login/keycloak?post_login_redirect_uri=https://evil.example/"
        ) as r:
            assert r.status == 400


async def test_unconfigured_providers_keep_the_dev_page(host: FunctionsHost) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{host.base_url}/.auth/login/github") as r:
        assert r.status == 200 and 'action="/.auth/login/github/callback"' in await r.text()


async def test_unreachable_provider(tmp_path: Path) -> None:
    values = {
        "HUBBUB_AUTH_AAD_ISSUER": f"http://127.0.0.1:{free_port()}/nothing",
        "HUBBUB_AUTH_AAD_CLIENT_ID": CLIENT_ID,
    }
    root = write_app(tmp_path / "app", {"function_app.py": APP}, values=values)
    async with (
        running_host(root) as host,
        aiohttp.ClientSession() as http,
        http.get(f"{host.base_url}/.auth/login/aad", allow_redirects=False) as r,
    ):
        assert r.status == 502


def test_configuration() -> None:
    providers = load_providers(
        {
            "hubbub_auth_my_idp_issuer": "https://idp.example/",
            "HUBBUB_AUTH_MY_IDP_CLIENT_ID": "c",
            "HUBBUB_AUTH_MY_IDP_SCOPES": "profile,groups",
            "OTHER": "x",
        }
    )
    (p,) = providers.values()
    assert p.name == "my_idp" and p.client_secret is None and p.scopes == ("openid", "profile", "groups")
    with pytest.raises(ConfigError, match="CLIENT_ID"):
        load_providers({"HUBBUB_AUTH_X_ISSUER": "https://idp.example"})
    with pytest.raises(ConfigError, match="http"):
        load_providers({"HUBBUB_AUTH_X_ISSUER": "idp.example", "HUBBUB_AUTH_X_CLIENT_ID": "c"})
