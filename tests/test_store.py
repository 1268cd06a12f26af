"""hubbub.store: SQLite-backed hub settings, the default data dir, and the --config file."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hubbub.cli import main
from hubbub.settings import EventHandler, HubSettings
from hubbub.signalr.upstream_rules import UpstreamTemplate
from hubbub.store import (
    DB_FILE,
    MEMORY,
    ConfigFileError,
    SettingsStore,
    StoreError,
    default_data_dir,
    load_config,
    load_config_file,
)

HANDLER = EventHandler(
    url_template="http://localhost:5000/eventhandler/{event}",
    user_event_pattern="*",
    system_events=("connect", "connected"),
)


def chat(name: str = "Chat", keepalive_seconds: int = 20) -> HubSettings:
    return HubSettings(
        name=name, event_handlers=(HANDLER,), anonymous_connect=True, keepalive_seconds=keepalive_seconds
    )


@pytest.fixture
def memory() -> Iterator[SettingsStore]:
    store = SettingsStore.open(MEMORY)
    yield store
    store.close()


# --- the store -------------------------------------------------------------------------------------


def test_settings_survive_reopen(tmp_path: Path) -> None:
    data = tmp_path / "nested" / "data"
    store = SettingsStore.open(str(data))
    store.put(chat(keepalive_seconds=45))
    store.put(HubSettings(name="other"))
    store.close()
    assert (data / DB_FILE).is_file()

    again = SettingsStore.open(str(data))
    try:
        assert again.get("chat") == chat(keepalive_seconds=45)
        assert [s.name for s in again.list()] == ["Chat", "other"]
        assert again.delete("OTHER")
    finally:
        again.close()
    third = SettingsStore.open(str(data))
    assert [s.name for s in third.list()] == ["Chat"]
    third.close()


def test_memory_store_is_empty_each_time(memory: SettingsStore) -> None:
    memory.put(chat())
    assert memory.location == MEMORY
    other = SettingsStore.open(MEMORY)
    assert other.list() == []
    other.close()


def test_case_insensitive_and_display_name(memory: SettingsStore) -> None:
    memory.put(chat("Chat"))
    assert memory.get("CHAT") is memory.get("chat") is not None
    memory.put(HubSettings(name="CHAT"))  # same hub: replaces it, new spelling kept
    assert [(s.name, s.anonymous_connect) for s in memory.list()] == [("CHAT", False)]
    assert memory.get("nope") is None
    assert memory.delete("chat") is True
    assert memory.delete("chat") is False
    assert memory.list() == []


def test_listeners_called_after_changes(memory: SettingsStore) -> None:
    seen: list[tuple[str, HubSettings | None]] = []
    memory.listeners.append(lambda hub: seen.append((hub, memory.get(hub))))
    memory.put(chat("Chat"))
    memory.put(chat("chat"))
    assert memory.delete("CHAT")
    assert not memory.delete("CHAT")  # nothing changed: no call
    assert seen == [("Chat", chat("Chat")), ("chat", chat("chat")), ("chat", None)]


def test_failing_listener_does_not_break_put(memory: SettingsStore, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def broken(hub: str) -> None:
        raise RuntimeError("boom")

    memory.listeners += [broken, calls.append]
    memory.put(chat())
    assert memory.get("chat") is not None
    assert calls == ["Chat"]
    assert "listener failed for hub 'Chat'" in caplog.text


def test_bad_rows_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    SettingsStore.open(str(tmp_path)).close()
    with sqlite3.connect(tmp_path / DB_FILE) as conn:
        conn.execute("INSERT INTO hubs VALUES ('bad', 'Bad', '{\"webSocketKeepAliveIntervalInSeconds\": 0}')")
        conn.execute("INSERT INTO hubs VALUES ('worse', 'worse', 'not json')")
        conn.execute("INSERT INTO hubs VALUES ('good', 'good', '{}')")
    conn.close()
    store = SettingsStore.open(str(tmp_path))
    assert [s.name for s in store.list()] == ["good"]
    store.close()
    assert "ignoring the stored settings of hub 'Bad'" in caplog.text
    assert "hub 'worse'" in caplog.text


def test_unusable_data_dir_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot open the hub settings store"):
        SettingsStore.open(str(tmp_path / "file"))
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / DB_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot read the hub settings store"):
        SettingsStore.open(str(tmp_path / "db"))


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    SettingsStore.open(str(tmp_path)).close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="newer hubbub"):
        SettingsStore.open(str(tmp_path))


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == str(tmp_path / "hubbub")
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = {
        "darwin": tmp_path / "Library" / "Application Support" / "hubbub",
        "linux": tmp_path / ".local" / "share" / "hubbub",
    }
    if sys.platform in expected:
        assert default_data_dir() == str(expected[sys.platform])


# --- the config file -------------------------------------------------------------------------------

EXAMPLE = """
[hubs.chat]
anonymous_connect = true            # anonymousConnectPolicy allow|deny
keepalive_seconds = 25
[[hubs.chat.event_handlers]]
url_template = "http://localhost:5000/eventhandler/{event}"
user_event_pattern = "*"
system_events = ["connect", "connected"]
auth_type = "None"
[[hubs.chat.event_handlers]]
url_template = "https://example.com/{hub}/{event}"
system_events = ["disconnected"]
auth_type = "ManagedIdentity"
auth_resource = "api://app"

[hubs."Quiet.Hub"]
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hubbub.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_config_file_example(tmp_path: Path) -> None:
    hubs = load_config_file(write(tmp_path, EXAMPLE))
    assert hubs == [
        HubSettings(
            name="chat",
            event_handlers=(
                HANDLER,
                EventHandler(
                    url_template="https://example.com/{hub}/{event}",
                    system_events=("disconnected",),
                    auth_type="ManagedIdentity",
                    auth_resource="api://app",
                ),
            ),
            anonymous_connect=True,
            keepalive_seconds=25,
        ),
        HubSettings(name="Quiet.Hub"),
    ]
    assert load_config_file(write(tmp_path, "")) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[hubs.chat\n", "is not valid TOML"),
        ("[hub.chat]\n", "unknown key 'hub' in the top level"),
        ("hubs = 1\n", "'hubs' must be a table"),
        ("[hubs]\nchat = 1\n", "[hubs.chat] must be a table"),
        ('[hubs."9lives"]\n', "Invalid hub name '9lives'"),
        ("[hubs.chat]\nanonymous = true\n", "unknown key 'anonymous' in [hubs.chat]"),
        ("[hubs.chat]\nanonymous_connect = 'yes'\n", "anonymous_connect must be true or false"),
        ("[hubs.chat]\nkeepalive_seconds = 0\n", "keepalive_seconds must be an integer from 1 to 120"),
        ("[hubs.chat]\nkeepalive_seconds = '20'\n", "keepalive_seconds must be an integer"),
        ("[hubs.chat]\nevent_handlers = 'x'\n", "event_handlers must be an array of tables"),
        ("[hubs.chat]\n[hubs.Chat]\n", "are the same hub"),
        ("[[hubs.chat.event_handlers]]\nuser_event_pattern = '*'\n", "#1: url_template is required"),
        ("[[hubs.chat.event_handlers]]\nurl = 'http://x'\n", "unknown key 'url'"),
        ("[[hubs.chat.event_handlers]]\nurl_template = 1\n", "url_template must be a string"),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://x'\nsystem_events = 'connect'\n",
            "system_events must be a list of strings",
        ),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://x'\nsystem_events = ['connecting']\n",
            "Unknown system event 'connecting'",
        ),
        ("[[hubs.chat.event_handlers]]\nurl_template = 'ftp://x'\n", "Invalid urlTemplate 'ftp://x'"),
        ("[hubs.chat]\nevent_handlers = [1]\n", "#1 must be a table"),
    ],
)
def test_config_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as info:
        load_config_file(path)
    assert path in str(info.value)
    assert message in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"cannot read config file .*No such file"):
        load_config_file(str(tmp_path / "absent.toml"))


def test_serve_rejects_bad_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[hubs.chat]\nkeepalive_seconds = 500\n")
    data = tmp_path / "data"
    assert main(["serve", "--port", "1", "--config", path, "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hubbub: config file {path}: [hubs.chat]: keepalive_seconds")
    assert "Traceback" not in err and err.count("\n") == 1
    assert not data.exists()  # nothing touched


def test_serve_rejects_unusable_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    assert main(["serve", "--port", "1", "--data-dir", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err.startswith("hubbub: cannot open the hub settings store")


# --- SignalR upstream templates --------------------------------------------------------------------


def test_signalr_upstream_survives_reopen_and_notifies(tmp_path: Path) -> None:
    templates = (
        UpstreamTemplate("http://localhost:7071/{hub}/{event}", hub_pattern="chat", event_pattern="a,b"),
        UpstreamTemplate("http://localhost:7071/all", auth_type="ManagedIdentity", auth_resource="api://x"),
    )
    store = SettingsStore.open(str(tmp_path))
    seen: list[tuple[UpstreamTemplate, ...]] = []
    store.signalr_listeners.append(seen.append)
    assert store.signalr_upstream() == ()
    store.put_signalr_upstream(templates)
    assert seen == [templates]
    store.close()
    again = SettingsStore.open(str(tmp_path))
    try:
        assert again.signalr_upstream() == templates  # order kept
        again.put_signalr_upstream(())
        assert again.signalr_upstream() == ()
    finally:
        again.close()


def test_config_file_signalr_upstream(tmp_path: Path) -> None:
    text = (
        "[[signalr.upstream]]\n"
        "url_template = 'http://localhost:7071/runtime/webhooks/signalr?code={@Microsoft.KeyVault("
        "SecretUri=https://v.vault.azure.net/secrets/k/)}'\n"
        "hub_pattern = 'chat'\n"
        "[[signalr.upstream]]\n"
        "url_template = 'http://localhost:7072/{event}'\n"
        "auth_type = 'ManagedIdentity'\n"
    )
    loaded = load_config(write(tmp_path, text))
    assert loaded.hubs == []
    assert loaded.signalr_upstream is not None
    assert [t.hub_pattern for t in loaded.signalr_upstream] == ["chat", "*"]
    assert loaded.signalr_upstream[1].auth_type == "ManagedIdentity"
    assert load_config(write(tmp_path, "")).signalr_upstream is None  # absent: the stored list is kept
    assert load_config(write(tmp_path, "[signalr]\n")).signalr_upstream == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("signalr = 1\n", "'signalr' must be a table"),
        ("[signalr]\nupstreams = []\n", "unknown key 'upstreams' in [signalr]"),
        ("[signalr]\nupstream = 1\n", "must be an array of tables"),
        ("[[signalr.upstream]]\nhub_pattern = '*'\n", "#1: url_template is required"),
        ("[[signalr.upstream]]\nurl_template = 'http://x'\nhub = 'a'\n", "unknown key 'hub'"),
        (
            "[[signalr.upstream]]\nurl_template = 'http://x'\nhub_pattern = 1\n",
            "hub_pattern must be a string",
        ),
        ("[[signalr.upstream]]\nurl_template = 'ftp://x'\n", "Invalid UrlTemplate 'ftp://x'"),
        ("[[signalr.upstream]]\nurl_template = 'http://x/{@y}'\n", "Invalid secret reference"),
        (
            "[[signalr.upstream]]\nurl_template = 'http://x'\nauth_type = 'Key'\n",
            "Unknown upstream auth type",
        ),
    ],
)
def test_config_file_signalr_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigFileError) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)


# --- the Redis store (a cluster's) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    from tests.support.cluster import run_redis

    with run_redis() as server:
        yield server.url


async def test_redis_store_shares_changes_between_nodes(redis_url: str) -> None:
    from hubbub.store_redis import RedisSettingsStore

    one, two = RedisSettingsStore(redis_url), RedisSettingsStore(redis_url)
    await one.start()
    await two.start()
    seen: list[str] = []
    seen_signalr: list[tuple[UpstreamTemplate, ...]] = []
    two.listeners.append(seen.append)
    two.signalr_listeners.append(seen_signalr.append)
    try:
        await one.save(chat())
        assert one.get("chat") == chat()  # read-your-writes on the writer
        await wait_for(lambda: two.get("CHAT") == chat())
        assert seen == ["Chat"]
        templates = (UpstreamTemplate("http://localhost:7071/{event}", hub_pattern="chat"),)
        await two.save_signalr_upstream(templates)
        await wait_for(lambda: one.signalr_upstream() == templates)
        assert seen_signalr == [templates]
        assert await two.remove("chat")
        assert not await two.remove("chat")
        await wait_for(lambda: one.get("chat") is None)
        assert [s.name for s in one.list()] == []
        late = RedisSettingsStore(redis_url)  # a node started later reads what is there
        await late.start()
        assert late.signalr_upstream() == templates
        await late.aclose()
    finally:
        await one.aclose()
        await two.aclose()


async def test_redis_store_write_without_redis_is_a_store_error() -> None:
    from hubbub.store_redis import RedisSettingsStore
    from tests.support.server import free_port

    store = RedisSettingsStore(f"redis://127.0.0.1:{free_port()}", start_timeout=0.2)
    await store.start()  # serves (empty) while Redis is away
    try:
        with pytest.raises(StoreError, match="cannot write the hub settings"):
            await store.save(chat())
        assert store.get("chat") is None
    finally:
        await store.aclose()


async def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)
