"""SignalR client access tokens (digest §2.4): who a connection is. Pure.

Signature, algorithm and time checks are :func:`hubbub.auth.verify_rest_token`'s (HS256 over the
UTF-8 bytes of any configured key, ±300 s leeway, ``exp`` optional). The audience rule is the
lenient one of the digest: the ``aud`` URL's path must end with ``/client`` (a trailing ``/``,
scheme, host, port and any path prefix are ignored) and its ``hub`` query value must name the hub
(case-insensitively; with an application name the hub is ``{app}_{hub}``, as in the client URL).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from hubbub.auth import verify_rest_token
from hubbub.errors import InvalidToken

__all__ = [
    "NAME_IDENTIFIER",
    "ClientIdentity",
    "TransportType",
    "client_url",
    "mint_client_token",
    "user_id_of",
    "verify_client_token",
]

#: The long form of the .NET NameIdentifier claim type.
NAME_IDENTIFIER = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier"
_USER_CLAIMS = ("asrs.s.uid", "nameid", NAME_IDENTIFIER, "sub")


class TransportType(enum.IntFlag):
    """``HttpTransportType`` flags, as in the ``asrs.s.htt`` claim."""

    WEB_SOCKETS = 1
    SERVER_SENT_EVENTS = 2
    LONG_POLLING = 4
    ALL = 7


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    user_id: str | None
    claims: dict[str, Any]
    transports: TransportType = TransportType.ALL


def _first_string(value: Any) -> str | None:
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str) and v), None)
    return value if isinstance(value, str) and value else None


def user_id_of(claims: dict[str, Any]) -> str | None:
    """``asrs.s.uid``, else the NameIdentifier (``nameid``, its long URI, ``sub``), else None."""
    for name in _USER_CLAIMS:
        user = _first_string(claims.get(name))
        if user is not None:
            return user
    return None


def _audience_hubs(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    values: Sequence[Any] = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    hubs = []
    for value in values:
        if not isinstance(value, str):
            continue
        try:
            query = urlsplit(value).query
        except ValueError:
            continue
        hubs += [h.lower() for h in parse_qs(query).get("hub", [])]
    return hubs


def _transports(claims: dict[str, Any]) -> TransportType:
    raw = claims.get("asrs.s.htt")
    try:
        value = int(raw) if raw is not None and not isinstance(raw, bool) else 7
    except (TypeError, ValueError):
        value = 7
    return TransportType(value & TransportType.ALL)


def verify_client_token(
    token: str, keys: Sequence[str], hub: str, *, now: float | None = None
) -> ClientIdentity:
    """Verify a client token for ``hub``; raises :class:`InvalidToken` for any problem."""
    claims = verify_rest_token(token, keys, "/client", now=now)
    if hub.lower() not in _audience_hubs(claims):
        raise InvalidToken(f"invalid audience: the token's 'aud' must be a client URL for hub '{hub}'")
    return ClientIdentity(user_id_of(claims), claims, _transports(claims))


def client_url(endpoint: str, hub: str) -> str:
    """``{endpoint}/client/?hub={hub}``: the URL clients connect to and, as the SDK builds it (no
    port), the ``aud`` of their tokens."""
    return f"{endpoint.rstrip('/')}/client/?hub={hub.lower()}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint_client_token(
    key: str,
    audience: str,
    *,
    user_id: str | None = None,
    claims: dict[str, Any] | None = None,
    minutes_to_expire: int = 60,
    now: float | None = None,
) -> str:
    """An HS256 client token shaped like the SignalR SDK's: ``nbf``/``exp``/``iat``/``aud`` plus
    ``asrs.s.uid`` when ``user_id`` is given and any extra ``claims``."""
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = dict(claims or {})
    if user_id:
        payload["asrs.s.uid"] = user_id
    payload.update(nbf=issued, exp=issued + minutes_to_expire * 60, iat=issued, aud=audience)
    signed = _b64(orjson.dumps({"alg": "HS256", "typ": "JWT"})) + "." + _b64(orjson.dumps(payload))
    signature = hmac.new(key.encode("utf-8"), signed.encode("ascii"), hashlib.sha256).digest()
    return signed + "." + _b64(signature)
