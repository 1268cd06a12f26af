"""``hubbub serve --workers N``: N serving processes on one port, sharing state through a broker.

Each worker is a full hubbub node (its own event loop on its own core) that binds the same address
with ``SO_REUSEPORT``, so the kernel spreads new connections over the workers. Everything that
crosses connections (broadcasts, groups, users, presence, REST queries) already goes through the
broker, so the workers are simply the nodes of a cluster on one machine:

* with ``--redis URL`` (or ``HUBBUB_REDIS``) they use that Redis;
* without it, a private ``redis-server`` is started for them on a unix socket in a fresh temporary
  directory (no TCP port, no persistence) and stopped with them; when ``redis-server`` is not
  installed, ``--workers`` refuses to start (exit status 2) rather than serve N disconnected halves.

The parent process only supervises: it forwards SIGINT/SIGTERM, and when one worker dies it stops
the others (a half-served port is worse than a clear failure under a service manager).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

__all__ = ["MAX_WORKERS", "Worker", "serve_workers"]

#: Upper bound of ``--workers`` (each worker is a process with its own connections and memory).
MAX_WORKERS = 64
_REDIS_START_SECONDS = 10.0
#: A stopping worker gets this long (its own graceful shutdown takes at most ~5 s) before SIGKILL.
_STOP_SECONDS = 15.0
_POLL_SECONDS = 0.1
#: Liveness TTL of a worker as a cluster node. Workers of one machine live and die together (the
#: supervisor stops them all when one dies), so a worker starved of CPU for a few seconds (e.g. while
#: thousands of connections arrive at once) must not be declared dead by its siblings.
WORKER_NODE_TTL = 30.0


@dataclass(frozen=True)
class Worker:
    """What one worker needs to know: its number (0 runs SignalR), the shared broker, its node id."""

    index: int
    redis_url: str
    node_id: str | None


def _error(message: str) -> int:
    print(f"hubbub: {message}", file=sys.stderr)
    return 2


@contextlib.contextmanager
def _private_redis(binary: str) -> Iterator[str]:
    """A ``redis-server`` on a unix socket only, for this process tree; yields its ``unix://`` URL."""
    workdir = tempfile.mkdtemp(prefix="hubbub-workers-")
    path = os.path.join(workdir, "redis.sock")
    cmd = [
        binary,
        "--port",
        "0",
        "--unixsocket",
        path,
        "--unixsocketperm",
        "700",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
        "--loglevel",
        "warning",
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + _REDIS_START_SECONDS
        while True:
            if proc.poll() is not None:
                raise OSError(f"redis-server exited with status {proc.returncode}")
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(path)
                break
            if time.monotonic() > deadline:
                raise OSError(f"redis-server did not listen on {path} within {_REDIS_START_SECONDS:.0f}s")
            time.sleep(0.05)
        yield f"unix://{path}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def serve_workers(args: argparse.Namespace, count: int, serve: Callable[[Worker], int]) -> int:
    """Run ``serve`` in ``count`` forked workers until a signal or until one of them exits."""
    if not 1 <= count <= MAX_WORKERS:
        return _error(f"--workers must be between 1 and {MAX_WORKERS}, not {count}")
    if getattr(args, "demo", False):
        return _error("--workers is for `hubbub serve`, not `hubbub demo`")
    if args.port == 0:
        return _error("--workers needs a fixed --port (every worker listens on the same one)")
    if not hasattr(os, "fork") or not hasattr(socket, "SO_REUSEPORT"):
        return _error("--workers needs fork() and SO_REUSEPORT (Linux, BSD, macOS)")
    redis_url = getattr(args, "redis", None) or os.environ.get("HUBBUB_REDIS") or None
    node_id = getattr(args, "node_id", None)
    if redis_url is not None:
        return _supervise(count, serve, redis_url, node_id)
    binary = shutil.which("redis-server")
    if binary is None:
        return _error(
            "--workers needs a broker the workers share: pass --redis URL, or install redis-server "
            "(then a private one is started on a unix socket)"
        )
    try:
        with _private_redis(binary) as url:
            print(f"hubbub: {count} workers sharing a private redis-server ({url})", flush=True)
            return _supervise(count, serve, url, node_id)
    except OSError as exc:
        return _error(f"--workers: cannot start redis-server: {exc}")


def _supervise(count: int, serve: Callable[[Worker], int], redis_url: str, node_id: str | None) -> int:
    children: dict[int, int] = {}  # pid -> worker index
    supervisor = os.getpid()
    stop_requested: float | None = None

    def stop(signum: int, _: FrameType | None) -> None:
        nonlocal stop_requested
        if os.getpid() != supervisor:  # a worker between fork() and resetting its handlers
            raise SystemExit(128 + signum)
        if stop_requested is None:
            stop_requested = time.monotonic()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        for index in range(count):
            worker = Worker(index, redis_url, f"{node_id}-{index + 1}" if node_id else None)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the worker: default signal dispositions, its own event loop
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                code = 1
                try:
                    code = serve(worker)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            children[pid] = index
            print(f"hubbub: worker {index + 1}/{count} is pid {pid}", flush=True)
        while children:
            for pid in list(children):
                done, wait_status = os.waitpid(pid, os.WNOHANG)
                if done == 0:
                    continue
                index = children.pop(pid)
                if stop_requested is None:
                    code = os.waitstatus_to_exitcode(wait_status)
                    print(f"hubbub: worker {index + 1} exited ({code}): stopping the others", file=sys.stderr)
                    status = 1
                    stop(signal.SIGTERM, None)
            if stop_requested is not None and time.monotonic() - stop_requested > _STOP_SECONDS:
                for pid in children:  # a worker that does not finish its shutdown in time
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(_POLL_SECONDS)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
