"""An app's configuration: ``host.json``, ``local.settings.json``, app settings, connection strings.

App settings are the process environment, as on Azure: ``local.settings.json`` ``Values`` fill in
what the environment does not already set (real environment variables win, as with Core Tools), and
the host's own overrides (``hubbub demo`` pointing the app at its service) win over both.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_ROUTE_PREFIX",
    "AppConfig",
    "ConfigError",
    "ServiceEndpoint",
    "exported_settings",
    "load_app_config",
    "parse_connection_string",
    "resolve_settings",
]

DEFAULT_PORT = 7071
DEFAULT_ROUTE_PREFIX = "api"
#: the host's default ``functionTimeout`` outside the Consumption plan (Core Tools included): 30 minutes
DEFAULT_FUNCTION_TIMEOUT = 30 * 60.0
_TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)")
_SETTING = re.compile(r"%([^%]+)%")


class ConfigError(Exception):
    """The app's configuration cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class AppConfig:
    root: Path
    route_prefix: str = DEFAULT_ROUTE_PREFIX
    #: ``host.json`` ``functions``: only these functions are loaded (None: all)
    allowed_functions: tuple[str, ...] | None = None
    #: ``local.settings.json`` ``Values``
    values: dict[str, str] = field(default_factory=dict)
    port: int | None = None
    cors: tuple[str, ...] = ()
    cors_credentials: bool = False
    host_json: dict[str, Any] = field(default_factory=dict)
    #: ``host.json`` ``functionTimeout`` in seconds (None: no limit)
    function_timeout: float | None = DEFAULT_FUNCTION_TIMEOUT


def parse_timespan(text: str) -> float:
    """A .NET TimeSpan as host.json writes it (``[d.]hh:mm:ss[.fff]``), in seconds."""
    match = _TIMESPAN.fullmatch(text.strip())
    if match is None:
        raise ValueError(text)
    days, hours, minutes, seconds = match.groups()
    if int(minutes) >= 60 or float(seconds) >= 60:
        raise ValueError(text)
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None


def _lower_keys(obj: Any) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in obj.items()} if isinstance(obj, dict) else {}


def load_app_config(root: str | os.PathLike[str]) -> AppConfig:
    """Read ``host.json`` (required, like the real host) and ``local.settings.json`` (optional)."""
    path = Path(root).resolve()
    if not path.is_dir():
        raise ConfigError(f"{path}: no such directory (--script-root must be a function app folder)")
    host_file = path / "host.json"
    if not host_file.is_file():
        raise ConfigError(f"{path}: no host.json; is this an Azure Functions app folder?")
    host = _read_json(host_file)
    if not isinstance(host, dict):
        raise ConfigError(f"{host_file}: expected a JSON object")
    http = _lower_keys(_lower_keys(host.get("extensions")).get("http"))
    prefix = http.get("routeprefix", DEFAULT_ROUTE_PREFIX)
    if not isinstance(prefix, str):
        raise ConfigError(f"{host_file}: extensions.http.routePrefix must be a string")
    functions = host.get("functions")
    if functions is not None and not (
        isinstance(functions, list) and all(isinstance(f, str) for f in functions)
    ):
        raise ConfigError(f"{host_file}: 'functions' must be a list of function names")
    timeout: float | None = DEFAULT_FUNCTION_TIMEOUT
    raw_timeout = host.get("functionTimeout")
    if raw_timeout is not None:
        try:
            timeout = None if str(raw_timeout).strip() == "-1" else parse_timespan(str(raw_timeout))
        except ValueError:
            raise ConfigError(
                f'{host_file}: functionTimeout {raw_timeout!r} is not a time span like "00:05:00" (or -1)'
            ) from None
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"{host_file}: functionTimeout must be positive (or -1 for no limit)")

    values: dict[str, str] = {}
    port: int | None = None
    cors: tuple[str, ...] = ()
    credentials = False
    local_file = path / "local.settings.json"
    if local_file.is_file():
        local = _read_json(local_file)
        if not isinstance(local, dict):
            raise ConfigError(f"{local_file}: expected a JSON object")
        if local.get("IsEncrypted") is True:
            raise ConfigError(
                f"{local_file}: encrypted settings are not supported; run 'func settings decrypt' first"
            )
        raw_values = local.get("Values") or {}
        if not isinstance(raw_values, dict):
            raise ConfigError(f"{local_file}: 'Values' must be an object")
        for key, value in raw_values.items():
            if value is None:
                continue
            values[str(key)] = value if isinstance(value, str) else json.dumps(value)
        host_section = local.get("Host") or {}
        if not isinstance(host_section, dict):
            raise ConfigError(f"{local_file}: 'Host' must be an object")
        raw_port = host_section.get("LocalHttpPort")
        if raw_port is not None:
            try:
                port = int(raw_port)
            except (TypeError, ValueError):
                raise ConfigError(f"{local_file}: Host.LocalHttpPort must be a number") from None
        raw_cors = host_section.get("CORS") or ""
        if not isinstance(raw_cors, str):
            raise ConfigError(f"{local_file}: Host.CORS must be a string (comma-separated origins)")
        cors = tuple(o.strip() for o in raw_cors.split(",") if o.strip())
        credentials = bool(host_section.get("CORSCredentials", False))
    return AppConfig(
        root=path,
        route_prefix=prefix.strip("/"),
        allowed_functions=tuple(functions) if functions is not None else None,
        values=values,
        port=port,
        cors=cors,
        cors_credentials=credentials,
        host_json=host,
        function_timeout=timeout,
    )


def resolve_settings(text: str, settings: Mapping[str, str] | None = None) -> str:
    """Replace ``%Name%`` with app setting ``Name`` (binding properties may reference settings)."""
    source = os.environ if settings is None else settings

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        found = source.get(name)
        if found is None:
            raise ConfigError(f"'%{name}%' does not resolve to a value (no app setting '{name}')")
        return found

    return _SETTING.sub(value, text)


@contextmanager
def exported_settings(values: Mapping[str, str], overrides: Mapping[str, str]) -> Iterator[None]:
    """Put ``values`` (where unset) and ``overrides`` into ``os.environ``; restore it afterwards."""
    saved = {key: os.environ.get(key) for key in [*values, *overrides]}
    for key, value in values.items():
        os.environ.setdefault(key, value)
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@dataclass(frozen=True)
class ServiceEndpoint:
    """A parsed Web PubSub connection string."""

    #: ``http(s)://host[:port]``, no trailing ``/``
    endpoint: str
    access_key: str

    @property
    def host(self) -> str:
        """The host name ``WebHook-Request-Origin`` is compared with."""
        return (urlsplit(self.endpoint).hostname or "").lower()


def parse_connection_string(text: str) -> ServiceEndpoint:
    """``Endpoint=…;[Port=…;]AccessKey=…;Version=1.0;`` (keys case-insensitive, split on the first ``=``)."""
    fields: dict[str, str] = {}
    for segment in text.split(";"):
        if not segment.strip():
            continue
        key, sep, value = segment.partition("=")
        if not sep:
            raise ConfigError("malformed connection string: expected 'key=value' segments")
        fields.setdefault(key.strip().lower(), value.strip())
    endpoint = fields.get("endpoint", "").rstrip("/")
    if not endpoint:
        raise ConfigError("the connection string has no 'Endpoint'")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("the connection string's Endpoint must be an http:// or https:// URL")
    if fields.get("port"):
        endpoint = f"{parts.scheme}://{parts.hostname}:{fields['port']}"
    return ServiceEndpoint(endpoint, fields.get("accesskey", ""))


def output_objects(value: Any, binding: str, not_object: Callable[[Any], str]) -> list[dict[str, Any]]:
    """The JSON objects of an output binding's value (JSON text, bytes, a dict or a list of them).

    Raises ValueError: the value is not JSON (names ``binding``), or an item is not an object
    (``not_object(item)`` says so).
    """
    if isinstance(value, bytes | bytearray):
        value = value.decode("utf-8")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"the {binding} output value is not JSON") from None
    out: list[dict[str, Any]] = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str):
            out.extend(output_objects(item, binding, not_object))
        elif isinstance(item, dict):
            out.append(item)
        else:
            raise ValueError(not_object(item))
    return out
