"""A lean HTTP/1.1 client for the calls to event handlers: keep-alive pools over ``asyncio.Protocol``.

The upstream path sends one small request per user event and waits for a small answer, so the
per-request cost of a general client (aiohttp's ClientSession: request/response objects, header
multidicts, payload registry, timers and context managers) was most of hubbub's CPU in the
"upstream echo" benchmark. This client does only what the event-handler calls need:

* ``POST`` / ``OPTIONS`` with a ``bytes`` body, ``http://`` and ``https://`` URLs (the URL is parsed
  once, with yarl, exactly as aiohttp encodes it);
* responses parsed by ``httptools`` (llhttp, the parser of Node.js, as uvicorn uses it): Content-Length,
  chunked, and read-until-close bodies; 1xx interim responses are skipped; ``gzip``/``deflate``
  bodies are decoded (nothing asks for them: no ``Accept-Encoding`` is sent);
* a body cap (:class:`ResponseTooLarge` as soon as the answer, raw or decoded, exceeds it);
* one deadline per request covering the wait for a connection, connecting, sending and the whole
  answer (:class:`TimeoutError`);
* redirects are never followed: a 3xx is returned like any other answer;
* keep-alive: one request at a time per connection, at most ``max_connections`` per origin
  (further requests wait for one, within their deadline), idle connections reused newest first and
  closed after ``idle_seconds``; a connection the handler closes (``Connection: close``, HTTP/1.0,
  a body read until close, a reset) is dropped. A request sent on a *reused* connection that the
  handler closed before a single byte of answer came back is sent once more on a new connection:
  that is the race of a handler closing an idle keep-alive connection just as we reuse it
  (Node's default keep-alive timeout is 5 s), in which the handler never read the request.

Every failure is an :class:`HttpError` (or ``TimeoutError``) with a one-line reason.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import zlib
from collections import deque
from collections.abc import Mapping

import httptools
from yarl import URL

__all__ = ["HttpClient", "HttpError", "Response", "ResponseTooLarge"]

USER_AGENT = "hubbub"


class HttpError(Exception):
    """The request failed: no connection, the connection broke, or the answer was malformed."""


class ResponseTooLarge(HttpError):
    """The answer's body is larger than the client's cap."""


class _Stale(HttpError):
    """The connection closed before a single byte of the answer (retried once if it was reused)."""


class Response:
    """Status, headers (names lower-cased; repeated headers joined with ``", "``) and the whole body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Target:
    """What a URL string means to the client, computed once per URL."""

    __slots__ = ("head", "host", "origin", "port", "server_hostname", "ssl")

    def __init__(self, url: str) -> None:
        try:
            u = URL(url)
        except (ValueError, TypeError) as exc:
            raise HttpError(f"invalid URL {url!r}: {exc}") from None
        if u.scheme not in ("http", "https") or not u.raw_host or u.port is None:
            raise HttpError(f"invalid URL {url!r}: only absolute http:// and https:// URLs are supported")
        self.host: str = u.raw_host
        self.port: int = u.port
        self.ssl = u.scheme == "https"
        self.server_hostname = u.host if self.ssl else None
        self.origin = (u.scheme, self.host, self.port)
        path = u.raw_path_qs or "/"
        head = f" {path} HTTP/1.1\r\nHost: {u.host_port_subcomponent}\r\nUser-Agent: {USER_AGENT}\r\n"
        if u.raw_user is not None:
            credentials = f"{u.user or ''}:{u.password or ''}".encode()
            head += f"Authorization: Basic {base64.b64encode(credentials).decode('ascii')}\r\n"
        lines = head.count("\r\n")
        if head.count("\r") != lines or head.count("\n") != lines:
            raise HttpError(f"invalid URL {url!r}: it contains a line break")
        self.head = head  # after the method: " <target> HTTP/1.1\r\n" + Host + User-Agent (+ auth)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, the answer parsed as it arrives."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.counted = False  # in its pool's count: set once connected, cleared when closed
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.size = 0
        self.received = False  # any byte of the current answer
        self.headers_done = False

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():  # nothing asked: a handler talking out of turn
            self.abort()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, HttpError) else None
            self.fail(cause or HttpError(f"malformed response: {exc}"))
        except httptools.HttpParserUpgrade:
            self.fail(HttpError("the handler answered with a protocol upgrade"))
        except httptools.HttpParserError as exc:
            self.fail(HttpError(f"malformed response: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost does the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.headers_done and "content-length" not in self.headers and not self._chunked():
            self._complete()  # a body delimited by the end of the connection
        elif not self.received:
            why = f": {exc}" if exc else ""
            waiter.set_exception(_Stale(f"the handler closed the connection without an answer{why}"))
        else:
            why = f": {exc}" if exc else ""
            waiter.set_exception(HttpError(f"the handler closed the connection mid-answer{why}"))

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.waiter is None:  # more after the answer, in the same packet
            raise HttpError("the handler sent more than one answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("utf-8", "surrogateescape")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.pool.max_body:
            raise ResponseTooLarge(f"the response body is larger than {self.pool.max_body} bytes")

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.pool.max_body:
            raise ResponseTooLarge(f"the response body is larger than {self.pool.max_body} bytes")
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:  # interim (100 Continue, 103 Early Hints): the real answer follows
            self._reset()
            self.received = True
            return
        self._complete()

    # -- plumbing --------------------------------------------------------------------------

    def _chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    def _complete(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():  # the caller gave up (cancelled): the connection is unusable
            self.abort()
            return
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        encoding = self.headers.get("content-encoding")
        if encoding is not None and body:
            try:
                body = self._decode(encoding, body)
            except HttpError as exc:
                waiter.set_exception(exc)
                self.abort()
                return
        waiter.set_result(Response(self.status, self.headers, body))
        if self.closed:
            return
        if self.parser.should_keep_alive():
            self.waiter = None
            self._reset()
            self.pool.release(self)
        else:
            self.close()

    def _decode(self, encoding: str, body: bytes) -> bytes:
        coding = encoding.strip().lower()
        if coding in ("", "identity"):
            return body
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise HttpError(f"the handler answered with an unsupported Content-Encoding '{encoding}'")
        cap = self.pool.max_body
        decoder = zlib.decompressobj(wbits=47 if coding != "deflate" else 15)
        try:
            out = decoder.decompress(body, cap + 1)
        except zlib.error:
            if coding != "deflate":
                raise HttpError(f"the {coding} response body is corrupt") from None
            decoder = zlib.decompressobj(wbits=-15)  # raw deflate, as some servers send it
            try:
                out = decoder.decompress(body, cap + 1)
            except zlib.error:
                raise HttpError("the deflate response body is corrupt") from None
        if len(out) > cap:
            raise ResponseTooLarge(f"the response body is larger than {cap} bytes")
        return out

    def fail(self, exc: BaseException) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def _timed_out(self, waiter: asyncio.Future[Response]) -> None:
        if waiter is self.waiter and not waiter.done():
            self.fail(TimeoutError())

    async def exchange(self, request: bytes, deadline: float) -> Response:
        """Send one request (head and body in ``request``) and wait for its whole answer."""
        transport = self.transport
        assert transport is not None and self.waiter is None
        if self.loop.time() >= deadline:  # it waited for a connection until too late: do not send
            self.pool.release(self)
            raise TimeoutError
        waiter: asyncio.Future[Response] = self.loop.create_future()
        self.waiter = waiter
        timer = self.loop.call_at(deadline, self._timed_out, waiter)
        try:
            transport.write(request)
            return await waiter
        finally:
            timer.cancel()
            if not waiter.done() or waiter.cancelled():  # cancelled mid-request: the connection is unusable
                self.abort()


class _Pool:
    """The connections to one origin (scheme, host, port)."""

    def __init__(self, client: HttpClient, target: _Target) -> None:
        self.client = client
        self.loop = client.loop
        self.host, self.port = target.host, target.port
        self.ssl = client.ssl_context() if target.ssl else None
        self.server_hostname = target.server_hostname
        self.max_body = client.max_body
        self.limit = client.max_connections
        self.idle: list[_Connection] = []  # newest last
        self.count = 0  # open or opening
        self.waiters: deque[asyncio.Future[None]] = deque()
        self._prune_handle: asyncio.TimerHandle | None = None

    async def acquire(self, deadline: float, fresh: bool = False) -> tuple[_Connection, bool]:
        """A connection for one request, and whether it was reused."""
        while True:
            if not fresh:
                conn = self._take_idle()
                if conn is not None:
                    return conn, True
            if self.count < self.limit:
                return await self._open(deadline), False
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException:
                if not waiter.done():
                    waiter.cancel()
                    self.waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._wake()  # woken, but out of time: pass the turn on
                raise

    def _take_idle(self) -> _Connection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if self.loop.time() - conn.idle_since > self.client.idle_seconds:
                conn.close()
                continue
            return conn
        return None

    async def _open(self, deadline: float) -> _Connection:
        self.count += 1
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.server_hostname,
                )
        except BaseException:
            self.count -= 1  # a transport made before the failure closes without counting
            self._wake()
            raise
        conn.counted = True
        return conn

    def release(self, conn: _Connection) -> None:
        conn.idle_since = self.loop.time()
        self.idle.append(conn)
        if self._prune_handle is None:
            self._prune_handle = self.loop.call_later(self.client.idle_seconds, self._prune)
        self._wake()

    def forget(self, conn: _Connection) -> None:
        """``conn`` closed (called from connection_lost)."""
        if conn.counted:
            conn.counted = False
            self.count -= 1
        if conn.waiter is None and conn in self.idle:
            self.idle.remove(conn)
        self._wake()

    def _wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _prune(self) -> None:
        self._prune_handle = None
        limit = self.loop.time() - self.client.idle_seconds
        idle = self.idle
        while idle and idle[0].idle_since <= limit:
            idle.pop(0).close()
        if idle:
            self._prune_handle = self.loop.call_later(self.client.idle_seconds, self._prune)

    def close(self) -> None:
        if self._prune_handle is not None:
            self._prune_handle.cancel()
            self._prune_handle = None
        for conn in self.idle:
            conn.close()
        self.idle.clear()
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(HttpError("the client is closed"))
        self.waiters.clear()


class HttpClient:
    """Keep-alive HTTP/1.1 requests with a deadline and a response cap; see the module docstring."""

    def __init__(
        self,
        *,
        max_body: int = 1024 * 1024,
        max_connections: int = 256,
        idle_seconds: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.max_body = max_body
        self.max_connections = max_connections
        self.idle_seconds = idle_seconds
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._targets: dict[str, _Target] = {}
        self._ssl = ssl_context  # https:// URLs; the system's trusted CAs unless given
        self._closed = False

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= 4096:  # URLs carry event names: bound the cache
                self._targets.clear()
            target = self._targets[url] = _Target(url)
        return target

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> Response:
        """Send ``method url`` and return the whole answer.

        Raises:
            TimeoutError: no complete answer within ``timeout`` seconds.
            ResponseTooLarge: the body exceeds ``max_body``.
            HttpError: anything else that went wrong (refused, reset, malformed answer, bad URL, ...).
        """
        if self._closed:
            raise HttpError("the client is closed")
        deadline = self.loop.time() + timeout
        target = self._target(url)
        lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        n = len(headers)
        if lines.count("\n") != n or lines.count("\r") != n:
            raise HttpError("a header contains a line break")
        if body is not None:
            lines += f"Content-Length: {len(body)}\r\n"
        head = (method + target.head + lines + "\r\n").encode("utf-8", "surrogateescape")
        request = head + body if body else head
        pool = self._pools.get(target.origin)
        if pool is None:
            pool = self._pools[target.origin] = _Pool(self, target)
        try:
            conn, reused = await pool.acquire(deadline)
            try:
                return await conn.exchange(request, deadline)
            except _Stale:
                if not reused:
                    raise
            conn, _ = await pool.acquire(deadline, fresh=True)
            return await conn.exchange(request, deadline)
        except (HttpError, TimeoutError):
            raise
        except OSError as exc:
            raise HttpError(f"{exc.__class__.__name__}: {exc}") from exc

    def connections(self) -> int:
        """Connections open or being opened, all origins together."""
        return sum(pool.count for pool in self._pools.values())

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost
