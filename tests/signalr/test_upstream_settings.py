"""SignalR upstream settings through the store and the admin API (in process), secret references,
and the ManagedIdentity token — a real upstream HTTP server receives the service's calls."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from hubbub.errors import BadRequest
from hubbub.signalr.secrets import REFRESH_SECONDS, SecretError, SecretResolver, check_references, env_name
from hubbub.signalr.service import NO_UPSTREAM
from hubbub.signalr.tokens import mint_client_token
from hubbub.signalr.upstream import NO_MATCH, TOKEN_LIFETIME
from hubbub.signalr.upstream_rules import UpstreamTemplate
from hubbub.store import MEMORY, SettingsStore

from .conftest import KEY, Env, Starter, Upstream, call
from .test_upstream import record

pytestmark = pytest.mark.timeout(30)

REF = "{@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/%s/%s)}"
PATH = "/api/admin/signalr/upstream"


@pytest.fixture
def store() -> Iterator[SettingsStore]:
    s = SettingsStore.open(MEMORY)
    yield s
    s.close()


async def admin(env: Env, method: str, body: Any = None) -> tuple[int, Any]:
    url = env.base + PATH
    headers = {"Authorization": "Bearer " + mint_client_token(KEY, url)}
    async with env.http.request(method, url, json=body, headers=headers) as r:
        text = await r.text()
        return r.status, json.loads(text) if text else None


def invocation(target: str, invocation_id: str = "1") -> str:
    return json.dumps({"type": 1, "invocationId": invocation_id, "target": target, "arguments": []}) + "\x1e"


# --- pure ------------------------------------------------------------------------------------------


def test_reference_syntax_is_checked() -> None:
    check_references("http://f/api?code=" + REF % ("func-key", ""))
    check_references("http://f/api?code=" + REF % ("func-key", "ec96f02080254f109c51a1f14cdb1931"))
    for bad in ("http://f/?code={@Microsoft.KeyVault(VaultName=v;SecretName=s)}", "http://f/{@oops}"):
        with pytest.raises(BadRequest, match="Invalid secret reference"):
            check_references(bad)
        with pytest.raises(BadRequest, match="Invalid secret reference"):
            UpstreamTemplate(bad)


def test_resolver_order_refresh_and_clear(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"func-key": "from-file", "only-file": "f"}))
    environ = {env_name("func-key"): "from-env"}
    now = [1000.0]
    resolver = SecretResolver(str(secrets), environ=environ, clock=lambda: now[0])
    assert env_name("func-key") == "HUBBUB_SECRET_FUNC_KEY"
    text = "?a=" + REF % ("func-key", "") + "&b=" + REF % ("only-file", "v1")
    assert resolver.resolve(text) == "?a=from-env&b=f"
    environ[env_name("func-key")] = "rotated"
    assert resolver.resolve(text) == "?a=from-env&b=f"  # cached
    now[0] += REFRESH_SECONDS
    assert resolver.resolve(text) == "?a=rotated&b=f"  # re-read after 30 minutes
    environ[env_name("func-key")] = "again"
    resolver.clear()  # settings changed
    assert resolver.resolve(text) == "?a=again&b=f"
    with pytest.raises(SecretError, match=r"secret 'absent' .*HUBBUB_SECRET_ABSENT.*no string 'absent'"):
        resolver.resolve(REF % ("absent", ""))
    secrets.write_text("{not json")
    with pytest.raises(SecretError, match="unusable"):
        resolver.resolve(REF % ("new-one", ""))
    with pytest.raises(SecretError, match="no secrets file"):
        SecretResolver(str(tmp_path / "absent.json"), environ={}).resolve(REF % ("x", ""))


# --- through the admin API of the SignalR port ---------------------------------------------------


async def test_admin_api_sets_ordered_templates(
    start: Starter, upstream: Upstream, store: SettingsStore, hub: str
) -> None:
    env = await start(store=store)
    assert await admin(env, "GET") == (200, {"templates": []})
    first = {
        "urlTemplate": upstream.url + "/first/{hub}/{category}/{event}",
        "hubPattern": hub,
        "eventPattern": "a,b",
    }
    catch_all = {"urlTemplate": upstream.url + "/second/{event}"}
    status, body = await admin(env, "PUT", {"properties": {"upstream": {"templates": [first, catch_all]}}})
    assert status == 200
    assert [t["urlTemplate"] for t in body["templates"]] == [first["urlTemplate"], catch_all["urlTemplate"]]
    assert body["templates"][0]["categoryPattern"] == "*"
    assert (await admin(env, "GET"))[1] == body

    ws, _ = await env.connect(hub)
    path, _, _ = await call(upstream, "connected")
    assert path == "/second/connected"  # the first template does not take 'connected'
    await ws.send_str(invocation("a"))
    assert await record(ws) == {"type": 3, "invocationId": "1"}
    assert (await call(upstream, "a"))[0] == f"/first/{hub}/messages/a"
    await ws.send_str(invocation("c"))
    assert await record(ws) == {"type": 3, "invocationId": "1"}
    assert (await call(upstream, "c"))[0] == "/second/c"

    # a change applies to the next event of connections that exist already
    only_b = {"urlTemplate": upstream.url + "/third/{event}", "eventPattern": "b"}
    assert (await admin(env, "PUT", {"templates": [only_b]}))[0] == 200
    await ws.send_str(invocation("b"))
    assert await record(ws) == {"type": 3, "invocationId": "1"}
    assert (await call(upstream, "b"))[0] == "/third/b"
    await ws.send_str(invocation("a"))
    assert await record(ws) == {"type": 3, "invocationId": "1", "error": NO_MATCH}

    assert (await admin(env, "DELETE"))[0] == 204
    assert store.signalr_upstream() == ()
    await ws.send_str(invocation("b"))
    assert await record(ws) == {"type": 3, "invocationId": "1", "error": NO_UPSTREAM}
    await ws.close()


async def test_admin_api_rejects_bad_settings_and_tokens(start: Starter, store: SettingsStore) -> None:
    env = await start(store=store)
    for body in ({"templates": [{"urlTemplate": "ftp://x"}]}, {"templates": {}}, [1]):
        status, answer = await admin(env, "PUT", body)
        assert status == 400, body
        assert answer["code"] == "BadRequest"
    status, answer = await admin(env, "PUT", {"templates": [{"urlTemplate": "http://x/?c={@nope}"}]})
    assert (status, answer["code"]) == (400, "BadRequest")
    assert "Invalid secret reference" in answer["message"]
    async with env.http.get(env.base + PATH) as r:
        assert r.status == 401
    assert store.signalr_upstream() == ()


# --- secrets -------------------------------------------------------------------------------------


async def test_secret_references_reach_the_upstream_and_never_the_log(
    start: Starter,
    upstream: Upstream,
    store: SettingsStore,
    hub: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"file-key": "file-value-42"}))
    monkeypatch.setenv("HUBBUB_SECRET_FUNC_KEY", "env-value-17")
    templates = (
        UpstreamTemplate(
            upstream.url + "/env/{event}?code=" + REF % ("func-key", ""), event_pattern="connected,e"
        ),
        UpstreamTemplate(
            upstream.url + "/file/{event}?code=" + REF % ("file-key", "abc123"), event_pattern="f"
        ),
        UpstreamTemplate(upstream.url + "/missing/{event}?code=" + REF % ("missing-key", "")),
    )
    store.put_signalr_upstream(templates)
    env = await start(store=store, secrets_file=str(secrets))
    caplog.set_level(logging.DEBUG)
    ws, _ = await env.connect(hub)
    assert (await call(upstream, "connected"))[0] == "/env/connected?code=env-value-17"
    await ws.send_str(invocation("f"))
    assert await record(ws) == {"type": 3, "invocationId": "1"}
    assert (await call(upstream, "f"))[0] == "/file/f?code=file-value-42"
    await ws.send_str(invocation("other"))
    assert await record(ws) == {"type": 3, "invocationId": "1", "error": "Invocation failed, status code 500"}
    failures = [r.getMessage() for r in caplog.records if "missing-key" in r.getMessage()]
    assert len(failures) == 1
    assert "HUBBUB_SECRET_MISSING_KEY" in failures[0]
    assert "SecretUri=" in failures[0]  # the URL as configured, with the reference
    assert failures[0].count("\n") == 0

    # rotated: the cached value is used until the settings change (or 30 minutes pass)
    monkeypatch.setenv("HUBBUB_SECRET_FUNC_KEY", "env-value-18")
    await ws.send_str(invocation("e"))
    await record(ws)
    assert (await call(upstream, "e"))[0] == "/env/e?code=env-value-17"
    await admin(env, "PUT", {"templates": [t.to_json() for t in templates]})
    await ws.send_str(invocation("e"))
    await record(ws)
    assert (await call(upstream, "e"))[0] == "/env/e?code=env-value-18"
    await ws.close()
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("hubbub"))
    for value in ("env-value-17", "env-value-18", "file-value-42"):
        assert value not in logged


# --- ManagedIdentity -----------------------------------------------------------------------------


async def test_managed_identity_token_claims(start: Starter, upstream: Upstream, hub: str) -> None:
    templates = (
        UpstreamTemplate(
            upstream.url + "/origin/{event}", event_pattern="connected,again", auth_type="ManagedIdentity"
        ),
        UpstreamTemplate(
            upstream.url + "/app/{event}", auth_type="ManagedIdentity", auth_resource="api://my-app"
        ),
    )
    env = await start(upstream=templates, endpoint="http://localhost:8888")
    ws, _ = await env.connect(hub)
    _, headers, _ = await call(upstream, "connected")
    scheme, token = headers["Authorization"].split(" ")
    assert scheme == "Bearer"
    claims = jwt.decode(
        token,
        KEY.encode("utf-8"),
        algorithms=["HS256"],
        audience=upstream.url,  # no resource: the upstream URL's scheme://host:port
        issuer="http://localhost:8888",
        options={"require": ["iss", "aud", "iat", "nbf", "exp"]},
    )
    assert claims["exp"] == claims["iat"] + TOKEN_LIFETIME
    assert claims["nbf"] == claims["iat"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    await ws.send_str(invocation("again"))
    await record(ws)
    assert (await call(upstream, "again"))[1]["Authorization"] == headers["Authorization"]  # reused
    await ws.send_str(invocation("other"))
    await record(ws)
    _, other, _ = await call(upstream, "other")
    token = other["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(
        token, KEY, algorithms=["HS256"], audience="api://my-app", issuer="http://localhost:8888"
    )
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            token,
            "another-key-0123456789-0123456789-0123456789",
            algorithms=["HS256"],
            audience="api://my-app",
        )
    await ws.close()


def test_redact_hides_plain_and_encoded_values() -> None:
    resolver = SecretResolver(environ={env_name("k"): "s3cr/t v"})
    template = "http://h/?code=" + REF % ("k", "")
    assert resolver.resolve(template) == "http://h/?code=s3cr/t v"
    text = "failed for http://h/?code=s3cr/t v (s3cr%2Ft%20v, s3cr/t%20v)"
    assert resolver.redact(text, template) == "failed for http://h/?code=*** (***, ***)"


async def test_an_error_quoting_the_resolved_url_is_logged_without_the_secret(
    start: Starter, hub: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HUBBUB_SECRET_K", "topsecret-99")
    env = await start(upstream=(UpstreamTemplate("http://127.0.0.1:99999/p?code=" + REF % ("k", "")),))
    ws, _ = await env.connect(hub)
    await ws.send_str(invocation("x"))
    assert await record(ws) == {"type": 3, "invocationId": "1", "error": "Invocation failed, status code 500"}
    failures = [r.getMessage() for r in caplog.records if r.name == "hubbub.signalr.upstream"]
    assert any("InvalidUrlClientError" in line for line in failures), failures
    assert not any("topsecret-99" in line for line in failures)
    await ws.close()
