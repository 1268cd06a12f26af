"""Fixtures for running the official SDKs' own test suites against a real hubbub process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sdk_live import sdists
from tests.sdk_live.suites import SUITES
from tests.support.proxy import CuttableProxy, cuttable_proxy
from tests.support.server import Server, free_port, run_server, wait_for_port

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def sdk_sources() -> dict[str, Path]:
    """Suite name -> root folder of the extracted sdist (downloaded once, then cached)."""
    return {suite.name: sdists.prepare_suite(suite) for suite in SUITES}


@pytest.fixture(scope="session")
def sdk_extra_deps() -> Path | None:
    return sdists.prepare_extra_deps()


@pytest.fixture(scope="session")
def sdk_server() -> Iterator[Server]:
    env = {}
    if importlib.util.find_spec("hubbub") is None:  # not installed (yet): run it from the tree
        src = str(sdists.REPO_ROOT / "src")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    with run_server(env=env) as server:
        yield server


@pytest.fixture(scope="session")
def sdk_reverse_proxy(sdk_server: Server) -> Iterator[str]:
    """A pass-through reverse proxy (the APIM stand-in) in front of hubbub; yields its endpoint."""
    port = free_port()
    cmd = [sys.executable, str(HERE / "revproxy.py"), "--port", str(port), "--target", sdk_server.endpoint]
    proc = subprocess.Popen(cmd)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"  # no trailing slash: the SDK swaps it in by string replace
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def sdk_wan_proxy(sdk_server: Server) -> Iterator[CuttableProxy]:
    """The client suite reaches hubbub over a simulated WAN (10 ms each way), as it reaches Azure.

    Some of its sync tests race two websocket-client threads on one socket; on bare loopback the
    wrong thread wins and the client never notices its own close. Network latency is what those
    tests were written against.
    """
    with cuttable_proxy(sdk_server.port, delay=0.01) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def sdk_live_env(sdk_server: Server, sdk_reverse_proxy: str, sdk_wan_proxy: CuttableProxy) -> dict[str, str]:
    """The environment the SDK suites read, pointed at hubbub."""
    client_cs = sdk_server.connection_string.replace(
        f"Port={sdk_server.port};", f"Port={sdk_wan_proxy.port};"
    )
    return {
        # azure-messaging-webpubsubservice tests (WebpubsubPowerShellPreparer, directory "webpubsub")
        "WEBPUBSUB_ENDPOINT": sdk_server.endpoint,
        "WEBPUBSUB_CONNECTION_STRING": sdk_server.connection_string,
        "WEBPUBSUB_REVERSE_PROXY_ENDPOINT": sdk_reverse_proxy,
        # azure-messaging-webpubsubclient tests (WebpubsubClientPowerShellPreparer)
        "WEBPUBSUBCLIENT_CONNECTION_STRING": client_cs,
    }
