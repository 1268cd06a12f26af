"""``hubbub func start``: run an Azure Functions Python app (flags as Core Tools' ``func start``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

__all__ = ["add_func_parser"]


def _start(args: argparse.Namespace) -> int:
    from hubbub.functions.appconfig import ConfigError
    from hubbub.functions.host import HostOptions, run_host

    cors = None if args.cors is None else tuple(o.strip() for o in args.cors.split(",") if o.strip())
    options = HostOptions(
        script_root=Path(args.script_root or ".").resolve(),
        host=args.host,
        port=args.port,
        enforce_keys=not args.no_auth,
        keys_dir=Path(args.keys_dir).resolve() if args.keys_dir else None,
        cors=cors,
        cors_credentials=True if args.cors_credentials else None,
    )
    try:
        return asyncio.run(run_host(options))
    except (ConfigError, ValueError, OSError) as exc:  # the app's config, its keys files
        print(f"hubbub: {exc}", file=sys.stderr)
        return 2


def add_func_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``func start`` to the ``hubbub`` command line."""
    func = subparsers.add_parser("func", help="run an Azure Functions Python app (like Core Tools' func)")
    actions = func.add_subparsers(dest="func_action", required=True, metavar="ACTION")
    start = actions.add_parser(
        "start",
        help="serve the function app in --script-root (default: the current folder)",
        description="Serve an Azure Functions Python app (v2 function_app.py or v1 function.json folders) "
        "with HTTP triggers, timers, and the Web PubSub and SignalR bindings.",
    )
    start.add_argument("--script-root", metavar="DIR", help="the function app folder (default: .)")
    start.add_argument(
        "--port", type=int, help="port (default: Host.LocalHttpPort of local.settings.json, or 7071)"
    )
    start.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    start.add_argument("--cors", metavar="ORIGINS", help="comma-separated allowed origins, or '*'")
    start.add_argument(
        "--cors-credentials", action="store_true", help="allow credentialed cross-origin requests"
    )
    start.add_argument(
        "--no-auth",
        action="store_true",
        help="accept requests without keys whatever the authLevel (what Core Tools does locally)",
    )
    start.add_argument("--keys-dir", metavar="DIR", help="where the app's keys are kept")
    start.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    start.set_defaults(func=_start)
