"""Serverless chat with Azure Web PubSub: the tutorial's three functions in the Python v2 model.

* ``index``     serves the chat page.
* ``negotiate`` gives a signed-in user the URL to connect to Web PubSub (hub ``simplechat``); the
  user id is the App Service Authentication principal name.
* ``message``   runs for every message a client sends: it broadcasts ``[user] text`` to everyone
  and answers the sender ``[SYSTEM] ack``.

Nothing here is specific to a host: the same code runs on Azure Functions with Azure Web PubSub
and locally with ``hubbub func start``.
"""

import json
import os

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

HUB = "simplechat"


@app.route(route="index", methods=["GET", "POST"])
def index(req: func.HttpRequest) -> func.HttpResponse:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "index.html")
    with open(path, encoding="utf-8") as f:
        return func.HttpResponse(f.read(), mimetype="text/html")


@app.route(route="negotiate", methods=["GET", "POST"])
@app.generic_input_binding(
    arg_name="connection",
    type="webPubSubConnection",
    hub=HUB,
    userId="{headers.x-ms-client-principal-name}",
)
def negotiate(req: func.HttpRequest, connection: str) -> func.HttpResponse:
    return func.HttpResponse(connection, mimetype="application/json")


@app.generic_trigger(
    arg_name="request", type="webPubSubTrigger", hub=HUB, eventName="message", eventType="user"
)
@app.generic_output_binding(arg_name="actions", type="webPubSub", hub=HUB)
def message(request: str, actions: func.Out[str]):
    event = json.loads(request)
    user = event["connectionContext"]["userId"]
    actions.set(
        json.dumps({"actionName": "sendToAll", "data": f"[{user}] {event['data']}", "dataType": "text"})
    )
    # the user-event response goes back to the sender only
    return {"data": "[SYSTEM] ack", "dataType": "text"}
