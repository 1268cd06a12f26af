"""``hubbub demo``'s functions part: a sample app on :7071, wired to the service.

``hubbub demo`` (chat): the host is started on ``samples/serverless-chat`` with
``WebPubSubConnectionString`` pointing at the service, and each hub the app's triggers listen on gets
an event handler ``<host>/runtime/webhooks/webpubsub?code=<system key>`` for exactly the events the
app handles, through the service's admin REST API (what ``hubbub hub create`` uses).

``hubbub demo signalr``: the host is loaded on ``samples/signalr-chat`` with
``AzureSignalRConnectionString`` pointing at SignalR (:8888) first, because the service reads its
upstream settings at start: a settings file (the emulator's ``settings.json`` shape, what
``--signalr-settings`` takes) with one ``*/*/*`` template to
``<host>/runtime/webhooks/signalr?code=<system key>`` and ``ManagedIdentity`` auth is written to a
temporary folder; the host then requires and checks the upstream token (audience: the host's URL).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubbub.functions.appconfig import DEFAULT_PORT, ConfigError
from hubbub.functions.host import FunctionsHost, HostOptions
from hubbub.functions.signalr import AUDIENCE_SETTING, REQUIRED_SETTING
from hubbub.hub_cli import HubCliError, admin_request

__all__ = [
    "SAMPLE_DIR",
    "SIGNALR_SAMPLE_DIR",
    "SignalRDemo",
    "configure_hubs",
    "prepare_signalr_demo",
    "start_demo",
    "upstream_settings",
]

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "samples" / "serverless-chat"
SIGNALR_SAMPLE_DIR = Path(__file__).resolve().parents[3] / "samples" / "signalr-chat"


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


# --- hubbub demo signalr --------------------------------------------------------------------------


def upstream_settings(url: str, resource: str) -> dict[str, Any]:
    """One template for every hub, category and event, with the upstream token (emulator shape)."""
    template = {
        "UrlTemplate": url,
        "HubPattern": "*",
        "CategoryPattern": "*",
        "EventPattern": "*",
        "Auth": {"Type": "ManagedIdentity", "ManagedIdentity": {"Resource": resource}},
    }
    return {"UpstreamSettings": {"Templates": [template]}}


@dataclass
class SignalRDemo:
    host: FunctionsHost
    #: the upstream settings file to start SignalR with (``--signalr-settings``)
    settings_path: Path

    async def start(self) -> FunctionsHost | None:
        """Serve the loaded app and print what to open; None (host closed) if it cannot listen."""
        try:
            await self.host.start()
        except OSError as exc:
            print(f"  functions host not started: {exc}", flush=True)
            self.discard()
            return None
        for name, why in self.host.errors:
            print(f"  functions host: {name} not loaded: {why}", flush=True)
        base = self.host.base_url
        print(f"\nSignalR chat room (functions host on {base}, upstream {self.host.signalr_webhook}):")
        print(f"  open {base}/api/index in two browser windows (or one private window);", flush=True)
        print("  'alice' and 'admin' may broadcast (app setting ChatAdmins)", flush=True)
        return self.host

    def discard(self) -> None:
        shutil.rmtree(self.settings_path.parent, ignore_errors=True)


async def prepare_signalr_demo(
    connection_string: str,
    script_root: Path = SIGNALR_SAMPLE_DIR,
    port: int = DEFAULT_PORT,
    keys_dir: Path | None = None,
) -> SignalRDemo | None:
    """Load the SignalR chat sample and write the upstream settings that point SignalR at it."""
    if not (script_root / "host.json").is_file():
        print(f"  (SignalR demo skipped: no sample app at {script_root})", flush=True)
        return None
    try:
        host = FunctionsHost(HostOptions(script_root, port=port, keys_dir=keys_dir))
        audience = host.base_url  # what the service signs as 'aud' (the upstream's Resource)
        host.options.settings.update(
            {
                "AzureSignalRConnectionString": connection_string,
                REQUIRED_SETTING: "true",
                AUDIENCE_SETTING: audience,
            }
        )
        await asyncio.to_thread(host.load)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"  functions host not started: {exc}", flush=True)
        return None
    folder = Path(tempfile.mkdtemp(prefix="hubbub-signalr-demo-"))
    path = folder / "settings.json"
    path.write_text(json.dumps(upstream_settings(host.signalr_webhook, audience), indent=2), encoding="utf-8")
    return SignalRDemo(host, path)
