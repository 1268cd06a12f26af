"""``--redis redis+sentinel://…``: what the URL means (the failover: tests/cluster/test_sentinel.py)."""

from __future__ import annotations

import pytest

from hubbub.broker.sentinel import SentinelURL, parse
from hubbub.broker.wire import Endpoint


def test_other_urls_are_not_sentinel_urls() -> None:
    assert parse("redis://127.0.0.1:6379/2") is None
    assert parse("unix:///tmp/redis.sock") is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+sentinel://s1/main", SentinelURL((("s1", 26379),), "main")),
        (
            "redis+sentinel://:pw@s1:5000,s2:5001/main/3",
            SentinelURL((("s1", 5000), ("s2", 5001)), "main", None, "pw", 3),
        ),
        (
            "redis+sentinel://app:p%40ss@[::1]:26380/main",
            SentinelURL((("::1", 26380),), "main", "app", "p@ss", 0),
        ),
    ],
)
def test_sentinel_urls(url: str, expected: SentinelURL) -> None:
    assert parse(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:26379",  # no primary name
        "redis+sentinel://s1:26379/main/db/extra",
        "redis+sentinel://s1:port/main",
        "redis+sentinel://s1,,s2/main",
        "redis+sentinel://s1/main/zero",
    ],
)
def test_unusable_sentinel_urls(url: str) -> None:
    with pytest.raises(ValueError, match="redis\\+sentinel"):
        parse(url)


def test_the_database_of_a_plain_url_reaches_the_broker_connections() -> None:
    assert Endpoint.from_url("redis://:pw@h:7000/4") == Endpoint("h", 7000, None, False, None, "pw", 4)
