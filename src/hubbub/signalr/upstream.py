"""SignalR upstream (digest §4), the HTTP part: ``connected``/``disconnected`` and client invocations
are POSTed to the first matching template's URL; the answer to a blocking invocation goes back to the
client that invoked.

Order per connection, as the emulator keeps it: ``connected`` is sent before any invocation of that
connection, invocations one at a time (the connection's reader waits for each), ``disconnected``
last. No retries. A non-2xx answer to ``connected`` is logged and the client stays (emulator
behaviour).

The templates can change at run time (:meth:`SignalRUpstream.set_templates`, called when the stored
settings change); ``{@Microsoft.KeyVault(SecretUri=…)}`` references are resolved per call through
:class:`~hubbub.signalr.secrets.SecretResolver` (a missing secret fails that call, with one log line
naming the secret). Templates with ``ManagedIdentity`` auth get ``Authorization: Bearer <JWT>``
(:func:`upstream_token`), reused until 5 minutes before it expires.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Coroutine, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt

from hubbub.signalr.connection import SignalRConnection
from hubbub.signalr.messages import Completion, Invocation
from hubbub.signalr.secrets import SecretError, SecretResolver
from hubbub.signalr.service import NO_UPSTREAM, SignalRService
from hubbub.signalr.upstream_rules import (
    CONNECTED_BODY,
    CONNECTIONS,
    MAX_RESPONSE_BYTES,
    MESSAGES,
    UpstreamTemplate,
    disconnected_body,
    failure,
    match,
    request_headers,
)

__all__ = [
    "NO_MATCH",
    "TOKEN_LIFETIME",
    "TOO_LARGE",
    "SignalRUpstream",
    "upstream_audience",
    "upstream_token",
]

log = logging.getLogger("hubbub.signalr.upstream")

NO_MATCH = "Invocation failed, no upstream template matches this event."
TOO_LARGE = "Invocation failed, response too large."
#: lifetime of a ManagedIdentity upstream token; a new one is minted this long before expiry
TOKEN_LIFETIME, TOKEN_RENEW_BEFORE = 3600, 300


def upstream_audience(template: UpstreamTemplate, url: str) -> str:
    """The ``aud`` of a ManagedIdentity token: the configured resource, else the URL's origin."""
    if template.auth_resource:
        return template.auth_resource
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port is not None else "")


def upstream_token(key: str, issuer: str, audience: str, now: int) -> str:
    """HS256 over the UTF-8 access key; ``iss`` = the service endpoint, ``exp`` = ``iat`` + 1 hour."""
    claims = {"iss": issuer, "aud": audience, "iat": now, "nbf": now, "exp": now + TOKEN_LIFETIME}
    with warnings.catch_warnings():  # short (development) keys are accepted, as everywhere else
        warnings.simplefilter("ignore")
        return jwt.encode(claims, key.encode("utf-8"), algorithm="HS256")


class SignalRUpstream:
    def __init__(
        self,
        service: SignalRService,
        templates: Sequence[UpstreamTemplate],
        *,
        timeout: float = 100.0,
        secrets: SecretResolver | None = None,
    ) -> None:
        self.service = service
        self.templates = tuple(templates)
        self.timeout = timeout
        self.secrets = secrets if secrets is not None else SecretResolver()
        self._tokens: dict[str, tuple[str, float]] = {}
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: the last fire-and-forget call of each connection (``connected``), awaited before the next
        self._tails: dict[str, asyncio.Task[None]] = {}
        service.invocation_handler = self.invoke
        service.on_connected.append(self.connected)
        service.on_disconnected.append(self.disconnected)

    def set_templates(self, templates: Sequence[UpstreamTemplate]) -> None:
        """New settings: used from the next event on; secrets are read again."""
        self.templates = tuple(templates)
        self.secrets.clear()
        self._tokens.clear()

    def _token(self, audience: str) -> str:
        now = time.time()
        cached = self._tokens.get(audience)
        if cached is not None and cached[1] - now > TOKEN_RENEW_BEFORE:
            return cached[0]
        config = self.service.config
        token = upstream_token(config.primary_key, config.endpoint, audience, int(now))
        self._tokens[audience] = (token, int(now) + TOKEN_LIFETIME)
        return token

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout), connector=aiohttp.TCPConnector(limit=0)
        )

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- events ------------------------------------------------------------------------------

    def connected(self, connection: SignalRConnection) -> None:
        template = match(self.templates, connection.hub, CONNECTIONS, "connected")
        if template is not None:
            task = self._spawn(self._fire(template, connection, "connected", CONNECTED_BODY, None))
            self._tails[connection.id] = task

    def disconnected(self, connection: SignalRConnection, error: str | None) -> None:
        after = self._tails.pop(connection.id, None)
        template = match(self.templates, connection.hub, CONNECTIONS, "disconnected")
        if template is not None:
            self._spawn(self._fire(template, connection, "disconnected", disconnected_body(error), after))

    async def _fire(
        self,
        template: UpstreamTemplate,
        connection: SignalRConnection,
        event: str,
        body: bytes,
        after: asyncio.Task[None] | None,
    ) -> None:
        if after is not None and not after.done():
            await asyncio.wait([after])
        status, _ = await self._post(template, connection, CONNECTIONS, event, body, "application/json")
        if status is not None and not 200 <= status < 300:
            log.warning("upstream %s/%s for %s answered %d", CONNECTIONS, event, connection.hub, status)

    async def invoke(self, connection: SignalRConnection, message: Invocation, raw: bytes) -> None:
        blocking = message.invocation_id
        template = match(self.templates, connection.hub, MESSAGES, message.target)
        if template is None:
            if blocking is not None:
                connection.push(Completion.failed(blocking, NO_MATCH if self.templates else NO_UPSTREAM))
            return
        tail = self._tails.get(connection.id)
        if tail is not None and not tail.done():
            await asyncio.wait([tail])
        binary = connection.codec is not None and connection.codec.binary
        connection.invoking = True
        try:
            content_type = "application/x-msgpack" if binary else "application/json"
            status, body = await self._post(template, connection, MESSAGES, message.target, raw, content_type)
        finally:
            connection.invoking = False
            connection.touch()
        if blocking is None:
            if status is not None and not 200 <= status < 300:
                log.info("upstream messages/%s for %s answered %s", message.target, connection.hub, status)
            return
        if status == 200 and body is None:
            connection.push(Completion.failed(blocking, TOO_LARGE))
        elif status == 200 and body:
            session, codec = connection.session, connection.codec
            if session is not None and codec is not None:
                session.push((body, codec.text_frames))  # the upstream's framed Completion, verbatim
        elif status in (200, 204):
            connection.push(Completion.void(blocking))
        else:
            connection.push(Completion.failed(blocking, failure(status)))

    # -- HTTP ----------------------------------------------------------------------------------

    async def _post(
        self,
        template: UpstreamTemplate,
        connection: SignalRConnection,
        category: str,
        event: str,
        body: bytes,
        content_type: str,
    ) -> tuple[int | None, bytes | None]:
        """``(status, body)``; body None when over the size cap; status None when the call failed."""
        assert self._http is not None, "SignalRUpstream.start() was not called"
        shown = template.url(connection.hub, category, event)  # references unresolved: safe to log
        try:
            url = self.secrets.resolve(shown)
        except SecretError as exc:
            log.warning(
                "upstream %s/%s for hub %s at %s failed: %s", category, event, connection.hub, shown, exc
            )
            return None, b""
        headers = request_headers(
            connection_id=connection.id,
            hub=connection.hub,
            category=category,
            event=event,
            keys=self.service.config.access_keys,
            user_id=connection.user_id,
            claims=connection.identity.claims,
            query=connection.query,
            content_type=content_type,
        )
        if template.auth_type == "ManagedIdentity":
            headers["Authorization"] = f"Bearer {self._token(upstream_audience(template, url))}"
        try:
            async with self._http.post(url, data=body, headers=headers, allow_redirects=False) as response:
                data = await response.content.read(MAX_RESPONSE_BYTES + 1)
                return response.status, data if len(data) <= MAX_RESPONSE_BYTES else None
        except TimeoutError:
            why = f"no answer within {self.timeout:g}s"
        except aiohttp.ClientError as exc:
            why = f"{exc.__class__.__name__}: {exc}"
            if url != shown:  # an error text may quote the URL: never log a secret
                why = self.secrets.redact(why.replace(url, shown), shown)
        log.warning("upstream %s/%s for hub %s at %s failed: %s", category, event, connection.hub, shown, why)
        return None, b""
