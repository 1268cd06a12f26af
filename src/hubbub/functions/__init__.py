"""The functions host: runs an unchanged Azure Functions Python app beside the service.

It talks to the service only through public contracts (CloudEvents webhooks in, REST out, client
tokens signed with the connection string's key), so the same app and host also work against Azure
Web PubSub. Modules: ``appconfig`` (host.json, local.settings.json, settings), ``loader`` (v1 and v2
apps), ``routes`` (route templates), ``keys``, ``expressions`` (binding expressions), ``invoke``,
``http`` (HTTP triggers), ``wps_events`` / ``webpubsub`` / ``wps_actions`` (Web PubSub bindings),
``easyauth`` (``/.auth``), ``host`` (assembly), ``cli`` (``hubbub func start``), ``demo``.
"""
