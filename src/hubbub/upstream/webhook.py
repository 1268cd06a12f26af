"""Calls to event handlers over HTTP (spec §6): blocking ``connect`` and user events,
fire-and-forget ``connected`` / ``disconnected``, and abuse-protection validation.

Policy (documented in docs/compatibility.md):

* blocking calls time out after ``timeout`` seconds (default 30) and are not retried; a timeout,
  a refused connection or a 5xx counts as a 500 answer (the one exception, in
  :mod:`hubbub.upstream.http`: a request on a reused keep-alive connection that the handler closed
  without a byte of answer is sent again on a new connection, within the same timeout);
* calls go over keep-alive connections, at most 256 per handler origin (more wait for one);
* non-blocking calls are sent once, in order per connection (``disconnected`` waits for that
  connection's ``connected`` call), and failures are only logged;
* before the first call to a URL template, ``OPTIONS`` validates it; success is cached until the
  hub's settings change, failure for :data:`VALIDATION_RETRY_SECONDS`;
* every failure is logged as one line: hub, event, URL, status and why.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from hubbub.auth import mint_client_token
from hubbub.config import ServiceConfig
from hubbub.core.session import Session
from hubbub.protocols.events import Payload
from hubbub.settings import EventHandler, HubSettings
from hubbub.upstream.cloudevents import (
    SYSTEM,
    USER,
    ConnectResult,
    NoEventHandler,
    UpstreamError,
    check_connection_state,
    event_headers,
    parse_connect_response,
    reply_payload,
    user_event_body,
)
from hubbub.upstream.http import HttpClient, HttpError, ResponseTooLarge

__all__ = ["SettingsSource", "Upstream"]

log = logging.getLogger("hubbub.upstream")

VALIDATION_RETRY_SECONDS = 5.0
MAX_RESPONSE_BYTES = 1024 * 1024


class SettingsSource(Protocol):
    def get(self, hub: str) -> HubSettings | None: ...


class _Response:
    """A handler's answer; ``headers`` has lower-cased names."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.content_type = headers.get("content-type")
        self.body = body


class Upstream:
    """The event-handler client of one service node; also the dispatcher's user-event sink."""

    def __init__(self, config: ServiceConfig, settings: SettingsSource, *, timeout: float = 30.0) -> None:
        self.config = config
        self._origin = config.origin  # a property that parses the host: once, not per event
        self.source = settings
        self.timeout = timeout
        self._http: HttpClient | None = None
        self._validated: dict[tuple[str, str], float] = {}  # (url, hub) -> expiry (inf = valid)
        self._tasks: set[asyncio.Task[None]] = set()
        self._connected_calls: dict[str, asyncio.Task[None]] = {}
        self._validating: dict[tuple[str, str], asyncio.Task[None]] = {}
        # ce-id: a random per-process prefix and a counter (unique, and cheaper than uuid4 per event)
        self._id_prefix = os.urandom(8).hex()
        self._ids = itertools.count()
        self._second = -1
        self._second_text = ""

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._http = HttpClient(max_body=MAX_RESPONSE_BYTES)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def settings_changed(self, hub: str) -> None:
        """Forget validation results of ``hub`` (its handlers may have changed)."""
        key = hub.lower()
        for cached in [k for k in self._validated if k[1] == key]:
            del self._validated[cached]

    def settings(self, hub: str) -> HubSettings | None:
        return self.source.get(hub)

    # -- the calls -----------------------------------------------------------------------

    def connect_handler(self, hub: str) -> EventHandler | None:
        settings = self.source.get(hub)
        return settings.handler_for_system("connect") if settings else None

    async def connect(
        self,
        handler: EventHandler,
        hub: str,
        connection_id: str,
        *,
        user_id: str | None,
        claims: Mapping[str, list[str]],
        query: Mapping[str, list[str]],
        headers: Mapping[str, list[str]],
        subprotocols: Sequence[str],
    ) -> tuple[ConnectResult, str | None]:
        """The blocking ``connect`` event; raises :class:`UpstreamError` carrying the client's status."""
        body = orjson.dumps(
            {
                "claims": claims,
                "query": query,
                "headers": headers,
                "subprotocols": list(subprotocols),
                "clientCertificates": [],
            }
        )
        hdrs = self._headers(SYSTEM, "connect", hub, connection_id, user_id)
        response = await self._post(handler, hub, "connect", hdrs, body)
        try:
            result = parse_connect_response(response.status, response.content_type, response.body)
            state = check_connection_state(response.headers.get("ce-connectionstate"))
        except UpstreamError as exc:
            self._explain(hub, "connect", handler.url(hub, "connect"), response.status, exc.message)
            raise
        return result, state

    async def user_event(self, session: Session, event: str, payload: Payload) -> Payload | None:
        settings = self.source.get(session.hub)
        handler = settings.handler_for_user(event) if settings else None
        if handler is None:
            raise NoEventHandler(f"No event handler is registered for event '{event}'")
        content_type, body = user_event_body(payload)
        hdrs = self._headers(USER, event, session.hub, session.id, session.user_id, session, content_type)
        response = await self._post(handler, session.hub, event, hdrs, body)
        url = handler.url(session.hub, event)
        try:
            if not 200 <= response.status < 300:
                raise UpstreamError(f"the event handler answered {response.status}")
            state = check_connection_state(response.headers.get("ce-connectionstate"))
            reply = reply_payload(response.status, response.content_type, response.body)
        except UpstreamError as exc:
            self._explain(session.hub, event, url, response.status, exc.message)
            raise
        if state is not None:
            session.connection_state = state
        return reply

    def connected(self, session: Session, _reason: str | None = None) -> None:
        handler = self._system_handler(session.hub, "connected")
        if handler is not None:
            task = self._spawn(self._fire(handler, session, "connected", b"{}"))
            self._connected_calls[session.id] = task
            task.add_done_callback(lambda _: self._connected_calls.pop(session.id, None))

    def disconnected(self, session: Session, reason: str | None) -> None:
        handler = self._system_handler(session.hub, "disconnected")
        previous = self._connected_calls.get(session.id)
        if handler is not None:
            body = orjson.dumps({"reason": reason} if reason else {})
            self._spawn(self._fire(handler, session, "disconnected", body, after=previous))

    # -- plumbing --------------------------------------------------------------------------

    def _system_handler(self, hub: str, event: str) -> EventHandler | None:
        settings = self.source.get(hub)
        return settings.handler_for_system(event) if settings else None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _fire(
        self,
        handler: EventHandler,
        session: Session,
        event: str,
        body: bytes,
        after: asyncio.Task[None] | None = None,
    ) -> None:
        if after is not None:
            await asyncio.wait([after])
        hdrs = self._headers(SYSTEM, event, session.hub, session.id, session.user_id, session)
        try:
            response = await self._post(handler, session.hub, event, hdrs, body)
        except UpstreamError:
            return  # already explained
        if not 200 <= response.status < 300:
            self._explain(
                session.hub,
                event,
                handler.url(session.hub, event),
                response.status,
                "non-blocking event not accepted",
            )

    def _headers(
        self,
        kind: str,
        event: str,
        hub: str,
        connection_id: str,
        user_id: str | None,
        session: Session | None = None,
        content_type: str = "application/json; charset=utf-8",
    ) -> dict[str, str]:
        return event_headers(
            kind=kind,
            event=event,
            hub=hub,
            connection_id=connection_id,
            user_id=user_id,
            origin=self._origin,
            keys=self.config.access_keys,
            event_id=f"{self._id_prefix}{next(self._ids):016x}",
            time=self._now(),
            subprotocol=session.subprotocol if session else None,
            connection_state=session.connection_state if session else None,
            content_type=content_type,
        )

    def _now(self) -> str:
        """``ce-time``: UTC with microseconds, as ``datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")``."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            self._second = second
        return f"{self._second_text}{int((now - second) * 1_000_000):06d}Z"

    async def _post(
        self, handler: EventHandler, hub: str, event: str, headers: dict[str, str], body: bytes
    ) -> _Response:
        url = handler.url(hub, event)
        await self._validate(handler, hub)
        if handler.auth_type == "ManagedIdentity":
            headers["Authorization"] = "Bearer " + mint_client_token(
                self.config.primary_key, handler.auth_resource or url, minutes_to_expire=5
            )
        return await self._request("POST", url, hub, event, headers, body)

    async def _request(
        self, method: str, url: str, hub: str, event: str, headers: Mapping[str, str], body: bytes | None
    ) -> _Response:
        assert self._http is not None, "Upstream.start() was not called"
        try:
            r = await self._http.request(method, url, headers, body, self.timeout)
            return _Response(r.status, r.headers, r.body)
        except ResponseTooLarge:
            why = f"the response body is larger than {MAX_RESPONSE_BYTES} bytes"
            self._explain(hub, event, url, None, why)
            raise UpstreamError(why) from None
        except TimeoutError:
            why = f"no answer within {self.timeout:g}s"
        except HttpError as exc:
            why = f"request failed: {exc}"
        self._explain(hub, event, url, None, why)
        raise UpstreamError(f"The event handler failed: {why}")

    async def _validate(self, handler: EventHandler, hub: str) -> None:
        """Abuse protection (spec §6.6), once per URL template and hub; concurrent callers share it."""
        key = (handler.url_template, hub.lower())
        expiry = self._validated.get(key)
        if expiry is not None and time.monotonic() < expiry:
            if expiry == float("inf"):
                return
            raise UpstreamError(f"The event handler {handler.url_template} failed validation")
        pending = self._validating.get(key)
        if pending is None:
            pending = self._validating[key] = asyncio.get_running_loop().create_task(
                self._options(handler, hub)
            )
            pending.add_done_callback(lambda _: self._validating.pop(key, None))
        await asyncio.shield(pending)

    async def _options(self, handler: EventHandler, hub: str) -> None:
        key = (handler.url_template, hub.lower())
        now = time.monotonic()
        url = handler.url(hub, "validate")
        headers = {"WebHook-Request-Origin": self.config.origin, "ce-awpsversion": "1.0"}
        response = await self._request("OPTIONS", url, hub, "validate", headers, None)
        allowed = [o.strip().lower() for o in response.headers.get("webhook-allowed-origin", "").split(",")]
        if 200 <= response.status < 300 and ("*" in allowed or self.config.origin.lower() in allowed):
            self._validated[key] = float("inf")
            return
        why = (
            "AbuseProtectionResponseInvalidStatusCode"
            if not 200 <= response.status < 300
            else "AbuseProtectionResponseMissingAllowedOrigin"
        )
        self._explain(
            hub,
            "validate",
            url,
            response.status,
            f"{why}: the handler did not allow origin "
            f"'{self.config.origin}' (WebHook-Allowed-Origin must be '*' or list it)",
        )
        self._validated[key] = now + VALIDATION_RETRY_SECONDS
        raise UpstreamError(f"The event handler {handler.url_template} failed abuse-protection validation")

    @staticmethod
    def _explain(hub: str, event: str, url: str, status: int | None, why: str) -> None:
        log.warning(
            "event handler failed: hub=%s event=%s url=%s status=%s: %s",
            hub,
            event,
            url,
            status if status is not None else "-",
            why,
        )
