"""A stand-in for App Service Authentication (``/.auth/...``) for local and self-hosted use.

* ``GET /.auth/login/dev`` shows a page where you type a user name; ``/.auth/login/<provider>`` for
  ``aad``, ``github``, ``google``, … shows the same page (no identity provider is contacted).
  ``?post_login_redirect_uri=`` (or the older ``post_login_redirect_url``) says where to go after
  signing in: a path on this host, or an absolute URL of this host. Default ``/``.
* ``POST /.auth/login/<provider>/callback`` (the page's form) signs you in: a signed session cookie
  ``AppServiceAuthSession`` (HMAC-SHA256 with a key derived from the app's master key; 8 hours).
* ``GET /.auth/me`` returns ``[{"provider_name", "user_id", "user_claims", "expires_on"}]`` for a
  signed-in caller, 401 otherwise. ``GET /.auth/logout`` clears the cookie
  (``?post_logout_redirect_uri=``).
* Every request that reaches a function loses any ``X-MS-CLIENT-PRINCIPAL*`` / ``X-MS-TOKEN-*``
  headers the client sent; a signed-in caller's get ``X-MS-CLIENT-PRINCIPAL-NAME`` (the name typed),
  ``-ID`` (a stable id derived from provider and name), ``-IDP`` (the provider) and
  ``X-MS-CLIENT-PRINCIPAL`` (base64 JSON ``{"auth_typ","claims":[{"typ","val"}],"name_typ","role_typ"}``).

A provider name configured as an OpenID Connect provider (``HUBBUB_AUTH_<PROVIDER>_ISSUER``,
``..._CLIENT_ID``, ``..._CLIENT_SECRET``, ``..._SCOPES``; see :mod:`hubbub.functions.oidc`) uses the
real provider instead of the page: ``GET /.auth/login/<provider>`` redirects to its authorization
endpoint (signed ``state`` carrying the post-login redirect, ``nonce``, PKCE S256; the nonce and
verifier stay in a short-lived signed cookie ``AppServiceAuthFlow``), and
``GET /.auth/login/<provider>/callback`` exchanges the code, verifies the id_token (signature from the
JWKS, ``iss``, ``aud`` = client id, ``exp``, ``nonce``) and sets the same session cookie: the name is
``preferred_username``, ``name``, ``email`` or ``sub`` (the first present; ``name_typ`` says which),
the id is ``sub``, and the claims are the id_token's. A bad or stale ``state`` answers 400, a refused
sign-in or id_token 401, an unreachable provider 502 (each logged in one line). The development form
is refused for a configured provider.
"""

from __future__ import annotations

import base64
import hmac
import html
import json
import logging
import secrets
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from hubbub.functions.oidc import OidcError, OidcProvider, pkce_pair

__all__ = ["PRINCIPAL_HEADERS", "EasyAuth"]

COOKIE = "AppServiceAuthSession"
SESSION_SECONDS = 8 * 3600
PROVIDERS = ("dev", "aad", "microsoftaccount", "google", "facebook", "twitter", "x", "github", "apple")
PRINCIPAL_HEADERS = (
    "x-ms-client-principal",
    "x-ms-client-principal-name",
    "x-ms-client-principal-id",
    "x-ms-client-principal-idp",
)
NAME_CLAIM = "name"
ID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
ROLE_CLAIM = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
MAX_NAME = 128
FLOW_COOKIE = "AppServiceAuthFlow"
FLOW_SECONDS = 600
MAX_COOKIE = 3800
NAME_SOURCES = ("preferred_username", "name", "email", "sub")
_SKIPPED_CLAIMS = frozenset({"nonce", "at_hash", "c_hash"})

log = logging.getLogger("hubbub.functions.easyauth")

_ERROR_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Sign-in failed</title></head><body>
<h1>Sign-in failed</h1>
<p>{message}</p>
<p><a href="/.auth/login/{provider}">Try again</a></p>
</body></html>
"""

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Sign in</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28em;margin:4em auto}}
input,button{{font-size:1em}}</style>
</head><body>
<h1>Sign in</h1>
<p>Development sign-in standing in for <b>{provider}</b>: type any user name.</p>
<form method="post" action="/.auth/login/{provider}/callback">
<input type="hidden" name="redirect" value="{redirect}">
<label>User name <input name="name" id="name" autofocus required maxlength="{max_name}"></label>
<button type="submit" id="login">Sign in</button>
</form>{error}
</body></html>
"""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class EasyAuth:
    def __init__(
        self,
        secret: str,
        session_seconds: int = SESSION_SECONDS,
        providers: Mapping[str, OidcProvider] | None = None,
    ) -> None:
        self._key = hmac.digest(secret.encode("utf-8"), b"hubbub easyauth session", "sha256")
        self._flow_key = hmac.digest(secret.encode("utf-8"), b"hubbub easyauth oidc flow", "sha256")
        self.session_seconds = session_seconds
        self.providers = {name.lower(): p for name, p in (providers or {}).items()}
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    # --- sessions -------------------------------------------------------------------------------

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.digest(self._key, payload, "sha256"))

    def cookie_value(
        self,
        provider: str,
        name: str,
        now: float | None = None,
        *,
        user_id: str | None = None,
        claims: list[dict[str, str]] | None = None,
        name_typ: str | None = None,
    ) -> str:
        issued = int(time.time() if now is None else now)
        if user_id is None:
            user_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"hubbub:{provider}:{name}"))
        session: dict[str, Any] = {
            "idp": provider,
            "name": name,
            "id": user_id,
            "exp": issued + self.session_seconds,
        }
        if claims is not None:
            session["claims"] = claims
        if name_typ is not None:
            session["name_typ"] = name_typ
        payload = json.dumps(session, separators=(",", ":")).encode("utf-8")
        return f"{_b64(payload)}.{self._sign(payload)}"

    def _seal(self, data: Mapping[str, Any]) -> str:
        payload = json.dumps(data, separators=(",", ":")).encode("utf-8")
        return f"{_b64(payload)}.{_b64(hmac.digest(self._flow_key, payload, 'sha256'))}"

    def _unseal(self, raw: str | None, now: float | None = None) -> dict[str, Any] | None:
        if not raw or "." not in raw:
            return None
        body, mac = raw.rsplit(".", 1)
        try:
            payload = _unb64(body)
            expected = _b64(hmac.digest(self._flow_key, payload, "sha256"))
            if not hmac.compare_digest(expected, mac):
                return None
            data = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("exp", 0) < (time.time() if now is None else now):
            return None
        return data

    def session(self, request: web.Request, now: float | None = None) -> dict[str, Any] | None:
        raw = request.cookies.get(COOKIE)
        if not raw or "." not in raw:
            return None
        body, mac = raw.rsplit(".", 1)
        try:
            payload = _unb64(body)
        except ValueError:
            return None
        if not hmac.compare_digest(self._sign(payload), mac):
            return None
        try:
            session = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(session, dict) or session.get("exp", 0) < (time.time() if now is None else now):
            return None
        return session

    def principal_headers(self, request: web.Request) -> dict[str, str]:
        """Headers a function sees for this caller (empty when nobody is signed in)."""
        session = self.session(request)
        if session is None:
            return {}
        principal = {
            "auth_typ": session["idp"],
            "claims": self._claims(session),
            "name_typ": session.get("name_typ", NAME_CLAIM),
            "role_typ": ROLE_CLAIM,
        }
        encoded = base64.b64encode(json.dumps(principal, separators=(",", ":")).encode("utf-8"))
        return {
            "x-ms-client-principal-name": session["name"],
            "x-ms-client-principal-id": session["id"],
            "x-ms-client-principal-idp": session["idp"],
            "x-ms-client-principal": encoded.decode("ascii"),
        }

    @staticmethod
    def _claims(session: Mapping[str, Any]) -> list[dict[str, str]]:
        stored = session.get("claims")
        if isinstance(stored, list):
            return stored
        return [
            {"typ": NAME_CLAIM, "val": session["name"]},
            {"typ": ID_CLAIM, "val": session["id"]},
            {
                "typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier",
                "val": session["id"],
            },
        ]

    # --- endpoints ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p][1:]  # after '.auth'
        action = parts[0].lower() if parts else ""
        oidc = self.providers.get(parts[1].lower()) if action == "login" and len(parts) > 1 else None
        if oidc is not None:
            if len(parts) == 2 and request.method == "GET":
                return await self._oidc_start(request, oidc)
            if len(parts) == 3 and parts[2].lower() == "callback" and request.method == "GET":
                return await self._oidc_callback(request, oidc)
            return web.Response(status=404)
        if action == "login" and len(parts) == 2 and request.method == "GET":
            return self._login_page(request, parts[1])
        if (
            action == "login"
            and len(parts) == 3
            and parts[2].lower() == "callback"
            and request.method == "POST"
        ):
            return await self._callback(request, parts[1])
        if action == "me" and len(parts) == 1:
            return self._me(request)
        if action == "logout" and len(parts) == 1:
            return self._logout(request)
        return web.Response(status=404)

    def _provider(self, name: str) -> str | None:
        lowered = name.lower()
        return lowered if lowered in PROVIDERS else None

    def _redirect_target(self, request: web.Request, target: str | None) -> str | None:
        """A safe place to go after signing in or out (None: refused)."""
        if not target:
            return "/"
        if target.startswith("/") and not target.startswith(("//", "/\\")):
            return target
        parts = urlsplit(target)
        if parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower():
            return target
        return None

    def _query(self, request: web.Request, *names: str) -> str | None:
        for name in names:
            for key, value in request.query.items():
                if key.lower() == name:
                    return value
        return None

    def _login_page(self, request: web.Request, provider_name: str, error: str = "") -> web.Response:
        provider = self._provider(provider_name)
        if provider is None:
            return web.Response(status=404, text=f"unknown identity provider '{provider_name}'")
        raw = self._query(request, "post_login_redirect_uri", "post_login_redirect_url")
        redirect = self._redirect_target(request, raw)
        if redirect is None:
            return web.Response(status=400, text="post_login_redirect_uri must be a path on this host")
        page = _PAGE.format(
            provider=html.escape(provider),
            redirect=html.escape(redirect),
            max_name=MAX_NAME,
            error=f'<p role="alert">{html.escape(error)}</p>' if error else "",
        )
        return web.Response(text=page, content_type="text/html")

    async def _callback(self, request: web.Request, provider_name: str) -> web.StreamResponse:
        provider = self._provider(provider_name)
        if provider is None:
            return web.Response(status=404)
        form = await request.post()
        name = str(form.get("name") or "").strip()
        redirect = self._redirect_target(request, str(form.get("redirect") or "/"))
        if redirect is None:
            return web.Response(status=400, text="the redirect must be a path on this host")
        if not name or len(name) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
            return web.Response(status=400, text=f"a user name is 1 to {MAX_NAME} printable characters")
        response = web.Response(status=302, headers={"Location": redirect})
        response.set_cookie(
            COOKIE,
            self.cookie_value(provider, name),
            max_age=self.session_seconds,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=request.secure,
        )
        return response

    def _me(self, request: web.Request) -> web.Response:
        session = self.session(request)
        if session is None:
            return web.Response(status=401)
        expires = datetime.fromtimestamp(session["exp"], UTC).isoformat().replace("+00:00", "Z")
        me = [
            {
                "provider_name": session["idp"],
                "user_id": session["name"],
                "user_claims": self._claims(session),
                "expires_on": expires,
            }
        ]
        return web.json_response(me)

    def _logout(self, request: web.Request) -> web.StreamResponse:
        target = self._redirect_target(
            request, self._query(request, "post_logout_redirect_uri", "post_logout_redirect_url")
        )
        if target is None:
            return web.Response(status=400, text="post_logout_redirect_uri must be a path on this host")
        response = web.Response(status=302, headers={"Location": target})
        response.del_cookie(COOKIE, path="/")
        return response

    # --- OpenID Connect -------------------------------------------------------------------------

    @staticmethod
    def _callback_uri(request: web.Request, provider: OidcProvider) -> str:
        return f"{request.scheme}://{request.host}/.auth/login/{provider.name}/callback"

    def _failure(self, provider: OidcProvider, status: int, message: str) -> web.Response:
        message = " ".join(message.split())[:300]  # one line, whatever the provider sent
        log.warning("sign-in with %s failed (%d): %s", provider.name, status, message)
        page = _ERROR_PAGE.format(message=html.escape(message), provider=html.escape(provider.name))
        response = web.Response(status=status, text=page, content_type="text/html")
        response.del_cookie(FLOW_COOKIE, path="/.auth/")
        return response

    async def _oidc_start(self, request: web.Request, provider: OidcProvider) -> web.StreamResponse:
        raw = self._query(request, "post_login_redirect_uri", "post_login_redirect_url")
        redirect = self._redirect_target(request, raw)
        if redirect is None:
            return web.Response(status=400, text="post_login_redirect_uri must be a path on this host")
        expires = int(time.time()) + FLOW_SECONDS
        binding = secrets.token_urlsafe(16)
        nonce = secrets.token_urlsafe(24)
        verifier, challenge = pkce_pair()
        callback = self._callback_uri(request, provider)
        state = self._seal({"p": provider.name, "r": redirect, "b": binding, "exp": expires})
        try:
            location = await provider.authorization_url(self._client(), callback, state, nonce, challenge)
        except OidcError as exc:
            return self._failure(provider, exc.status, str(exc))
        flow = {"p": provider.name, "b": binding, "n": nonce, "v": verifier, "c": callback, "exp": expires}
        response = web.Response(status=302, headers={"Location": location})
        response.set_cookie(
            FLOW_COOKIE,
            self._seal(flow),
            max_age=FLOW_SECONDS,
            path="/.auth/",
            httponly=True,
            samesite="Lax",
            secure=request.secure,
        )
        return response

    async def _oidc_callback(self, request: web.Request, provider: OidcProvider) -> web.StreamResponse:
        state = self._unseal(request.query.get("state"))
        if state is None or state.get("p") != provider.name:
            return self._failure(provider, 400, "the sign-in state is missing, altered or expired")
        flow = self._unseal(request.cookies.get(FLOW_COOKIE))
        if flow is None or flow.get("p") != provider.name or flow.get("b") != state.get("b"):
            return self._failure(provider, 400, "this sign-in was not started in this browser, or expired")
        if "error" in request.query:
            detail = request.query.get("error_description") or request.query["error"]
            return self._failure(provider, 401, f"the identity provider refused the sign-in: {detail}")
        code = request.query.get("code")
        if not code:
            return self._failure(provider, 400, "the identity provider sent no code")
        try:
            token = await provider.exchange(self._client(), code, str(flow["c"]), str(flow["v"]))
            claims = await provider.verify(self._client(), token, str(flow["n"]))
        except OidcError as exc:
            return self._failure(provider, exc.status, str(exc))
        name_typ = next(c for c in NAME_SOURCES if c == "sub" or isinstance(claims.get(c), str))
        name = str(claims[name_typ])
        value = self.cookie_value(
            provider.name, name, user_id=str(claims["sub"]), claims=_flatten(claims), name_typ=name_typ
        )
        if len(value) > MAX_COOKIE:  # keep the session cookie under the browsers' 4 KB
            essentials = {k: claims[k] for k in ("iss", "aud", "sub", name_typ) if k in claims}
            value = self.cookie_value(
                provider.name,
                name,
                user_id=str(claims["sub"]),
                claims=_flatten(essentials),
                name_typ=name_typ,
            )
        log.info("%s signed in with %s", name, provider.name)
        response = web.Response(status=302, headers={"Location": str(state.get("r") or "/")})
        response.set_cookie(
            COOKIE,
            value,
            max_age=self.session_seconds,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=request.secure,
        )
        response.del_cookie(FLOW_COOKIE, path="/.auth/")
        return response


def _flatten(claims: Mapping[str, Any]) -> list[dict[str, str]]:
    """id_token claims as App Service lists them: one ``{"typ","val"}`` per value."""
    out: list[dict[str, str]] = []
    for typ, value in claims.items():
        if typ in _SKIPPED_CLAIMS:
            continue
        for item in value if isinstance(value, list) else [value]:
            text = item if isinstance(item, str) else json.dumps(item, separators=(",", ":"))
            out.append({"typ": typ, "val": text})
    return out
