"""Access tokens and per-connection permissions (spec §2 and §5).

Tokens are HS256 JWTs whose key is the UTF-8 bytes of an access key:

* client tokens (WebSocket connect, spec §2.2): :func:`mint_client_token` signs them with PyJWT
  exactly like the Python service SDK, :func:`verify_client_token` checks them;
* REST tokens (``Authorization: Bearer``, spec §2.3): :func:`verify_rest_token`.

Verification is written out with :mod:`hmac` instead of ``jwt.decode`` so that the clock can be
injected (``now=``), every failure is an :class:`~hubbub.errors.InvalidToken` (PyJWT warns on keys
shorter than 32 bytes, which becomes an exception under ``-W error``) and the rules are exactly the
ones below:

* only ``alg: HS256`` is accepted (``none``, ``RS256``, ``HS512``, … are rejected before any key is
  tried); other header fields (``typ``, ``kid``, …) are ignored, except ``crit``, which names
  extensions we do not understand and is therefore rejected (RFC 7515 §4.1.11);
* the keys are tried in order (primary, then secondary); empty keys are skipped;
* ``exp``, ``nbf`` and ``iat`` are optional (the SDKs always send ``exp``) but must be numbers when
  present, and are checked with :data:`CLOCK_SKEW_SECONDS` of leeway in both directions;
* ``aud`` (a string, or a list of which any one may match) is required and compared leniently,
  see :func:`verify_client_token` and :func:`verify_rest_token`.

Error messages say what is wrong; they never contain the token, a key or a signature.

Permissions (spec §5) are kept by :class:`Permissions`, one per connection, built from role strings
and changed at runtime by the REST grant/revoke operations. Wildcard patterns of the plural roles
(``webpubsub.sendToGroups.<pattern>``) are matched in time linear in the group name, so a client
cannot stall the server with a crafted group name (see :func:`compile_group_pattern`).
"""

from __future__ import annotations

import base64
import contextlib
import enum
import functools
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import jwt

from hubbub.errors import BadRequest, InvalidToken

__all__ = [
    "CLOCK_SKEW_SECONDS",
    "DEV_ACCESS_KEY",
    "ClientIdentity",
    "InvalidToken",
    "Permission",
    "Permissions",
    "client_audience",
    "compile_group_pattern",
    "mint_client_token",
    "parse_bearer",
    "verify_client_token",
    "verify_rest_request",
    "verify_rest_token",
]

#: Access key used when none is configured (development only; 44 characters like a real key).
DEV_ACCESS_KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"
#: Leeway, in seconds, for ``exp`` / ``nbf`` / ``iat`` (clocks of app servers drift).
CLOCK_SKEW_SECONDS = 300
#: Most ``*`` characters (those of ``**`` included, escaped ones excluded) in a group pattern.
_MAX_PATTERN_STARS = 5

_CLIENT_PATHS = {
    "default": "/client/hubs/",
    "mqtt": "/clients/mqtt/hubs/",
    "socketio": "/clients/socketio/hubs/",
}
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


# --- tokens ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """What a verified client token says about the connection.

    ``claims`` holds every claim as a list of strings, the shape the upstream ``connect`` event
    sends (spec §6.2); non-string values are written as compact JSON (``"exp": ["1700000000"]``).
    """

    user_id: str | None
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    claims: dict[str, list[str]]


def _client_path(client_type: str) -> str:
    try:
        return _CLIENT_PATHS[client_type.lower()]
    except KeyError:
        raise BadRequest(
            f"Unknown client type '{client_type[:64]}': expected 'Default', 'MQTT' or 'SocketIO'."
        ) from None


def client_audience(endpoint: str, hub: str, client_type: str = "Default") -> str:
    """The ``aud`` of a client token, built like the Python SDK (endpoint lower-cased, no ``/`` end).

    ``client_audience("http://localhost:8080", "chat") == "http://localhost:8080/client/hubs/chat"``.
    ``client_type`` (case-insensitive) is ``Default``, ``MQTT`` or ``SocketIO``; others raise
    :class:`BadRequest`.
    """
    return endpoint.lower().rstrip("/") + _client_path(client_type) + hub


def mint_client_token(
    key: str,
    audience: str,
    *,
    user_id: str | None = None,
    roles: Sequence[str] = (),
    groups: Sequence[str] = (),
    minutes_to_expire: int = 60,
    now: float | None = None,
) -> str:
    """Sign a client access token exactly like the Python SDK's ``get_client_access_token``.

    Claims, in the SDK's order: ``aud``, ``iat``, ``exp``; ``sub`` only when ``user_id`` is
    non-empty; ``role`` and ``webpubsub.group`` (lists) only when non-empty. Like the SDK, PyJWT
    emits ``InsecureKeyLengthWarning`` for keys shorter than 32 bytes.
    """
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {"aud": audience, "iat": issued, "exp": issued + minutes_to_expire * 60}
    if user_id:
        payload["sub"] = user_id
    if roles:
        payload["role"] = list(roles)
    if groups:
        payload["webpubsub.group"] = list(groups)
    return jwt.encode(payload, key, algorithm="HS256")


def verify_rest_request(authorization: str | None, keys: Sequence[str], raw_path: str) -> dict[str, Any]:
    """Check a REST call's ``Authorization: Bearer`` header against its (raw) request path."""
    token = parse_bearer(authorization)
    if not token:
        raise InvalidToken("The request has no 'Authorization: Bearer' token.")
    return verify_rest_token(token, keys, raw_path.split("?", 1)[0])


def parse_bearer(header_value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive), else None."""
    parts = (header_value or "").split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    return parts[1].strip() or None


def _b64decode(segment: str) -> bytes:
    if len(segment) % 4 == 1 or not _SEGMENT.fullmatch(segment):
        raise InvalidToken("malformed token: a segment is not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
        if b"\\u" in raw:  # lone surrogates ("\ud800") decode but cannot be re-encoded later on
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):
        raise InvalidToken(f"malformed token: the {what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidToken(f"malformed token: the {what} is not a JSON object")
    return value


def _number(claims: dict[str, Any], name: str) -> float | None:
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # compared exactly, however large
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise InvalidToken(f"invalid token: the '{name}' claim is not a number")


def _verified_claims(token: str, keys: Sequence[str], now: float | None) -> dict[str, Any]:
    """Check format, algorithm, signature and times; return the payload."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("malformed token: expected three dot-separated segments")
    header = _json_object(_b64decode(parts[0]), "header")
    if header.get("alg") != "HS256":
        raise InvalidToken("unsupported token algorithm: only HS256 is accepted")
    if "crit" in header:
        raise InvalidToken("unsupported token: the 'crit' header is not supported")
    payload = _b64decode(parts[1])
    signature = _b64decode(parts[2])
    signed = f"{parts[0]}.{parts[1]}".encode("ascii")
    if not any(
        hmac.compare_digest(hmac.new(key.encode("utf-8"), signed, hashlib.sha256).digest(), signature)
        for key in keys
        if key
    ):
        raise InvalidToken("invalid token signature")
    claims = _json_object(payload, "payload")
    now = time.time() if now is None else now
    exp, nbf, iat = _number(claims, "exp"), _number(claims, "nbf"), _number(claims, "iat")
    if exp is not None and now >= exp + CLOCK_SKEW_SECONDS:
        raise InvalidToken("token expired")
    if nbf is not None and now < nbf - CLOCK_SKEW_SECONDS:
        raise InvalidToken("token not yet valid (nbf is in the future)")
    if iat is not None and iat > now + CLOCK_SKEW_SECONDS:
        raise InvalidToken("token issued in the future (iat)")
    return claims


def _segments(path: str) -> tuple[str, ...]:
    """Path segments, each URL-decoded and lower-cased; empty ones (``//``, trailing ``/``) dropped.

    Splitting before decoding keeps an encoded ``%2F`` inside its segment, so a group named
    ``a/api/hubs/h`` cannot make one URL look like the tail of another.
    """
    return tuple(unquote(segment).lower() for segment in path.split("/") if segment)


def _audience_segments(claims: dict[str, Any]) -> list[tuple[str, ...]]:
    """The path segments of every ``aud`` value (a string, or a list of strings)."""
    aud = claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise InvalidToken("invalid token: the 'aud' claim is missing or not a string")
    paths = []
    for value in values:
        try:
            path = urlsplit(value).path  # scheme, host, port, query and fragment are ignored
        except ValueError:  # e.g. "http://[::1" (unbalanced IPv6 brackets)
            continue
        paths.append(_segments(path))
    return paths


def _strings(claims: dict[str, Any], name: str) -> tuple[str, ...]:
    """A claim that is a string or a list of strings, de-duplicated, empty strings dropped."""
    value = claims.get(name)
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise InvalidToken(f"invalid token: the '{name}' claim is not a string or a list of strings")
    return tuple(dict.fromkeys(v for v in items if v))


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _as_lists(claims: dict[str, Any]) -> dict[str, list[str]]:
    def text(value: Any) -> str:
        if isinstance(value, str):
            return value
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    try:
        return {name: [text(item) for item in _listed(value)] for name, value in claims.items()}
    except (ValueError, RecursionError):
        raise InvalidToken("malformed token: a claim cannot be represented") from None


def verify_client_token(
    token: str,
    keys: Sequence[str],
    hub: str,
    *,
    client_type: str = "Default",
    now: float | None = None,
) -> ClientIdentity:
    """Verify a client access token for ``hub`` and return the identity it carries.

    The ``aud`` check is the lenient one of spec §2.2: the value is parsed as a URL with any scheme
    (``http``/``https``/``ws``/``wss``) or none, and its path must end with the segments
    ``/client/hubs/{hub}`` (``/clients/mqtt/hubs/{hub}``, ``/clients/socketio/hubs/{hub}`` for those
    client types), compared URL-decoded and case-insensitively; a trailing ``/``, the query, the
    port, the host and any path prefix are ignored. ``sub`` must be a string (empty means no
    user); ``role`` and ``webpubsub.group`` may be a string or a list of strings. Raises
    :class:`InvalidToken` for any problem with the token, :class:`BadRequest` for an unknown
    ``client_type``.
    """
    suffix = _client_path(client_type) + hub
    expected = (*_segments(_client_path(client_type)), hub.lower())
    claims = _verified_claims(token, keys, now)
    if not any(path[-len(expected) :] == expected for path in _audience_segments(claims)):
        raise InvalidToken(f"invalid audience: the token's 'aud' must be a URL ending with {suffix}")
    sub = claims.get("sub")
    if sub is not None and not isinstance(sub, str):
        raise InvalidToken("invalid token: the 'sub' claim is not a string")
    return ClientIdentity(
        user_id=sub or None,
        roles=_strings(claims, "role"),
        groups=_strings(claims, "webpubsub.group"),
        claims=_as_lists(claims),
    )


def verify_rest_token(
    token: str, keys: Sequence[str], request_path: str, *, now: float | None = None
) -> dict[str, Any]:
    """Verify the bearer token of a REST request to ``request_path`` and return its claims.

    ``aud`` is the full request URL the SDK called (spec §2.3). Scheme, host, port and query are
    ignored (we may sit behind a proxy, be called as localhost or 127.0.0.1, and SDKs encode queries
    differently). The path segments of ``aud``, URL-decoded and case-insensitive (a trailing ``/``
    does not count), must equal those of ``request_path`` or end with them (an endpoint with a path
    prefix that a proxy strips before us). Raises :class:`InvalidToken`.
    """
    claims = _verified_claims(token, keys, now)
    expected = _segments(request_path.split("?", 1)[0])
    if not any(
        path == expected or (expected and path[-len(expected) :] == expected)
        for path in _audience_segments(claims)
    ):
        raise InvalidToken("invalid audience: the token's 'aud' is not the URL of this request")
    return claims


# --- permissions ----------------------------------------------------------------------------------


class Permission(enum.Enum):
    """The two permissions of the REST ``/permissions/{permission}`` operations."""

    SEND_TO_GROUP = "sendToGroup"
    JOIN_LEAVE_GROUP = "joinLeaveGroup"

    @classmethod
    def parse(cls, text: str) -> Permission:
        """``sendToGroup`` / ``joinLeaveGroup``, case-insensitively; anything else is a BadRequest."""
        for permission in cls:
            if permission.value.lower() == text.lower():
                return permission
        raise BadRequest(f"Unknown permission '{text[:64]}': expected 'sendToGroup' or 'joinLeaveGroup'.")


_LITERAL, _ONE, _STAR, _DOUBLE_STAR = range(4)
_Token = tuple[int, str]


def _tokenize(pattern: str) -> tuple[_Token, ...]:
    tokens: list[_Token] = []
    stars = i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            escaped = pattern[i + 1 : i + 2]
            if not escaped or escaped not in "\\*?":
                raise BadRequest(
                    f"Invalid group pattern '{pattern[:200]}': '\\' escapes only '\\', '*', '?'."
                )
            tokens.append((_LITERAL, escaped))
            i += 2
        elif pattern.startswith("**", i):
            tokens.append((_DOUBLE_STAR, ""))
            stars += 2
            i += 2
        else:
            if char == "*":
                tokens.append((_STAR, ""))
                stars += 1
            else:
                tokens.append((_ONE, "") if char == "?" else (_LITERAL, char))
            i += 1
    if stars > _MAX_PATTERN_STARS:
        raise BadRequest(
            f"Invalid group pattern '{pattern[:200]}': more than {_MAX_PATTERN_STARS} '*' characters."
        )
    return tuple(tokens)


_REGEX = {_ONE: "[^.]", _STAR: "[^.]*", _DOUBLE_STAR: ".*"}


@functools.lru_cache(maxsize=1024)
def compile_group_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a wildcard group pattern (spec §5) to a regex that matches whole group names only.

    ``?`` is one character except ``.``, ``*`` zero or more characters except ``.``, ``**`` zero or
    more of any character; ``\\`` escapes ``\\``, ``*`` and ``?`` (any other escape is invalid).
    Patterns with more than five ``*`` or a bad escape raise :class:`BadRequest`.

    Caution: with several stars the regex can backtrack for hours on a hostile group name (time
    grows like ``len(group) ** stars``);
    :class:`Permissions` therefore uses it only for patterns with at most one star and a
    linear-time matcher otherwise.
    """
    body = "".join(re.escape(text) if kind == _LITERAL else _REGEX[kind] for kind, text in _tokenize(pattern))
    return re.compile(rf"\A(?:{body})\Z", re.DOTALL)


@functools.lru_cache(maxsize=1024)
def _group_matcher(pattern: str) -> Callable[[str], object]:
    """A predicate "group matches pattern", linear in the group name (bit-parallel NFA)."""
    tokens = _tokenize(pattern)
    if sum(kind in (_STAR, _DOUBLE_STAR) for kind, _ in tokens) <= 1:
        return compile_group_pattern(pattern).match  # one star cannot backtrack badly
    # State j (bit j) = "the first j tokens matched"; a star state loops on itself and may be skipped.
    literal: dict[str, int] = {}
    one = star = double = 0
    for j, (kind, text) in enumerate(tokens):
        if kind == _LITERAL:
            literal[text] = literal.get(text, 0) | 1 << j
        elif kind == _ONE:
            one |= 1 << j
        elif kind == _STAR:
            star |= 1 << j
        else:
            double |= 1 << j
    skippable, accept, dot = star | double, 1 << len(tokens), literal.get(".", 0)

    def closure(states: int) -> int:
        while (grown := states | (states & skippable) << 1) != states:
            states = grown
        return states

    def match(group: str) -> bool:
        states = closure(1)
        for char in group:
            if char == ".":
                states = (states & dot) << 1 | states & double
            else:
                states = (states & (literal.get(char, 0) | one)) << 1 | states & skippable
            if not states:
                return False
            states = closure(states)
        return bool(states & accept)

    return match


_ALL, _GROUP, _PATTERN = "all", "group", "pattern"


def _parse_role(role: str) -> tuple[Permission, str, str] | None:
    """(permission, kind, group or pattern) of a ``webpubsub.*`` role; None for other roles."""
    for permission in Permission:
        base = "webpubsub." + permission.value
        if role.startswith(base):
            rest = role[len(base) :]
            if not rest:
                return permission, _ALL, ""
            if rest[0] == ".":
                return permission, _GROUP, rest[1:]
            if rest.startswith("s."):
                return permission, _PATTERN, rest[2:]
    return None


def _role(permission: Permission, target: str | None) -> str:
    if target == "":
        raise BadRequest("The target group name must not be empty.")
    base = "webpubsub." + permission.value
    return base if target is None else f"{base}.{target}"


class Permissions:
    """Mutable permission set of one connection, built from role strings.

    Role strings (case-sensitive, spec §5): ``webpubsub.joinLeaveGroup`` / ``webpubsub.sendToGroup``
    (all groups), ``webpubsub.joinLeaveGroup.<group>`` / ``webpubsub.sendToGroup.<group>`` (exactly
    ``<group>``, which may contain ``.``), ``webpubsub.joinLeaveGroups.<pattern>`` /
    ``webpubsub.sendToGroups.<pattern>`` (groups matching the wildcard pattern, see
    :func:`compile_group_pattern`).

    * Unknown role strings are kept (:meth:`roles`) but grant nothing.
    * An invalid pattern (more than five ``*``, bad ``\\`` escape) is ignored the same way: kept,
      grants nothing, no error — roles come from tokens and connect handlers, and one bad role
      should not fail the whole connection.
    * REST grants and revokes are recorded as the equivalent role strings, so :meth:`roles` always
      describes the current permissions. A granted ``targetName`` is a literal group name, never a
      pattern (the service does not support pattern roles at runtime).
    """

    __slots__ = ("_all", "_exact", "_patterns", "_roles")

    def __init__(self, roles: Iterable[str] = ()) -> None:
        self._roles: dict[str, None] = {}
        self._all: set[Permission] = set()
        # per permission, created on first use: most connections hold no group-scoped role
        self._exact: dict[Permission, set[str]] = {}
        self._patterns: dict[Permission, dict[str, Callable[[str], object]]] = {}
        self.add_roles(roles)

    def add_roles(self, roles: Iterable[str]) -> None:
        """Add role strings (from the token, the ``connect`` response or a REST grant)."""
        for role in roles:
            if role in self._roles:
                continue
            self._roles[role] = None
            parsed = _parse_role(role)
            if parsed is None:
                continue
            permission, kind, target = parsed
            if kind == _ALL:
                self._all.add(permission)
            elif kind == _GROUP:
                if target:
                    self._exact.setdefault(permission, set()).add(target)
            else:
                with contextlib.suppress(BadRequest):  # documented: an invalid pattern grants nothing
                    self._patterns.setdefault(permission, {})[target] = _group_matcher(target)

    def roles(self) -> tuple[str, ...]:
        """The role strings held, in the order they were added."""
        return tuple(self._roles)

    def allows(self, permission: Permission, group: str) -> bool:
        """Whether the connection may use ``permission`` on ``group`` (hot path: sets first)."""
        if permission in self._all or group in self._exact.get(permission, ()):
            return True
        patterns = self._patterns.get(permission)
        return patterns is not None and any(match(group) for match in patterns.values())

    def grant(self, permission: Permission, target: str | None) -> None:
        """REST grant: ``target`` None grants all groups, else exactly the group ``target``."""
        self.add_roles((_role(permission, target),))

    def revoke(self, permission: Permission, target: str | None) -> None:
        """REST revoke.

        ``target`` None removes every grant of ``permission``: the all-groups grant, each specific
        group and each pattern. A group ``target`` removes only the grant of exactly that group; an
        all-groups grant or a matching pattern still allows the group afterwards (the service keeps
        grants per target and the all-groups grant is a target of its own).
        """
        if target is None:
            self._all.discard(permission)
            self._exact.pop(permission, None)
            self._patterns.pop(permission, None)
            for role in [r for r in self._roles if (parsed := _parse_role(r)) and parsed[0] is permission]:
                del self._roles[role]
        else:
            self._exact.get(permission, set()).discard(target)
            self._roles.pop(_role(permission, target), None)

    def check(self, permission: Permission, target: str | None) -> bool:
        """REST check: ``target`` None asks for the all-groups grant, a group for :meth:`allows`."""
        return permission in self._all if target is None else self.allows(permission, target)
