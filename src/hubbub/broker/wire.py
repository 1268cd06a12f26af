"""A minimal Redis connection whose writes leave the node synchronously.

Two of the Redis broker's connections use it, for ordering guarantees redis-py's
awaitable API cannot give:

* the **subscriber**: ``SUBSCRIBE`` is written to the socket inside the call that
  made a connection the first local member of a group, i.e. before that client's
  ``ack`` (or the REST reply) is written; messages are parsed and handed to the
  broker inside ``data_received`` — no task, no ``await`` per message;
* the **writer**: ``PUBLISH`` and the presence updates of this node are written in
  the order they happen, on one connection, so Redis applies them in that order;
  replies come back in order and resolve the futures :meth:`RespConnection.send`
  returned.

Everything else (queries, heartbeats, reaping) uses redis-py; the tasks that do it are stopped
with :func:`cancel_and_wait`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url

from hubbub.broker.resp import Arg, RespError, RespParser, RespProtocolError, encode_command

__all__ = ["Endpoint", "RespConnection", "cancel_and_wait"]

log = logging.getLogger("hubbub.broker.wire")

#: unsent bytes beyond which a connection counts as stuck (publishes are refused)
MAX_BUFFERED_BYTES = 64 * 1024 * 1024

PushHandler = Callable[[bytes, bytes], None]

#: seconds a task may take to end after a cancel before it is cancelled again
RECANCEL_SECONDS = 0.1


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and return once it has ended (raising what it raised, if not cancelled).

    A cancel can be lost: with a socket timeout, redis-py writes every command through
    ``asyncio.wait_for``, which before Python 3.12 returns the result instead of raising
    ``CancelledError`` when the cancel arrives after the write finished but before ``wait_for``
    woke up (CPython gh-86296). A loop such as the heartbeat then runs on, and a plain
    ``task.cancel(); await task`` waits forever. So the task is cancelled again for as long as
    it keeps running.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=RECANCEL_SECONDS)
    with contextlib.suppress(asyncio.CancelledError):
        await task


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect, parsed from a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    tls: bool = False
    username: str | None = None
    password: str | None = None
    #: the database the writer's keys go to (the one redis-py's client of the same URL reads)
    db: int = 0

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        kw: dict[str, Any] = dict(parse_url(url))
        conn_class = kw.get("connection_class")
        return cls(
            host=str(kw.get("host", "127.0.0.1")),
            port=int(kw.get("port", 6379)),
            path=kw.get("path") if conn_class is UnixDomainSocketConnection else None,
            tls=conn_class is SSLConnection,
            username=kw.get("username"),
            password=kw.get("password"),
            db=int(kw.get("db") or 0),
        )


class RespConnection(asyncio.Protocol):
    """One Redis connection: :meth:`send` writes at once and returns a future of the reply.

    With ``on_push`` set it is a subscriber: ``message`` pushes go to ``on_push(channel, data)``,
    (un)subscribe confirmations are dropped, and only replies to ``PING`` resolve futures.
    """

    def __init__(self, on_push: PushHandler | None = None, on_lost: Callable[[], None] | None = None) -> None:
        self._on_push = on_push
        self._on_lost = on_lost
        self._parser = RespParser()
        self._pending: collections.deque[asyncio.Future[Any] | None] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self.closed = False

    @classmethod
    async def open(
        cls,
        endpoint: Endpoint,
        *,
        on_push: PushHandler | None = None,
        on_lost: Callable[[], None] | None = None,
        timeout: float = 5.0,
        name: str = "hubbub",
    ) -> RespConnection:
        loop = asyncio.get_running_loop()
        protocol = cls(on_push, on_lost)
        async with asyncio.timeout(timeout):
            if endpoint.path:
                await loop.create_unix_connection(lambda: protocol, endpoint.path)
            else:
                context = ssl.create_default_context() if endpoint.tls else None
                await loop.create_connection(lambda: protocol, endpoint.host, endpoint.port, ssl=context)
            if endpoint.password is not None:
                auth: tuple[Arg, ...] = (endpoint.password,)
                if endpoint.username:
                    auth = (endpoint.username, endpoint.password)
                await protocol.send(b"AUTH", *auth)
            if endpoint.db:
                await protocol.send(b"SELECT", endpoint.db)
            await protocol.send(b"CLIENT", b"SETNAME", name.replace(" ", "_"))
        return protocol

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except RespProtocolError as exc:
            log.error("redis sent something that is not RESP2 (%s): dropping the connection", exc)
            self.abort()
            return
        for reply in replies:
            if self._on_push is not None and isinstance(reply, list):
                kind = reply[0] if reply else None
                if kind == b"message" and len(reply) == 3:
                    try:
                        self._on_push(reply[1], reply[2])
                    except Exception:  # the handler must never kill the connection
                        log.exception("failed to handle a message on %r", reply[1])
                    continue
                if kind != b"pong":
                    continue  # subscribe / unsubscribe confirmations
                reply = b"PONG"
            self._resolve(reply)

    def _resolve(self, reply: Any) -> None:
        if not self._pending:
            log.warning("unexpected reply from redis: %r", reply)
            return
        future = self._pending.popleft()
        if future is None:
            if isinstance(reply, RespError):
                log.warning("redis refused a write: %s", reply)
            return
        if future.done():
            return
        if isinstance(reply, RespError):
            future.set_exception(reply)
        else:
            future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._transport = None
        pending, self._pending = self._pending, collections.deque()
        for future in pending:
            if future is not None and not future.done():
                future.set_exception(ConnectionError("the connection to redis was lost"))
        if self._on_lost is not None:
            self._on_lost()

    # -- use ----------------------------------------------------------------------------

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport else 0

    def send(self, *args: Arg) -> asyncio.Future[Any]:
        """Write a command now; the future gets its reply (a :class:`RespError` is raised)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._write(encode_command(*args), future)
        return future

    def send_nowait(self, *args: Arg) -> bool:
        """Write a command now and ignore its reply (errors are logged); False if not connected."""
        if self._transport is None or self.closed:
            return False
        self._write(encode_command(*args), None)
        return True

    def _write(self, data: bytes, future: asyncio.Future[Any] | None) -> None:
        if self._transport is None or self.closed:
            raise ConnectionError("not connected to redis")
        if self._on_push is None or future is not None:
            self._pending.append(future)
        self._transport.write(data)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
