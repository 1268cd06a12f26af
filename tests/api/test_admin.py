"""The admin API (/api/admin/hubs): auth, CRUD, validation — in process, on an aiohttp TestServer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hubbub.api.admin import add_admin_routes
from hubbub.config import ServiceConfig
from hubbub.store import MEMORY, SettingsStore

PRIMARY = "primary-key-0123456789-0123456789-0123456789"
SECONDARY = "secondary-key-0123456789-0123456789-01234567"
CONFIG = ServiceConfig(access_keys=(PRIMARY, SECONDARY))

PROPERTIES = {
    "eventHandlers": [
        {
            "urlTemplate": "http://localhost:5000/eventhandler/{event}",
            "userEventPattern": "*",
            "systemEvents": ["connect", "connected"],
            "auth": {"type": "None"},
        }
    ],
    "anonymousConnectPolicy": "allow",
    "webSocketKeepAliveIntervalInSeconds": 20,
}

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def store() -> AsyncIterator[SettingsStore]:
    s = SettingsStore.open(MEMORY)
    yield s
    s.close()


@pytest.fixture
async def client(store: SettingsStore) -> AsyncIterator[Client]:
    app = web.Application()
    add_admin_routes(app, CONFIG, store)
    async with TestClient(TestServer(app)) as c:
        yield c


def bearer(client: Client, path: str, key: str = PRIMARY, **claims: Any) -> dict[str, str]:
    payload = {"aud": str(client.make_url(path)), "exp": int(time.time()) + 300, **claims}
    return {"Authorization": "Bearer " + jwt.encode(payload, key, algorithm="HS256")}


async def call(client: Client, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    headers = bearer(client, path)
    async with client.request(method, path, headers=headers, json=body, **kw) as response:
        text = await response.text()
        return response.status, (await response.json()) if text else None


# --- authentication --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_requests_without_a_valid_token_are_401(client: Client, method: str) -> None:
    path = "/api/admin/hubs/chat"
    attempts: list[dict[str, str]] = [
        {},
        {"Authorization": "Basic abc"},
        bearer(client, path, key="wrong-key-0123456789-0123456789-0123456789"),
        bearer(client, "/api/admin/hubs/other"),  # aud is another URL
        bearer(client, path, exp=int(time.time()) - 3600),
    ]
    for headers in attempts:
        async with client.request(method, path, headers=headers, json=PROPERTIES) as response:
            assert response.status == 401, headers
            assert response.headers["x-ms-error-code"] == "Unauthorized"
            assert (await response.json())["code"] == "Unauthorized"
    async with client.get("/api/admin/hubs") as response:
        assert response.status == 401
    async with client.put("/api/admin/hubs/9bad", json=PROPERTIES) as response:
        assert response.status == 401  # authentication comes before validation


async def test_secondary_key_is_accepted(client: Client) -> None:
    async with client.get("/api/admin/hubs", headers=bearer(client, "/api/admin/hubs", SECONDARY)) as r:
        assert r.status == 200
        assert await r.json() == {"value": []}


# --- CRUD ------------------------------------------------------------------------------------------


async def test_create_show_list_delete(client: Client, store: SettingsStore) -> None:
    changed: list[str] = []
    store.listeners.append(changed.append)
    assert await call(client, "GET", "/api/admin/hubs") == (200, {"value": []})

    status, body = await call(client, "PUT", "/api/admin/hubs/Chat", PROPERTIES)
    assert (status, body) == (200, {"name": "Chat", "properties": PROPERTIES})
    assert changed == ["Chat"]
    stored = store.get("chat")
    assert stored is not None and stored.anonymous_connect

    assert await call(client, "GET", "/api/admin/hubs/chat") == (200, body)  # case-insensitive
    await call(client, "PUT", "/api/admin/hubs/alpha", {})
    status, listing = await call(client, "GET", "/api/admin/hubs")
    assert status == 200
    assert listing["value"] == [
        {
            "name": "alpha",
            "properties": {
                "eventHandlers": [],
                "anonymousConnectPolicy": "deny",
                "webSocketKeepAliveIntervalInSeconds": 20,
            },
        },
        body,
    ]

    assert await call(client, "DELETE", "/api/admin/hubs/CHAT") == (204, None)
    assert changed == ["Chat", "alpha", "Chat"]
    assert store.get("chat") is None
    status, error = await call(client, "DELETE", "/api/admin/hubs/chat")
    assert (status, error) == (404, {"code": "NotFound", "message": "Hub 'chat' not found."})
    status, error = await call(client, "GET", "/api/admin/hubs/chat")
    assert (status, error["message"]) == (404, "Hub 'chat' not found.")


async def test_put_replaces_the_whole_settings(client: Client) -> None:
    await call(client, "PUT", "/api/admin/hubs/chat", PROPERTIES)
    status, body = await call(
        client, "PUT", "/api/admin/hubs/chat", {"webSocketKeepAliveIntervalInSeconds": 60}
    )
    assert status == 200
    assert body["properties"] == {
        "eventHandlers": [],
        "anonymousConnectPolicy": "deny",
        "webSocketKeepAliveIntervalInSeconds": 60,
    }


async def test_arm_resource_body_is_accepted(client: Client) -> None:
    """What `az webpubsub hub show` prints can be PUT back unchanged."""
    arm = {
        "id": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.SignalRService/WebPubSub/w/hubs/chat",
        "name": "chat",
        "type": "Microsoft.SignalRService/WebPubSub/hubs",
        "properties": {**PROPERTIES, "eventListeners": []},
        "systemData": {"createdBy": "someone"},
    }
    assert await call(client, "PUT", "/api/admin/hubs/chat", arm) == (
        200,
        {"name": "chat", "properties": PROPERTIES},
    )


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"eventHandlers": [{"urlTemplate": "http://x/{event}", "systemEvents": ["connecting"]}]},
            "Unknown system event 'connecting': use connect, connected or disconnected.",
        ),
        (
            {"eventHandlers": [{"urlTemplate": "http://{event}.example.com/"}]},
            "Invalid urlTemplate 'http://{event}.example.com/': placeholders are not allowed in the host.",
        ),
        ({"eventHandlers": [{"userEventPattern": "*"}]}, "Each event handler needs a 'urlTemplate' string."),
        ({"anonymousConnectPolicy": "sometimes"}, "'anonymousConnectPolicy' must be 'allow' or 'deny'."),
        (
            {"webSocketKeepAliveIntervalInSeconds": 121},
            "'webSocketKeepAliveIntervalInSeconds' must be between 1 and 120.",
        ),
        ([1, 2], "Hub settings must be a JSON object."),
    ],
)
async def test_invalid_settings_are_400(
    client: Client, store: SettingsStore, body: Any, message: str
) -> None:
    await call(client, "PUT", "/api/admin/hubs/chat", PROPERTIES)
    assert await call(client, "PUT", "/api/admin/hubs/chat", body) == (
        400,
        {"code": "BadRequest", "message": message},
    )
    stored = store.get("chat")
    assert stored is not None and stored.to_json() == PROPERTIES  # unchanged


async def test_malformed_bodies_are_400(client: Client) -> None:
    path = "/api/admin/hubs/chat"
    for data, message in [
        (b"", "The body must be a JSON object with the hub settings."),
        (b"{not json", "The body is not valid JSON."),
    ]:
        async with client.put(path, headers=bearer(client, path), data=data) as response:
            assert response.status == 400
            assert (await response.json())["message"] == message


async def test_invalid_hub_name_is_400(client: Client) -> None:
    status, error = await call(client, "PUT", "/api/admin/hubs/9lives", PROPERTIES)
    assert status == 400
    assert error["message"].startswith("Invalid hub name '9lives'")
    status, _ = await call(client, "GET", "/api/admin/hubs/a%20b")
    assert status == 400


async def test_store_failure_is_500_without_details(client: Client, store: SettingsStore) -> None:
    store.close()
    status, error = await call(client, "PUT", "/api/admin/hubs/chat", PROPERTIES)
    assert (status, error) == (
        500,
        {"code": "InternalServerError", "message": "The hub settings could not be saved."},
    )


async def test_other_methods_are_405(client: Client) -> None:
    async with client.post("/api/admin/hubs/chat", headers=bearer(client, "/api/admin/hubs/chat")) as r:
        assert r.status == 405


# --- SignalR upstream templates --------------------------------------------------------------------


async def test_signalr_upstream_show_replace_clear(client: Client, store: SettingsStore) -> None:
    path = "/api/admin/signalr/upstream"
    assert await call(client, "GET", path) == (200, {"templates": []})
    emulator = {"UpstreamSettings": {"Templates": [{"UrlTemplate": "http://localhost:7071/{event}"}]}}
    status, body = await call(client, "PUT", path, emulator)
    assert status == 200
    assert body == {
        "templates": [
            {
                "urlTemplate": "http://localhost:7071/{event}",
                "hubPattern": "*",
                "categoryPattern": "*",
                "eventPattern": "*",
                "auth": {"type": "None"},
            }
        ]
    }
    assert [t.url_template for t in store.signalr_upstream()] == ["http://localhost:7071/{event}"]
    assert await call(client, "GET", path) == (200, body)
    status, error = await call(client, "PUT", path, {"templates": [{"urlTemplate": "http://x", "auth": 1}]})
    assert (status, error["code"]) == (400, "BadRequest")
    assert await call(client, "DELETE", path) == (204, None)
    assert store.signalr_upstream() == ()
    async with client.get(path) as response:
        assert response.status == 401
