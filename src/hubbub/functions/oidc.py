"""OpenID Connect providers for ``/.auth/login/<provider>`` (authorization-code flow, PKCE S256).

Configured through app settings (the environment, then ``local.settings.json`` ``Values``), one group
per provider; ``<PROVIDER>`` is the name used in ``/.auth/login/<provider>`` (case-insensitive,
e.g. ``HUBBUB_AUTH_KEYCLOAK_ISSUER`` → ``/.auth/login/keycloak``):

* ``HUBBUB_AUTH_<PROVIDER>_ISSUER`` (required): the issuer URL; its discovery document is
  ``<issuer>/.well-known/openid-configuration`` and its ``issuer`` must match.
* ``HUBBUB_AUTH_<PROVIDER>_CLIENT_ID`` (required): the client id registered with the provider.
* ``HUBBUB_AUTH_<PROVIDER>_CLIENT_SECRET`` (optional): sent as ``client_secret_post``; without it the
  client is public (PKCE only).
* ``HUBBUB_AUTH_<PROVIDER>_SCOPES`` (optional): space- or comma-separated, default
  ``openid profile email`` (``openid`` is always added).

Register ``<scheme>://<host>/.auth/login/<provider>/callback`` as the redirect URI with the provider.
The discovery document and the JWKS are fetched once and kept (the JWKS is fetched again when a
token names a key id it does not hold). ID tokens must be RS256/PS256/ES256 signed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
from yarl import URL

from hubbub.functions.appconfig import ConfigError

__all__ = ["ALGORITHMS", "OidcError", "OidcProvider", "load_providers", "pkce_pair"]

PREFIX = "HUBBUB_AUTH_"
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384")
DEFAULT_SCOPES = ("openid", "profile", "email")
LEEWAY_SECONDS = 60
TIMEOUT = aiohttp.ClientTimeout(total=15)
_ISSUER = re.compile(rf"^{PREFIX}(.+)_ISSUER$", re.IGNORECASE)


class OidcError(Exception):
    """A sign-in failed; ``status`` is the HTTP status to answer (400, 401 or 502)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class OidcProvider:
    name: str
    issuer: str
    client_id: str
    client_secret: str | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    _metadata: dict[str, Any] | None = field(default=None, repr=False)
    _jwks: jwt.PyJWKSet | None = field(default=None, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    # --- provider metadata ----------------------------------------------------------------------

    async def _get_json(self, http: aiohttp.ClientSession, url: str, what: str) -> dict[str, Any]:
        try:
            async with http.get(url, timeout=TIMEOUT) as r:
                if r.status != 200:
                    raise OidcError(502, f"{what} {url} answered {r.status}")
                body = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise OidcError(502, f"cannot read {what} {url}: {exc}") from exc
        if not isinstance(body, dict):
            raise OidcError(502, f"{what} {url} is not a JSON object")
        return body

    async def metadata(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with self._lock:
            if self._metadata is None:
                url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                meta = await self._get_json(http, url, "discovery document")
                if str(meta.get("issuer", "")).rstrip("/") != self.issuer.rstrip("/"):
                    raise OidcError(502, f"discovery document {url} names issuer {meta.get('issuer')!r}")
                for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(meta.get(key), str):
                        raise OidcError(502, f"discovery document {url} has no {key}")
                self._metadata = meta
            return self._metadata

    async def _signing_key(self, http: aiohttp.ClientSession, kid: str | None) -> jwt.PyJWK:
        meta = await self.metadata(http)
        for attempt in range(2):
            if self._jwks is None or attempt:
                raw = await self._get_json(http, meta["jwks_uri"], "JWKS")
                try:
                    self._jwks = jwt.PyJWKSet.from_dict(raw)
                except jwt.PyJWTError as exc:
                    raise OidcError(502, f"JWKS {meta['jwks_uri']}: {exc}") from exc
            keys = [k for k in self._jwks.keys if k.public_key_use in (None, "sig")]
            matching = [k for k in keys if kid is None or k.key_id == kid]
            if len(matching) == 1 or (matching and kid is not None):
                return matching[0]
        raise OidcError(401, f"the id_token's signing key {kid!r} is not in the provider's JWKS")

    # --- the flow -------------------------------------------------------------------------------

    async def authorization_url(
        self, http: aiohttp.ClientSession, redirect_uri: str, state: str, nonce: str, challenge: str
    ) -> str:
        meta = await self.metadata(http)
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        return str(URL(meta["authorization_endpoint"]).update_query(params))

    async def exchange(self, http: aiohttp.ClientSession, code: str, redirect_uri: str, verifier: str) -> str:
        """The id_token the token endpoint gives for ``code``."""
        meta = await self.metadata(http)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self.client_id,
            "code_verifier": verifier,
        }
        if self.client_secret:
            form["client_secret"] = self.client_secret
        url = meta["token_endpoint"]
        try:
            async with http.post(
                url, data=form, headers={"Accept": "application/json"}, timeout=TIMEOUT
            ) as r:
                status = r.status
                body = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OidcError(502, f"cannot reach the token endpoint {url}: {exc}") from exc
        except ValueError as exc:
            raise OidcError(502, f"the token endpoint {url} did not answer JSON") from exc
        if not isinstance(body, dict):
            raise OidcError(502, f"the token endpoint {url} did not answer a JSON object")
        if status != 200:
            error = body.get("error_description") or body.get("error") or status
            raise OidcError(401, f"the token endpoint refused the code: {error}")
        token = body.get("id_token")
        if not isinstance(token, str):
            raise OidcError(401, "the token endpoint returned no id_token (is 'openid' a scope?)")
        return token

    async def verify(self, http: aiohttp.ClientSession, token: str, nonce: str) -> dict[str, Any]:
        """The id_token's claims, once signature, iss, aud, exp and nonce check out."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise OidcError(401, f"the id_token is malformed: {exc}") from exc
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise OidcError(401, f"the id_token is signed with {alg!r}, not one of {', '.join(ALGORITHMS)}")
        key = await self._signing_key(http, header.get("kid"))
        meta = await self.metadata(http)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=self.client_id,
                issuer=meta["issuer"],
                leeway=LEEWAY_SECONDS,
                options={"require": ["iss", "aud", "exp", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise OidcError(401, f"the id_token was rejected: {exc}") from exc
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise OidcError(401, "the id_token's nonce does not match this sign-in")
        azp = claims.get("azp")
        if isinstance(claims.get("aud"), list) and len(claims["aud"]) > 1 and azp != self.client_id:
            raise OidcError(401, "the id_token has several audiences and azp is not this client")
        return claims


def _scopes(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return DEFAULT_SCOPES
    scopes = [s for s in re.split(r"[\s,]+", raw) if s]
    return tuple(scopes if "openid" in scopes else ["openid", *scopes])


def load_providers(settings: Mapping[str, str]) -> dict[str, OidcProvider]:
    """The providers configured in ``settings`` (app settings), by lower-case name."""
    upper = {key.upper(): value for key, value in settings.items()}
    providers: dict[str, OidcProvider] = {}
    for key, issuer in upper.items():
        match = _ISSUER.match(key)
        if match is None or not issuer.strip():
            continue
        group = f"{PREFIX}{match.group(1)}"
        name = match.group(1).lower()
        client_id = upper.get(f"{group}_CLIENT_ID", "").strip()
        if not client_id:
            raise ConfigError(f"{key} is set but {group}_CLIENT_ID is not")
        if not issuer.startswith(("https://", "http://")):
            raise ConfigError(f"{key} must be an http(s) URL, not {issuer!r}")
        providers[name] = OidcProvider(
            name=name,
            issuer=issuer.strip(),
            client_id=client_id,
            client_secret=upper.get(f"{group}_CLIENT_SECRET") or None,
            scopes=_scopes(upper.get(f"{group}_SCOPES")),
        )
    return providers
