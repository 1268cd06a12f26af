from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.server import Server, run_server


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    with run_server() as srv:
        yield srv


@pytest.fixture
def hub() -> str:
    """A fresh hub per test, so tests never see each other's connections."""
    return "hub" + uuid.uuid4().hex[:12]
