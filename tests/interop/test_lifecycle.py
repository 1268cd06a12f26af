"""Process lifecycle of `hubbub serve`: start-up banner, key rules, graceful shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import jwt
import pytest
import websocket

from tests.support.server import DEV_KEY, free_port, run_server

pytestmark = pytest.mark.interop


def test_refuses_dev_key_on_public_address() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hubbub", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "development access key" in out.stderr and "Traceback" not in out.stderr


def test_prints_connection_string_the_python_sdk_parses() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubbub", "serve", "--port", str(port), "--data-dir", ":memory:"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        conn = next(
            line.split("connection string:", 1)[1].strip() for line in lines if "connection string" in line
        )
        assert conn == f"Endpoint=http://localhost;Port={port};AccessKey={DEV_KEY};Version=1.0;"
        from azure.messaging.webpubsubservice import WebPubSubServiceClient

        service = WebPubSubServiceClient.from_connection_string(conn, hub="h")
        assert not service.user_exists("nobody")  # a real authenticated round trip
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_sigterm_closes_clients_gracefully() -> None:
    with run_server() as server:
        aud = f"http://localhost:{server.port}/client/hubs/h"
        token = jwt.encode({"aud": aud, "exp": time.time() + 60}, DEV_KEY, algorithm="HS256")
        ws = websocket.WebSocket()
        ws.connect(
            f"ws://localhost:{server.port}/client/hubs/h?access_token={token}",
            subprotocols=["json.webpubsub.azure.v1"],
            timeout=10,
        )
        assert json.loads(ws.recv())["event"] == "connected"
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert json.loads(ws.recv()) == {
            "type": "system",
            "event": "disconnected",
            "message": "Service is shutting down",
        }
        frame = ws.recv_frame()
        assert frame.opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame.data[:2], "big") == 1001
        ws.shutdown()
        assert server.process.wait(10) == 0
        assert time.monotonic() - started < 8
