"""Issue #6's acceptance test: the SignalR chat room sample in a real (headless) Chromium, two users.

Everything runs as a user would run it: hubbub as ``python -m hubbub serve`` with SignalR and an upstream
settings file (the emulator's ``settings.json`` shape: ``*/*/*`` to the functions host's
``/runtime/webhooks/signalr?code=<signalr_extension key>``, with ``ManagedIdentity`` auth so every
upstream request carries an ``Authorization`` token), and the sample (``samples/signalr-chat``) with
``python -m hubbub func start``, which is told to *require* that token and to check its audience — so no
upstream request of this test gets through without a verified token, and the page shows it ("with
Authorization: true"). The page loads the official ``@microsoft/signalr`` browser bundle from a CDN;
the test answers that URL with the copy installed by npm (``tests/interop/node/node_modules``), so no
network is needed.

Two browser contexts (alice, an admin per ``ChatAdmins``, and bob): broadcast (and bob's refused one:
the sample's admin-claim check), a message to a user, to a connection, and group messages with
connection and user membership. Screenshots go to ``tests/artifacts/``.

Chromium is the Debian package (``/usr/bin/chromium``); ``playwright install`` is never needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, Playwright, Route, expect

from tests.browser.conftest import ARTIFACTS, ROOT, open_context
from tests.functions.signalr_support import SYSTEM_KEY, FuncHost, func_start
from tests.support.server import DEV_KEY, free_port, run_server, wait_for_port

SAMPLE_DIR = ROOT / "samples" / "signalr-chat"
SIGNALR_JS = (
    ROOT / "tests" / "interop" / "node" / "node_modules" / "@microsoft" / "signalr" / "dist" / "browser"
)
CDN = "https://cdn.jsdelivr.net/npm/@microsoft/signalr@*/dist/browser/signalr.min.js"
AUDIENCE = "api://hubbub-signalr-chat"
TIMEOUT_MS = 20_000


pytestmark = [
    pytest.mark.interop,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not (SIGNALR_JS / "signalr.min.js").is_file(), reason="run `make node-deps` for @microsoft/signalr"
    ),
]


@dataclass
class Chat:
    host: FuncHost

    @property
    def page_url(self) -> str:
        return f"http://localhost:{self.host.port}/api/index"


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chat]:
    folder = tmp_path_factory.mktemp("signalr-chat")
    signalr_port, func_port = free_port(), free_port()
    template = {
        "UrlTemplate": f"http://localhost:{func_port}/runtime/webhooks/signalr?code={SYSTEM_KEY}",
        "HubPattern": "*",
        "CategoryPattern": "*",
        "EventPattern": "*",
        "Auth": {"Type": "ManagedIdentity", "ManagedIdentity": {"Resource": AUDIENCE}},
    }
    settings = folder / "settings.json"
    settings.write_text(json.dumps({"UpstreamSettings": {"Templates": [template]}}), encoding="utf-8")
    env = {
        "AzureSignalRConnectionString": (
            f"Endpoint=http://localhost;Port={signalr_port};AccessKey={DEV_KEY};Version=1.0;"
        ),
        "HubbubSignalRUpstreamTokenRequired": "true",
        "HubbubSignalRUpstreamAudience": AUDIENCE,
        "ChatAdmins": "alice",
    }
    with (
        run_server("--signalr-port", str(signalr_port), "--signalr-settings", str(settings)),
        func_start(SAMPLE_DIR, folder / "keys", env, port=func_port) as host,
    ):
        wait_for_port(signalr_port)
        yield Chat(host)


def _serve_bundle(route: Route) -> None:
    name = route.request.url.rsplit("/", 1)[-1]
    route.fulfill(path=SIGNALR_JS / name, content_type="application/javascript")


def _open_context(pw: Playwright, user_data_dir: Path) -> BrowserContext:
    context = open_context(pw, user_data_dir, 1000, 700, TIMEOUT_MS)
    context.route(CDN, _serve_bundle)
    context.route(CDN + ".map", _serve_bundle)
    return context


def _sign_in(page: Page, url: str, user: str) -> str:
    """Open the page, sign in, wait for the hub connection; the connection id the page shows."""
    page.goto(url)
    page.fill("#username", user)
    with page.expect_console_message(lambda m: m.text == "connected", timeout=TIMEOUT_MS):
        page.click("#login")
    expect(page.locator("#chat")).to_be_visible()
    connection_id = page.locator("#connection-id").inner_text()
    assert connection_id and connection_id != "…"
    return connection_id


def _send(page: Page, text: str, mode: str = "broadcast", to: str = "") -> None:
    page.select_option("#mode", mode)
    page.fill("#to", to)
    page.fill("#message", text)
    page.press("#message", "Enter")


def _membership(page: Page, button: str, group: str, user: str = "") -> None:
    page.fill("#group", group)
    page.fill("#group-user", user)
    page.click(button)


def _lines(page: Page, text: str) -> Locator:
    return page.locator("#messages li", has_text=text)


def test_chat_room_in_chromium(playwright: Playwright, chat: Chat, tmp_path: Path) -> None:
    alice_ctx = _open_context(playwright, tmp_path / "profile-alice")
    bob_ctx = _open_context(playwright, tmp_path / "profile-bob")
    try:
        alice = alice_ctx.pages[0] if alice_ctx.pages else alice_ctx.new_page()
        bob = bob_ctx.pages[0] if bob_ctx.pages else bob_ctx.new_page()
        alice_id = _sign_in(alice, chat.page_url, "alice")
        bob_id = _sign_in(bob, chat.page_url, "bob")
        expect(alice.locator("#role")).to_have_text("admin")
        expect(bob.locator("#role")).to_have_text("not an admin")

        # the connections/connected function announced bob; its upstream request had a (verified) token
        expect(_lines(alice, f"{bob_id} has connected, with Authorization: true")).to_have_count(1)
        expect(_lines(bob, f"{bob_id} has connected, with Authorization: true")).to_have_count(1)

        # broadcast: alice may, bob may not (the admin claim check)
        _send(alice, "hello everyone")
        expect(_lines(alice, "alice: hello everyone")).to_have_count(1)
        expect(_lines(bob, "alice: hello everyone")).to_have_count(1)
        _send(bob, "bob shouts")
        expect(_lines(bob, "[error] broadcast: Unauthorized: this needs the admin claim")).to_have_count(1)

        # to a user, to a connection
        _send(bob, "psst alice", "sendToUser", "alice")
        expect(_lines(alice, "bob: psst alice")).to_have_count(1)
        _send(alice, "direct to bob", "sendToConnection", bob_id)
        expect(_lines(bob, "alice: direct to bob")).to_have_count(1)

        # groups: bob joins with his connection, alice adds her user (admin only), bob leaves
        _membership(bob, "#join-group", "devs")
        expect(_lines(bob, "you joined group devs")).to_have_count(1)
        _send(alice, "group hello", "sendToGroup", "devs")
        expect(_lines(bob, "alice: group hello")).to_have_count(1)
        _membership(bob, "#join-user-group", "devs", "bob")
        expect(_lines(bob, "[error] joinUserToGroup: Unauthorized")).to_have_count(1)
        _membership(alice, "#join-user-group", "devs", "alice")
        expect(_lines(alice, "alice was added to group devs")).to_have_count(1)
        _send(bob, "group again", "sendToGroup", "devs")
        expect(_lines(alice, "bob: group again")).to_have_count(1)
        expect(_lines(bob, "bob: group again")).to_have_count(1)
        _membership(bob, "#leave-group", "devs")
        expect(_lines(bob, "you left group devs")).to_have_count(1)
        _send(alice, "after bob left", "sendToGroup", "devs")
        expect(_lines(alice, "alice: after bob left")).to_have_count(1)

        # a last broadcast as a fence: once both have it, anything misrouted would have arrived too
        _send(alice, "fence")
        expect(_lines(alice, "alice: fence")).to_have_count(1)
        expect(_lines(bob, "alice: fence")).to_have_count(1)
        expect(_lines(alice, "bob shouts")).to_have_count(0)
        expect(_lines(bob, "bob: bob shouts")).to_have_count(0)
        expect(_lines(bob, "psst alice")).to_have_count(0)
        expect(_lines(alice, "direct to bob")).to_have_count(0)
        expect(_lines(alice, "group hello")).to_have_count(0)
        expect(_lines(bob, "after bob left")).to_have_count(0)
        assert alice_id != bob_id

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        alice.screenshot(path=ARTIFACTS / "signalr-chat-alice.png", full_page=True)
        bob.screenshot(path=ARTIFACTS / "signalr-chat-bob.png", full_page=True)
    finally:
        bob_ctx.close()
        alice_ctx.close()
    assert chat.host.process.poll() is None, chat.host.log()
    assert "refused (401)" not in chat.host.log()
