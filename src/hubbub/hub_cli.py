"""``hubbub hub create|update|show|list|delete``: hub settings via the admin API, like ``az webpubsub hub``.

The flags are az's, so an ``az webpubsub hub ...`` line works with ``az webpubsub`` replaced by
``hubbub``: ``--hub-name`` (or ``--hub``) names the hub; az's ``-n/--name`` is the Web PubSub resource
and ``-g/--resource-group`` its group, which hubbub does not have: ``-g`` is ignored and ``-n`` is
used as the hub name only when neither ``--hub`` nor ``--hub-name`` is given. Each ``--event-handler``
takes several ``key=value`` words (``url-template=``, ``user-event-pattern=``, ``system-event=``
(repeatable), ``auth-type=``, ``auth-resource=``); ``update`` replaces the fields whose flags are given
and keeps the others (``--event-handler`` replaces the whole list, as in az).

The service is found through ``--connection-string`` or the ``WebPubSubConnectionString`` environment
variable, parsed like the Python SDK does. Errors are one line on stderr and exit status 1.

``hubbub signalr upstream update|list|clear`` does the same for the SignalR upstream templates, with
``az signalr upstream``'s flags: ``update`` takes one ``--template`` per template, in order, each with
``key=value`` words (``url-template=`` (required), ``hub-pattern=``, ``category-pattern=``,
``event-pattern=``, and hubbub's ``auth-type=`` / ``auth-resource=`` for ManagedIdentity auth), and
replaces the whole list; ``clear`` removes it. The service is found through ``--connection-string`` or
``AzureSignalRConnectionString`` (the Functions setting), else ``WebPubSubConnectionString`` (the admin
API answers on both ports).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import jwt

__all__ = [
    "ENV_CONNECTION_STRING",
    "ENV_SIGNALR_CONNECTION_STRING",
    "HubCliError",
    "add_hub_parser",
    "add_signalr_parser",
    "admin_request",
    "parse_connection_string",
    "parse_event_handler",
    "parse_upstream_template",
]

ENV_CONNECTION_STRING = "WebPubSubConnectionString"
ENV_SIGNALR_CONNECTION_STRING = "AzureSignalRConnectionString"
SIGNALR_UPSTREAM_PATH = "/api/admin/signalr/upstream"
TIMEOUT_SECONDS = 30.0
_HANDLER_KEYS = ("url-template", "user-event-pattern", "system-event", "auth-type", "auth-resource")
_TEMPLATE_KEYS = (
    "url-template",
    "hub-pattern",
    "category-pattern",
    "event-pattern",
    "auth-type",
    "auth-resource",
)
_TRUE = ("true", "yes", "y", "on", "1")
_FALSE = ("false", "no", "n", "off", "0")


class HubCliError(Exception):
    """A failed command; ``status``/``code`` are the service's answer when there was one."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def parse_connection_string(text: str) -> tuple[str, str]:
    """``(endpoint, access key)``, parsed like the Python SDK (``Port=`` is appended to the endpoint)."""
    fields: dict[str, str] = {}
    for segment in text.split(";"):
        if "=" in segment:
            key, value = segment.split("=", 1)
            fields.setdefault(key.strip().lower(), value.strip())
        elif segment.strip():
            raise HubCliError(f"malformed connection string: expected 'key=value', found '{segment}'")
    endpoint, access_key = fields.get("endpoint"), fields.get("accesskey")
    if not endpoint:
        raise HubCliError("the connection string has no 'Endpoint'")
    if not access_key:
        raise HubCliError("the connection string has no 'AccessKey'")
    if fields.get("port"):
        endpoint = f"{endpoint.rstrip('/')}:{fields['port']}"
    return endpoint.rstrip("/"), access_key


def admin_request(
    connection_string: str, method: str, hub: str | None = None, body: Any = None, *, path: str = ""
) -> Any:
    """Call ``/api/admin/hubs[/{hub}]`` (or ``path``); the parsed JSON answer (None for an empty one)."""
    endpoint, key = parse_connection_string(connection_string)
    url = f"{endpoint}/api/admin/hubs" + (f"/{quote(hub, safe='')}" if hub is not None else "")
    if path:
        url = endpoint + path
    now = int(time.time())
    with warnings.catch_warnings():  # short keys work, as with the SDKs; no warning on stderr
        warnings.simplefilter("ignore")
        token = jwt.encode({"aud": url, "iat": now, "exp": now + 300}, key, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            raise _service_error(exc, method, url) from None
    except urllib.error.URLError as exc:
        raise HubCliError(
            f"cannot reach {endpoint}: {getattr(exc.reason, 'strerror', None) or exc.reason}"
        ) from None
    except OSError as exc:  # timeouts, resets
        raise HubCliError(f"cannot reach {endpoint}: {exc.strerror or exc}") from None
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        raise HubCliError(f"{method} {url} answered something that is not JSON") from None


def _service_error(exc: urllib.error.HTTPError, method: str, url: str) -> HubCliError:
    try:
        answer = json.loads(exc.read())
        message, code = str(answer["message"]), str(answer.get("code", ""))
    except (ValueError, KeyError, TypeError, OSError):
        return HubCliError(
            f"{method} {url} answered {exc.code} {exc.reason} (is this a hubbub with the admin API?)",
            exc.code,
        )
    return HubCliError(message, exc.code, code)


def parse_event_handler(words: Sequence[str]) -> dict[str, Any]:
    """The ``eventHandlers`` entry of one ``--event-handler`` flag's ``key=value`` words."""
    values: dict[str, list[str]] = {}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.strip().lower().replace("_", "-")
        if not sep or key not in _HANDLER_KEYS:
            raise ValueError(
                f"--event-handler: expected key=value, key one of {', '.join(_HANDLER_KEYS)}; got '{word}'"
            )
        values.setdefault(key, []).append(value)
    for key, got in values.items():
        if key != "system-event" and len(got) > 1:
            raise ValueError(f"--event-handler: '{key}' given twice in one handler")
    if "url-template" not in values:
        raise ValueError("--event-handler: url-template=... is required")
    auth_type = values.get("auth-type", ["None"])[0]
    auth: dict[str, Any] = {"type": auth_type}
    if "auth-resource" in values:
        auth["managedIdentity"] = {"resource": values["auth-resource"][0]}
    return {
        "urlTemplate": values["url-template"][0],
        "userEventPattern": values.get("user-event-pattern", [""])[0],
        "systemEvents": list(dict.fromkeys(values.get("system-event", []))),
        "auth": auth,
    }


def parse_upstream_template(words: Sequence[str]) -> dict[str, Any]:
    """The ``templates`` entry of one ``--template`` flag's ``key=value`` words."""
    values: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.strip().lower().replace("_", "-")
        if not sep or key not in _TEMPLATE_KEYS:
            raise ValueError(
                f"--template: expected key=value, key one of {', '.join(_TEMPLATE_KEYS)}; got '{word}'"
            )
        if key in values:
            raise ValueError(f"--template: '{key}' given twice in one template")
        values[key] = value
    if "url-template" not in values:
        raise ValueError("--template: url-template=... is required")
    auth: dict[str, Any] = {"type": values.get("auth-type", "None")}
    if "auth-resource" in values:
        auth["managedIdentity"] = {"resource": values["auth-resource"]}
    return {
        "urlTemplate": values["url-template"],
        "hubPattern": values.get("hub-pattern", "*"),
        "categoryPattern": values.get("category-pattern", "*"),
        "eventPattern": values.get("event-pattern", "*"),
        "auth": auth,
    }


class _AppendParsed(argparse.Action):
    """A repeatable option whose words ``parse`` turns into one item (an az-style ``--event-handler``)."""

    def __init__(self, *args: Any, parse: Callable[[list[str]], Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parse = parse

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        words = [values] if isinstance(values, str) else list(values or ())
        try:
            item = self.parse(words)
        except ValueError as exc:
            parser.error(str(exc))
        items = getattr(namespace, self.dest, None) or []
        setattr(namespace, self.dest, [*items, item])


def _flag(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


# --- commands ------------------------------------------------------------------------------------


def _properties(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    properties = dict(base)
    if args.event_handler is not None:
        properties["eventHandlers"] = args.event_handler
    if args.allow_anonymous is not None:
        properties["anonymousConnectPolicy"] = "allow" if args.allow_anonymous else "deny"
    if args.keepalive_seconds is not None:
        properties["webSocketKeepAliveIntervalInSeconds"] = args.keepalive_seconds
    return properties


def _create(cs: str, hub: str, args: argparse.Namespace) -> Any:
    try:
        admin_request(cs, "GET", hub)
    except HubCliError as exc:
        if exc.status != 404 or exc.code != "NotFound":
            raise
    else:
        raise HubCliError(f"Hub '{hub}' already exists; use 'hubbub hub update' to change it.")
    base = {"eventHandlers": [], "anonymousConnectPolicy": "deny"}
    return admin_request(cs, "PUT", hub, _properties(args, base))


def _update(cs: str, hub: str, args: argparse.Namespace) -> Any:
    current = admin_request(cs, "GET", hub)
    name = str(current.get("name") or hub)  # keep the stored spelling of the name
    return admin_request(cs, "PUT", name, _properties(args, dict(current.get("properties") or {})))


def _command(args: argparse.Namespace) -> int:
    try:
        cs = args.connection_string or _env_connection_string()
        action = args.hub_action
        if action == "list":
            _print(admin_request(cs, "GET")["value"])
            return 0
        hub = args.hub or args.name
        if not hub:
            print(f"hubbub hub {action}: error: --hub-name (or --hub) is required", file=sys.stderr)
            return 2
        if action == "create":
            _print(_create(cs, hub, args))
        elif action == "update":
            _print(_update(cs, hub, args))
        elif action == "show":
            _print(admin_request(cs, "GET", hub))
        else:
            admin_request(cs, "DELETE", hub)
    except HubCliError as exc:
        print(f"hubbub: {exc}", file=sys.stderr)
        return 1
    return 0


def _env_connection_string() -> str:
    value = os.environ.get(ENV_CONNECTION_STRING, "")
    if not value:
        raise HubCliError(f"no connection string: pass --connection-string or set {ENV_CONNECTION_STRING}")
    return value


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def add_hub_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hub create|update|show|list|delete`` to the ``hubbub`` command line."""
    hub = subparsers.add_parser(
        "hub",
        help="manage hub settings (like az webpubsub hub)",
        description="Manage hub settings through the service's admin API, with az webpubsub hub's flags. "
        f"The service is found through --connection-string or the {ENV_CONNECTION_STRING} variable.",
    )
    actions = hub.add_subparsers(dest="hub_action", required=True, metavar="ACTION")
    helps = {
        "create": "create a hub's settings (fails if the hub has settings already)",
        "update": "change a hub's settings; flags not given keep their values",
        "show": "print a hub's settings",
        "list": "print the settings of all hubs",
        "delete": "delete a hub's settings",
    }
    for name, text in helps.items():
        p = actions.add_parser(name, help=text, description=text)
        p.add_argument(
            "--connection-string", help=f"the service's connection string (env {ENV_CONNECTION_STRING})"
        )
        p.add_argument("-g", "--resource-group", help=argparse.SUPPRESS)  # az's; ignored
        p.add_argument("-n", "--name", help=argparse.SUPPRESS)  # az's resource name; see the docstring
        if name != "list":
            p.add_argument("--hub-name", "--hub", dest="hub", metavar="NAME", help="the hub")
        else:
            p.set_defaults(hub=None)
        if name in ("create", "update"):
            p.add_argument(
                "--event-handler",
                nargs="+",
                action=_AppendParsed,
                parse=parse_event_handler,
                metavar="KEY=VALUE",
                help="url-template=URL [user-event-pattern=P] [system-event=E ...] [auth-type=T] "
                "[auth-resource=R]; repeat the flag for several handlers (in order)",
            )
            p.add_argument(
                "--allow-anonymous",
                type=_flag,
                nargs="?",
                const=True,
                metavar="{true,false}",
                help="allow connections without an access token (anonymousConnectPolicy)",
            )
            p.add_argument(
                "--keepalive-seconds",
                "--websocket-keepalive",
                type=int,
                metavar="N",
                help="WebSocket keep-alive ping interval, 1-120 (default 20)",
            )
        p.set_defaults(func=_command, hub_action=name)


# --- hubbub signalr upstream ------------------------------------------------------------------------


def _signalr_command(args: argparse.Namespace) -> int:
    try:
        cs = (
            args.connection_string
            or os.environ.get(ENV_SIGNALR_CONNECTION_STRING)
            or os.environ.get(ENV_CONNECTION_STRING)
        )
        if not cs:
            raise HubCliError(
                "no connection string: pass --connection-string or set "
                f"{ENV_SIGNALR_CONNECTION_STRING} (or {ENV_CONNECTION_STRING})"
            )
        action = args.upstream_action
        if action == "list":
            _print(admin_request(cs, "GET", path=SIGNALR_UPSTREAM_PATH))
        elif action == "update":
            body = {"templates": args.template}
            _print(admin_request(cs, "PUT", body=body, path=SIGNALR_UPSTREAM_PATH))
        else:
            admin_request(cs, "DELETE", path=SIGNALR_UPSTREAM_PATH)
    except HubCliError as exc:
        print(f"hubbub: {exc}", file=sys.stderr)
        return 1
    return 0


def add_signalr_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``signalr upstream update|list|clear`` to the ``hubbub`` command line."""
    signalr = subparsers.add_parser(
        "signalr",
        help="manage SignalR settings (like az signalr)",
        description="Manage the SignalR service's settings through the admin API, with az signalr's flags.",
    )
    groups = signalr.add_subparsers(dest="signalr_group", required=True, metavar="GROUP")
    upstream = groups.add_parser(
        "upstream",
        help="upstream templates (like az signalr upstream)",
        description="The ordered upstream URL templates of SignalR serverless mode.",
    )
    actions = upstream.add_subparsers(dest="upstream_action", required=True, metavar="ACTION")
    helps = {
        "update": "replace the upstream templates (one --template per template, in order)",
        "list": "print the upstream templates",
        "clear": "remove every upstream template",
    }
    for name, text in helps.items():
        p = actions.add_parser(name, help=text, description=text)
        p.add_argument(
            "--connection-string",
            help=f"the service's connection string (env {ENV_SIGNALR_CONNECTION_STRING}, "
            f"else {ENV_CONNECTION_STRING})",
        )
        p.add_argument("-g", "--resource-group", help=argparse.SUPPRESS)  # az's; ignored
        p.add_argument("-n", "--name", help=argparse.SUPPRESS)  # az's resource name; ignored
        if name == "update":
            p.add_argument(
                "--template",
                nargs="+",
                action=_AppendParsed,
                parse=parse_upstream_template,
                required=True,
                metavar="KEY=VALUE",
                help="url-template=URL [hub-pattern=P] [category-pattern=P] [event-pattern=P] "
                "[auth-type=None|ManagedIdentity] [auth-resource=R]; repeat for several templates",
            )
        p.set_defaults(func=_signalr_command, upstream_action=name)
