"""SignalR upstream (digest §4), the pure part: templates, matching, headers, bodies, answers.

Settings are an ordered list of templates; the first whose hub, category and event patterns all
match an event gets it (``*`` = any, ``a,b`` = a list, else one name; compared case-insensitively,
as the functions trigger dispatches). Accepted shapes: the emulator's ``settings.json``
(``{"UpstreamSettings": {"Templates": [{"UrlTemplate": …, "HubPattern": …}]}}``) and ARM's
(``{"upstream": {"templates": [{"urlTemplate": …}]}}`` or just ``{"templates": […]}``); property
names are case-insensitive.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from hubbub.errors import BadRequest
from hubbub.signalr.secrets import check_references

__all__ = [
    "CONNECTIONS",
    "MESSAGES",
    "UpstreamTemplate",
    "claims_header",
    "client_query",
    "failure",
    "match",
    "parse_settings",
    "request_headers",
    "signature",
    "templates_json",
]

CONNECTIONS, MESSAGES = "connections", "messages"
CONNECTED_BODY = b'{"type":10}'
#: largest upstream answer forwarded to a client
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


def _matches(pattern: str, value: str) -> bool:
    pattern = pattern.strip()
    if pattern in ("", "*"):
        return True
    return value.lower() in (p.strip().lower() for p in pattern.split(","))


@dataclass(frozen=True, slots=True)
class UpstreamTemplate:
    url_template: str
    hub_pattern: str = "*"
    category_pattern: str = "*"
    event_pattern: str = "*"
    #: "None", or "ManagedIdentity": a token signed with the access key goes in ``Authorization``
    auth_type: str = "None"
    auth_resource: str = ""

    def __post_init__(self) -> None:
        if not self.url_template.startswith(("http://", "https://")):
            raise BadRequest(f"Invalid UrlTemplate '{self.url_template[:200]}': it must be an http(s) URL.")
        if self.auth_type not in ("None", "ManagedIdentity"):
            raise BadRequest(
                f"Unknown upstream auth type '{self.auth_type[:50]}': use None or ManagedIdentity."
            )
        check_references(self.url_template)

    def to_json(self) -> dict[str, Any]:
        """The ARM shape (``properties.upstream.templates[]`` entry)."""
        auth: dict[str, Any] = {"type": self.auth_type}
        if self.auth_type == "ManagedIdentity":
            auth["managedIdentity"] = {"resource": self.auth_resource}
        return {
            "urlTemplate": self.url_template,
            "hubPattern": self.hub_pattern,
            "categoryPattern": self.category_pattern,
            "eventPattern": self.event_pattern,
            "auth": auth,
        }

    def matches(self, hub: str, category: str, event: str) -> bool:
        return (
            _matches(self.hub_pattern, hub)
            and _matches(self.category_pattern, category)
            and _matches(self.event_pattern, event)
        )

    def url(self, hub: str, category: str, event: str) -> str:
        return (
            self.url_template.replace("{hub}", quote(hub, safe=""))
            .replace("{category}", quote(category, safe=""))
            .replace("{event}", quote(event, safe=""))
        )


def match(
    templates: Sequence[UpstreamTemplate], hub: str, category: str, event: str
) -> UpstreamTemplate | None:
    """The first template that takes the event, or None (the event is then not sent)."""
    return next((t for t in templates if t.matches(hub, category, event)), None)


def _field(obj: Mapping[str, Any], name: str) -> Any:
    return next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == name.lower()), None)


def _template(obj: Any) -> UpstreamTemplate:
    if not isinstance(obj, Mapping):
        raise BadRequest("Each upstream template must be an object.")
    url = _field(obj, "urlTemplate")
    if not isinstance(url, str):
        raise BadRequest("Each upstream template needs a 'UrlTemplate' string.")
    patterns = {}
    for name in ("hubPattern", "categoryPattern", "eventPattern"):
        value = _field(obj, name)
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"'{name}' must be a string.")
        patterns[name] = value or "*"
    auth = _field(obj, "auth") or {}
    if not isinstance(auth, Mapping):
        raise BadRequest("'Auth' must be an object.")
    identity = _field(auth, "managedIdentity") or {}
    resource = _field(identity, "resource") if isinstance(identity, Mapping) else None
    return UpstreamTemplate(
        url,
        patterns["hubPattern"],
        patterns["categoryPattern"],
        patterns["eventPattern"],
        str(_field(auth, "type") or "None"),
        str(resource or ""),
    )


def parse_settings(obj: Any) -> tuple[UpstreamTemplate, ...]:
    """Templates from a parsed settings document (emulator or ARM shape); :class:`BadRequest` if bad."""
    if not isinstance(obj, Mapping):
        raise BadRequest("Upstream settings must be a JSON object.")
    for wrapper in ("UpstreamSettings", "upstream", "properties"):
        inner = _field(obj, wrapper)
        if isinstance(inner, Mapping):
            return parse_settings(inner)
    templates = _field(obj, "templates")
    if templates is None:
        return ()
    if not isinstance(templates, list):
        raise BadRequest("'Templates' must be a list.")
    return tuple(_template(t) for t in templates)


def templates_json(templates: Sequence[UpstreamTemplate]) -> dict[str, Any]:
    """``{"templates": [...]}``: the ARM ``properties.upstream`` object."""
    return {"templates": [t.to_json() for t in templates]}


# --- request -------------------------------------------------------------------------------------


def signature(connection_id: str, keys: Sequence[str]) -> str:
    """``sha256=<HEX>`` per access key, comma-joined without spaces (the trigger splits on ``,``)."""
    return ",".join(
        "sha256="
        + hmac.new(k.encode("utf-8"), connection_id.encode("utf-8"), hashlib.sha256).hexdigest().upper()
        for k in keys
    )


def _claim_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def claims_header(claims: Mapping[str, Any]) -> str:
    """``type: value`` per claim (one per value of a list), joined by ``, `` (as .NET ``Claim`` prints)."""
    parts = []
    for name, value in claims.items():
        for item in value if isinstance(value, list) else [value]:
            parts.append(f"{name}: {_claim_text(item)}")
    return ", ".join(parts)


def client_query(query: str) -> str:
    """The client's query for ``X-ASRS-Client-Query``: leading ``?``, the ``access_token`` and the
    transport ``id`` removed (secrets), empty when nothing is left."""
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in ("access_token", "id")]
    return "?" + urlencode(kept) if kept else ""


def request_headers(
    *,
    connection_id: str,
    hub: str,
    category: str,
    event: str,
    keys: Sequence[str],
    user_id: str | None,
    claims: Mapping[str, Any],
    query: str,
    content_type: str,
) -> dict[str, str]:
    headers = {
        "X-ASRS-Connection-Id": connection_id,
        "X-ASRS-Hub": hub,
        "X-ASRS-Category": category,
        "X-ASRS-Event": event,
        "X-ASRS-Signature": signature(connection_id, keys),
        "Content-Type": content_type,
    }
    if user_id:
        headers["X-ASRS-User-Id"] = user_id
    text = claims_header(claims)
    if text:
        headers["X-ASRS-User-Claims"] = text
    query = client_query(query)
    if query:
        headers["X-ASRS-Client-Query"] = query
    return headers


def disconnected_body(error: str | None) -> bytes:
    body: dict[str, Any] = {"type": 11}
    if error:
        body["error"] = error
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def failure(status: int | None) -> str:
    """The Completion error of a failed upstream call (the service's wording)."""
    return f"Invocation failed, status code {status if status is not None else 500}"
