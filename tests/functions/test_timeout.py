"""host.json ``functionTimeout``: an invocation that runs longer fails (HTTP 500) and is logged as the
Functions host logs it; the host keeps serving. A real ``hubbub func start`` process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from hubbub.functions.appconfig import ConfigError, load_app_config, parse_timespan
from tests.functions.signalr_support import func_start
from tests.support.server import free_port

pytestmark = pytest.mark.timeout(120)

APP = """
import asyncio
import time

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="sync/{seconds}")
def slow_sync(req: func.HttpRequest) -> func.HttpResponse:
    time.sleep(float(req.route_params["seconds"]))
    return func.HttpResponse("done")


@app.route(route="async/{seconds}")
async def slow_async(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(float(req.route_params["seconds"]))
    return func.HttpResponse("done")
"""


def _app(tmp_path: Path, timeout: object) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    (root / "host.json").write_text(json.dumps({"version": "2.0", "functionTimeout": timeout}))
    (root / "function_app.py").write_text(APP)
    return root


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:05:00", 300.0), ("00:00:01.5", 1.5), ("1.02:00:00", 93600.0), ("10:00:00", 36000.0)],
)
def test_time_spans(text: str, seconds: float) -> None:
    assert parse_timespan(text) == seconds


@pytest.mark.parametrize("value", ["5", "00:60:00", "00:00:60", "soon", 300, "00:00:00"])
def test_unusable_function_timeouts_are_refused(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError, match="functionTimeout"):
        load_app_config(_app(tmp_path, value))


def test_the_default_is_30_minutes_and_minus_one_is_no_limit(tmp_path: Path) -> None:
    root = _app(tmp_path, "-1")
    assert load_app_config(root).function_timeout is None
    (root / "host.json").write_text(json.dumps({"version": "2.0"}))
    assert load_app_config(root).function_timeout == 1800.0


def test_slow_invocations_fail_after_the_function_timeout(tmp_path: Path) -> None:
    root = _app(tmp_path, "00:00:01")
    with func_start(root, tmp_path / "keys", {}, port=free_port()) as host:
        for kind in ("sync", "async"):
            started = time.monotonic()
            response = requests.get(f"{host.base_url}/api/{kind}/4", timeout=10)
            assert response.status_code == 500
            assert time.monotonic() - started < 3.5
            assert requests.get(f"{host.base_url}/api/{kind}/0", timeout=10).text == "done"
        log = host.log()
        for name in ("slow_sync", "slow_async"):
            assert f"Timeout value of 00:00:01 exceeded by function 'Functions.{name}'" in log, log
            assert f"Executed 'Functions.{name}' (Failed" in log


def test_an_unusable_function_timeout_stops_func_start(tmp_path: Path) -> None:
    root = _app(tmp_path, "soon")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hubbub",
            "func",
            "start",
            "--script-root",
            str(root),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "functionTimeout 'soon'" in done.stderr
