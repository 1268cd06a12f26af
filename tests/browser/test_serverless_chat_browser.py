"""Issue #5's acceptance test: the serverless chat demo in a real (headless) Chromium, two users.

Everything runs as a user would run it: hubbub as ``python -m hubbub serve``, the sample app
(``samples/serverless-chat``) with ``python -m hubbub func start``, the hub's event handler pointed at the
host with ``python -m hubbub hub create ...`` (what ``hubbub demo`` does, on free ports instead of the
demo's fixed :7071). Two browser contexts, each with its own fresh user-data dir, open the chat page,
sign in through the page's own ``login`` link (the dev sign-in page standing in for AAD), and chat:
``[alice] hi`` must reach both windows and ``[SYSTEM] ack`` only the sender's.

Chromium is the Debian package (``/usr/bin/chromium``; ``make test`` installs it as root), driven with the
``playwright`` Python package; ``playwright install`` is never needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, expect

from tests.browser.conftest import ARTIFACTS, ROOT, TIMEOUT_MS, open_context
from tests.support.server import Server, free_port, run_server, wait_for_port

SAMPLE_DIR = ROOT / "samples" / "serverless-chat"
HUB = "simplechat"


pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


@dataclass
class FunctionsApp:
    port: int
    webhook: str
    process: subprocess.Popen[str]
    output: list[str]

    @property
    def base_url(self) -> str:
        return f"http://localhost:{self.port}"


@pytest.fixture(scope="module")
def service() -> Iterator[Server]:
    with run_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def functions(service: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FunctionsApp]:
    """``hubbub func start`` on the sample, then ``hubbub hub create`` with the webhook it prints."""
    port = free_port()
    keys_dir = tmp_path_factory.mktemp("func-keys")
    env = {**os.environ, "WebPubSubConnectionString": service.connection_string, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "hubbub", "func", "start", "--script-root", str(SAMPLE_DIR)]
    cmd += ["--port", str(port), "--keys-dir", str(keys_dir)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    found = threading.Event()
    marker = "Web PubSub event handler URL:"

    def drain() -> None:  # keep the pipe empty for the host's whole life
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line.rstrip("\n"))
            if line.startswith(marker):
                found.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not found.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("functions host did not start:\n" + "\n".join(output))
        wait_for_port(port)
        webhook = next(line for line in output if line.startswith(marker))[len(marker) :].strip()
        create = [sys.executable, "-m", "hubbub", "hub", "create", "--connection-string"]
        create += [service.connection_string, "--hub-name", HUB, "--event-handler"]
        create += [f"url-template={webhook}", "user-event-pattern=*"]
        done = subprocess.run(create, cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
        yield FunctionsApp(port=port, webhook=webhook, process=proc, output=output)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def _open_context(pw: Playwright, user_data_dir: Path) -> BrowserContext:
    return open_context(pw, user_data_dir, 900, 600)


def _sign_in(page: Page, base_url: str, user: str) -> None:
    """Open the chat page, follow its ``login`` link, sign in, and wait for the WebSocket to open."""
    page.goto(f"{base_url}/api/index")
    with page.expect_console_message(lambda m: m.text == "connected", timeout=TIMEOUT_MS):
        page.get_by_role("link", name="login").click()
        expect(page.locator("#name")).to_be_visible()
        page.fill("#name", user)
        page.click("#login")
        expect(page).to_have_url(f"{base_url}/api/index?authenticated=true")


def _send(page: Page, text: str) -> None:
    page.fill("#message", text)
    page.press("#message", "Enter")


def test_two_users_chat_in_chromium(playwright: Playwright, functions: FunctionsApp, tmp_path: Path) -> None:
    alice_ctx = _open_context(playwright, tmp_path / "profile-alice")
    bob_ctx = _open_context(playwright, tmp_path / "profile-bob")
    try:
        alice = alice_ctx.pages[0] if alice_ctx.pages else alice_ctx.new_page()
        bob = bob_ctx.pages[0] if bob_ctx.pages else bob_ctx.new_page()
        _sign_in(alice, functions.base_url, "alice")
        _sign_in(bob, functions.base_url, "bob")

        _send(alice, "hi")
        expect(alice.locator("#messages p", has_text="[alice] hi")).to_have_count(1)
        expect(alice.locator("#messages p", has_text="[SYSTEM] ack")).to_have_count(1)
        expect(bob.locator("#messages p")).to_have_text(["[alice] hi"])

        # a second message as a fence: once bob has it, a stray ack for "hi" would have arrived too
        _send(alice, "bye")
        expect(bob.locator("#messages p")).to_have_text(["[alice] hi", "[alice] bye"])
        expect(alice.locator("#messages p", has_text="[SYSTEM] ack")).to_have_count(2)
        expect(alice.locator("#messages p", has_text="[alice] hi")).to_have_count(1)
        expect(bob.locator("#messages p", has_text="[SYSTEM] ack")).to_have_count(0)

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        alice.screenshot(path=ARTIFACTS / "serverless-chat-alice.png", full_page=True)
        bob.screenshot(path=ARTIFACTS / "serverless-chat-bob.png", full_page=True)
    finally:
        bob_ctx.close()
        alice_ctx.close()
    assert functions.process.poll() is None, "\n".join(functions.output)
