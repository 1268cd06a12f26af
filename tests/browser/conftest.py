"""What the browser tests share: Debian's Chromium driven by the ``playwright`` package.

``make test`` installs ``/usr/bin/chromium`` with apt-get when it runs as root; ``playwright install`` is
never needed. Without Chromium and without root, the browser tests are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
TIMEOUT_MS = 15_000

if not CHROMIUM.exists() and os.geteuid() != 0:
    collect_ignore_glob = ["test_*.py"]  # skipped: say why once, below

    def pytest_report_header() -> str:
        return f"browser tests skipped: {CHROMIUM} is missing and we are not root (install Debian 'chromium')"

else:
    from playwright.sync_api import BrowserContext, Playwright, sync_playwright

    @pytest.fixture
    def playwright() -> Iterator[Playwright]:
        assert CHROMIUM.exists(), f"{CHROMIUM} is missing (make browser-deps installs it)"
        with sync_playwright() as pw:
            yield pw

    def open_context(
        pw: Playwright, user_data_dir: Path, width: int, height: int, timeout_ms: int = TIMEOUT_MS
    ) -> BrowserContext:
        """A fresh headless Chromium profile in ``user_data_dir`` (each is a separate user)."""
        context = pw.chromium.launch_persistent_context(
            str(user_data_dir),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
        )
        context.set_default_timeout(timeout_ms)
        return context
