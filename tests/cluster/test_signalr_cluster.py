"""SignalR serverless over the broker (issue #7 scope 6): `pysignalr` clients on nodes 1 and 3 receive
what the REST API of node 2 sends; membership, closes and existence queries work across nodes; a
SignalR hub and a Web PubSub hub of the same name never mix. 3 real ``hubbub serve --redis``
processes and a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import jwt
import pytest
import requests
import websocket
from pysignalr.client import SignalRClient
from pysignalr.protocol.json import JSONProtocol
from pysignalr.protocol.messagepack import MessagepackProtocol

from hubbub.broker.redis import NODE_TTL
from hubbub.hub_cli import admin_request
from hubbub.signalr.tokens import client_url, mint_client_token
from tests.support.cluster import RedisServer, run_redis, wait_healthy
from tests.support.server import DEV_KEY, run_server

from .conftest import Client, rest, wait_until
from .test_settings_cluster import Node, Upstream, run_nodes, signalr_connect

pytestmark = [
    pytest.mark.timeout(120),
    # several processes, Redis and liveness timing on a loaded machine: one retry, as the other
    # cluster tests (a test that fails twice fails the run)
    pytest.mark.flaky(reruns=1),
]

API_VERSION = "2022-06-01"


@pytest.fixture(scope="module")
def nodes(redis_server: RedisServer) -> Iterator[list[Node]]:
    with run_nodes(redis_server.url, "sig") as started:
        yield started


@pytest.fixture
def hub() -> str:
    return "chat" + uuid.uuid4().hex[:8]


@dataclass
class Peer:
    """A running pysignalr client: what it received (``newMessage`` arguments) and whether it closed."""

    client: SignalRClient
    user: str
    received: asyncio.Queue[list[Any]] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def wait_closed(self, timeout: float = 15.0) -> None:
        """The socket closed (``on_close``), or pysignalr stopped (it raises on a Close with an error)."""
        assert self.task is not None
        waiter = asyncio.ensure_future(self.closed.wait())
        try:
            done, _ = await asyncio.wait([waiter, self.task], timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            waiter.cancel()
        assert done, "the client was not closed"

    @property
    def connection_id(self) -> str:
        # pysignalr negotiates version 0, where the connection id is the transport's `id`
        url: str = self.client._transport._url  # type: ignore[attr-defined]
        return parse_qs(urlsplit(url).query)["id"][0]

    async def next(self, timeout: float = 10.0) -> list[Any]:
        return await asyncio.wait_for(self.received.get(), timeout)


@contextlib.asynccontextmanager
async def peer(node: Node, hub: str, user: str, protocol: Any = JSONProtocol) -> AsyncIterator[Peer]:
    token = mint_client_token(DEV_KEY, client_url("http://localhost", hub), user_id=user)
    client = SignalRClient(
        f"{node.signalr_endpoint}/client/?hub={hub}",
        protocol=protocol(),
        headers={"Authorization": f"Bearer {token}"},
    )
    state = Peer(client, user)
    opened = asyncio.Event()

    async def on_open() -> None:
        opened.set()

    async def on_close() -> None:
        state.closed.set()

    async def on_message(args: list[Any]) -> None:
        state.received.put_nowait(args)

    client.on_open(on_open)
    client.on_close(on_close)
    client.on("newMessage", on_message)
    task = state.task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(opened.wait(), 15)
        yield state
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


class Rest:
    """The SignalR REST API of one node (plain HTTP with a signed token: every status is the node's)."""

    def __init__(self, http: aiohttp.ClientSession, node: Node, hub: str) -> None:
        self.http, self.node, self.hub = http, node, hub

    async def __call__(self, method: str, path: str, body: Any = None) -> int:
        url = f"http://localhost:{self.node.signalr_port}/api/hubs/{quote(self.hub)}{path}"
        token = jwt.encode({"aud": url, "exp": time.time() + 300}, DEV_KEY, algorithm="HS256")
        async with self.http.request(
            method,
            url,
            params={"api-version": API_VERSION},
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            await response.read()
            return response.status

    async def send(self, path: str, *arguments: Any) -> None:
        assert (
            await self("POST", f"{path}/:send", {"target": "newMessage", "arguments": list(arguments)}) == 202
        )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_sends_from_node_2_reach_clients_on_nodes_1_and_3(
    nodes: list[Node], hub: str, http: aiohttp.ClientSession
) -> None:
    first, second, third = nodes
    api = Rest(http, second, hub)
    async with peer(first, hub, "alice") as alice, peer(third, hub, "bob", MessagepackProtocol) as bob:
        await api.send("", "everyone")
        assert await alice.next() == ["everyone"]
        assert await bob.next() == ["everyone"]

        await api.send("/users/bob", "to bob")
        await api.send("", "marker 1")
        assert await bob.next() == ["to bob"]
        assert await alice.next() == ["marker 1"]  # alice did not get bob's message
        assert await bob.next() == ["marker 1"]

        await api.send(f"/connections/{alice.connection_id}", "to alice")
        assert await alice.next() == ["to alice"]

        # group membership of a connection (node 1) changed through node 2
        assert await api("PUT", f"/groups/g1/connections/{alice.connection_id}") == 200
        assert await api("HEAD", "/groups/g1") == 200
        assert await api("GET", "/users/alice/groups/g1") == 200
        assert await api("GET", "/users/bob/groups/g1") == 404
        await Rest(http, third, hub).send("/groups/g1", "to g1")
        await api.send("", "marker 2")
        assert await alice.next() == ["to g1"]
        assert await bob.next() == ["marker 2"]
        assert await alice.next() == ["marker 2"]

        # a user's group (bob on node 3) added through node 2
        assert await api("PUT", "/users/bob/groups/g2") == 200
        await Rest(http, first, hub).send("/groups/g2", "to g2")
        assert await bob.next() == ["to g2"]
        assert await api("DELETE", "/users/bob/groups/g2") in (200, 204)
        assert await api("DELETE", f"/groups/g1/connections/{alice.connection_id}") in (200, 204)
        await api.send("/groups/g2", "nobody")
        await api.send("/groups/g1", "nobody")
        await api.send("", "marker 3")
        assert await alice.next() == ["marker 3"]
        assert await bob.next() == ["marker 3"]
        assert await api("HEAD", "/groups/g1") == 404

        # existence queries answered for the whole cluster
        for path in (
            f"/connections/{alice.connection_id}",
            f"/connections/{bob.connection_id}",
            "/users/bob",
        ):
            assert await api("HEAD", path) == 200, path
            assert await api("GET", path) == 200, path
        assert await api("HEAD", "/connections/nobody-here") == 404
        assert await api("HEAD", "/users/carol") == 404

        # close a connection on node 1 through node 2
        alice_id = alice.connection_id
        assert await api("DELETE", f"/connections/{alice_id}?reason=bye") in (200, 202, 204)
        await alice.wait_closed()
        for _ in range(100):  # the presence forgets it once node 1 has removed it
            if await api("HEAD", f"/connections/{alice_id}") == 404:
                break
            await asyncio.sleep(0.05)
        assert await api("HEAD", f"/connections/{alice_id}") == 404
        await api.send("", "after close")
        assert await bob.next() == ["after close"]


async def test_signalr_and_web_pubsub_hubs_of_the_same_name_never_mix(
    nodes: list[Node], hub: str, http: aiohttp.ClientSession
) -> None:
    first, second, third = nodes
    wps = Client(third.server, hub, groups=["g"])
    try:
        async with peer(first, hub, "alice") as alice:
            api = Rest(http, second, hub)
            assert await api("PUT", f"/groups/g/connections/{alice.connection_id}") == 200
            # Web PubSub REST sends to the same hub / group / user names
            for path in ("/:send", "/groups/g/:send", "/users/alice/:send"):
                r = await asyncio.to_thread(rest, second.server, "POST", hub, path, data="wps")
                assert r.status_code == 202
            # SignalR sends to the same names
            await api.send("/groups/g", "sr group")
            await api.send("", "sr all")
            assert await alice.next() == ["sr group"]
            assert await alice.next() == ["sr all"]  # none of the Web PubSub messages arrived
            assert await api("HEAD", f"/connections/{wps.id}") == 404
            r = await asyncio.to_thread(
                rest, second.server, "HEAD", hub, f"/connections/{alice.connection_id}"
            )
            assert r.status_code == 404
        wait_until(lambda: len(wps.messages()) >= 2)
        assert wps.messages() == ["wps", "wps"]  # group + all; no user 'alice' there
    finally:
        wps.close()


async def test_a_user_group_added_on_node_2_is_joined_by_a_later_connection_on_node_1(
    nodes: list[Node], hub: str, http: aiohttp.ClientSession
) -> None:
    first, second, third = nodes
    assert await Rest(http, second, hub)("PUT", "/users/carol/groups/vip") == 200  # carol is not connected
    assert await Rest(http, third, hub)("GET", "/users/carol/groups/vip") == 200  # any node knows it
    assert await Rest(http, third, hub)("GET", "/users/carol/groups/other") == 404
    async with peer(first, hub, "carol") as carol:
        api = Rest(http, third, hub)
        for _ in range(200):  # the node reads carol's groups from Redis right after the handshake
            if await api("HEAD", "/groups/vip") == 200:
                break
            await asyncio.sleep(0.05)
        await api.send("/groups/vip", "welcome")
        assert await carol.next() == ["welcome"]
        assert await Rest(http, second, hub)("DELETE", "/users/carol/groups/vip") in (200, 204)
        assert await api("GET", "/users/carol/groups/vip") == 404
        await api.send("/groups/vip", "gone")
        await api.send("/users/carol", "marker")
        assert await carol.next() == ["marker"]


def test_connections_of_a_killed_node_get_their_upstream_disconnected_once(
    redis_server: RedisServer, nodes: list[Node]
) -> None:
    hub = "lost" + uuid.uuid4().hex[:8]
    upstream = Upstream()
    try:
        body = {"templates": [{"urlTemplate": upstream.url + "/{event}", "hubPattern": hub}]}
        admin_request(nodes[0].server.connection_string, "PUT", body=body, path="/api/admin/signalr/upstream")
        with run_nodes(redis_server.url, "sigdoomed" + uuid.uuid4().hex[:6], size=1) as (doomed,):
            ws, cid = signalr_connect(doomed, hub)
            wait_until(lambda: upstream.paths_of(cid) == ["/connected"], timeout=15)
            doomed.server.process.kill()  # kill -9: no goodbye, the cluster notices the missing heartbeat
            doomed.server.process.wait()
            wait_until(lambda: upstream.paths_of(cid) == ["/connected", "/disconnected"], timeout=30)
            ws.close()
        time_to_double = 2.0  # a second report would come from another survivor's reaper round
        with contextlib.suppress(AssertionError):
            wait_until(lambda: len(upstream.paths_of(cid)) > 2, timeout=time_to_double)
        assert upstream.paths_of(cid) == ["/connected", "/disconnected"]  # once, by one survivor
    finally:
        admin_request(nodes[0].server.connection_string, "DELETE", path="/api/admin/signalr/upstream")
        upstream.close()


def test_a_dead_signalr_node_is_reaped_by_a_signalr_node_and_its_id_may_come_back() -> None:
    """A node started without SignalR never takes a dead SignalR node's connections (it could not
    report them upstream); a SignalR node does, once. A node restarted under the dead node's id (a
    restarted pod) is a new node, not an evicted one. Own Redis: no other test's nodes around."""
    hub = "back" + uuid.uuid4().hex[:8]
    upstream = Upstream()
    with run_redis() as redis, contextlib.ExitStack() as stack:
        plain = stack.enter_context(run_server("--redis", redis.url, "--node-id", "plain"))  # no SignalR
        wait_healthy(plain)
        body = {"templates": [{"urlTemplate": upstream.url + "/{event}", "hubPattern": hub}]}
        admin_request(plain.connection_string, "PUT", body=body, path="/api/admin/signalr/upstream")
        with run_nodes(redis.url, "doomed", size=1) as (doomed,):
            ws, cid = signalr_connect(doomed, hub)
            wait_until(lambda: upstream.paths_of(cid) == ["/connected"], timeout=15)
            doomed.server.process.kill()
            doomed.server.process.wait()
            time.sleep(NODE_TTL + 3)  # the plain node saw the SignalR node die, and left it alone
            assert upstream.paths_of(cid) == ["/connected"]
            ws.close()
        with run_nodes(redis.url, "other", size=1):
            wait_until(lambda: upstream.paths_of(cid) == ["/connected", "/disconnected"], timeout=15)
            with run_nodes(redis.url, "doomed", size=1) as (again,):  # both ids of "doomed0" were reaped
                ws, cid2 = signalr_connect(again, hub)
                wps = Client(again.server, hub)
                try:
                    wait_until(lambda: upstream.paths_of(cid2) == ["/connected"], timeout=15)
                    time.sleep(3)  # several heartbeats: an evicted node would have closed both
                    assert upstream.paths_of(cid2) == ["/connected"]
                    assert rest(plain, "HEAD", hub, f"/connections/{wps.id}").status_code == 200
                finally:
                    wps.close()
                    ws.close()
        assert upstream.paths_of(cid) == ["/connected", "/disconnected"]
    upstream.close()


def _negotiate(node: Node, hub: str, user: str) -> tuple[str, str, str]:
    """(access token, connection id, connection token) from ``node``'s service negotiate."""
    token = mint_client_token(DEV_KEY, client_url("http://localhost", hub), user_id=user)
    body = requests.post(
        f"{node.signalr_endpoint}/client/negotiate?hub={hub}&negotiateVersion=1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    return token, body["connectionId"], body["connectionToken"]


def _rest(node: Node, method: str, path: str, body: Any = None) -> requests.Response:
    url = f"http://localhost:{node.signalr_port}{path}"
    token = jwt.encode({"aud": url, "exp": time.time() + 300}, DEV_KEY, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}"}
    return requests.request(
        method, url, params={"api-version": API_VERSION}, json=body, headers=headers, timeout=10
    )


def _open(node: Node, hub: str, access: str, connection_token: str) -> websocket.WebSocket | int:
    """The WebSocket of a negotiated connection on ``node``; the HTTP status when it is refused."""
    ws = websocket.WebSocket()
    url = f"ws://127.0.0.1:{node.signalr_port}/client/?hub={hub}&id={quote(connection_token)}"
    try:
        ws.connect(url, header=[f"Authorization: Bearer {access}"], timeout=10)
    except websocket.WebSocketBadStatusException as exc:
        return exc.status_code
    ws.send('{"protocol":"json","version":1}\x1e')
    assert ws.recv() == "{}\x1e"
    return ws


def test_a_connection_negotiated_through_one_node_connects_through_another(nodes: list[Node]) -> None:
    """No sticky sessions for WebSockets: the connection token is signed, so any node can take it."""
    first, second, third = nodes
    hub = "lb" + uuid.uuid4().hex[:8]
    access, connection_id, connection_token = _negotiate(first, hub, "alice")
    ws = _open(second, hub, access, connection_token)
    assert isinstance(ws, websocket.WebSocket)
    try:
        assert _rest(third, "HEAD", f"/api/hubs/{hub}/connections/{connection_id}").status_code == 200
        body = {"target": "newMessage", "arguments": ["through node 3"]}
        sent = _rest(third, "POST", f"/api/hubs/{hub}/connections/{connection_id}/:send", body)
        assert sent.status_code == 202
        ws.settimeout(10)
        received = ws.recv()
        assert '"through node 3"' in received, received
        # the same token again, on any node: the connection exists already
        assert _open(third, hub, access, connection_token) == 404
        assert _open(first, hub, access, connection_token) in (404, 409)
    finally:
        ws.close()
    # another user's access token, a forged signature, an expired token: refused
    bob = mint_client_token(DEV_KEY, client_url("http://localhost", hub), user_id="bob")
    access, connection_id, connection_token = _negotiate(first, hub, "alice")
    assert _open(second, hub, bob, connection_token) == 404
    forged = connection_token[:-2] + ("AA" if not connection_token.endswith("AA") else "BB")
    assert _open(second, hub, access, forged) == 404
    cid, expiry, mac = connection_token.split(".")
    assert _open(second, hub, access, f"{cid}.{int(expiry) - 60}.{mac}") == 404
    assert _open(second, hub + "x", access, connection_token) in (401, 404)  # other hub
    fresh = _open(third, hub, access, connection_token)
    assert isinstance(fresh, websocket.WebSocket)
    fresh.close()
