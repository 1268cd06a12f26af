"""A hubbub app with the default configuration on a loopback port (in process)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from hubbub.api.app import create_app
from hubbub.config import ServiceConfig


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    server = TestServer(create_app(ServiceConfig()), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()
