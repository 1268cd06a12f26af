"""Bidirectional chat room with Azure SignalR Service in serverless mode, Python v2 model.

The functions of the "Azure function bidirectional chatroom" sample, in Python:

* ``index``      serves the chat page.
* ``login``      signs the chat's own access token for a user name (claims ``nameid`` and ``admin``;
  ``admin`` is true for the names in the app setting ``ChatAdmins``).
* ``negotiate``  checks that token (the ``Authorization: Bearer`` header the page sends) and returns
  the SignalR connection info; the ``signalRConnectionInfo`` binding copies the token's ``nameid``
  (the SignalR user id) and ``admin`` claims into the service token.
* ``on_connected`` / ``on_disconnected``: the ``connections`` events. A new connection is announced
  to everyone with ``newConnection`` (and whether the upstream request carried an
  ``Authorization`` token: the "Use Managed Identity" upstream setting).
* ``broadcast``, ``send_to_group``, ``send_to_user``, ``send_to_connection``, ``join_group``,
  ``leave_group``, ``join_user_to_group``, ``leave_user_from_group``: the hub methods the page
  invokes (``messages`` events), answered through the ``signalR`` output binding with
  ``newMessage({ConnectionId, Sender, Text})``. ``broadcast`` and the user/group methods require
  the ``admin`` claim (the sample's ``[FunctionAuthorize]``); a refused call fails the client's
  ``invoke`` with the error message.

Nothing here is specific to a host: the same code runs on Azure Functions with Azure SignalR
Service and locally with ``hubbub func start``.
"""

import json
import logging
import os
import secrets
import time

import azure.functions as func
import jwt

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

HUB = "simplechat"
CONNECTION = "AzureSignalRConnectionString"
HERE = os.path.dirname(os.path.abspath(__file__))
#: the key of the chat's own login tokens (random per process unless the app setting is set)
TOKEN_SECRET = os.environ.get("ChatTokenSecret") or secrets.token_urlsafe(32)  # noqa: SIM112


def _admins() -> set:
    names = os.environ.get("ChatAdmins", "")  # noqa: SIM112 (app settings keep their names)
    return {name.strip() for name in names.split(",") if name.strip()}


# --- the page and its sign-in -------------------------------------------------------------------


@app.route(route="index", methods=["GET"])
def index(req: func.HttpRequest) -> func.HttpResponse:
    with open(os.path.join(HERE, "index.html"), encoding="utf-8") as f:
        return func.HttpResponse(f.read(), mimetype="text/html")


@app.route(route="login", methods=["POST"])
def login(req: func.HttpRequest) -> func.HttpResponse:
    try:
        name = str(req.get_json().get("username", "")).strip()
    except (ValueError, AttributeError):
        name = ""
    if not name or len(name) > 64 or any(c in name for c in ",:"):
        return func.HttpResponse(
            "a user name (up to 64 characters, no ',' or ':') is required", status_code=400
        )
    now = int(time.time())
    claims = {"nameid": name, "admin": name in _admins(), "iat": now, "exp": now + 3600}
    token = jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")
    return func.HttpResponse(
        json.dumps({"token": token, "admin": claims["admin"]}), mimetype="application/json"
    )


@app.route(route="negotiate", methods=["POST"])
@app.generic_input_binding(
    arg_name="connectionInfo",
    type="signalRConnectionInfo",
    hubName=HUB,
    connectionStringSetting=CONNECTION,
    idToken="{headers.authorization}",
    claimTypeList=["nameid", "admin"],
)
def negotiate(req: func.HttpRequest, connectionInfo: str) -> func.HttpResponse:
    scheme, _, token = req.headers.get("authorization", "").partition(" ")
    try:
        if scheme.lower() != "bearer":
            raise jwt.InvalidTokenError("not a bearer token")
        jwt.decode(token, TOKEN_SECRET, algorithms=["HS256"], options={"require": ["exp", "nameid"]})
    except jwt.InvalidTokenError as exc:
        return func.HttpResponse(f"sign in first: {exc}", status_code=401)
    return func.HttpResponse(connectionInfo, mimetype="application/json")


# --- the hub ------------------------------------------------------------------------------------


def _trigger(category: str, event: str, parameters=None):
    """The decorators of one SignalR-triggered function with its ``signalR`` output."""

    def register(fn):
        fn = app.generic_output_binding(
            arg_name="signalRMessages", type="signalR", hubName=HUB, connectionStringSetting=CONNECTION
        )(fn)
        options = {"parameterNames": parameters} if parameters else {}
        return app.generic_trigger(
            arg_name="invocation",
            type="signalRTrigger",
            hubName=HUB,
            category=category,
            event=event,
            connectionStringSetting=CONNECTION,
            **options,
        )(fn)

    return register


def _require_admin(context: dict) -> None:
    """The sample's ``[FunctionAuthorize]``: the caller's token must carry ``admin: true``."""
    if str((context.get("Claims") or {}).get("admin", "")).lower() != "true":
        raise PermissionError("Unauthorized: this needs the admin claim")


def _new_message(context: dict, text: str, **route) -> str:
    sender = context.get("UserId") or ""
    message = {"ConnectionId": context["ConnectionId"], "Sender": sender, "Text": text}
    return json.dumps({"target": "newMessage", "arguments": [message], **route})


@_trigger("connections", "connected")
def on_connected(invocation: str, signalRMessages: func.Out[str]) -> None:
    context = json.loads(invocation)
    authorized = any(k.lower() == "authorization" for k in context.get("Headers") or {})
    announcement = {"ConnectionId": context["ConnectionId"], "Authorization": authorized}
    signalRMessages.set(json.dumps({"target": "newConnection", "arguments": [announcement]}))


@_trigger("connections", "disconnected")
def on_disconnected(invocation: str, signalRMessages: func.Out[str]) -> None:
    context = json.loads(invocation)
    logging.info("%s disconnected (%s)", context["ConnectionId"], context.get("Error") or "closed")


@_trigger("messages", "broadcast", ["message"])
def broadcast(invocation: str, signalRMessages: func.Out[str]) -> None:
    context = json.loads(invocation)
    _require_admin(context)
    signalRMessages.set(_new_message(context, context["Arguments"][0]))


@_trigger("messages", "sendToGroup", ["groupName", "message"])
def send_to_group(invocation: str, signalRMessages: func.Out[str]) -> None:
    context = json.loads(invocation)
    group, text = context["Arguments"]
    signalRMessages.set(_new_message(context, text, groupName=group))


@_trigger("messages", "sendToUser", ["userName", "message"])
def send_to_user(invocation: str, signalRMessages: func.Out[str]) -> None:
    context = json.loads(invocation)
    user, text = context["Arguments"]
    signalRMessages.set(_new_message(context, text, userId=user))


@_trigger("messages", "sendToConnection", ["connectionId", "message"])
def send_to_connection(invocation: str, signalRMessages: func.Out[str]) -> None:
    context = json.loads(invocation)
    connection, text = context["Arguments"]
    signalRMessages.set(_new_message(context, text, connectionId=connection))


def _group_action(action: str, group: str, **who) -> str:
    return json.dumps({"action": action, "groupName": group, **who})


@_trigger("messages", "joinGroup", ["connectionId", "groupName"])
def join_group(invocation: str, signalRMessages: func.Out[str]) -> None:
    connection, group = json.loads(invocation)["Arguments"]
    signalRMessages.set(_group_action("add", group, connectionId=connection))


@_trigger("messages", "leaveGroup", ["connectionId", "groupName"])
def leave_group(invocation: str, signalRMessages: func.Out[str]) -> None:
    connection, group = json.loads(invocation)["Arguments"]
    signalRMessages.set(_group_action("remove", group, connectionId=connection))


@_trigger("messages", "joinUserToGroup", ["userName", "groupName"])
def join_user_to_group(invocation: str, signalRMessages: func.Out[str]) -> None:
    context = json.loads(invocation)
    _require_admin(context)
    user, group = context["Arguments"]
    signalRMessages.set(_group_action("add", group, userId=user))


@_trigger("messages", "leaveUserFromGroup", ["userName", "groupName"])
def leave_user_from_group(invocation: str, signalRMessages: func.Out[str]) -> None:
    context = json.loads(invocation)
    _require_admin(context)
    user, group = context["Arguments"]
    signalRMessages.set(_group_action("remove", group, userId=user))
