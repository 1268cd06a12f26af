"""Faults: a node killed with SIGKILL, Redis restarted under load."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.cluster.conftest import Client, EventHandler, rest, wait_until
from tests.support.cluster import run_cluster, run_redis
from tests.support.server import Server

pytestmark = [
    pytest.mark.interop,
    # timing-sensitive under a loaded machine (several processes, Redis, real sockets): one retry;
    # a test that fails twice fails the run (known flake under investigation, see docs/status.md #7)
    pytest.mark.flaky(reruns=1),
]

#: docs/deployment.md: a dead node's connections are gone within node TTL (5 s) + one heartbeat (1 s)
#: of its last heartbeat; we allow a little more for a loaded test machine.
NODE_LOSS_BOUND = 5.0 + 1.0 + 2.0


def everywhere(nodes: list[Server], hub: str, path: str, code: int) -> bool:
    return all(rest(node, "HEAD", hub, path).status_code == code for node in nodes)


def test_kill_9_removes_its_connections_and_reports_them_once(
    hub: str, event_handler: EventHandler, tmp_path: Path, clients: Callable[..., Client]
) -> None:
    config = tmp_path / "hubs.toml"
    config.write_text(
        f"[hubs.{hub}]\n[[hubs.{hub}.event_handlers]]\n"
        f'url_template = "http://127.0.0.1:{event_handler.port}/{{event}}"\n'
        'system_events = ["connected", "disconnected"]\n',
        encoding="utf-8",
    )
    with run_redis() as redis_server, run_cluster(redis_server.url, 3, "--config", str(config)) as nodes:
        n0, n1, victim = nodes
        doomed = [clients(victim, hub, sub=f"v{i}", groups=["g"]) for i in range(3)]
        kept = [clients(n0, hub, sub="s0", groups=["g"]), clients(n1, hub, sub="v0")]
        every = doomed + kept
        wait_until(lambda: sorted(event_handler.of("connected")) == sorted(c.id for c in every))
        for c in every:
            assert everywhere(nodes, hub, f"/connections/{c.id}", 200)

        victim.process.kill()  # SIGKILL: no goodbye to Redis, no events
        victim.process.wait()
        killed = time.monotonic()
        survivors = [n0, n1]
        for c in doomed:
            wait_until(lambda c=c: everywhere(survivors, hub, f"/connections/{c.id}", 404), timeout=15)  # type: ignore[misc]
        took = time.monotonic() - killed
        assert took < NODE_LOSS_BOUND, f"the dead node's connections stayed {took:.1f}s"
        assert everywhere(survivors, hub, "/users/v1", 404) and everywhere(survivors, hub, "/users/v0", 200)
        listed = rest(n1, "GET", hub, "/groups/g/connections").json()["value"]
        assert [v["connectionId"] for v in listed] == [kept[0].id]

        time.sleep(2.5)  # both survivors ran their dead-node check a few more times
        assert sorted(event_handler.of("disconnected")) == sorted(c.id for c in doomed)  # once each
        assert rest(n1, "POST", hub, "/groups/g/:send", data="still here").status_code == 202
        wait_until(lambda: kept[0].messages() == ["still here"])
        assert kept[1].close_code is None


def test_redis_restart_loses_no_accepted_send(hub: str, clients: Callable[..., Client]) -> None:
    with run_redis() as redis_server, run_cluster(redis_server.url, 3) as nodes:
        n0, n1, publisher = nodes
        receivers = [clients(n0, hub, groups=["g"]), clients(n1, hub, groups=["g"])]
        accepted: list[str] = []
        refused: list[str] = []
        stop = threading.Event()

        def publish() -> None:
            i = 0
            while not stop.is_set():
                text = str(i)
                i += 1
                try:
                    status = rest(publisher, "POST", hub, "/groups/g/:send", data=text).status_code
                except requests.RequestException:
                    status = 599
                assert status == 202 or status >= 500, status
                (accepted if status == 202 else refused).append(text)
                time.sleep(0.002)

        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        wait_until(lambda: len(accepted) > 50)
        redis_server.stop()
        time.sleep(1.0)
        redis_server.start()
        for node in nodes:
            wait_until(
                lambda n=node: requests.get(f"{n.endpoint}/api/health", timeout=2).status_code == 200,
                timeout=20,
            )  # type: ignore[misc]
        after = len(accepted)
        wait_until(lambda: len(accepted) > after + 50, timeout=10)  # the cluster works again
        stop.set()
        thread.join(timeout=10)

        assert refused, "the outage was not noticed"
        for r in receivers:
            with contextlib.suppress(AssertionError):
                wait_until(lambda r=r: set(accepted) <= set(r.messages()), timeout=10)  # type: ignore[misc]
            got = r.messages()
            missing = sorted(set(accepted) - set(got), key=int)
            assert not missing, f"accepted but never delivered: {missing} (refused: {refused})"
            assert len(got) == len(set(got)), "a message arrived twice"
            assert set(got) <= set(accepted) | set(refused)
            assert r.close_code is None
