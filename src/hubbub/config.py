"""Service settings: one frozen dataclass, validated on construction."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from hubbub.auth import DEV_ACCESS_KEY

__all__ = ["MAX_FRAME_BYTES", "MAX_REST_BODY_BYTES", "ServiceConfig", "is_loopback"]

#: Largest client WebSocket message (the real service allows 1 MB frames).
MAX_FRAME_BYTES = 1024 * 1024
#: Largest REST request body (a message sent through ``:send``).
MAX_REST_BODY_BYTES = 1024 * 1024


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    access_keys: tuple[str, ...] = (DEV_ACCESS_KEY,)
    keepalive_seconds: float = 20.0
    max_frame_bytes: int = MAX_FRAME_BYTES
    #: how long a dropped reliable session waits for its client to resume it
    reliable_retention_seconds: float = 30.0
    #: host name event handlers see in ``WebHook-Request-Origin`` (default: derived from ``host``)
    public_host: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.access_keys or not all(self.access_keys):
            raise ValueError("at least one non-empty access key is required")
        if DEV_ACCESS_KEY in self.access_keys and not is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host!r} with the well-known development access key: "
                "anyone could sign tokens for this service. Pass --access-key (or set HUBBUB_ACCESS_KEY) "
                "to a secret of your own, or listen on 127.0.0.1."
            )

    @property
    def origin(self) -> str:
        """``WebHook-Request-Origin``: the service's host name, no scheme, no port (spec §6.1)."""
        if self.public_host:
            return self.public_host
        return "localhost" if is_loopback(self.host) or self.host in ("", "0.0.0.0", "::") else self.host

    @property
    def primary_key(self) -> str:
        return self.access_keys[0]

    def connection_string(self, host: str = "localhost") -> str:
        """The form every SDK parses (Python needs ``Port=`` separately from the endpoint)."""
        return f"Endpoint=http://{host};Port={self.port};AccessKey={self.primary_key};Version=1.0;"
