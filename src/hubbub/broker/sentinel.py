"""Where the Redis primary is: a fixed address, or whatever Redis Sentinel names the primary now.

``--redis`` takes ``redis://``, ``rediss://`` and ``unix://`` URLs (redis-py's syntax) and, for a
Redis watched by Sentinel::

    redis+sentinel://[[user]:password@]host:port[,host:port...]/primary-name[/db]

The host list names the Sentinels (port 26379 when left out); the credentials and the database
are the primary's (the Sentinels themselves are asked without credentials). Every (re)connect asks
the Sentinels again, so after a failover the nodes reconnect to the promoted replica; redis-py's
Sentinel pool does the same for the request/response client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from hubbub.broker.wire import Endpoint

__all__ = ["SCHEME", "SentinelURL", "client", "locate", "parse"]

SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    primary: str
    username: str | None = None
    password: str | None = None
    db: int = 0


def parse(url: str) -> SentinelURL | None:
    """The Sentinel URL's parts; None for any other URL. :class:`ValueError` when it is unusable."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        return None
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        host = host.strip("[]")  # an IPv6 literal
        if not host:
            raise ValueError(f"{SCHEME}: a Sentinel address is empty in {hosts!r}")
        try:
            sentinels.append((host, int(port) if port else DEFAULT_SENTINEL_PORT))
        except ValueError:
            raise ValueError(f"{SCHEME}: {item!r} is not host:port") from None
    names = [unquote(p) for p in parts.path.split("/") if p]
    if not names or len(names) > 2:
        raise ValueError(f"{SCHEME}: the path is /primary-name or /primary-name/db, not {parts.path!r}")
    try:
        db = int(names[1]) if len(names) == 2 else 0
    except ValueError:
        raise ValueError(f"{SCHEME}: the database {names[1]!r} is not a number") from None
    return SentinelURL(
        sentinels=tuple(sentinels),
        primary=names[0],
        username=unquote(user) or None,
        password=unquote(password) if userinfo else None,
        db=db,
    )


def _sentinel(target: SentinelURL, **kwargs: Any) -> Sentinel:
    return Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs={"socket_timeout": 2.0, "socket_connect_timeout": 2.0},
        username=target.username,
        password=target.password,
        db=target.db,
        **kwargs,
    )


def client(url: str, **kwargs: Any) -> Redis:
    """A redis-py asyncio client for ``url`` (a Sentinel URL: one that follows the primary)."""
    target = parse(url)
    if target is None:
        return Redis.from_url(url, **kwargs)
    primary: Redis = _sentinel(target, **kwargs).master_for(target.primary)
    return primary


async def locate(url: str) -> Endpoint:
    """Where to connect now: the URL's address, or the primary the Sentinels name at this moment.

    Raises :class:`redis.exceptions.RedisError` (``MasterNotFoundError``) when no Sentinel answers
    with a primary.
    """
    target = parse(url)
    if target is None:
        return Endpoint.from_url(url)
    sentinel = _sentinel(target)
    try:
        host, port = await sentinel.discover_master(target.primary)
    finally:
        for s in sentinel.sentinels:
            await s.aclose()
    return Endpoint(
        host=str(host), port=int(port), username=target.username, password=target.password, db=target.db
    )
