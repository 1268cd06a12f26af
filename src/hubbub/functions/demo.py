"""``hubbub demo``'s functions part: the serverless chat sample on :7071, wired to the service.

The host is started on ``samples/serverless-chat`` with ``WebPubSubConnectionString`` pointing at
the service, and each hub the app's triggers listen on gets an event handler
``<host>/runtime/webhooks/webpubsub?code=<system key>`` for exactly the events the app handles,
through the service's admin REST API (what ``hubbub hub create`` uses).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hubbub.functions.appconfig import DEFAULT_PORT, ConfigError
from hubbub.functions.host import FunctionsHost, HostOptions
from hubbub.hub_cli import HubCliError, admin_request

__all__ = ["SAMPLE_DIR", "configure_hubs", "start_demo"]

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "samples" / "serverless-chat"


def _handler(host: FunctionsHost, system: set[str], user: set[str]) -> dict[str, Any]:
    return {
        "urlTemplate": host.webpubsub_webhook,
        "userEventPattern": ",".join(sorted(user)),
        "systemEvents": sorted(system),
        "auth": {"type": "None"},
    }


def configure_hubs(host: FunctionsHost, connection_string: str) -> list[str]:
    """Point each hub the app listens on at the host; the hubs configured (blocking)."""
    assert host.webpubsub is not None
    hubs = []
    for hub, (system, user) in sorted(host.webpubsub.handled_events().items()):
        try:
            current = admin_request(connection_string, "GET", hub).get("properties") or {}
        except HubCliError as exc:
            if exc.status != 404:
                raise
            current = {"anonymousConnectPolicy": "deny"}
        properties = {**current, "eventHandlers": [_handler(host, system, user)]}
        admin_request(connection_string, "PUT", hub, properties)
        hubs.append(hub)
    return hubs


async def start_demo(
    connection_string: str, script_root: Path = SAMPLE_DIR, port: int = DEFAULT_PORT
) -> FunctionsHost | None:
    """Start the functions host for the demo and print what to open; None if it could not start."""
    if not (script_root / "host.json").is_file():
        print(f"  (functions demo skipped: no sample app at {script_root})", flush=True)
        return None
    settings = {"WebPubSubConnectionString": connection_string}
    try:
        host = FunctionsHost(HostOptions(script_root, port=port, settings=settings))
    except (ConfigError, ValueError, OSError) as exc:
        print(f"  functions host not started: {exc}", flush=True)
        return None
    try:
        await asyncio.to_thread(host.load)
        await host.start()
    except (ConfigError, ValueError, OSError) as exc:
        print(f"  functions host not started: {exc}", flush=True)
        await host.close()
        return None
    try:
        hubs = await asyncio.to_thread(configure_hubs, host, connection_string)
    except HubCliError as exc:
        print(f"  functions host: cannot configure the hub settings: {exc}", flush=True)
        await host.close()
        return None
    for name, why in host.errors:
        print(f"  functions host: {name} not loaded: {why}", flush=True)
    print(f"\nServerless chat (functions host on {host.base_url}, hub {', '.join(hubs)}):", flush=True)
    print(f"  open {host.base_url}/api/index in two browser windows (or one private window)", flush=True)
    return host
