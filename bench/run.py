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


class Receivers:
    """The N idle clients: the compiled loadgen (bench/loadgen.c) in its own process."""

    def __init__(self, n: int, port: int, pin: bool, protocol: str) -> None:
        self.n = n
        binary = build_loadgen()
        aud = f"http://localhost:{port}/client/hubs/{HUB}"
        token = jwt.encode({"aud": aud, "exp": time.time() + 3600}, DEV_KEY, algorithm="HS256")
        cmd = [
            str(binary),
            "127.0.0.1",
            str(port),
            f"/client/hubs/{HUB}?access_token={token}",
            str(n),
            protocol,
        ]
        if pin:
            cmd = ["taskset", "-c", "1", *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self._line() != "READY":
            raise RuntimeError("loadgen did not get ready")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"loadgen exited with {self.proc.wait()}")
        return line.strip()

    def expect(self, messages: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"EXPECT {messages}\n")
        self.proc.stdin.flush()
        if self._line() != "GO":
            raise RuntimeError("loadgen did not start the round")

    def results(self, messages: int) -> tuple[dict[int, float], float]:
        """Per message index: seconds (time.monotonic clock) of the last receipt; and loadgen CPU seconds."""
        _, _, cpu = self._line().split()
        receipts = {}
        for _ in range(messages):
            index, ns = self._line().split()
            receipts[int(index)] = int(ns) / 1e9
        return receipts, float(cpu)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("QUIT\n")
        self.proc.stdin.close()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def build_loadgen() -> Path:
    source = ROOT / "bench" / "loadgen.c"
    binary = ROOT / "bench" / ".build" / "loadgen"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        binary.parent.mkdir(exist_ok=True)
        subprocess.run(["cc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


async def broadcast(port: int, server_pid: int, receivers: Receivers, messages: int, size: int) -> Result:
    url = f"http://127.0.0.1:{port}/api/hubs/{HUB}/:send?api-version=2024-12-01"
    token = jwt.encode({"aud": url, "exp": time.time() + 3600}, DEV_KEY, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
    receivers.expect(messages)
    sent: dict[int, float] = {}
    s0 = cpu_seconds(server_pid)
    start = time.monotonic()
    async with aiohttp.ClientSession() as http:
        for i in range(messages):
            body = f"{i}:".encode().ljust(size, b"x")
            sent[i] = time.monotonic()
            async with http.post(url, data=body, headers=headers) as r:
                assert r.status == 202, r.status
    receipts, loadgen_cpu = await asyncio.get_running_loop().run_in_executor(
        None, receivers.results, messages
    )
    elapsed = max(receipts.values()) - start
    latencies = sorted((receipts[i] - sent[i]) * 1000 for i in sent)
    return Result(
        deliveries_per_s=receivers.n * messages / elapsed,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        server_cpu=cpu_seconds(server_pid) - s0,
        client_cpu=loadgen_cpu,
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


PROTOCOLS = ("json.webpubsub.azure.v1", "json.reliable.webpubsub.azure.v1")


async def scenario(args: argparse.Namespace, protocol: str, pin: bool) -> list[Result]:
    """One server, N receivers on ``protocol``: a warm-up round, then ``repeat`` measured rounds."""
    port = free_port()
    server = start_server(port, pin)
    try:
        receivers = Receivers(args.clients, port, pin, protocol)
        try:
            await broadcast(port, server.pid, receivers, max(1, args.messages // 10), args.size)  # warm-up
            return [
                await broadcast(port, server.pid, receivers, args.messages, args.size)
                for _ in range(args.repeat)
            ]
        finally:
            receivers.close()
    finally:
        server.terminate()
        server.wait(10)


def row(name: str, values: list[float], fmt: str) -> str:
    return (
        f"| {name} | "
        + " | ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))
        + " |"
    )


async def main(args: argparse.Namespace) -> int:
    pin = (os.cpu_count() or 1) >= 2 and not args.smoke
    if pin:
        os.sched_setaffinity(0, {1})
    print(
        f"\nbroadcast (REST :send to all): {args.clients} clients x {args.messages} messages of "
        f"{args.size} B, {args.repeat} runs per protocol "
        f"(server pinned to CPU 0, load generator to CPU 1: {pin})\n"
    )
    print("| protocol / metric | min | median | max |\n|---|---|---|---|")
    medians: dict[str, float] = {}
    for protocol in PROTOCOLS:
        results = await scenario(args, protocol, pin)
        rates = [r.deliveries_per_s for r in results]
        medians[protocol] = statistics.median(rates)
        print(row(f"{protocol} deliveries/s", rates, "{:,.0f}"))
        print(row(f"{protocol} p99 publish→last receipt (ms)", [r.p99_ms for r in results], "{:.1f}"))
        print(
            row(f"{protocol} server CPU share", [r.server_cpu / r.seconds * 100 for r in results], "{:.0f}%")
        )
        print(
            row(
                f"{protocol} load generator CPU share",
                [r.client_cpu / r.seconds * 100 for r in results],
                "{:.0f}%",
            )
        )
    reliable, plain = medians[PROTOCOLS[1]], medians[PROTOCOLS[0]]
    print(f"\nreliable / non-reliable fan-out (medians): {reliable / plain:.2f}x")
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
