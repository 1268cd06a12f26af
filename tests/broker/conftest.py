from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import RedisServer, run_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the broker tests (skipped only without it and without root)."""
    with run_redis() as server:
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give the flaky-marked tests here a timeout that also covers their rerun.

    pytest-timeout stops its timer when a test fails (its ``pytest_exception_interact``), so the
    rerun of a ``flaky`` test ran with no timeout at all: that is how a rerun could hang forever
    (docs/status.md #7). A ``func_only`` timeout is armed again for every call.
    """
    here = Path(__file__).parent
    for item in items:
        if (
            here in item.path.parents
            and item.get_closest_marker("flaky")
            and not item.get_closest_marker("timeout")
        ):
            item.add_marker(pytest.mark.timeout(20, func_only=True))  # in-process: each takes ~1 s
