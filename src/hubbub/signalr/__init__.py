"""Azure SignalR Service, serverless mode (issue #6): negotiate, the JSON and MessagePack hub
protocols over WebSockets / Server-Sent Events / long polling, and the REST API.

Layers, as for Web PubSub: pure codecs (:mod:`.messages`, :mod:`.protocol_json`,
:mod:`.protocol_msgpack`, :mod:`.codecs`, :mod:`.tokens`, :mod:`.usergroups`), the connection
state machine (:mod:`.connection`) and registry (:mod:`.service`), the only socket code
(:mod:`.transports`), the REST API (:mod:`.rest`) and the assembly (:mod:`.app`).
"""
