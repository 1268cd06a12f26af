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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
import requests
import websocket

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


# --- upstream settings through --config, the CLI and a secrets file (real process) -------------------


class Recorder:
    """A real upstream (HTTP server thread) that records ``(event, path and query, Authorization)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self._changed = threading.Condition()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with recorder._changed:
                    recorder.calls.append(
                        (self.headers["X-ASRS-Event"], self.path, self.headers.get("Authorization", ""))
                    )
                    recorder._changed.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, event: str, count: int = 1, timeout: float = 15.0) -> list[tuple[str, str, str]]:
        with self._changed:
            self._changed.wait_for(lambda: len([c for c in self.calls if c[0] == event]) >= count, timeout)
            return [c for c in self.calls if c[0] == event]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def connect_signalr(port: int, hub: str) -> websocket.WebSocket:
    token = mint_client_token(DEV_KEY, client_url("http://localhost", hub), user_id="u")
    ws = websocket.WebSocket()
    ws.connect(f"ws://127.0.0.1:{port}/client/?hub={hub}&access_token={token}", timeout=10)
    ws.send('{"protocol":"json","version":1}\x1e')
    assert ws.recv() == "{}\x1e"
    return ws


def test_config_file_cli_and_secrets_file_reach_the_upstream(tmp_path: Path) -> None:
    upstream = Recorder()
    port = free_port()
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"func-key": "value-from-file"}))
    config = tmp_path / "hubbub.toml"
    ref = "{@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/func-key/)}"
    config.write_text(
        "[[signalr.upstream]]\n"
        f'url_template = "{upstream.url}/toml/{{hub}}/{{event}}?code={ref}"\n'
        'hub_pattern = "chat"\n'
        'auth_type = "ManagedIdentity"\n'
        "[[signalr.upstream]]\n"
        f'url_template = "{upstream.url}/fallback/{{event}}"\n'
    )
    cs = f"Endpoint=http://localhost;Port={port};AccessKey={DEV_KEY};Version=1.0;"
    try:
        with serve("--signalr-port", str(port), "--config", str(config), "--secrets-file", str(secrets)) as (
            proc,
            out,
        ):
            assert out.wait_for("(2 templates)"), out.text
            ws = connect_signalr(port, "chat")
            (_event, path, auth), *_ = upstream.wait_for("connected")
            assert path == "/toml/chat/connected?code=value-from-file"
            claims = jwt.decode(
                auth.removeprefix("Bearer "),
                DEV_KEY,
                algorithms=["HS256"],
                audience=upstream.url,
                issuer=f"http://localhost:{port}",
            )
            assert claims["exp"] - claims["iat"] == 3600
            other = connect_signalr(port, "other")
            assert upstream.wait_for("connected", 2)[1][1] == "/fallback/connected"

            cli = [sys.executable, "-m", "hubbub", "signalr", "upstream"]
            env = {**os.environ, "AzureSignalRConnectionString": cs}
            template = f"url-template={upstream.url}/cli/{{category}}/{{event}}"
            done = subprocess.run(
                [*cli, "update", "--template", template, "event-pattern=connected,disconnected"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["templates"][0]["eventPattern"] == "connected,disconnected"
            listed = subprocess.run([*cli, "list"], env=env, capture_output=True, text=True, timeout=30)
            assert json.loads(listed.stdout) == json.loads(done.stdout)
            third = connect_signalr(port, "chat")
            assert upstream.wait_for("connected", 3)[2][1] == "/cli/connections/connected"
            bad = subprocess.run(
                [*cli, "update", "--template", "url-template=ftp://x"],
                env=env,
                capture_output=True,
                text=True,
            )
            assert bad.returncode == 1
            assert bad.stderr.startswith("hubbub: Invalid UrlTemplate 'ftp://x'")
            cleared = subprocess.run([*cli, "clear"], env=env, capture_output=True, text=True, timeout=30)
            assert cleared.returncode == 0, cleared.stderr
            for client in (ws, other, third):
                client.close()
            proc.terminate()
            assert proc.wait(timeout=10) == 0
        assert "value-from-file" not in out.text
    finally:
        upstream.close()


def _settings(path: Path, url: str) -> None:
    before = path.stat().st_mtime_ns if path.exists() else 0
    template = {
        "UrlTemplate": url + "/{event}",
        "HubPattern": "*",
        "EventPattern": "*",
        "CategoryPattern": "*",
    }
    path.write_text(json.dumps({"UpstreamSettings": {"Templates": [template]}}), encoding="utf-8")
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))  # a coarse clock still sees it


def test_the_settings_file_is_reloaded_when_it_changes(tmp_path: Path) -> None:
    """As the emulator's settings.json: an edit applies to the next event, a broken edit changes nothing."""
    first, second = Recorder(), Recorder()
    settings = tmp_path / "settings.json"
    _settings(settings, first.url + "/one")
    port = free_port()
    sockets: list[websocket.WebSocket] = []
    try:
        with serve("--signalr-port", str(port), "--signalr-settings", str(settings)) as (_proc, out):
            assert out.wait_for("(1 template)"), out.text
            sockets.append(connect_signalr(port, "chat"))
            assert first.wait_for("connected")[0][1] == "/one/connected"
            _settings(settings, second.url + "/two")
            assert out.wait_for("1 template(s) reloaded"), out.text
            sockets.append(connect_signalr(port, "chat"))
            assert second.wait_for("connected")[0][1] == "/two/connected"
            settings.write_text("{not json", encoding="utf-8")
            assert out.wait_for("not reloaded, the previous ones stay"), out.text
            sockets.append(connect_signalr(port, "chat"))
            assert len(second.wait_for("connected", 2)) == 2
            assert len(first.wait_for("connected")) == 1
    finally:
        for ws in sockets:
            ws.close()
        first.close()
        second.close()
