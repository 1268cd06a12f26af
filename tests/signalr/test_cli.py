"""``hubbub serve`` with SignalR, as a real process: the port options, the printed connection string,
the upstream settings file, shutdown."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from hubbub.signalr.tokens import client_url, mint_client_token
from tests.support.server import DEV_KEY, free_port

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]


class Output:
    """The lines a process prints, collected by a thread (reads never block the test)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, fragment: str, timeout: float = 15.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: fragment in self.text, timeout)

    def finish(self) -> str:
        self._thread.join(timeout=10)
        return self.text


@contextlib.contextmanager
def serve(*args: str) -> Iterator[tuple[subprocess.Popen[str], Output]]:
    cmd = [
        sys.executable,
        "-m",
        "hubbub",
        "serve",
        "--data-dir",
        ":memory:",
        "--port",
        str(free_port()),
        *args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output = Output(proc)
    try:
        yield proc, output
    finally:
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        output.finish()
        if proc.stdout is not None:
            proc.stdout.close()


def test_serve_prints_the_signalr_connection_string_and_serves(tmp_path: Path) -> None:
    port = free_port()
    settings = tmp_path / "settings.json"
    template = {"UrlTemplate": "http://127.0.0.1:9/runtime/webhooks/signalr", "HubPattern": "*"}
    settings.write_text(json.dumps({"UpstreamSettings": {"Templates": [template]}}))
    with serve("--signalr-port", str(port), "--signalr-settings", str(settings)) as (proc, out):
        expected = f"Endpoint=http://localhost;Port={port};AccessKey={DEV_KEY};Version=1.0;"
        assert out.wait_for("(1 template)"), out.text
        assert f"hubbub: SignalR (serverless) on http://localhost:{port}" in out.text
        assert f"  connection string: {expected}" in out.text
        token = mint_client_token(DEV_KEY, client_url("http://localhost", "chat"), user_id="u")
        r = requests.post(
            f"http://127.0.0.1:{port}/client/negotiate?hub=chat&negotiateVersion=1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert r.status_code == 200
        assert r.json()["negotiateVersion"] == 1
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_signalr_port_zero_disables() -> None:
    with serve("--signalr-port", "0") as (proc, out):
        assert out.wait_for("hub settings:"), out.text
        time.sleep(0.3)
        assert proc.poll() is None
        assert "SignalR" not in out.text


def test_explicit_busy_port_fails() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with serve("--signalr-port", str(taken.getsockname()[1])) as (proc, out):
            assert proc.wait(timeout=15) == 1
            assert out.wait_for("hubbub: SignalR:"), out.text


def test_bad_settings_file_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"UpstreamSettings": {"Templates": [{"UrlTemplate": "ftp://x"}]}}')
    with serve("--signalr-port", str(free_port()), "--signalr-settings", str(bad)) as (proc, out):
        assert proc.wait(timeout=15) == 1
        assert out.wait_for("Invalid UrlTemplate"), out.text


def test_busy_default_port_only_warns() -> None:
    with socket.socket() as holder:
        with contextlib.suppress(OSError):  # already busy (another hubbub, an emulator): the same case
            holder.bind(("127.0.0.1", 8888))
            holder.listen()
        with serve() as (proc, out):
            assert out.wait_for("SignalR not started: cannot listen on 127.0.0.1:8888"), out.text
            assert out.wait_for("hub settings:"), out.text
            assert proc.poll() is None  # Web PubSub still runs
