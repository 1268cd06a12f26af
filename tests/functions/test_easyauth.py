"""``/.auth``: the development sign-in, the session cookie and the principal headers functions see."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from hubbub.functions.easyauth import COOKIE, EasyAuth
from hubbub.functions.host import FunctionsHost
from tests.functions.support import running_host, write_app

APP = """
    import json
    import azure.functions as func

    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="whoami")
    def whoami(req: func.HttpRequest) -> func.HttpResponse:
        principal = {k: v for k, v in req.headers.items() if k.startswith("x-ms-")}
        return func.HttpResponse(json.dumps(principal), mimetype="application/json")
"""


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[FunctionsHost]:
    async with running_host(write_app(tmp_path / "authapp", {"function_app.py": APP})) as h:
        yield h


async def whoami(http: aiohttp.ClientSession, host: FunctionsHost, **headers: str) -> dict[str, str]:
    async with http.get(f"{host.base_url}/api/whoami", headers=headers) as r:
        result: dict[str, str] = await r.json()
        return result


async def test_login_flow_sets_principal_headers(host: FunctionsHost) -> None:
    async with aiohttp.ClientSession() as http:
        # forged headers never reach a function
        assert (
            await whoami(
                http, host, **{"X-MS-CLIENT-PRINCIPAL-NAME": "mallory", "X-MS-TOKEN-AAD-ID-TOKEN": "t"}
            )
            == {}
        )
        async with http.get(f"{host.base_url}/.auth/me") as r:
            assert r.status == 401

        # the seed page's link: provider aad, the older post_login_redirect_url, a nested query
        url = f"{host.base_url}/.auth/login/aad?post_login_redirect_url=/api/index?authenticated=true"
        async with http.get(url) as r:
            page = await r.text()
            assert r.status == 200 and 'action="/.auth/login/aad/callback"' in page
            assert 'value="/api/index?authenticated=true"' in page
        form = {"name": "alice", "redirect": "/api/index?authenticated=true"}
        async with http.post(
            f"{host.base_url}/.auth/login/aad/callback", data=form, allow_redirects=False
        ) as r:
            assert r.status == 302 and r.headers["Location"] == "/api/index?authenticated=true"
            cookie = r.cookies[COOKIE]
            assert cookie["httponly"] and cookie["samesite"] == "Lax"

        seen = await whoami(http, host, **{"X-MS-CLIENT-PRINCIPAL-NAME": "mallory"})
        assert seen["x-ms-client-principal-name"] == "alice"
        assert seen["x-ms-client-principal-idp"] == "aad"
        principal = json.loads(base64.b64decode(seen["x-ms-client-principal"]))
        assert principal["auth_typ"] == "aad" and {"typ": "name", "val": "alice"} in principal["claims"]
        assert seen["x-ms-client-principal-id"] in {c["val"] for c in principal["claims"]}

        async with http.get(f"{host.base_url}/.auth/me") as r:
            me = await r.json()
            assert me[0]["provider_name"] == "aad" and me[0]["user_id"] == "alice"
            assert me[0]["expires_on"].endswith("Z")

        async with http.get(
            f"{host.base_url}/.auth/logout?post_logout_redirect_uri=/bye", allow_redirects=False
        ) as r:
            assert r.status == 302 and r.headers["Location"] == "/bye"
        assert await whoami(http, host) == {}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/.auth/login/dev", 200),
        ("/.auth/login/GitHub?post_login_redirect_uri=/x", 200),
        ("/.auth/login/nosuch", 404),
        ("/.auth/login/dev?post_login_redirect_uri=https://evil.example/", 400),
        ("/.auth/login/dev?post_login_redirect_uri=//evil.example/", 400),
        ("/.auth/nothing", 404),
    ],
)
async def test_login_page_and_redirect_checks(host: FunctionsHost, path: str, status: int) -> None:
    async with aiohttp.ClientSession() as http, http.get(host.base_url + path) as r:
        assert r.status == status


@pytest.mark.parametrize("name", ["", " ", "x" * 129, "bad\nname"])
async def test_bad_user_names(host: FunctionsHost, name: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{host.base_url}/.auth/login/dev/callback", data={"name": name}, allow_redirects=False
        ) as r,
    ):
        assert r.status == 400


def test_cookie_signature_and_expiry() -> None:
    auth = EasyAuth("secret")

    class Fake:
        def __init__(self, value: str) -> None:
            self.cookies = {COOKIE: value}

    good = auth.cookie_value("dev", "bob", now=1000)
    assert auth.session(Fake(good), now=1001) is not None  # type: ignore[arg-type]
    assert auth.session(Fake(good), now=1000 + 9 * 3600) is None  # type: ignore[arg-type]  # expired
    body, mac = good.rsplit(".", 1)
    assert auth.session(Fake(body + "." + mac[:-2] + "AA"), now=1001) is None  # type: ignore[arg-type]
    assert EasyAuth("other").session(Fake(good), now=1001) is None  # type: ignore[arg-type]
    assert auth.session(Fake("garbage"), now=1001) is None  # type: ignore[arg-type]
