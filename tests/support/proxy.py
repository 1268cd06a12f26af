"""A TCP proxy whose connections a test can cut abruptly (RST, no close frame).

It simulates a network drop between a client and hubbub: both sides see their TCP connection reset,
exactly as when a link goes away, and no WebSocket close frame is exchanged.

Sockets are closed only by the last of a pair's two pump threads, never while another thread may
still be reading them (closing a file descriptor under a blocked ``recv`` lets a new connection
reuse the number and have its bytes stolen).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import struct
import threading
import time
from collections.abc import Iterator

_LINGER_RESET = struct.pack("ii", 1, 0)


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.sockets = (client, upstream)
        self.created = time.monotonic()
        self.running = 2
        self.lock = threading.Lock()
        self.was_cut = False

    def reset(self) -> None:
        """Make the final close send RST, and wake both pumps."""
        self.was_cut = True
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                s.shutdown(socket.SHUT_RD)

    def pump_done(self) -> bool:
        with self.lock:
            self.running -= 1
            return self.running == 0


class CuttableProxy:
    def __init__(self, target_port: int, delay: float = 0.0) -> None:
        self.target_port = target_port
        self.delay = delay  # seconds added to every chunk in each direction (a WAN's latency)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(pair, src, dst), daemon=True).start()

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        if self.delay:
            self._pump_delayed(src, dst)
        else:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
        if not pair.was_cut:  # a real end of stream: pass it on
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        if pair.pump_done():
            with self._lock:
                if pair in self._pairs:
                    self._pairs.remove(pair)
            for s in pair.sockets:
                s.close()

    def _pump_delayed(self, src: socket.socket, dst: socket.socket) -> None:
        """Each chunk leaves ``delay`` seconds after it arrived (a link's latency, not a throttle)."""
        chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def send() -> None:
            while True:
                due, data = chunks.get()
                if not data:
                    return
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    dst.sendall(data)
                except OSError:
                    return

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            while data := src.recv(65536):
                chunks.put((time.monotonic() + self.delay, data))
        except OSError:
            pass
        chunks.put((0.0, b""))
        sender.join()

    def cut(self, min_age: float = 0.0) -> int:
        """Reset every open connection at least ``min_age`` seconds old; return how many were cut."""
        now = time.monotonic()
        with self._lock:
            doomed = [p for p in self._pairs if now - p.created >= min_age]
            self._pairs = [p for p in self._pairs if p not in doomed]
        for pair in doomed:
            pair.reset()
        return len(doomed)

    def close(self) -> None:
        self._stopped = True
        self._listener.close()
        self.cut()


@contextlib.contextmanager
def cuttable_proxy(target_port: int, delay: float = 0.0) -> Iterator[CuttableProxy]:
    proxy = CuttableProxy(target_port, delay)
    try:
        yield proxy
    finally:
        proxy.close()
