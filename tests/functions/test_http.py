"""HTTP triggers through a real host (in this process): routing, methods, keys, errors, responses, CORS."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hubbub.functions.host import FunctionsHost
from tests.functions.support import client, running_host, write_app

APP = """
    import asyncio
    import json
    import threading

    import azure.functions as func

    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    MAIN = threading.main_thread()

    @app.route(route="echo/{name}", methods=["GET", "POST"])
    def echo(req: func.HttpRequest) -> func.HttpResponse:
        body = {
            "method": req.method,
            "url": req.url,
            "name": req.route_params["name"],
            "params": dict(req.params),
            "headers": dict(req.headers),
            "body": req.get_body().decode(),
            "thread_is_main": threading.current_thread() is MAIN,
        }
        return func.HttpResponse(json.dumps(body), mimetype="application/json")

    @app.route(route="items/new")
    def items_new(req: func.HttpRequest) -> str:
        return "new"

    @app.route(route="items/{id:int}")
    async def items_one(req: func.HttpRequest) -> str:
        await asyncio.sleep(0)
        return "item " + req.route_params["id"]

    @app.route(route="json", methods=["POST"])
    def json_body(req: func.HttpRequest) -> func.HttpResponse:
        try:
            data = req.get_json()
        except ValueError:
            return func.HttpResponse("bad json", status_code=400)
        return func.HttpResponse(json.dumps({"got": data}), mimetype="application/json")

    @app.route(route="custom")
    def custom(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(
            b"\\x00\\x01", status_code=201, mimetype="application/octet-stream",
            headers={"X-Custom": "1", "Set-Cookie": "a=1"},
        )

    @app.route(route="html")
    def html(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("<p>hi</p>", mimetype="text/html", charset="latin-1")

    @app.route(route="nothing")
    def nothing(req: func.HttpRequest) -> None:
        return None

    @app.route(route="wrongtype")
    def wrongtype(req: func.HttpRequest):
        return {"a": 1}

    @app.route(route="boom")
    def boom(req: func.HttpRequest) -> str:
        raise RuntimeError("kaboom in a function")

    @app.route(route="aboom")
    async def aboom(req: func.HttpRequest) -> str:
        raise ValueError("async kaboom")

    @app.route(route="ctx")
    def ctx(req: func.HttpRequest, context: func.Context) -> str:
        return f"{context.function_name}|{context.function_directory}|{len(context.invocation_id)}"

    @app.route(route="secret", auth_level=func.AuthLevel.FUNCTION)
    def secret(req: func.HttpRequest) -> str:
        return "function level"

    @app.route(route="admin-only", auth_level=func.AuthLevel.ADMIN)
    def admin_only(req: func.HttpRequest) -> str:
        return "admin level"

    @app.route(route="files/{*path}", methods=["GET"])
    def files(req: func.HttpRequest) -> str:
        return "path=" + req.route_params.get("path", "")
"""


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[FunctionsHost]:
    root = write_app(
        tmp_path / "httpapp", {"function_app.py": APP}, host_section={"CORS": "http://site.example"}
    )
    async with running_host(root) as h:
        assert h.errors == []
        yield h


async def test_request_reaches_function_like_the_worker_builds_it(host: FunctionsHost) -> None:
    async with client() as http:
        url = f"{host.base_url}/api/echo/Al%20Ice?q=1&q=2&x=y"
        async with http.post(
            url, data=b"payload", headers={"X-Thing": "v", "Content-Type": "text/plain"}
        ) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/json"
            got = await r.json()
    assert got["method"] == "POST" and got["name"] == "Al Ice"
    assert got["url"] == url
    assert got["params"] == {"q": "1,2", "x": "y"}
    assert got["headers"]["x-thing"] == "v" and got["body"] == "payload"
    assert got["thread_is_main"] is False  # sync functions run off the event loop's thread


async def test_routing_precedence_404_405(host: FunctionsHost) -> None:
    async with client() as http:

        async def get(path: str, method: str = "GET") -> tuple[int, str, str]:
            async with http.request(method, host.base_url + path) as r:
                return r.status, await r.text(), r.headers.get("Allow", "")

        assert (await get("/api/items/new"))[:2] == (200, "new")
        assert (await get("/api/ITEMS/7/"))[:2] == (200, "item 7")  # case and trailing slash
        assert (await get("/api/items/x"))[0] == 404  # int constraint
        assert (await get("/api/nope"))[0] == 404
        assert (await get("/elsewhere"))[0] == 404
        status, _, allow = await get("/api/json")
        assert status == 405 and allow == "POST"
        assert (await get("/api/files/a/b.txt"))[:2] == (200, "path=a/b.txt")
        assert (await get("/api/files/a", "DELETE"))[0] == 405
        status, text, _ = await get("/")
        assert status == 200 and "items_new" in text


async def test_bodies_and_responses(host: FunctionsHost) -> None:
    async with client() as http:
        async with http.post(f"{host.base_url}/api/json", json={"a": [1, 2]}) as r:
            assert await r.json() == {"got": {"a": [1, 2]}}
        async with http.post(f"{host.base_url}/api/json", data=b"{nope") as r:
            assert r.status == 400
        async with http.get(f"{host.base_url}/api/custom") as r:
            assert r.status == 201 and await r.read() == b"\x00\x01"
            assert r.headers["Content-Type"] == "application/octet-stream"
            assert r.headers["X-Custom"] == "1" and r.headers["Set-Cookie"] == "a=1"
        async with http.get(f"{host.base_url}/api/html") as r:
            assert r.headers["Content-Type"] == "text/html; charset=latin-1"
        async with http.get(f"{host.base_url}/api/items/3") as r:  # a str return
            assert r.headers["Content-Type"] == "text/plain; charset=utf-8" and await r.text() == "item 3"
        async with http.get(f"{host.base_url}/api/nothing") as r:
            assert r.status == 204
        async with http.get(f"{host.base_url}/api/ctx") as r:
            name, directory, id_len = (await r.text()).split("|")
            assert name == "ctx" and directory == str(host.config.root) and id_len == "36"


@pytest.mark.parametrize("path", ["/api/boom", "/api/aboom", "/api/wrongtype"])
async def test_exception_is_500_with_a_logged_traceback_and_the_host_keeps_serving(
    host: FunctionsHost, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hubbub.functions")
    async with client() as http:
        async with http.get(host.base_url + path) as r:
            assert r.status == 500 and await r.read() == b""
        async with http.get(f"{host.base_url}/api/items/new") as r:
            assert r.status == 200
    failed = [rec for rec in caplog.records if "(Failed" in rec.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None
    assert failed[0].getMessage().startswith(f"Executed 'Functions.{path.rsplit('/', 1)[1]}' (Failed, Id=")
    assert any("(Succeeded" in rec.getMessage() for rec in caplog.records)


async def test_keys(host: FunctionsHost) -> None:
    keys = host.keys
    own = keys.keys_of("secret")["default"]
    async with client() as http:

        async def status(path: str, code: str | None = None, header: str | None = None) -> int:
            params = {"code": code} if code else {}
            headers = {"x-functions-key": header} if header else {}
            async with http.get(host.base_url + path, params=params, headers=headers) as r:
                return r.status

        assert await status("/api/secret") == 401
        assert await status("/api/secret", "wrong") == 401
        assert await status("/api/secret", own) == 200
        assert await status("/api/secret", header=own) == 200
        assert await status("/api/secret", keys.host_keys["default"]) == 200
        assert await status("/api/secret", keys.master) == 200
        assert await status("/api/admin-only", own) == 401
        assert await status("/api/admin-only", keys.host_keys["default"]) == 401
        assert await status("/api/admin-only", header=keys.master) == 200
        assert await status("/api/items/new") == 200  # anonymous
        assert await status("/runtime/webhooks/webpubsub") == 401
        assert await status("/runtime/webhooks/nosuch", keys.master) == 404
        assert await status("/admin/host/status") == 401
        assert await status("/admin/host/status", keys.master) == 200
    # kept on disk in the Functions host's own format, and read back by the next host
    stored = json.loads((keys.directory / "host.json").read_text())
    assert stored["masterKey"] == {"name": "master", "value": keys.master, "encrypted": False}
    assert {
        "name": "webpubsub_extension",
        "value": keys.system_key("webpubsub_extension"),
        "encrypted": False,
    } in (stored["systemKeys"])
    assert json.loads((keys.directory / "secret.json").read_text())["keys"][0]["value"] == own
    assert oct((keys.directory / "host.json").stat().st_mode & 0o777) == "0o600"
    from hubbub.functions.keys import KeyStore

    again = KeyStore(keys.directory)
    assert again.master == keys.master and again.keys_of("secret")["default"] == own
    banner = "\n".join(host.banner())
    assert f"secret: [ALL] {host.base_url}/api/secret?code={own}" in banner
    assert f"{host.base_url}/runtime/webhooks/webpubsub?code=" in banner


async def test_no_auth_turns_key_checks_off(tmp_path: Path) -> None:
    root = write_app(tmp_path / "noauth", {"function_app.py": APP})
    async with (
        running_host(root, enforce_keys=False) as h,
        client() as http,
        http.get(f"{h.base_url}/api/admin-only") as r,
    ):
        assert r.status == 200


async def test_cors(host: FunctionsHost) -> None:
    async with client() as http:
        preflight = {"Origin": "http://site.example", "Access-Control-Request-Method": "POST"}
        async with http.options(f"{host.base_url}/api/json", headers=preflight) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "http://site.example"
            assert r.headers["Access-Control-Allow-Methods"] == "POST"
        async with http.get(f"{host.base_url}/api/items/new", headers={"Origin": "http://site.example"}) as r:
            assert r.headers["Access-Control-Allow-Origin"] == "http://site.example"
        async with http.get(f"{host.base_url}/api/items/new", headers={"Origin": "http://evil.example"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers


async def test_route_prefix_empty(tmp_path: Path) -> None:
    root = write_app(
        tmp_path / "noprefix",
        {"function_app.py": APP},
        host_json={"version": "2.0", "extensions": {"http": {"routePrefix": ""}}},
    )
    async with running_host(root) as h, client() as http, http.get(f"{h.base_url}/items/new") as r:
        assert await r.text() == "new"


WSGI_APP = """
    import azure.functions as func

    def wsgi(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [("wsgi " + environ["PATH_INFO"] + "?" + environ["QUERY_STRING"]).encode()]

    app = func.WsgiFunctionApp(app=wsgi, http_auth_level=func.AuthLevel.ANONYMOUS)
"""


async def test_wsgi_function_app(tmp_path: Path) -> None:
    root = write_app(tmp_path / "wsgiapp", {"function_app.py": WSGI_APP})
    async with running_host(root) as h, client() as http, http.get(f"{h.base_url}/api/some/path?x=1") as r:
        assert r.status == 200 and await r.text() == "wsgi /api/some/path?x=1"
