from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cluster import RedisServer, run_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the broker tests (skipped only without it and without root)."""
    with run_redis() as server:
        yield server
