"""SignalR service settings: one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from hubbub.auth import DEV_ACCESS_KEY
from hubbub.config import MAX_FRAME_BYTES, MAX_REST_BODY_BYTES
from hubbub.signalr.upstream_rules import UpstreamTemplate

__all__ = ["DEFAULT_SIGNALR_PORT", "SignalRConfig"]

#: The port of Microsoft's SignalR emulator, so its connection strings move over unchanged.
DEFAULT_SIGNALR_PORT = 8888


@dataclass(frozen=True)
class SignalRConfig:
    access_keys: tuple[str, ...] = (DEV_ACCESS_KEY,)
    #: service -> client Ping interval (``keepAliveIntervalInSeconds``)
    keepalive_seconds: float = 15.0
    #: a connection that sends nothing (pings included) for this long is closed
    client_timeout_seconds: float = 30.0
    #: time from negotiate (or a WebSocket without ``id``) to a completed handshake
    handshake_timeout_seconds: float = 15.0
    #: how long a long-polling request is held when there is nothing to send
    long_poll_seconds: float = 90.0
    #: largest client message (a JSON record or a MessagePack body; also a long-polling/SSE POST)
    max_message_bytes: int = MAX_FRAME_BYTES
    #: largest REST request body
    max_rest_body_bytes: int = MAX_REST_BODY_BYTES
    #: how often timeouts, pings and user-group expiries are checked
    sweep_seconds: float = 1.0
    #: upstream templates, in order (none: invocations are answered with an error)
    upstream: tuple[UpstreamTemplate, ...] = ()
    #: how long an upstream call may take (the emulator's .NET HttpClient default)
    upstream_timeout_seconds: float = 100.0
    #: the endpoint as the connection string prints it (``http://localhost:8888``): the ``iss`` of
    #: ManagedIdentity upstream tokens
    endpoint: str = "http://localhost:8888"
    #: JSON file of secrets for ``{@Microsoft.KeyVault(SecretUri=…)}`` references (see signalr.secrets)
    secrets_file: str | None = None

    def __post_init__(self) -> None:
        if not self.access_keys or not all(self.access_keys):
            raise ValueError("at least one non-empty access key is required")

    @property
    def primary_key(self) -> str:
        return self.access_keys[0]
