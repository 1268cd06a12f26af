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
from typing import TYPE_CHECKING

from aiohttp import web

from hubbub import __version__
from hubbub.api.app import create_app
from hubbub.auth import DEV_ACCESS_KEY, client_audience, mint_client_token
from hubbub.config import ServiceConfig
from hubbub.functions.appconfig import DEFAULT_PORT as DEFAULT_FUNCTIONS_PORT
from hubbub.functions.cli import add_func_parser
from hubbub.hub_cli import add_hub_parser, add_signalr_parser
from hubbub.store import (
    ConfigFile,
    ConfigFileError,
    SettingsBackend,
    SettingsStore,
    StoreError,
    default_data_dir,
    load_config,
)

if TYPE_CHECKING:
    from hubbub.broker.redis import RedisBroker

if TYPE_CHECKING:
    from hubbub.workers import Worker

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
    workers = getattr(args, "workers", 1)
    if workers != 1:
        from hubbub.workers import serve_workers

        return serve_workers(args, workers, lambda worker: _serve_one(args, config, worker))
    return _serve_one(args, config)


def _serve_one(args: argparse.Namespace, config: ServiceConfig, worker: Worker | None = None) -> int:
    """One serving process: the only one, or worker ``worker`` of ``--workers N``."""
    data_dir = args.data_dir or default_data_dir()
    redis_url = getattr(args, "redis", None) or os.environ.get("HUBBUB_REDIS") or None
    if worker is not None:  # the workers share the port and the broker (and so the settings in Redis)
        redis_url = worker.redis_url
    try:
        file = load_config(args.config) if args.config else ConfigFile([])
        # a cluster keeps its settings in Redis (opened in _run); a single node in SQLite
        store = None if redis_url else SettingsStore.open(data_dir)
    except (ConfigFileError, StoreError) as exc:
        print(f"hubbub: {exc}", file=sys.stderr)
        return 2
    try:
        if store is not None:
            _apply_config_file(store, file)
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover - uvloop is optional
            pass
        cluster = (redis_url, getattr(args, "node_id", None)) if redis_url else None
        demo = getattr(args, "sample", None) if getattr(args, "demo", False) else None
        from hubbub.signalr.app import secrets_file

        signalr = (
            getattr(args, "signalr_port", None),
            getattr(args, "signalr_settings", None),
            secrets_file(getattr(args, "secrets_file", None), data_dir),
        )
        if worker is not None:  # SignalR runs in the first worker only
            cluster = (worker.redis_url, worker.node_id)
            if worker.index > 0:
                signalr = (0, None, None)
        return asyncio.run(
            _run(
                config,
                demo=demo,
                store=store,
                cluster=cluster,
                signalr=signalr,
                config_file=file,
                functions_port=getattr(args, "functions_port", None),
                reuse_port=worker is not None,
            )
        )
    except StoreError as exc:
        print(f"hubbub: {exc}", file=sys.stderr)
        return 2
    finally:
        if store is not None:
            store.close()


def _apply_config_file(store: SettingsStore, file: ConfigFile) -> None:
    for settings in file.hubs:  # the file wins for the hubs it names
        store.put(settings)
    if file.signalr_upstream is not None:
        store.put_signalr_upstream(file.signalr_upstream)


async def _apply_config_file_async(store: SettingsBackend, file: ConfigFile) -> None:
    for settings in file.hubs:
        await store.save(settings)
    if file.signalr_upstream is not None:
        await store.save_signalr_upstream(file.signalr_upstream)


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
    demo: str | None = None,
    store: SettingsBackend | None = None,
    cluster: tuple[str, str | None] | None = None,
    signalr: tuple[int | None, str | None, str | None] = (None, None, None),
    config_file: ConfigFile | None = None,
    functions_port: int | None = None,
    reuse_port: bool = False,
) -> int:
    broker = None
    if cluster is not None:  # --redis URL [--node-id ID]: one node of a cluster
        from hubbub.broker.redis import NODE_TTL, RedisBroker
        from hubbub.store_redis import RedisSettingsStore
        from hubbub.workers import WORKER_NODE_TTL

        # the workers of --workers N (they share the port) tolerate each other's stalls longer
        node_ttl = WORKER_NODE_TTL if reuse_port else NODE_TTL
        try:
            broker = RedisBroker(
                *cluster, node_ttl=node_ttl, reliable_retention=config.reliable_retention_seconds
            )
        except ValueError as exc:
            print(f"hubbub: --redis/--node-id: {exc}", file=sys.stderr)
            return 2
        print(f"hubbub: cluster node {broker.node_id} (redis {broker.display_url})", flush=True)
        redis_store = RedisSettingsStore(cluster[0], display_url=broker.display_url)
        await redis_store.start()
        try:
            if config_file is not None:
                await _apply_config_file_async(redis_store, config_file)
            return await _run_node(config, demo, redis_store, broker, signalr, functions_port, reuse_port)
        except StoreError as exc:
            print(f"hubbub: {exc}", file=sys.stderr)
            return 2
        finally:
            await redis_store.aclose()
    return await _run_node(config, demo, store, broker, signalr, functions_port, reuse_port)


async def _run_node(
    config: ServiceConfig,
    demo: str | None,
    store: SettingsBackend | None,
    broker: RedisBroker | None,
    signalr: tuple[int | None, str | None, str | None],
    functions_port: int | None = None,
    reuse_port: bool = False,
) -> int:
    presence = broker.presence if broker is not None else None
    app = create_app(config, store=store, broker=broker, presence=presence)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(
        runner, config.host, config.port, reuse_address=True, reuse_port=reuse_port or None, backlog=4096
    )
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

    signalr_demo = None
    if demo == "signalr":  # the chat room sample: its upstream settings exist before SignalR starts
        from hubbub.functions.demo import prepare_signalr_demo
        from hubbub.signalr.app import connection_string
        from hubbub.signalr.config import DEFAULT_SIGNALR_PORT

        if signalr[0] == 0:
            print("hubbub: demo signalr needs SignalR (--signalr-port is 0)", file=sys.stderr)
            await runner.cleanup()
            return 2
        signalr_port = signalr[0] or DEFAULT_SIGNALR_PORT
        signalr_demo = await prepare_signalr_demo(
            connection_string(host, signalr_port, config.primary_key),
            port=functions_port or DEFAULT_FUNCTIONS_PORT,
        )
        if signalr_demo is not None:
            if signalr[1]:
                print(f"  (demo signalr: {signalr[1]} replaced by the demo's upstream settings)", flush=True)
            signalr = (signalr_port, str(signalr_demo.settings_path), signalr[2])
    try:
        port, settings_path, secrets_path = signalr
        sr_cluster = (broker.url, broker.node_id) if broker is not None else None
        signalr_runner = await start_signalr(config, port, settings_path, store, secrets_path, sr_cluster)
    except (OSError, ValueError) as exc:
        print(f"hubbub: SignalR: {exc}", file=sys.stderr)
        await runner.cleanup()
        if signalr_demo is not None:
            await signalr_demo.host.close()
            signalr_demo.discard()
        return 1
    functions = None
    if signalr_demo is not None:
        functions = await signalr_demo.start()
    elif demo == "chat":
        _demo_banner(config, host)
        from hubbub.functions.demo import start_demo  # the functions host on samples/serverless-chat

        functions = await start_demo(
            config.connection_string(host), port=functions_port or DEFAULT_FUNCTIONS_PORT
        )
    await stop.wait()
    print("hubbub: shutting down", flush=True)
    if signalr_runner is not None:
        await signalr_runner.cleanup()
    if functions is not None:
        await functions.close()
    if signalr_demo is not None:
        signalr_demo.discard()
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
            help="run as a cluster node over Redis, e.g. redis://host:6379, or a Redis watched by Sentinel: "
            "redis+sentinel://host:26379[,host:26379]/primary-name (env HUBBUB_REDIS)",
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
        "--signalr-settings",
        metavar="PATH",
        help="SignalR upstream settings (emulator settings.json or ARM JSON); replaces the stored ones",
    )
    serve.add_argument(
        "--secrets-file",
        metavar="PATH",
        help="JSON {name: value} for {@Microsoft.KeyVault(SecretUri=...)} references in SignalR "
        "upstream URLs (env HUBBUB_SECRETS_FILE; default DATA_DIR/secrets.json; HUBBUB_SECRET_<NAME> wins)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve from N processes sharing the port (SO_REUSEPORT) and one broker: --redis, or a "
        "private redis-server started on a unix socket (default 1)",
    )
    serve.set_defaults(func=_serve)

    demo = sub.add_parser(
        "demo",
        help="run the service with a sample app: 'chat' (Web PubSub, default) or 'signalr'",
        description="Run the service and a sample on the functions host (:7071): 'chat' is the Web PubSub "
        "serverless chat (samples/serverless-chat), 'signalr' the SignalR chat room "
        "(samples/signalr-chat) with SignalR on :8888 and its upstream pointed at the host.",
    )
    demo.add_argument("sample", nargs="?", choices=("chat", "signalr"), default="chat")
    demo.add_argument(
        "--functions-port", type=int, help=f"the functions host's port (default {DEFAULT_FUNCTIONS_PORT})"
    )
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
    add_signalr_parser(sub)
    add_func_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))
