"""Command line: ``hubbub serve | demo | token | hub``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from hubbub import __version__
from hubbub.api.app import create_app
from hubbub.auth import DEV_ACCESS_KEY, client_audience, mint_client_token
from hubbub.config import ServiceConfig
from hubbub.functions.cli import add_func_parser
from hubbub.hub_cli import add_hub_parser
from hubbub.store import ConfigFileError, SettingsStore, StoreError, default_data_dir, load_config_file

__all__ = ["main"]

log = logging.getLogger("hubbub")


def _keys(args: argparse.Namespace) -> tuple[str, ...]:
    primary = args.access_key or os.environ.get("HUBBUB_ACCESS_KEY") or DEV_ACCESS_KEY
    secondary = args.secondary_key or os.environ.get("HUBBUB_SECONDARY_KEY")
    return (primary, secondary) if secondary else (primary,)


def _serve(args: argparse.Namespace) -> int:
    try:
        config = ServiceConfig(host=args.host, port=args.port, access_keys=_keys(args))
        retention = getattr(args, "reliable_retention", None)
        if retention is not None:
            if not 0 < retention <= 3600:
                raise ValueError("--reliable-retention must be more than 0 and at most 3600 seconds")
            config = dataclasses.replace(config, reliable_retention_seconds=retention)
    except ValueError as exc:
        print(f"hubbub: {exc}", file=sys.stderr)
        return 2
    try:
        hubs = load_config_file(args.config) if args.config else []
        store = SettingsStore.open(args.data_dir or default_data_dir())
    except (ConfigFileError, StoreError) as exc:
        print(f"hubbub: {exc}", file=sys.stderr)
        return 2
    try:
        for settings in hubs:  # the file wins for the hubs it names
            store.put(settings)
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover - uvloop is optional
            pass
        redis_url = getattr(args, "redis", None) or os.environ.get("HUBBUB_REDIS") or None
        cluster = (redis_url, getattr(args, "node_id", None)) if redis_url else None
        demo = getattr(args, "demo", False)
        signalr = (getattr(args, "signalr_port", None), getattr(args, "signalr_settings", None))
        return asyncio.run(_run(config, demo=demo, store=store, cluster=cluster, signalr=signalr))
    except StoreError as exc:
        print(f"hubbub: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()


def _demo_banner(config: ServiceConfig, host: str) -> None:
    endpoint = f"http://{host}:{config.port}"
    roles = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")
    token = mint_client_token(
        config.primary_key, client_audience(endpoint, "demo"), user_id="alice", roles=roles
    )
    print("\nTry it:", flush=True)
    print(
        f"  client URL (hub 'demo', user 'alice'): ws://{host}:{config.port}/client/hubs/demo?access_token={token}"
    )
    print(
        "  e.g. connect with subprotocol json.webpubsub.azure.v1 and send "
        '{"type":"joinGroup","group":"g","ackId":1}'
    )
    print("  then broadcast from an app server with azure-messaging-webpubsubservice:")
    print(
        "    WebPubSubServiceClient.from_connection_string(<connection string>, hub='demo')"
        ".send_to_all('hello', content_type='text/plain')"
    )
    print("Ctrl-C stops.", flush=True)


async def _run(
    config: ServiceConfig,
    demo: bool = False,
    store: SettingsStore | None = None,
    cluster: tuple[str, str | None] | None = None,
    signalr: tuple[int | None, str | None] = (None, None),
) -> int:
    broker = None
    if cluster is not None:  # --redis URL [--node-id ID]: one node of a cluster
        from hubbub.broker.redis import RedisBroker

        try:
            broker = RedisBroker(*cluster, reliable_retention=config.reliable_retention_seconds)
        except ValueError as exc:
            print(f"hubbub: --redis/--node-id: {exc}", file=sys.stderr)
            return 2
        print(f"hubbub: cluster node {broker.node_id} (redis {broker.display_url})", flush=True)
    app = create_app(config, store=store, broker=broker, presence=broker.presence if broker else None)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True, backlog=4096)
    try:
        await site.start()
    except OSError as exc:
        print(f"hubbub: cannot listen on {config.host}:{config.port}: {exc.strerror}", file=sys.stderr)
        await runner.cleanup()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host = "localhost" if config.host in ("127.0.0.1", "::1", "localhost") else config.host
    print(f"hubbub {__version__}: Web PubSub on http://{host}:{config.port}", flush=True)
    print(f"  connection string: {config.connection_string(host)}", flush=True)
    if config.primary_key == DEV_ACCESS_KEY:
        print("  (well-known development key: loopback only)", flush=True)
    if store is not None:
        count = len(store.list())
        print(f"  hub settings: {store.location} ({count} hub{'' if count == 1 else 's'})", flush=True)
    from hubbub.signalr.app import start_signalr  # SignalR serverless on --signalr-port (issue #6)

    try:
        signalr_runner = await start_signalr(config, *signalr)
    except (OSError, ValueError) as exc:
        print(f"hubbub: SignalR: {exc}", file=sys.stderr)
        await runner.cleanup()
        return 1
    functions = None
    if demo:
        _demo_banner(config, host)
        from hubbub.functions.demo import start_demo  # the functions host on samples/serverless-chat

        functions = await start_demo(config.connection_string(host))
    await stop.wait()
    print("hubbub: shutting down", flush=True)
    if functions is not None:
        await functions.close()
    if signalr_runner is not None:
        await signalr_runner.cleanup()
    await runner.cleanup()
    return 0


def _token(args: argparse.Namespace) -> int:
    key = _keys(args)[0]
    endpoint = args.endpoint.rstrip("/")
    token = mint_client_token(
        key,
        client_audience(endpoint, args.hub),
        user_id=args.user,
        roles=args.role or (),
        groups=args.group or (),
        minutes_to_expire=args.minutes,
    )
    ws = "ws" + endpoint[4:] if endpoint.startswith("http") else endpoint
    print(f"{ws}/client/hubs/{args.hub}?access_token={token}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubbub", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hubbub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def keys(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--access-key", help="primary access key (env HUBBUB_ACCESS_KEY; default: the dev key)"
        )
        p.add_argument("--secondary-key", help="secondary access key (env HUBBUB_SECONDARY_KEY)")

    def settings(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="PATH", help="TOML file with hub settings ([hubs.<name>] tables)")
        p.add_argument(
            "--data-dir",
            metavar="DIR",
            help=f"where hub settings are kept, ':memory:' for nowhere (default {default_data_dir()})",
        )

    def cluster(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--redis",
            metavar="URL",
            help="run as a cluster node over Redis, e.g. redis://host:6379 (env HUBBUB_REDIS)",
        )
        p.add_argument("--node-id", help="this node's name in the cluster (default: random)")

    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="Web PubSub port (default 8080)")
    serve.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    serve.add_argument(
        "--reliable-retention",
        type=float,
        metavar="SECONDS",
        help="how long a dropped reliable session waits for its client to resume it (default 30)",
    )
    keys(serve)
    settings(serve)
    cluster(serve)
    serve.add_argument("--signalr-port", type=int, help="SignalR port (default 8888; 0 disables)")
    serve.add_argument(
        "--signalr-settings", metavar="PATH", help="SignalR upstream settings (emulator settings.json)"
    )
    serve.set_defaults(func=_serve)

    demo = sub.add_parser("demo", help="run the service and print a ready-to-use client URL")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--log-level", default="INFO")
    keys(demo)
    settings(demo)
    cluster(demo)
    demo.add_argument("--signalr-port", type=int, help="SignalR port (default 8888; 0 disables)")
    demo.add_argument(
        "--signalr-settings", metavar="PATH", help="SignalR upstream settings (emulator settings.json)"
    )
    demo.set_defaults(func=_serve, demo=True)

    token = sub.add_parser("token", help="print a client access URL")
    token.add_argument("--hub", required=True)
    token.add_argument("--user", help="user id (token 'sub')")
    token.add_argument("--role", action="append", help="role, repeatable (e.g. webpubsub.joinLeaveGroup)")
    token.add_argument("--group", action="append", help="group to join on connect, repeatable")
    token.add_argument("--minutes", type=int, default=60, help="lifetime in minutes (default 60)")
    token.add_argument("--endpoint", default="http://localhost:8080", help="service endpoint")
    keys(token)
    token.set_defaults(func=_token)

    add_hub_parser(sub)
    add_func_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))
