// The official ASP.NET Core SignalR client `@microsoft/signalr` (+ `@microsoft/signalr-protocol-msgpack`),
// unmodified, against a real `hubbub serve` process: every transport with every hub protocol it allows,
// reached the serverless way (the app's negotiate answers {url, accessToken}; the client follows it to the
// service's /client/negotiate), and the REST API driven with raw fetch exactly as the server SDKs call it.
//
// Run through tests/interop/test_signalr_node.py, which passes HUBBUB_SIGNALR_CONNECTION_STRING; without it
// every test here is skipped (tests/interop/test_node_sdks.py also runs this file, against Web PubSub only).

import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { createHmac, randomBytes } from "node:crypto";
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import { EventQueue, QUIET_MS, WAIT_MS, rejection, sleep, withTimeout } from "./helpers.mjs";

const CS = process.env.HUBBUB_SIGNALR_CONNECTION_STRING;
const T = {
  timeout: 30_000,
  skip: CS ? false : "HUBBUB_SIGNALR_CONNECTION_STRING is not set (run it through tests/interop/test_signalr_node.py)",
};

// --- connection string, tokens, REST ---------------------------------------------------------------------

function parseConnectionString(cs) {
  const parts = {};
  for (const seg of cs.split(";")) {
    const i = seg.indexOf("=");
    if (i > 0) parts[seg.slice(0, i).trim().toLowerCase()] = seg.slice(i + 1).trim();
  }
  const url = new URL(parts.endpoint);
  const audienceBase = `${url.protocol}//${url.hostname}`; // the SDK drops the port from audiences
  if (parts.port) url.port = parts.port;
  return { endpoint: url.origin, audienceBase, key: parts.accesskey };
}

const { endpoint, audienceBase, key } = CS ? parseConnectionString(CS) : {};

function b64url(data) {
  return Buffer.from(data).toString("base64url");
}

/** HS256 over the UTF-8 bytes of the access key, as the SignalR SDKs sign. */
function jwt(payload, signingKey = key) {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(payload));
  const sig = createHmac("sha256", Buffer.from(signingKey, "utf8")).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

function clientToken(hub, userId, claims = {}) {
  const now = Math.floor(Date.now() / 1000);
  const payload = { ...claims, nbf: now, exp: now + 3600, iat: now, aud: `${audienceBase}/client/?hub=${hub.toLowerCase()}` };
  if (userId) payload["asrs.s.uid"] = userId;
  return jwt(payload);
}

/** A REST call the way the current Management SDK makes it (api-version 2022-06-01, aud = URL with query). */
async function rest(method, hub, path, body) {
  const url = `${endpoint}/api/hubs/${encodeURIComponent(hub.toLowerCase())}${path}${path.includes("?") ? "&" : "?"}api-version=2022-06-01`;
  const audience = url.replace(endpoint, audienceBase);
  const now = Math.floor(Date.now() / 1000);
  const headers = { Authorization: `Bearer ${jwt({ nbf: now, exp: now + 3600, iat: now, aud: audience })}` };
  if (body !== undefined) headers["Content-Type"] = "application/json; charset=utf-8";
  return fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

async function restOk(method, hub, path, body, status) {
  const res = await rest(method, hub, path, body);
  assert.equal(res.status, status, `${method} ${path}: ${res.status} ${await res.text()}`);
  return res;
}

function randomHub() {
  return `sig${randomBytes(5).toString("hex")}`;
}

// --- a functions-style app: POST /api/negotiate answers {url, accessToken} --------------------------------

async function startApp(t, hub) {
  const server = http.createServer((req, res) => {
    const userId = new URL(req.url, "http://x").searchParams.get("user") || undefined;
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ url: `${endpoint}/client/?hub=${hub.toLowerCase()}`, accessToken: clientToken(hub, userId) }));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  return `http://127.0.0.1:${server.address().port}/api`;
}

const TRANSPORTS = {
  WebSockets: signalR.HttpTransportType.WebSockets,
  ServerSentEvents: signalR.HttpTransportType.ServerSentEvents,
  LongPolling: signalR.HttpTransportType.LongPolling,
};

/** Starts a HubConnection; returns it with queues of `newMessage` calls and close errors. */
async function connect(t, { hub, appUrl, userId, transport = "WebSockets", protocol = "json", options = {}, reconnect = false }) {
  const url = appUrl ? `${appUrl}?user=${encodeURIComponent(userId ?? "")}` : `${endpoint}/client/?hub=${hub}`;
  const builder = new signalR.HubConnectionBuilder()
    .withUrl(url, { transport: TRANSPORTS[transport], ...options })
    .configureLogging(signalR.LogLevel.None);
  if (protocol === "messagepack") builder.withHubProtocol(new MessagePackHubProtocol());
  if (reconnect) builder.withAutomaticReconnect([0, 100, 100]);
  const connection = builder.build();
  const messages = new EventQueue("newMessage");
  const closed = new EventQueue("onclose");
  connection.on("newMessage", (...args) => messages.push(args));
  connection.onclose((err) => closed.push(err ?? null));
  t.after(() => connection.stop());
  await withTimeout(connection.start(), WAIT_MS, "connection.start()");
  return { connection, messages, closed };
}

// --- every transport x protocol ------------------------------------------------------------------------------

const COMBOS = [
  ["WebSockets", "json"],
  ["WebSockets", "messagepack"],
  ["ServerSentEvents", "json"],
  ["LongPolling", "json"],
  ["LongPolling", "messagepack"],
];

for (const [transport, protocol] of COMBOS) {
  test(`${transport} + ${protocol}: REST sends of every scope reach the client`, T, async (t) => {
    const hub = randomHub();
    const appUrl = await startApp(t, hub);
    const alice = await connect(t, { hub, appUrl, userId: "alice", transport, protocol });
    const id = alice.connection.connectionId;
    assert.equal(typeof id, "string");
    assert.ok(id.length > 0);
    await restOk("HEAD", hub, `/connections/${id}`, undefined, 200);
    await restOk("HEAD", hub, "/users/alice", undefined, 200);

    const args = ["hi", 42, 1.5, true, null, { nested: ["a", { b: false }] }, [1, 2, 3]];
    await restOk("POST", hub, "/:send", { target: "newMessage", arguments: args }, 202);
    assert.deepEqual(await alice.messages.next(), args);

    // The .NET SDK writes PascalCase property names.
    await restOk("POST", hub, "/users/alice/:send", { Target: "newMessage", Arguments: ["to user"] }, 202);
    assert.deepEqual(await alice.messages.next(), ["to user"]);

    await restOk("POST", hub, `/connections/${id}/:send`, { target: "newMessage", arguments: ["to connection"] }, 202);
    assert.deepEqual(await alice.messages.next(), ["to connection"]);

    await restOk("PUT", hub, `/groups/room/connections/${id}`, undefined, 200);
    await restOk("HEAD", hub, "/groups/room", undefined, 200);
    await restOk("POST", hub, "/groups/room/:send", { target: "newMessage", arguments: ["to group"] }, 202);
    assert.deepEqual(await alice.messages.next(), ["to group"]);

    await restOk("POST", hub, "/users/bob/:send", { target: "newMessage", arguments: ["not for alice"] }, 202);
    await restOk("POST", hub, `/:send?excluded=${id}`, { target: "newMessage", arguments: ["excluded"] }, 202);
    assert.deepEqual(await alice.messages.drain(QUIET_MS), []);
  });

  test(`${transport} + ${protocol}: an invocation without upstream completes with an error`, T, async (t) => {
    const hub = randomHub();
    const alice = await connect(t, { hub, appUrl: await startApp(t, hub), userId: "alice", transport, protocol });
    const err = await rejection(alice.connection.invoke("broadcast", "hello"), "invoke");
    assert.match(String(err.message), /no upstream/);
    // A non-blocking send gets no answer and the connection stays usable.
    await alice.connection.send("broadcast", "hello");
    await restOk("POST", hub, "/:send", { target: "newMessage", arguments: ["still here"] }, 202);
    assert.deepEqual(await alice.messages.next(), ["still here"]);
  });

  test(`${transport} + ${protocol}: REST close ends the connection with the reason`, T, async (t) => {
    const hub = randomHub();
    const alice = await connect(t, { hub, appUrl: await startApp(t, hub), userId: "alice", transport, protocol });
    const id = alice.connection.connectionId;
    await restOk("DELETE", hub, `/connections/${id}?reason=${encodeURIComponent("kicked out")}`, undefined, 200);
    const err = await alice.closed.next();
    assert.ok(err, "onclose carries an error");
    assert.match(String(err.message), /kicked out/);
    assert.equal(alice.connection.state, signalR.HubConnectionState.Disconnected);
    const res = await rest("HEAD", hub, `/connections/${id}`);
    assert.equal(res.status, 404);
    assert.equal(res.headers.get("x-ms-error-code"), "Warning.Connection.NotExisted");
  });
}

// --- negotiate, tokens, reconnect -----------------------------------------------------------------------------

test("a client stopped by itself leaves: the connection no longer exists", T, async (t) => {
  const hub = randomHub();
  const alice = await connect(t, { hub, appUrl: await startApp(t, hub), userId: "alice" });
  const id = alice.connection.connectionId;
  await alice.connection.stop();
  assert.equal(await alice.closed.next(), null, "a clean stop has no error");
  for (let i = 0; i < 50; i++) {
    if ((await rest("HEAD", hub, `/connections/${id}`)).status === 404) return;
    await sleep(50);
  }
  assert.fail("the connection still exists after stop()");
});

test("skipNegotiation: a WebSocket straight to /client/?hub= with accessTokenFactory", T, async (t) => {
  const hub = randomHub();
  const alice = await connect(t, {
    hub,
    options: { skipNegotiation: true, accessTokenFactory: () => clientToken(hub, "alice") },
  });
  await restOk("POST", hub, "/users/alice/:send", { target: "newMessage", arguments: [1] }, 202);
  assert.deepEqual(await alice.messages.next(), [1]);
});

test("an invalid token fails negotiate with 401", T, async (t) => {
  const hub = randomHub();
  const bad = jwt({ aud: `${audienceBase}/client/?hub=${hub}`, exp: Math.floor(Date.now() / 1000) + 60 }, "wrong-key");
  for (const token of [bad, clientToken("otherhub", "alice")]) {
    const connection = new signalR.HubConnectionBuilder()
      .withUrl(`${endpoint}/client/?hub=${hub}`, { accessTokenFactory: () => token })
      .configureLogging(signalR.LogLevel.None)
      .build();
    const err = await rejection(connection.start(), "start with a bad token");
    assert.match(String(err.message), /401/);
  }
});

test("a user added to a group before connecting receives the group's messages; removal stops them", T, async (t) => {
  const hub = randomHub();
  await restOk("PUT", hub, "/users/carol/groups/vip", undefined, 200);
  const res = await rest("GET", hub, "/users/carol/groups/vip");
  assert.equal(res.status, 200);
  const carol = await connect(t, { hub, appUrl: await startApp(t, hub), userId: "carol" });
  await restOk("POST", hub, "/groups/vip/:send", { target: "newMessage", arguments: ["vip only"] }, 202);
  assert.deepEqual(await carol.messages.next(), ["vip only"]);
  await restOk("DELETE", hub, "/users/carol/groups/vip", undefined, 204);
  await restOk("POST", hub, "/groups/vip/:send", { target: "newMessage", arguments: ["gone"] }, 202);
  assert.deepEqual(await carol.messages.drain(QUIET_MS), []);
  const after = await rest("HEAD", hub, "/users/carol/groups/vip");
  assert.equal(after.status, 404);
  assert.equal(after.headers.get("x-ms-error-code"), "Info.User.NotInGroup");
});

test("a REST close allows reconnect: withAutomaticReconnect comes back with a new connection", T, async (t) => {
  const hub = randomHub();
  const dave = await connect(t, { hub, appUrl: await startApp(t, hub), userId: "dave", reconnect: true });
  const reconnected = new EventQueue("onreconnected");
  dave.connection.onreconnected((id) => reconnected.push(id));
  const first = dave.connection.connectionId;
  await restOk("DELETE", hub, `/connections/${first}`, undefined, 200);
  const second = await reconnected.next(WAIT_MS);
  assert.notEqual(second, first);
  await restOk("POST", hub, "/users/dave/:send", { target: "newMessage", arguments: ["welcome back"] }, 202);
  assert.deepEqual(await dave.messages.next(), ["welcome back"]);
});

test("messagepack clients get binary-safe conversions of JSON sends; json clients get the same values", T, async (t) => {
  const hub = randomHub();
  const appUrl = await startApp(t, hub);
  const json = await connect(t, { hub, appUrl, userId: "j" });
  const pack = await connect(t, { hub, appUrl, userId: "p", protocol: "messagepack" });
  const args = ["ünïcødé ✓", -7, 2 ** 40, 0.25, { k: [null, true] }];
  await restOk("POST", hub, "/:send", { target: "newMessage", arguments: args }, 202);
  assert.deepEqual(await json.messages.next(), args);
  assert.deepEqual(await pack.messages.next(), args);
});
