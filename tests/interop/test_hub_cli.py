"""``hubbub hub ...``: connection strings, --event-handler words, and the commands against a service.

The first tests run the CLI in process against the admin API on an aiohttp TestServer; the ``interop``
ones run ``python -m hubbub hub ...`` against a real ``hubbub serve``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hubbub.api.admin import add_admin_routes
from hubbub.cli import main
from hubbub.config import ServiceConfig
from hubbub.hub_cli import (
    ENV_CONNECTION_STRING,
    HubCliError,
    admin_request,
    parse_connection_string,
    parse_event_handler,
)
from hubbub.store import MEMORY, SettingsStore
from tests.support.server import DEV_KEY, Server, run_server

HANDLER_ARGS = [
    "--event-handler",
    "url-template=http://localhost:5000/eventhandler/{event}",
    "user-event-pattern=*",
    "system-event=connect",
    "system-event=connected",
]
HANDLER = {
    "urlTemplate": "http://localhost:5000/eventhandler/{event}",
    "userEventPattern": "*",
    "systemEvents": ["connect", "connected"],
    "auth": {"type": "None"},
}


# --- parsing ---------------------------------------------------------------------------------------


def test_connection_string_is_parsed_like_the_python_sdk() -> None:
    assert parse_connection_string("Endpoint=http://localhost;Port=8080;AccessKey=abc=;Version=1.0;") == (
        "http://localhost:8080",
        "abc=",
    )
    assert parse_connection_string("endpoint=https://x.webpubsub.azure.com/;ACCESSKEY=k") == (
        "https://x.webpubsub.azure.com",
        "k",
    )
    for bad, message in [
        ("AccessKey=k", "no 'Endpoint'"),
        ("Endpoint=http://x", "no 'AccessKey'"),
        ("Endpoint=http://x;oops;AccessKey=k", "expected 'key=value', found 'oops'"),
    ]:
        with pytest.raises(HubCliError, match=message):
            parse_connection_string(bad)


def test_event_handler_words() -> None:
    assert parse_event_handler([a for a in HANDLER_ARGS[1:]]) == HANDLER
    assert parse_event_handler(
        ["url-template=https://h/x?a=b", "auth-type=ManagedIdentity", "auth-resource=api://app"]
    ) == {
        "urlTemplate": "https://h/x?a=b",
        "userEventPattern": "",
        "systemEvents": [],
        "auth": {"type": "ManagedIdentity", "managedIdentity": {"resource": "api://app"}},
    }
    for words, message in [
        (["user-event-pattern=*"], "url-template=... is required"),
        (["url-template=http://x", "colour=red"], "got 'colour=red'"),
        (["url-template"], "got 'url-template'"),
        (["url-template=http://x", "url-template=http://y"], "'url-template' given twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_event_handler(words)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["hub", "create", "--hub", "chat", "--event-handler", "user-event-pattern=*"], "url-template"),
        (["hub", "create", "--hub", "chat", "--allow-anonymous", "maybe"], "expected true or false"),
        (["hub", "update", "--hub", "chat", "--keepalive-seconds", "soon"], "invalid int value"),
        (["hub", "rename", "--hub", "chat"], "invalid choice"),
        (["signalr", "upstream", "update"], "--template"),
        (["signalr", "upstream", "update", "--template", "hub-pattern=*"], "url-template=... is required"),
        (
            ["signalr", "upstream", "update", "--template", "url-template=http://x", "url=y"],
            "expected key=value",
        ),
        (["signalr", "upstream", "update", "--template", "url-template=a", "url-template=b"], "given twice"),
    ],
)
def test_bad_flags_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_connection_string(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ENV_CONNECTION_STRING, raising=False)
    assert main(["hub", "list"]) == 1
    assert capsys.readouterr().err == (
        f"hubbub: no connection string: pass --connection-string or set {ENV_CONNECTION_STRING}\n"
    )


def test_unreachable_service(capsys: pytest.CaptureFixture[str]) -> None:
    cs = "Endpoint=http://127.0.0.1;Port=1;AccessKey=k;"
    assert main(["hub", "show", "--hub", "chat", "--connection-string", cs]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hubbub: cannot reach http://127.0.0.1:1: ") and err.count("\n") == 1


# --- in process, against the admin API -------------------------------------------------------------


@pytest.fixture
async def service(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SettingsStore]:
    store = SettingsStore.open(MEMORY)
    app = web.Application()
    add_admin_routes(app, ServiceConfig(access_keys=(DEV_KEY,)), store)
    async with TestServer(app, host="127.0.0.1") as server:
        cs = f"Endpoint=http://127.0.0.1;Port={server.port};AccessKey={DEV_KEY};Version=1.0;"
        monkeypatch.setenv(ENV_CONNECTION_STRING, cs)
        yield store
    store.close()


async def hub(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """Run ``hubbub hub ...`` in a thread (it blocks on urllib); (status, printed JSON, stderr)."""
    code = await asyncio.to_thread(main, ["hub", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out else None, err


async def test_commands_in_process(service: SettingsStore, capsys: pytest.CaptureFixture[str]) -> None:
    code, body, _ = await hub(
        capsys, "create", "--hub-name", "Chat", *HANDLER_ARGS, "--allow-anonymous", "true"
    )
    assert code == 0
    expected = {
        "name": "Chat",
        "properties": {
            "eventHandlers": [HANDLER],
            "anonymousConnectPolicy": "allow",
            "webSocketKeepAliveIntervalInSeconds": 20,
        },
    }
    assert body == expected
    stored = service.get("chat")
    assert stored is not None and stored.anonymous_connect

    assert await hub(capsys, "create", "--hub", "chat") == (
        1,
        None,
        "hubbub: Hub 'chat' already exists; use 'hubbub hub update' to change it.\n",
    )
    assert await hub(capsys, "show", "-n", "CHAT") == (0, expected, "")

    # update keeps what is not given
    code, body, _ = await hub(capsys, "update", "--hub", "chat", "--keepalive-seconds", "50")
    assert code == 0
    assert body["properties"] == {**expected["properties"], "webSocketKeepAliveIntervalInSeconds": 50}
    code, body, _ = await hub(capsys, "update", "--hub", "chat", "--allow-anonymous", "false")
    assert body["properties"]["eventHandlers"] == [HANDLER]
    assert body["properties"]["anonymousConnectPolicy"] == "deny"
    code, body, _ = await hub(
        capsys,
        "update",
        "--hub",
        "chat",
        "--event-handler",
        "url-template=http://a/{event}",
        "system-event=connected",
    )
    assert [h["urlTemplate"] for h in body["properties"]["eventHandlers"]] == ["http://a/{event}"]
    assert body["properties"]["webSocketKeepAliveIntervalInSeconds"] == 50

    # validation errors are the service's message, one line
    assert await hub(capsys, "update", "--hub", "chat", "--keepalive-seconds", "0") == (
        1,
        None,
        "hubbub: 'webSocketKeepAliveIntervalInSeconds' must be between 1 and 120.\n",
    )
    code, _, err = await hub(capsys, "create", "--hub", "news", "--event-handler", "url-template=ftp://x")
    assert (code, err) == (
        1,
        "hubbub: Invalid urlTemplate 'ftp://x': it must be an http:// or https:// URL.\n",
    )
    assert service.get("news") is None

    # az's -n (resource) and -g are tolerated; --hub-name wins over -n
    code, body, _ = await hub(
        capsys, "create", "-n", "MyWebPubSub", "-g", "rg", "--hub-name", "news", "--allow-anonymous"
    )
    assert code == 0 and body["name"] == "news" and body["properties"]["anonymousConnectPolicy"] == "allow"

    code, body, _ = await hub(capsys, "list")
    assert [h["name"] for h in body] == ["Chat", "news"]

    assert await hub(capsys, "delete", "--hub", "chat") == (0, None, "")
    assert await hub(capsys, "delete", "--hub", "chat") == (1, None, "hubbub: Hub 'chat' not found.\n")
    assert await hub(capsys, "update", "--hub", "chat") == (1, None, "hubbub: Hub 'chat' not found.\n")
    assert await hub(capsys, "show") == (
        2,
        None,
        "hubbub hub show: error: --hub-name (or --hub) is required\n",
    )


async def test_wrong_key_is_the_services_401(service: SettingsStore, monkeypatch: pytest.MonkeyPatch) -> None:
    cs = os.environ[ENV_CONNECTION_STRING].replace(DEV_KEY, "another-key")
    with pytest.raises(HubCliError) as info:
        await asyncio.to_thread(admin_request, cs, "GET")
    assert (info.value.status, info.value.code) == (401, "Unauthorized")
    assert str(info.value) == "invalid token signature"


# --- against a real `hubbub serve` -----------------------------------------------------------------


def admin_api_missing(server: Server) -> bool:
    try:
        admin_request(server.connection_string, "GET")
    except HubCliError as exc:
        return exc.status == 404
    return False


@pytest.fixture(scope="module")
def live() -> Iterator[Server]:
    with run_server("--data-dir", MEMORY) as server:
        if admin_api_missing(server):
            pytest.skip("admin API not wired yet")
        yield server


def cli(server: Server, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, ENV_CONNECTION_STRING: server.connection_string}
    return subprocess.run(
        [sys.executable, "-m", "hubbub", "hub", *argv], env=env, capture_output=True, text=True, timeout=60
    )


def unique() -> str:
    return "hub" + uuid.uuid4().hex[:12]


@pytest.mark.interop
def test_cli_against_a_real_server(live: Server) -> None:
    name = unique()
    created = cli(live, "create", "--hub", name, *HANDLER_ARGS, "--allow-anonymous", "true")
    assert created.returncode == 0, created.stderr
    expected = {
        "name": name,
        "properties": {
            "eventHandlers": [HANDLER],
            "anonymousConnectPolicy": "allow",
            "webSocketKeepAliveIntervalInSeconds": 20,
        },
    }
    assert json.loads(created.stdout) == expected
    shown = cli(live, "show", "--hub-name", name.upper())
    assert json.loads(shown.stdout) == expected
    assert shown.stdout == json.dumps(expected, indent=2) + "\n"

    updated = cli(live, "update", "--hub", name, "--allow-anonymous", "false", "--keepalive-seconds", "30")
    assert json.loads(updated.stdout)["properties"] == {
        "eventHandlers": [HANDLER],
        "anonymousConnectPolicy": "deny",
        "webSocketKeepAliveIntervalInSeconds": 30,
    }
    listed = json.loads(cli(live, "list").stdout)
    assert [h for h in listed if h["name"] == name] == [json.loads(updated.stdout)]

    deleted = cli(live, "delete", "--hub", name)
    assert (deleted.returncode, deleted.stdout, deleted.stderr) == (0, "", "")
    missing = cli(live, "show", "--hub", name)
    assert (missing.returncode, missing.stderr) == (1, f"hubbub: Hub '{name}' not found.\n")


@pytest.mark.interop
def test_settings_survive_a_restart(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    with run_server("--data-dir", data) as server:
        if admin_api_missing(server):
            pytest.skip("admin API not wired yet")
        assert cli(server, "create", "--hub", "chat", *HANDLER_ARGS).returncode == 0
    with run_server("--data-dir", data) as server:
        shown = cli(server, "show", "--hub", "chat")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["properties"]["eventHandlers"] == [HANDLER]


@pytest.mark.interop
def test_config_file_wins_for_the_hubs_it_names(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    config = tmp_path / "hubbub.toml"
    config.write_text(
        "[hubs.chat]\nanonymous_connect = true\nkeepalive_seconds = 40\n"
        "[[hubs.chat.event_handlers]]\n"
        'url_template = "http://localhost:5000/eventhandler/{event}"\n'
        'user_event_pattern = "*"\nsystem_events = ["connect", "connected"]\n'
    )
    with run_server("--data-dir", data) as server:
        if admin_api_missing(server):
            pytest.skip("admin API not wired yet")
        assert cli(server, "create", "--hub", "chat").returncode == 0
        assert cli(server, "create", "--hub", "kept", "--keepalive-seconds", "90").returncode == 0
    with run_server("--data-dir", data, "--config", str(config)) as server:
        hubs = {h["name"]: h["properties"] for h in json.loads(cli(server, "list").stdout)}
    assert hubs == {
        "chat": {
            "eventHandlers": [HANDLER],
            "anonymousConnectPolicy": "allow",
            "webSocketKeepAliveIntervalInSeconds": 40,
        },
        "kept": {
            "eventHandlers": [],
            "anonymousConnectPolicy": "deny",
            "webSocketKeepAliveIntervalInSeconds": 90,
        },
    }


@pytest.mark.interop
def test_serve_with_an_invalid_config_file_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "hubbub.toml"
    config.write_text("[hubs.chat]\nanonymous_connect = 'yes'\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hubbub",
            "serve",
            "--port",
            "1",
            "--data-dir",
            MEMORY,
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert (
        done.stderr == f"hubbub: config file {config}: [hubs.chat]: anonymous_connect must be true or false\n"
    )
