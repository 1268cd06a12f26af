"""Binding expressions in binding properties: ``{headers.x-ms-client-principal-name}``,
``{query.userid}``, ``{route value}``, ``{body property}``, ``{connectionContext.userId}``,
``%AppSetting%``, ``{sys.randguid}``, ``{rand-guid}``, ``{sys.utcnow}``, ``{DateTime}``.

Binding data is what the trigger publishes: for an HTTP trigger ``headers`` and ``query`` (names
case-insensitive), the route values and the top-level properties of a JSON object body; for the Web
PubSub trigger its nine values (``connectionContext``, ``data``, ``claims``, …). Like the Functions
host, an expression naming something that is not there fails the invocation
(``Error while accessing 'x-ms-client-principal-name': property doesn't exist.``).
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from hubbub.functions.appconfig import ConfigError, resolve_settings

__all__ = ["BindingData", "ExpressionError", "resolve"]

_EXPRESSION = re.compile(r"\{([^{}]+)\}")


class ExpressionError(Exception):
    """A binding expression names something the invocation does not have."""


class BindingData:
    """Case-insensitive, possibly nested values an invocation publishes to expressions."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._values: dict[str, Any] = {}
        for key, value in (values or {}).items():
            self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        self._values[key.lower()] = value

    def setdefault(self, key: str, value: Any) -> None:
        self._values.setdefault(key.lower(), value)

    def lookup(self, path: str) -> Any:
        head, _, rest = path.partition(".")
        # header names may contain dots
        parts = [head, rest] if head.lower() in ("headers", "query") and rest else path.split(".")
        node: Any = self._values
        for part in parts:
            if isinstance(node, str) and node[:1] in "{[":
                with contextlib.suppress(ValueError):
                    node = json.loads(node)
            if not isinstance(node, Mapping):
                raise ExpressionError(f"Error while accessing '{part}': property doesn't exist.")
            match = next((v for k, v in node.items() if str(k).lower() == part.lower()), _MISSING)
            if match is _MISSING:
                raise ExpressionError(f"Error while accessing '{part}': property doesn't exist.")
            node = match
        return node


_MISSING = object()


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def resolve(template: str, data: BindingData, settings: Mapping[str, str] | None = None) -> str:
    """Resolve ``%settings%`` first, then ``{expressions}``."""
    try:
        text = resolve_settings(template, settings)
    except ConfigError as exc:
        raise ExpressionError(str(exc)) from None

    def value(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        lowered = name.lower()
        if lowered in ("sys.randguid", "rand-guid"):
            return str(uuid.uuid4())
        if lowered in ("sys.utcnow", "datetime"):
            return datetime.now(UTC).isoformat().replace("+00:00", "Z")
        return _text(data.lookup(name))

    return _EXPRESSION.sub(value, text)
