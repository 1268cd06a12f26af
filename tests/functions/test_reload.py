"""``hubbub func start`` restarts the host when the app's files change, as Core Tools does (a real
process; the app is edited on disk while it runs)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import requests

from tests.functions.signalr_support import func_start
from tests.support.server import free_port

pytestmark = pytest.mark.timeout(120)

APP = """
import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="version")
def version(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("{answer}")
"""


def _write_app(root: Path, answer: str, *, source: str = APP) -> None:
    script = root / "function_app.py"
    before = script.stat().st_mtime_ns if script.exists() else 0
    script.write_text(source.replace("{answer}", answer), encoding="utf-8")
    os.utime(script, ns=(before + 1_000_000_000, before + 1_000_000_000))  # a coarse clock still sees it


def _app(tmp_path: Path, host_json: dict[str, object] | None = None) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    (root / "host.json").write_text(json.dumps({"version": "2.0", **(host_json or {})}), encoding="utf-8")
    _write_app(root, "one")
    return root


def _answer(base_url: str, prefix: str = "api") -> str | int:
    try:
        response = requests.get(f"{base_url}/{prefix}/version", timeout=5)
    except requests.ConnectionError:
        return -1  # between two hosts
    return response.text if response.status_code == 200 else response.status_code


def _wait_for(base_url: str, expected: str | int, timeout: float = 20.0, prefix: str = "api") -> None:
    deadline = time.monotonic() + timeout
    while (answer := _answer(base_url, prefix)) != expected:
        assert time.monotonic() < deadline, f"still {answer!r}, not {expected!r}"
        time.sleep(0.1)


def test_an_edited_app_is_served_after_the_host_restarts(tmp_path: Path) -> None:
    root = _app(tmp_path)
    with func_start(root, tmp_path / "keys", {}, port=free_port()) as host:
        _wait_for(host.base_url, "one")
        _write_app(root, "two")
        _wait_for(host.base_url, "two")
        assert any("file change detected" in line and "function_app.py" in line for line in host.output)
        # a broken app: the host says why and serves no functions; fixed, it is back
        _write_app(root, "three", source="def broken(:\n")
        _wait_for(host.base_url, 404)
        assert any("NOT LOADED" in line and "SyntaxError" in line for line in host.output), host.log()
        _write_app(root, "three")
        _wait_for(host.base_url, "three")
        # host.json changes restart it too (here: a route prefix)
        (root / "host.json").write_text(
            json.dumps({"version": "2.0", "extensions": {"http": {"routePrefix": "v2"}}}), encoding="utf-8"
        )
        _wait_for(host.base_url, "three", prefix="v2")


def test_file_watching_can_be_turned_off_in_host_json(tmp_path: Path) -> None:
    root = _app(tmp_path, {"fileWatchingEnabled": False})
    with func_start(root, tmp_path / "keys", {}, port=free_port()) as host:
        _wait_for(host.base_url, "one")
        _write_app(root, "two")
        time.sleep(3)  # three polls
        assert _answer(host.base_url) == "one"
        assert not any("file change detected" in line for line in host.output)
