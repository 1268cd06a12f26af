"""`make bench`: hubbub's benchmark suite (issue #8), with its peers measured in the same run.

Every fan-out scenario broadcasts messages carrying a marker ``#<index>:`` through an HTTP trigger (for
hubbub: the REST API) to N idle WebSocket clients held by the compiled epoll load generator
(bench/loadgen.c, built with ``cc`` into bench/.build/), which records when the last copy of each message
arrived. The server under test runs pinned to CPU 0, the load generator (and this driver) to CPU 1. Each
measurement has a warm-up round (which also sizes the rounds to ~1.5 s each), then ``--repeat`` rounds;
min / median / max are reported with the server's and the load generator's CPU share and the busy share
of each core, so a reader can tell whose CPU ran out.

Scenarios: broadcast (REST -> all, 100 B at N = 1,000 and 5,000, hubbub and every peer; 2 KB in Azure
units), group send, send to user, client-originated group send, upstream echo (user event -> event
handler -> reply to the sender), reliable fan-out, memory per idle connection, multi-worker (when
``hubbub serve --workers`` exists) and cross-node (3 ``--redis`` nodes).

Peers (minimal broadcast servers in bench/peers/: Node ws, Node socket.io, python-socketio, aiohttp,
picows) are installed by the bench on first run into bench/.peers/ (a venv and an npm folder, never
project dependencies). Results: a Markdown table printed and written to bench/results/latest.md, the
raw figures to latest.json and a chart to latest.png (matplotlib, from the peers' venv).

    .venv/bin/python bench/run.py            # the default run, 3-5 minutes here
    .venv/bin/python bench/run.py --full     # + 100k idle connections held for 10 minutes
    .venv/bin/python bench/run.py --smoke    # seconds, tiny N, no install, no pinning (make test)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS_SRC = BENCH / "peers"
PEERS_ENV = BENCH / ".peers"
sys.path.insert(0, str(ROOT))
from tests.support.server import DEV_KEY, free_port, wait_for_port  # noqa: E402

HUB = "bench"
TICKS = os.sysconf("SC_CLK_TCK")
PLAIN = "json.webpubsub.azure.v1"
RELIABLE = "json.reliable.webpubsub.azure.v1"
PER_PROCESS_CONNECTIONS = 19_000  # open files are capped at 20,000 per process here
ROUND_SECONDS = 1.5


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- CPU


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its descendants (a multi-worker server counts whole)."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def rss_kib(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def core_times() -> list[tuple[int, int]]:
    """(busy, total) jiffies per core from /proc/stat."""
    out = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            v = [int(x) for x in line.split()[1:]]
            idle = v[3] + v[4]
            out.append((sum(v) - idle, sum(v)))
    return out


def core_busy(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> list[float]:
    return [100.0 * (a[0] - b[0]) / max(1, a[1] - b[1]) for b, a in zip(before, after, strict=False)]


# ----------------------------------------------------------------------------------------- processes


def build_loadgen() -> Path:
    source = BENCH / "loadgen.c"
    binary = BENCH / ".build" / "loadgen"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        binary.parent.mkdir(exist_ok=True)
        subprocess.run(["cc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


class LoadGen:
    """N WebSocket clients in one loadgen process (bench/loadgen.c); see its header for the protocol."""

    def __init__(
        self,
        n: int,
        port: int,
        path: str,
        protocol: str,
        cpu: int | None,
        *,
        source: str | None = None,
        socketio: bool = False,
        echo: bool = False,
    ) -> None:
        self.n = n
        cmd = [str(build_loadgen()), "127.0.0.1", str(port), path, str(n), protocol]
        if source:
            cmd += ["-b", source]
        if socketio:
            cmd.append("-s")
        if echo:
            cmd.append("-e")
        cmd = pinned(cmd, cpu)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ready(self) -> None:
        if self.line() != "READY":
            raise RuntimeError("loadgen did not get ready")

    def line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"loadgen exited with {self.proc.wait()} (a connection failed or was closed)")
        return line.strip()

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def expect(self, messages: int) -> None:
        self.send(f"EXPECT {messages}")
        if self.line() != "GO":
            raise RuntimeError("loadgen did not start the round")

    def results(self, messages: int) -> tuple[dict[int, float], float]:
        """Per message index: time.monotonic() of the last receipt; and loadgen CPU seconds."""
        _, _, cpu = self.line().split()
        receipts = {}
        for _ in range(messages):
            index, ns = self.line().split()
            receipts[int(index)] = int(ns) / 1e9
        return receipts, float(cpu)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.send("QUIT")
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def open_loadgens(
    n: int, port: int, path: str, protocol: str, cpu: int | None, socketio: bool = False
) -> list[LoadGen]:
    """N clients over as many loadgen processes / 127.0.0.x source addresses as the fd cap needs."""
    count = max(1, -(-n // PER_PROCESS_CONNECTIONS))
    sizes = [n // count + (1 if i < n % count else 0) for i in range(count)]
    gens = [
        LoadGen(
            size,
            port,
            path,
            protocol,
            cpu,
            source=f"127.0.0.{i + 2}" if count > 1 else None,
            socketio=socketio,
        )
        for i, size in enumerate(sizes)
    ]
    try:
        for g in gens:
            g.ready()
    except BaseException:
        for g in gens:
            g.close()
        raise
    return gens


@contextlib.contextmanager
def paused(pids: list[int]) -> Iterator[None]:
    """SIGSTOP these processes for the duration (SIGCONT after, whatever happens)."""
    stopped = []
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def stop(proc: subprocess.Popen[Any]) -> None:
    """Stop a server and everything it started (a multi-process server's workers and helpers too)."""
    if proc.poll() is not None:
        return
    descendants = process_tree(proc.pid)[1:]
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    left = [pid for pid in descendants if Path(f"/proc/{pid}").exists()]
    for sig in (signal.SIGTERM, signal.SIGKILL):  # whatever the server left behind
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [pid for pid in left if _running(pid)]
        if not left:
            break
        log(f"  processes left behind by the server: {left} ({sig.name} sent)")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    """``cmd`` on one core, or on every core when ``cpu`` is None (the driver itself is pinned to CPU 1,
    and children inherit that affinity unless told otherwise)."""
    if shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", str(cpu) if cpu is not None else f"0-{(os.cpu_count() or 1) - 1}", *cmd]


def token(aud: str, **claims: Any) -> str:
    return jwt.encode({"aud": aud, "exp": time.time() + 7200, **claims}, DEV_KEY, algorithm="HS256")


# ------------------------------------------------------------------------------------------- targets


@dataclass
class Target:
    """A running broadcast server: where clients connect and where the trigger POSTs."""

    name: str
    proc: subprocess.Popen[Any]
    ws_port: int
    ws_path: str
    protocol: str
    trigger_url: str
    headers: dict[str, str]
    socketio: bool = False
    extra: list[subprocess.Popen[Any]] = field(default_factory=list)

    def close(self) -> None:
        stop(self.proc)
        for p in self.extra:
            stop(p)

    def cpu(self) -> float:
        """CPU seconds of the server: its process tree and any helper processes (other nodes, Redis)."""
        return sum(cpu_seconds(p.pid) for p in (self.proc, *self.extra))


def hubbub_cmd(port: int, *more: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hubbub",
        "serve",
        "--port",
        str(port),
        "--log-level",
        "WARNING",
        "--data-dir",
        ":memory:",
        "--signalr-port",
        "0",
        *more,
    ]


def client_path(port: int, **claims: Any) -> str:
    aud = f"http://localhost:{port}/client/hubs/{HUB}"
    return f"/client/hubs/{HUB}?access_token={token(aud, **claims)}"


def rest(port: int, route: str = "") -> tuple[str, dict[str, str]]:
    url = f"http://127.0.0.1:{port}/api/hubs/{HUB}{route}/:send?api-version=2024-12-01"
    return url, {"Authorization": f"Bearer {token(url)}", "Content-Type": "text/plain"}


def start_hubbub(
    cpu: int | None,
    protocol: str = PLAIN,
    route: str = "",
    claims: dict[str, Any] | None = None,
    more: tuple[str, ...] = (),
) -> Target:
    port = free_port()
    proc = subprocess.Popen(pinned(hubbub_cmd(port, *more), cpu), stdout=subprocess.DEVNULL)
    wait_for_port(port)
    if "--workers" in more:  # the port answers once the first worker listens: give the others time
        time.sleep(3)
    url, headers = rest(port, route)
    return Target("hubbub", proc, port, client_path(port, **(claims or {})), protocol, url, headers)


PEERS: dict[str, tuple[str, bool]] = {  # name -> (file in bench/peers, speaks Socket.IO)
    "Node ws": ("node_ws.js", False),
    "Node socket.io": ("node_socketio.js", True),
    "python-socketio": ("python_socketio_server.py", True),
    "aiohttp": ("aiohttp_server.py", False),
    "picows": ("picows_server.py", False),
}


def start_peer(name: str, cpu: int | None) -> Target:
    script, socketio = PEERS[name]
    ws_port, http_port = free_port(), free_port()
    if script.endswith(".js"):
        cmd = ["node", str(PEERS_SRC / script)]
        env = {**os.environ, "NODE_PATH": str(PEERS_ENV / "node" / "node_modules")}
    else:
        cmd = [str(PEERS_ENV / "venv" / "bin" / "python"), str(PEERS_SRC / script)]
        env = dict(os.environ)
    proc = subprocess.Popen(
        pinned([*cmd, str(ws_port), str(http_port)], cpu), env=env, stdout=subprocess.DEVNULL
    )
    wait_for_port(ws_port)
    wait_for_port(http_port)
    path = "/socket.io/?EIO=4&transport=websocket" if socketio else "/ws"
    return Target(
        name,
        proc,
        ws_port,
        path,
        "-",
        f"http://127.0.0.1:{http_port}/broadcast",
        {"Content-Type": "text/plain"},
        socketio=socketio,
    )


def peers_ready(install: bool) -> str | None:
    """None when the peers' environment is usable (installing it if ``install``), else why not."""
    venv_python = PEERS_ENV / "venv" / "bin" / "python"
    node_modules = PEERS_ENV / "node" / "node_modules"
    stamp = PEERS_ENV / ".installed"
    wanted = (PEERS_SRC / "requirements.txt").read_text() + (PEERS_SRC / "package.json").read_text()
    if stamp.exists() and stamp.read_text() == wanted:
        return None
    if not install:
        return "the peers' environment (bench/.peers/) is not installed: `make bench` installs it"
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm are not installed"
    log("installing the peers into bench/.peers/ (once) ...")
    PEERS_ENV.mkdir(exist_ok=True)
    if not venv_python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_ENV / "venv")], check=True)
    subprocess.run(
        [str(venv_python), "-m", "pip", "install", "--quiet", "-r", str(PEERS_SRC / "requirements.txt")],
        check=True,
    )
    node_modules.parent.mkdir(exist_ok=True)
    shutil.copy(PEERS_SRC / "package.json", node_modules.parent / "package.json")
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=node_modules.parent, check=True
    )
    stamp.write_text(wanted)
    return None


# ------------------------------------------------------------------------------------- measurements


@dataclass
class Round:
    rate: float  # deliveries/s (or events/s)
    p99_ms: float
    server_cpu: float  # % of one core
    client_cpu: float  # % of one core
    cores: list[float]  # busy % per core
    messages: int = 0
    p50_ms: float = 0.0


@dataclass
class Measurement:
    scenario: str
    target: str
    n: int
    unit: str
    rounds: list[Round]
    note: str = ""
    rss_mib: float = 0.0  # memory scenarios: the server's RSS with the N connections

    def med(self, attr: str = "rate") -> float:
        return statistics.median(getattr(r, attr) for r in self.rounds)

    def span(self, attr: str = "rate") -> tuple[float, float, float]:
        values = [getattr(r, attr) for r in self.rounds]
        return min(values), statistics.median(values), max(values)


Publisher = Callable[[int, bytes], Any]  # async (index, body) -> None, returns when the publish is accepted


async def fanout_round(
    target: Target, gens: list[LoadGen], publish: Publisher, messages: int, size: int
) -> Round:
    for g in gens:
        g.expect(messages)
    sent: dict[int, float] = {}
    cores0, s0 = core_times(), target.cpu()
    start = time.monotonic()
    for i in range(messages):
        body = f"#{i}:".encode().ljust(size, b"x")
        sent[i] = time.monotonic()
        await publish(i, body)
    loop = asyncio.get_running_loop()
    results = await asyncio.wait_for(
        asyncio.gather(*(loop.run_in_executor(None, g.results, messages) for g in gens)), 120
    )
    last = {i: max(r[0][i] for r in results) for i in range(messages)}
    elapsed = max(last.values()) - start
    server_cpu = target.cpu() - s0
    cores = core_busy(cores0, core_times())
    latencies = sorted((last[i] - sent[i]) * 1000 for i in sent)
    n = sum(g.n for g in gens)
    return Round(
        rate=n * messages / elapsed,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        p50_ms=latencies[len(latencies) // 2],
        server_cpu=100 * server_cpu / elapsed,
        client_cpu=100 * sum(r[1] for r in results) / elapsed,
        cores=cores,
        messages=messages,
    )


@contextlib.asynccontextmanager
async def rest_publisher(target: Target) -> Any:
    async with aiohttp.ClientSession() as http:

        async def publish(_: int, body: bytes) -> None:
            async with http.post(target.trigger_url, data=body, headers=target.headers) as r:
                if r.status // 100 != 2:
                    raise RuntimeError(f"{target.name} trigger answered {r.status}: {await r.text()}")

        yield publish


async def measure_fanout(
    args: argparse.Namespace,
    scenario: str,
    target: Target,
    n: int,
    size: int,
    publisher: Any = None,
    client_cpu: int | None = 1,
    note: str = "",
    gens: list[LoadGen] | None = None,
) -> Measurement:
    log(f"  {scenario}: {target.name}, N={n:,}")
    own = gens is None
    if gens is None:
        gens = open_loadgens(n, target.ws_port, target.ws_path, target.protocol, client_cpu, target.socketio)
    try:
        async with publisher or rest_publisher(target) as publish:
            warm = await fanout_round(target, gens, publish, args.warmup, size)
            messages = max(args.min_messages, min(args.max_messages, int(warm.rate * ROUND_SECONDS / n)))
            rounds = [await fanout_round(target, gens, publish, messages, size) for _ in range(args.repeat)]
    finally:
        if own:
            for g in gens:
                g.close()
    return Measurement(scenario, target.name, n, "deliveries/s", rounds, note)


# ---------------------------------------------------------------------------------------- scenarios


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pin = (os.cpu_count() or 1) >= 2 and not args.smoke
        self.server_cpu: int | None = 0 if self.pin else None
        self.client_cpu: int | None = 1 if self.pin else None
        self.results: list[Measurement] = []
        self.notes: dict[str, str] = {}
        self.peers_skip: str | None = None

    @contextlib.contextmanager
    def target(self, start: Callable[[], Target]) -> Iterator[Target]:
        t = start()
        try:
            yield t
        finally:
            t.close()

    async def run(self, name: str, coro: Any) -> None:
        if self.args.only and name not in self.args.only:
            coro.close()
            return
        log(f"scenario {name}")
        try:
            await coro
        except Exception as e:  # one failed scenario is reported, the others still run
            log(f"  {name} failed: {e!r}")
            self.notes[name] = f"failed: {e}"

    def start(self, name: str) -> Target:
        return start_hubbub(self.server_cpu) if name == "hubbub" else start_peer(name, self.server_cpu)

    async def broadcast(self) -> None:
        """hubbub and every peer, all up at once with their clients; the rounds are interleaved (round 1 of
        each server, then round 2 of each...) so that noise from a shared machine hits them alike, with the
        same number of messages per round for every server (their p99s are then comparable). During
        a server's round the other servers and their load generators are stopped (SIGSTOP): their
        keepalive pings (Socket.IO's, 5,000 at a time) would otherwise take CPU 0 from the one measured."""
        names = ["hubbub"] + ([] if self.peers_skip else list(PEERS))
        if self.peers_skip:
            self.notes["peers"] = f"peers not measured: {self.peers_skip}"
        args = self.args
        for n in args.clients:
            async with contextlib.AsyncExitStack() as stack:
                live: list[tuple[Target, list[LoadGen], Publisher]] = []
                for name in names:
                    try:
                        t = stack.enter_context(self.target(lambda name=name: self.start(name)))  # type: ignore[misc]
                        log(f"  broadcast: {name}, N={n:,}")
                        gens = open_loadgens(n, t.ws_port, t.ws_path, t.protocol, self.client_cpu, t.socketio)
                        for g in gens:
                            stack.callback(g.close)
                        live.append((t, gens, await stack.enter_async_context(rest_publisher(t))))
                    except Exception as e:
                        log(f"  broadcast {name} N={n} failed: {e!r}")
                        self.notes[f"broadcast {name} N={n}"] = f"failed: {e}"
                sizes: dict[str, int] = {}
                rounds: dict[str, list[Round]] = {}
                failed: set[str] = set()
                for rep in range(args.repeat + 1):
                    for t, gens, publish in live:
                        if t.name in failed:
                            continue
                        others = [
                            pid
                            for o, ogens, _ in live
                            if o is not t
                            for pid in [*process_tree(o.proc.pid), *(g.proc.pid for g in ogens)]
                        ]
                        try:
                            with paused(others):
                                # a moment for the server just resumed to run its late timers (Node
                                # closes keep-alive connections idle for 5 s) before the publisher's POST
                                await asyncio.sleep(0.2)
                                await self._broadcast_round(t, gens, publish, rep, n, sizes, rounds)
                        except Exception as e:
                            log(f"  broadcast {t.name} N={n} failed: {e!r}")
                            self.notes[f"broadcast {t.name} N={n}"] = f"failed: {e}"
                            failed.add(t.name)
                    if rep == 0 and sizes:
                        # one round size for all (the median of their ~1.5 s sizings): a p99 is close to
                        # the worst of the round's messages, and the worst of more samples is higher
                        common = int(statistics.median(sizes.values()))
                        for name in sizes:
                            sizes[name] = common
                for t, _, _ in live:
                    if rounds.get(t.name) and len(rounds[t.name]) == args.repeat:
                        self.results.append(
                            Measurement("broadcast", t.name, n, "deliveries/s", rounds[t.name])
                        )

    async def _broadcast_round(
        self,
        t: Target,
        gens: list[LoadGen],
        publish: Publisher,
        rep: int,
        n: int,
        sizes: dict[str, int],
        rounds: dict[str, list[Round]],
    ) -> None:
        """Round ``rep`` of one server in :meth:`broadcast` (round 0: the warm-up, which sizes the others)."""
        args = self.args
        if rep == 0:
            warm = await fanout_round(t, gens, publish, args.warmup, args.size)
            sizes[t.name] = max(args.min_messages, min(args.max_messages, int(warm.rate * ROUND_SECONDS / n)))
            rounds[t.name] = []
        else:
            rounds[t.name].append(await fanout_round(t, gens, publish, sizes[t.name], args.size))

    async def broadcast_2k(self) -> None:
        n = self.args.clients[0]
        with self.target(lambda: start_hubbub(self.server_cpu)) as t:
            self.results.append(
                await measure_fanout(self.args, "broadcast 2 KB", t, n, 2048, client_cpu=self.client_cpu)
            )

    async def group(self) -> None:
        n = self.args.clients[0]
        with self.target(
            lambda: start_hubbub(self.server_cpu, route="/groups/g", claims={"webpubsub.group": ["g"]})
        ) as t:
            self.results.append(
                await measure_fanout(
                    self.args,
                    "group send (REST)",
                    t,
                    n,
                    self.args.size,
                    client_cpu=self.client_cpu,
                    note="all N clients in group g (token claim), REST :send to the group",
                )
            )

    async def user(self) -> None:
        n = self.args.clients[0]
        with self.target(lambda: start_hubbub(self.server_cpu, route="/users/u", claims={"sub": "u"})) as t:
            self.results.append(
                await measure_fanout(
                    self.args,
                    "send to user (REST)",
                    t,
                    n,
                    self.args.size,
                    client_cpu=self.client_cpu,
                    note="all N connections belong to user u, REST :send to the user",
                )
            )

    async def client_group(self) -> None:
        n = self.args.clients[0]
        with self.target(lambda: start_hubbub(self.server_cpu, claims={"webpubsub.group": ["g"]})) as t:
            url = f"ws://127.0.0.1:{t.ws_port}" + client_path(t.ws_port, role=["webpubsub.sendToGroup.g"])
            ack_ids = itertools.count(1)

            @contextlib.asynccontextmanager
            async def ws_publisher() -> Any:
                async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=[PLAIN]) as ws:

                    async def publish(_: int, body: bytes) -> None:
                        ack_id = next(ack_ids)
                        await ws.send_json(
                            {
                                "type": "sendToGroup",
                                "group": "g",
                                "dataType": "text",
                                "data": body.decode(),
                                "ackId": ack_id,
                                "noEcho": True,
                            }
                        )
                        while True:
                            msg = json.loads(await asyncio.wait_for(ws.receive_str(), 60))
                            if msg.get("type") == "ack" and msg.get("ackId") == ack_id:
                                if not msg.get("success"):
                                    raise RuntimeError(f"sendToGroup refused: {msg}")
                                return

                    yield publish

            self.results.append(
                await measure_fanout(
                    self.args,
                    "client sendToGroup",
                    t,
                    n,
                    self.args.size,
                    ws_publisher(),
                    client_cpu=self.client_cpu,
                    note="a client with role webpubsub.sendToGroup.g publishes (waits for each ack)",
                )
            )

    async def reliable(self) -> None:
        for n in self.args.clients[:1]:
            with self.target(lambda: start_hubbub(self.server_cpu, protocol=RELIABLE)) as t:
                self.results.append(
                    await measure_fanout(
                        self.args,
                        "broadcast reliable",
                        t,
                        n,
                        self.args.size,
                        client_cpu=self.client_cpu,
                        note=f"{RELIABLE}, sequenceAck every 300 messages like the JS client",
                    )
                )

    async def echo(self) -> None:
        hport = free_port()
        handler = subprocess.Popen(
            pinned([sys.executable, str(PEERS_SRC / "echo_handler.py"), str(hport)], self.client_cpu)
        )
        try:
            wait_for_port(hport)
            with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
                f.write(
                    f"[hubs.{HUB}]\n[[hubs.{HUB}.event_handlers]]\n"
                    f'url_template = "http://127.0.0.1:{hport}/eventhandler/{{event}}"\n'
                    'user_event_pattern = "*"\nsystem_events = []\n'
                )
            config = f.name
            try:
                with self.target(lambda: start_hubbub(self.server_cpu, more=("--config", config))) as t:
                    n = self.args.echo_clients
                    log(f"  upstream echo: {n} clients, one event in flight each")
                    gen = LoadGen(n, t.ws_port, t.ws_path, PLAIN, self.client_cpu, echo=True)
                    try:
                        gen.ready()
                        rounds = []
                        split = []  # (handler %, load generator %) per measured round
                        for i in range(self.args.repeat + 1):
                            secs = self.args.echo_seconds if i else max(0.2, self.args.echo_seconds / 3)
                            cores0, s0, h0 = core_times(), cpu_seconds(t.proc.pid), cpu_seconds(handler.pid)
                            gen.send(f"ECHO {secs}")
                            _, replies, elapsed, cpu, p50, p99 = gen.line().split()
                            el = float(elapsed)
                            handler_cpu = 100 * (cpu_seconds(handler.pid) - h0) / el
                            if i:
                                split.append((handler_cpu, gen_cpu := 100 * float(cpu) / el))
                                log(f"    handler {handler_cpu:.0f}%, load generator {gen_cpu:.0f}%")
                            r = Round(
                                rate=int(replies) / el,
                                p99_ms=float(p99),
                                p50_ms=float(p50),
                                server_cpu=100 * (cpu_seconds(t.proc.pid) - s0) / el,
                                client_cpu=100 * (float(cpu) + cpu_seconds(handler.pid) - h0) / el,
                                cores=core_busy(cores0, core_times()),
                                messages=int(replies),
                            )
                            if i:  # the first is the warm-up
                                rounds.append(r)
                    finally:
                        gen.close()
                    self.results.append(
                        Measurement(
                            "upstream echo",
                            "hubbub",
                            n,
                            "events/s",
                            rounds,
                            "client event -> aiohttp CloudEvents handler -> reply to the sender; "
                            "client CPU = load generator + handler (median "
                            f"{statistics.median(h for h, _ in split):.0f}% + "
                            f"{statistics.median(g for _, g in split):.0f}%, both on the client core)",
                        )
                    )
            finally:
                os.unlink(config)
        finally:
            stop(handler)

    async def memory(self, targets: list[str], n: int, hold: float = 0.0) -> None:
        for name in targets:
            if name != "hubbub" and self.peers_skip:
                continue
            try:
                with self.target(lambda name=name: self.start(name)) as t:  # type: ignore[misc]
                    time.sleep(0.5)
                    before = rss_kib(t.proc.pid)
                    log(f"  memory: {name}, N={n:,}" + (f", held {hold:.0f} s" if hold else ""))
                    gens = open_loadgens(n, t.ws_port, t.ws_path, t.protocol, self.client_cpu, t.socketio)
                    try:
                        time.sleep(2)
                        after = rss_kib(t.proc.pid)
                        deadline = time.monotonic() + hold
                        while time.monotonic() < deadline:  # bounded hold; every connection must survive
                            time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))
                            if not all(g.alive() for g in gens):
                                raise RuntimeError("connections were lost during the hold")
                            after = max(after, rss_kib(t.proc.pid))
                    finally:
                        for g in gens:
                            g.close()
                    per = (after - before) / n
                    self.results.append(
                        Measurement(
                            "memory per idle connection",
                            name,
                            n,
                            "KiB/connection",
                            [Round(rate=per, p99_ms=0, server_cpu=0, client_cpu=0, cores=[])],
                            f"RSS {before / 1024:.0f} MiB -> {after / 1024:.0f} MiB"
                            + (f", held {hold / 60:.0f} min" if hold else ""),
                            rss_mib=after / 1024,
                        )
                    )
            except Exception as e:
                log(f"  memory {name} N={n} failed: {e!r}")
                self.notes[f"memory {name} N={n}"] = f"failed: {e}"

    async def workers(self) -> None:
        help_text = subprocess.run(
            [sys.executable, "-m", "hubbub", "serve", "--help"], capture_output=True, text=True
        ).stdout
        if "--workers" not in help_text:
            self.notes["multi-worker"] = "n/a (no --workers yet)"
            return
        n = self.args.clients[-1]
        for w in (1, 2):  # neither pinned: two workers need both cores, the load generator shares them
            with self.target(lambda w=w: start_hubbub(None, more=("--workers", str(w)))) as t:  # type: ignore[misc]
                self.results.append(
                    await measure_fanout(
                        self.args,
                        f"broadcast --workers {w}",
                        t,
                        n,
                        self.args.size,
                        client_cpu=None,
                        note="nothing pinned (server and load generator share both cores)",
                    )
                )

    async def cross_node(self) -> None:
        if shutil.which("redis-server") is None:
            self.notes["cross-node"] = "n/a (redis-server is not installed)"
            return
        rport = free_port()
        redis = subprocess.Popen(
            pinned(["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no"], None),
            stdout=subprocess.DEVNULL,
        )
        nodes: list[subprocess.Popen[bytes]] = []
        try:
            wait_for_port(rport)
            ports = [free_port() for _ in range(3)]
            for i, p in enumerate(ports):
                nodes.append(
                    subprocess.Popen(
                        pinned(
                            hubbub_cmd(p, "--redis", f"redis://127.0.0.1:{rport}", "--node-id", f"bench{i}"),
                            None,
                        ),
                        stdout=subprocess.DEVNULL,
                    )
                )
            for p in ports:
                wait_for_port(p)
            n = self.args.clients[0]
            gens: list[LoadGen] = []
            try:
                for i, p in enumerate(ports[:2]):
                    size = n // 2 + (n % 2 if i == 0 else 0)
                    gens.append(LoadGen(size, p, client_path(p), PLAIN, None))
                for g in gens:
                    g.ready()
                url, headers = rest(ports[2])
                target = Target(
                    "hubbub 3 nodes + Redis",
                    nodes[2],
                    ports[2],
                    "",
                    PLAIN,
                    url,
                    headers,
                    extra=[*nodes[:2], redis],
                )
                m = await measure_fanout(
                    self.args,
                    "cross-node broadcast",
                    target,
                    n,
                    self.args.size,
                    gens=gens,
                    note="clients on nodes 1 and 2, REST on node 3, which answers once the message is handed "
                    "to Redis: the other nodes deliver later, so p99 includes the queue that builds up; "
                    "nothing pinned; server CPU = 3 nodes + Redis",
                )
                self.results.append(m)
            finally:
                for g in gens:
                    g.close()
        finally:
            for p in nodes:
                stop(p)
            stop(redis)


# ------------------------------------------------------------------------------------------- report


def fmt(v: float, unit: str) -> str:
    if unit == "KiB/connection":
        return f"{v:.1f}"
    return f"{v:,.0f}"


def span(values: list[float], f: Callable[[float], str]) -> str:
    return f"{f(min(values))} / **{f(statistics.median(values))}** / {f(max(values))}"


def report(suite: Suite, command: str, seconds: float) -> str:
    args, res = suite.args, suite.results
    lines = [
        "# hubbub benchmark results",
        "",
        f"Command: `{command}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{seconds / 60:.1f} min. Machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}"
        + (
            f", Node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}"
            if shutil.which("node")
            else ""
        )
        + ". "
        + (
            "Server pinned to CPU 0, load generator and driver to CPU 1 (except where noted)."
            if suite.pin
            else "Nothing pinned (smoke run)."
        )
        + (f" Note: {args.note}" if args.note else ""),
        "",
        f"Messages: {args.size} B (2 KB where noted); each figure is min / **median** / max of "
        f"{args.repeat} rounds after a warm-up; rounds are sized to ~{ROUND_SECONDS} s; p99 = publish -> "
        "last receipt across all clients. CPU columns: % of one core used by the server process(es) and "
        "by the load generator; cores: busy % of CPU 0 / CPU 1 over the round (from /proc/stat).",
        "",
        "| scenario | server | N | rate | p99 ms | server CPU % | client CPU % | cores busy % | msgs/round |",
        "|---|---|---:|---|---|---:|---:|---|---:|",
    ]
    for m in res:
        if m.unit == "KiB/connection":
            continue
        rates = [r.rate for r in m.rounds]
        cores = " / ".join(
            f"{statistics.median(r.cores[i] for r in m.rounds):.0f}" for i in range(len(m.rounds[0].cores))
        )
        lines.append(
            f"| {m.scenario} | {m.target} | {m.n:,} | {span(rates, lambda v: f'{v:,.0f}')} {m.unit} | "
            f"{span([r.p99_ms for r in m.rounds], lambda v: f'{v:.1f}')} | {m.med('server_cpu'):.0f} | "
            f"{m.med('client_cpu'):.0f} | {cores} | {m.rounds[0].messages:,} |"
        )
    mem = [m for m in res if m.unit == "KiB/connection"]
    if mem:
        lines += ["", "| memory per idle connection | N | KiB / connection | RSS |", "|---|---:|---:|---|"]
        lines += [f"| {m.target} | {m.n:,} | {m.rounds[0].rate:.1f} | {m.note} |" for m in mem]

    def find(scenario: str, target: str, n: int | None = None) -> Measurement | None:
        return next(
            (m for m in res if m.scenario == scenario and m.target == target and (n is None or m.n == n)),
            None,
        )

    # ratios to the peers
    peers = [p for p in PEERS if any(m.target == p for m in res)]
    if peers:
        lines += [
            "",
            "Ratios, hubbub / peer (medians; for p99 and memory lower is better, so < 1.0 is hubbub ahead):",
            "",
            "| metric | " + " | ".join(peers) + " |",
            "|---|" + "---:|" * len(peers),
        ]
        for n in args.clients:
            hub = find("broadcast", "hubbub", n)
            if not hub:
                continue
            for attr, label in (("rate", "deliveries/s"), ("p99_ms", "p99")):
                cells = []
                for p in peers:
                    peer = find("broadcast", p, n)
                    cells.append(f"{hub.med(attr) / peer.med(attr):.2f}x" if peer and peer.med(attr) else "–")
                lines.append(f"| {label}, N = {n:,} | " + " | ".join(cells) + " |")
        hub_mem = next((m for m in mem if m.target == "hubbub"), None)
        if hub_mem:
            cells = []
            for p in peers:
                peer = next((m for m in mem if m.target == p and m.n == hub_mem.n), None)
                cells.append(
                    f"{hub_mem.rounds[0].rate / peer.rounds[0].rate:.2f}x"
                    if peer and peer.rounds[0].rate > 0
                    else "–"
                )
            lines.append(f"| memory per connection, N = {hub_mem.n:,} | " + " | ".join(cells) + " |")

    # the targets
    lines += ["", "Targets of issue #8:", "", "| metric | target | measured | met |", "|---|---|---|---|"]

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("yes" if ok else "**no**")

    for n in args.clients:
        hub, ws, pic = (
            find("broadcast", "hubbub", n),
            find("broadcast", "Node ws", n),
            find("broadcast", "picows", n),
        )
        if hub:
            r_ws = hub.med() / ws.med() if ws else None
            r_pic = hub.med() / pic.med() if pic else None
            lines.append(
                f"| deliveries/s, N = {n:,} | ≥ 1.5x Node ws, ≥ 1.0x picows | {hub.med():,.0f}/s = "
                + (f"{r_ws:.2f}x Node ws" if r_ws else "Node ws not measured")
                + ", "
                + (f"{r_pic:.2f}x picows" if r_pic else "picows not measured")
                + " | "
                + verdict(None if r_ws is None or r_pic is None else (r_ws >= 1.5 and r_pic >= 1.0))
                + " |"
            )
            if ws:
                lines.append(
                    f"| p99, N = {n:,} | ≤ Node ws | {hub.med('p99_ms'):.1f} ms vs "
                    f"{ws.med('p99_ms'):.1f} ms | {verdict(hub.med('p99_ms') <= ws.med('p99_ms'))} |"
                )
    hub_mems = [m for m in mem if m.target.startswith("hubbub")]
    for m in hub_mems:
        lines.append(
            f"| memory per idle connection, N = {m.n:,} | ≤ 10 KiB | {m.rounds[0].rate:.1f} KiB "
            f"({m.note}) | {verdict(m.rounds[0].rate <= 10)} |"
        )
    big = [m for m in hub_mems if m.n >= 100_000]
    for m in big:
        lines.append(
            f"| {m.n:,} idle connections, 10 min, ≤ 1.5 GiB | | {m.rss_mib:,.0f} MiB ({m.target}, {m.note}) "
            f"| {verdict(m.rss_mib <= 1536)} |"
        )
    if not big:
        lines.append(
            "| 100,000 idle connections, 10 min, ≤ 1.5 GiB | | "
            + (
                "not run (`--full` runs it)"
                if not args.full
                else suite.notes.get(
                    "memory 100k",
                    "one hubbub process is limited to < 20,000 by the "
                    "20,000 open-files cap; see the memory rows",
                )
            )
            + " | – |"
        )
    w1, w2 = find(f"broadcast --workers {1}", "hubbub"), find(f"broadcast --workers {2}", "hubbub")
    lines.append(
        "| --workers 2 vs 1 | ≥ 1.8x | "
        + (f"{w2.med() / w1.med():.2f}x" if w1 and w2 else suite.notes.get("multi-worker", "not run"))
        + f" | {verdict(w2.med() / w1.med() >= 1.8 if w1 and w2 else None)} |"
    )
    rel = find("broadcast reliable", "hubbub")
    plain = find("broadcast", "hubbub", rel.n) if rel else None
    if rel and plain:
        ratio = rel.med() / plain.med()
        lines.append(
            f"| reliable fan-out | ≥ 0.8x non-reliable | {ratio:.2f}x ({rel.med():,.0f} vs "
            f"{plain.med():,.0f}/s, N = {rel.n:,}) | {verdict(ratio >= 0.8)} |"
        )
    echo = find("upstream echo", "hubbub")
    if echo:
        lines.append(
            f"| upstream echo | ≥ 10,000 events/s | {echo.med():,.0f} events/s (p99 "
            f"{echo.med('p99_ms'):.1f} ms) | {verdict(echo.med() >= 10_000)} |"
        )
    big_msg = find("broadcast 2 KB", "hubbub")
    if big_msg:
        units = big_msg.med() / 3000
        lines.append(
            f"| 2 KB broadcast, Azure units (3,000 deliveries/s and p99 < 1 s per 1,000-connection "
            f"unit) | – | {big_msg.med():,.0f} deliveries/s = {units:.0f} units' worth, p99 "
            f"{big_msg.med('p99_ms'):.1f} ms | {verdict(units >= 1 and big_msg.med('p99_ms') < 1000)} |"
        )
    cross = find("cross-node broadcast", "hubbub 3 nodes + Redis")
    if cross:
        single = find("broadcast", "hubbub", cross.n)
        lines.append(
            f"| cross-node (3 nodes + Redis) | beside single node | {cross.med():,.0f}/s"
            + (f" vs {single.med():,.0f}/s single node" if single else "")
            + " | – |"
        )
    notes = [f"- {m.scenario} ({m.target}): {m.note}" for m in res if m.note and m.unit != "KiB/connection"]
    notes += [f"- {k}: {v}" for k, v in suite.notes.items()]
    if notes:
        lines += ["", "Notes:", "", *dict.fromkeys(notes)]
    return "\n".join(lines) + "\n"


def chart(out: Path) -> str | None:
    python = PEERS_ENV / "venv" / "bin" / "python"
    if not python.exists():
        return "no chart: the peers' environment (matplotlib) is not installed"
    r = subprocess.run(
        [str(python), str(BENCH / "chart.py"), str(out / "latest.json"), str(out / "latest.png")],
        capture_output=True,
        text=True,
    )
    return None if r.returncode == 0 else f"chart failed: {r.stderr.strip()[-300:]}"


# --------------------------------------------------------------------------------------------- main


async def main(args: argparse.Namespace, command: str) -> int:
    started = time.monotonic()
    suite = Suite(args)
    if suite.pin:
        os.sched_setaffinity(0, {1})
    try:
        suite.peers_skip = None if args.no_peers is False else "--no-peers"
        if suite.peers_skip is None:
            suite.peers_skip = peers_ready(install=not args.smoke)
    except (subprocess.CalledProcessError, OSError) as e:
        suite.peers_skip = f"installing them failed: {e}"
    build_loadgen()
    await suite.run("broadcast", suite.broadcast())
    await suite.run("broadcast-2k", suite.broadcast_2k())
    await suite.run("group", suite.group())
    await suite.run("user", suite.user())
    await suite.run("client-group", suite.client_group())
    await suite.run("reliable", suite.reliable())
    await suite.run("echo", suite.echo())
    await suite.run("memory", suite.memory(["hubbub", *PEERS], args.memory_clients))
    await suite.run("workers", suite.workers())
    await suite.run("cross-node", suite.cross_node())
    if args.full:
        await suite.run("memory-full", suite.memory(["hubbub"], PER_PROCESS_CONNECTIONS, hold=600))
        help_text = subprocess.run(
            [sys.executable, "-m", "hubbub", "serve", "--help"], capture_output=True, text=True
        ).stdout
        if "--workers" in help_text:
            await suite.run("memory-full", suite.memory_workers(100_000))
            if not any(m.n >= 100_000 for m in suite.results):
                suite.notes["memory 100k"] = "100,000 over --workers " + suite.notes.get(
                    "memory-full", "failed"
                )
        else:
            suite.notes["memory 100k"] = (
                f"one hubbub process holds at most ~{PER_PROCESS_CONNECTIONS:,} (20,000 open files per "
                "process here) and there is no --workers yet: measured at that N instead"
            )
    text = report(suite, command, time.monotonic() - started)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.md").write_text(text)
    (out / "latest.json").write_text(
        json.dumps(
            {"command": command, "notes": suite.notes, "results": [asdict(m) for m in suite.results]},
            indent=1,
        )
    )
    problem = chart(out)
    if problem:
        log(problem)
    if out.resolve() == (BENCH / "results").resolve() and not args.only and not args.smoke:
        update_docs(text)
    return 0


def update_docs(text: str) -> None:
    """Put the latest table into docs/performance.md, between its bench:latest markers."""
    doc_path = ROOT / "docs" / "performance.md"
    doc = doc_path.read_text()
    start = doc.find("<!-- bench:latest:start")
    end = doc.find("<!-- bench:latest:end -->")
    if start < 0 or end < 0:
        return
    start = doc.index("-->", start) + 3
    body = text.split("\n", 2)[2].strip("\n")  # without the "# hubbub benchmark results" title
    doc_path.write_text(doc[:start] + "\n" + body + "\n" + doc[end:])


async def _memory_workers(self: Suite, n: int, hold: float = 600.0) -> None:
    """100k idle connections on one node: hubbub --workers W (each process under the fd cap), held 10 min."""
    workers = -(-n // (PER_PROCESS_CONNECTIONS - 1000))
    t = start_hubbub(None, more=("--workers", str(workers)))
    try:
        time.sleep(1)
        before = rss_kib(t.proc.pid)
        gens = open_loadgens(n, t.ws_port, t.ws_path, t.protocol, None)
        try:
            time.sleep(2)
            after = rss_kib(t.proc.pid)
            deadline = time.monotonic() + hold
            while time.monotonic() < deadline:
                time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))
                if not all(g.alive() for g in gens):
                    raise RuntimeError("connections were lost during the hold")
                after = max(after, rss_kib(t.proc.pid))
        finally:
            for g in gens:
                g.close()
        self.results.append(
            Measurement(
                "memory per idle connection",
                f"hubbub --workers {workers}",
                n,
                "KiB/connection",
                [Round(rate=(after - before) / n, p99_ms=0, server_cpu=0, client_cpu=0, cores=[])],
                f"RSS {before / 1024:.0f} MiB -> {after / 1024:.0f} MiB (all workers), "
                f"held {hold / 60:.0f} min",
                rss_mib=after / 1024,
            )
        )
    finally:
        t.close()


Suite.memory_workers = _memory_workers  # type: ignore[attr-defined]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", default="1000,5000", help="N for the broadcast (first N: other scenarios)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--memory-clients", type=int, default=10_000)
    p.add_argument("--echo-clients", type=int, default=50, help="connections, one event in flight each")
    p.add_argument("--echo-seconds", type=float, default=3.0)
    p.add_argument("--only", default="", help="comma-separated scenario names")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--full", action="store_true", help="+ hold idle connections for 10 minutes (100k)")
    p.add_argument("--smoke", action="store_true", help="tiny run, no pinning, no install (make test)")
    p.add_argument("--out", default=str(BENCH / "results"))
    p.add_argument("--note", default="", help="a remark printed with the results (e.g. a shared machine)")
    a = p.parse_args(argv)
    a.clients = [int(x) for x in a.clients.split(",")]
    a.only = set(filter(None, a.only.split(",")))
    a.warmup, a.min_messages, a.max_messages = 10, 10, 400
    if a.smoke:
        a.clients, a.repeat, a.memory_clients = [20], 1, 20
        a.echo_clients, a.echo_seconds = 5, 0.3
        a.warmup, a.min_messages, a.max_messages = 2, 3, 5
    return a


if __name__ == "__main__":
    cmd = shlex.join([".venv/bin/python", "bench/run.py", *sys.argv[1:]])
    raise SystemExit(asyncio.run(main(parse(), cmd)))
