"""`make bench`: broadcast fan-out through the REST API to N idle json.webpubsub.azure.v1 clients.

The server runs pinned to CPU 0 and this load generator to CPU 1 (when there are two cores). Each run
is warmed up, then repeated; min / median / max are reported together with both processes' CPU time,
so a reader can tell whose CPU ran out. This is the seed of the benchmark suite of issue #8 (peers,
more scenarios and the PNG chart come with it).

    .venv/bin/python bench/run.py [--clients 1000] [--messages 200] [--repeat 3] [--size 100] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support.server import DEV_KEY, free_port, wait_for_port  # noqa: E402

HUB = "bench"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Result:
    deliveries_per_s: float
    p99_ms: float
    server_cpu: float
    client_cpu: float
    seconds: float


class Clients:
    def __init__(self, n: int) -> None:
        self.n = n
        self.expected = 0
        self.count = 0
        self.last_receipt: dict[int, float] = {}
        self.done = asyncio.Event()
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def open(self, session: aiohttp.ClientSession, port: int) -> None:
        aud = f"http://localhost:{port}/client/hubs/{HUB}"
        token = jwt.encode({"aud": aud, "exp": time.time() + 3600}, DEV_KEY, algorithm="HS256")
        url = f"ws://127.0.0.1:{port}/client/hubs/{HUB}?access_token={token}"
        for _ in range(self.n):
            ws = await session.ws_connect(url, protocols=("json.webpubsub.azure.v1",), autoping=True)
            await ws.receive()  # connected
            self.sockets.append(ws)
            asyncio.get_running_loop().create_task(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            data = msg.data
            # {"type":"message","from":"server","dataType":"text","data":"<index>:..."}
            start = data.index('"data":"') + 8
            index = int(data[start : data.index(":", start)])
            self.last_receipt[index] = time.perf_counter()
            self.count += 1
            if self.count >= self.expected:
                self.done.set()


async def broadcast(port: int, server_pid: int, clients: Clients, messages: int, size: int) -> Result:
    url = f"http://127.0.0.1:{port}/api/hubs/{HUB}/:send?api-version=2024-12-01"
    token = jwt.encode({"aud": url, "exp": time.time() + 3600}, DEV_KEY, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
    clients.count, clients.expected = 0, clients.n * messages
    clients.last_receipt.clear()
    clients.done.clear()
    sent: dict[int, float] = {}
    s0, c0 = cpu_seconds(server_pid), cpu_seconds(os.getpid())
    start = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        for i in range(messages):
            body = f"{i}:".encode().ljust(size, b"x")
            sent[i] = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as r:
                assert r.status == 202, r.status
    await asyncio.wait_for(clients.done.wait(), timeout=120)
    elapsed = time.perf_counter() - start
    latencies = sorted((clients.last_receipt[i] - sent[i]) * 1000 for i in sent)
    return Result(
        deliveries_per_s=clients.expected / elapsed,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        server_cpu=cpu_seconds(server_pid) - s0,
        client_cpu=cpu_seconds(os.getpid()) - c0,
        seconds=elapsed,
    )


def start_server(port: int, pin: bool) -> subprocess.Popen[bytes]:
    cmd = [
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
    ]
    if pin:
        cmd = ["taskset", "-c", "0", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    wait_for_port(port)
    return proc


async def main(args: argparse.Namespace) -> int:
    pin = (os.cpu_count() or 1) >= 2 and not args.smoke
    if pin:
        os.sched_setaffinity(0, {1})
    port = free_port()
    server = start_server(port, pin)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            clients = Clients(args.clients)
            await clients.open(session, port)
            await broadcast(port, server.pid, clients, max(1, args.messages // 10), args.size)  # warm-up
            results = [
                await broadcast(port, server.pid, clients, args.messages, args.size)
                for _ in range(args.repeat)
            ]
            for ws in clients.sockets:
                await ws.close()
    finally:
        server.terminate()
        server.wait(10)
    rates = [r.deliveries_per_s for r in results]
    print(
        f"\nbroadcast: {args.clients} clients x {args.messages} messages of {args.size} B, "
        f"{args.repeat} runs (server pinned to CPU 0, load generator to CPU 1: {pin})"
    )
    print("| metric | min | median | max |\n|---|---|---|---|")
    print(f"| deliveries/s | {min(rates):,.0f} | {statistics.median(rates):,.0f} | {max(rates):,.0f} |")
    p99 = [r.p99_ms for r in results]
    print(
        f"| p99 publish→last receipt (ms) | {min(p99):.1f} | {statistics.median(p99):.1f} | {max(p99):.1f} |"
    )
    for r in results:
        print(
            f"  run: {r.seconds:.2f}s wall, server CPU {r.server_cpu:.2f}s ({r.server_cpu / r.seconds:.0%}), "
            f"load generator CPU {r.client_cpu:.2f}s ({r.client_cpu / r.seconds:.0%})"
        )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--smoke", action="store_true", help="tiny run, no pinning (used by make test)")
    a = parser.parse_args()
    if a.smoke:
        a.clients, a.messages, a.repeat = 20, 10, 1
    raise SystemExit(asyncio.run(main(a)))
