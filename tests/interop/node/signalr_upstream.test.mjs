// Bidirectional serverless SignalR with the official `@microsoft/signalr` client: client invocations go
// upstream to an app (here a tiny HTTP server playing the Functions `signalRTrigger`, on
// HUBBUB_SIGNALR_UPSTREAM_PORT), the app answers through the REST API and with framed Completions.
//
// Run through tests/interop/test_signalr_node.py: its hubbub has one upstream template for the hubs
// `upchat,upchat2` pointing at http://127.0.0.1:$HUBBUB_SIGNALR_UPSTREAM_PORT/runtime/webhooks/signalr?code=k.

import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { createHmac } from "node:crypto";
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import { EventQueue, QUIET_MS, WAIT_MS, sleep, withTimeout } from "./helpers.mjs";

const CS = process.env.HUBBUB_SIGNALR_CONNECTION_STRING;
const UPSTREAM_PORT = Number(process.env.HUBBUB_SIGNALR_UPSTREAM_PORT);
const T = {
  timeout: 30_000,
  skip:
    CS && UPSTREAM_PORT
      ? false
      : "HUBBUB_SIGNALR_CONNECTION_STRING / HUBBUB_SIGNALR_UPSTREAM_PORT not set (run it through tests/interop/test_signalr_node.py)",
};

function parse(cs) {
  const parts = {};
  for (const seg of cs.split(";")) {
    const i = seg.indexOf("=");
    if (i > 0) parts[seg.slice(0, i).trim().toLowerCase()] = seg.slice(i + 1).trim();
  }
  const url = new URL(parts.endpoint);
  const audienceBase = `${url.protocol}//${url.hostname}`;
  if (parts.port) url.port = parts.port;
  return { endpoint: url.origin, audienceBase, key: parts.accesskey };
}

const { endpoint, audienceBase, key } = CS ? parse(CS) : {};

function jwt(payload) {
  const enc = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const signed = `${enc({ alg: "HS256", typ: "JWT" })}.${enc(payload)}`;
  return `${signed}.${createHmac("sha256", Buffer.from(key, "utf8")).update(signed).digest("base64url")}`;
}

function token(aud, claims = {}) {
  const now = Math.floor(Date.now() / 1000);
  return jwt({ ...claims, nbf: now, exp: now + 3600, iat: now, aud });
}

async function broadcast(hub, target, args) {
  const url = `${endpoint}/api/hubs/${hub}/:send?api-version=2022-06-01`;
  const res = await fetch(url, {
    method: "POST",
    headers: { Authorization: `Bearer ${token(url.replace(endpoint, audienceBase))}`, "Content-Type": "application/json" },
    body: JSON.stringify({ target, arguments: args }),
  });
  assert.equal(res.status, 202);
}

/** What the Functions trigger checks first: X-ASRS-Signature holds sha256=HEX(HMAC(key, connectionId)). */
function signatureValid(headers) {
  const expected = "sha256=" + createHmac("sha256", Buffer.from(key, "utf8")).update(headers["x-asrs-connection-id"]).digest("hex");
  return headers["x-asrs-signature"].split(",").some((s) => s.toLowerCase() === expected.toLowerCase());
}

/** The app: records every upstream request and answers like a SignalR trigger would. */
async function startUpstream(t) {
  const calls = new EventQueue("upstream call");
  const msgpack = new MessagePackHubProtocol();
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    const headers = req.headers;
    calls.push({ url: req.url, headers, body });
    if (!signatureValid(headers)) {
      res.writeHead(401).end();
      return;
    }
    if (headers["x-asrs-category"] !== "messages") {
      res.writeHead(200).end();
      return;
    }
    const binary = headers["content-type"] === "application/x-msgpack";
    const invocation = binary ? msgpack.parseMessages(frame(body), null)[0] : JSON.parse(body.toString("utf8"));
    const hub = headers["x-asrs-hub"];
    if (invocation.target === "broadcast") {
      await broadcast(hub, "newMessage", [{ sender: headers["x-asrs-user-id"], text: invocation.arguments[0] }]);
    }
    if (!invocation.invocationId) {
      res.writeHead(200).end();
      return;
    }
    const completion = { type: 3, invocationId: invocation.invocationId, result: `ok:${invocation.arguments[0]}` };
    if (invocation.target === "fail") {
      res.writeHead(500).end();
      return;
    }
    res.writeHead(200);
    res.end(binary ? Buffer.from(msgpack.writeMessage(completion)) : JSON.stringify(completion) + "\x1e");
  });
  await new Promise((resolve) => server.listen(UPSTREAM_PORT, "127.0.0.1", resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  return calls;
}

/** The upstream gets a MessagePack body without its length prefix; the JS parser wants it framed. */
function frame(body) {
  const prefix = [];
  let n = body.length;
  do {
    let b = n & 0x7f;
    n >>= 7;
    if (n) b |= 0x80;
    prefix.push(b);
  } while (n);
  const out = Buffer.concat([Buffer.from(prefix), body]);
  return out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength);
}

async function connect(t, hub, userId, { transport = signalR.HttpTransportType.WebSockets, protocol } = {}) {
  const builder = new signalR.HubConnectionBuilder()
    .withUrl(`${endpoint}/client/?hub=${hub}`, {
      transport,
      accessTokenFactory: () => token(`${audienceBase}/client/?hub=${hub}`, { "asrs.s.uid": userId, admin: true }),
    })
    .configureLogging(signalR.LogLevel.None);
  if (protocol === "messagepack") builder.withHubProtocol(new MessagePackHubProtocol());
  const connection = builder.build();
  const messages = new EventQueue(`newMessage for ${userId}`);
  connection.on("newMessage", (m) => messages.push(m));
  t.after(() => connection.stop());
  await withTimeout(connection.start(), WAIT_MS, "connection.start()");
  return { connection, messages };
}

/** The next call for `event` (of `connectionId`, if given: late events of earlier tests may arrive). */
async function nextCall(calls, event, connectionId) {
  return calls.next(
    WAIT_MS,
    (c) => c.headers["x-asrs-event"] === event && (!connectionId || c.headers["x-asrs-connection-id"] === connectionId),
  );
}

test("invoke goes upstream; the app broadcasts through REST and completes the invocation", T, async (t) => {
  const calls = await startUpstream(t);
  const alice = await connect(t, "upchat", "alice");
  const bob = await connect(t, "upchat", "bob", {
    transport: signalR.HttpTransportType.LongPolling,
    protocol: "messagepack",
  });

  const connected = await nextCall(calls, "connected");
  assert.equal(connected.url, "/runtime/webhooks/signalr?code=k");
  assert.equal(connected.headers["x-asrs-category"], "connections");
  assert.equal(connected.headers["x-asrs-hub"], "upchat");
  assert.ok(["alice", "bob"].includes(connected.headers["x-asrs-user-id"]));
  assert.match(connected.headers["x-asrs-user-claims"], /(^|, )admin: true(,|$)/);
  assert.equal(JSON.parse(connected.body.toString()).type, 10);

  assert.equal(await alice.connection.invoke("broadcast", "hello"), "ok:hello");
  const call = await nextCall(calls, "broadcast", alice.connection.connectionId);
  assert.equal(call.headers["x-asrs-connection-id"], alice.connection.connectionId);
  assert.equal(call.headers["content-type"], "application/json");
  assert.deepEqual(JSON.parse(call.body.toString()).arguments, ["hello"]);
  for (const client of [alice, bob]) {
    assert.deepEqual(await client.messages.next(), { sender: "alice", text: "hello" });
  }

  // the MessagePack client over long polling: its invocation goes up as MessagePack
  assert.equal(await bob.connection.invoke("broadcast", "hi from bob"), "ok:hi from bob");
  const bobCall = await nextCall(calls, "broadcast", bob.connection.connectionId);
  assert.equal(bobCall.headers["content-type"], "application/x-msgpack");
  for (const client of [alice, bob]) {
    assert.deepEqual(await client.messages.next(), { sender: "bob", text: "hi from bob" });
  }
});

test("send is fire-and-forget; upstream failures complete invocations with the service's error", T, async (t) => {
  const calls = await startUpstream(t);
  const carol = await connect(t, "upchat2", "carol");
  await carol.connection.send("broadcast", "no answer expected");
  assert.deepEqual(await carol.messages.next(), { sender: "carol", text: "no answer expected" });
  await assert.rejects(carol.connection.invoke("fail", "x"), /Invocation failed, status code 500/);
  await nextCall(calls, "fail", carol.connection.connectionId);
  const id = carol.connection.connectionId;
  await carol.connection.stop();
  const disconnected = await nextCall(calls, "disconnected", id);
  assert.equal(JSON.parse(disconnected.body.toString()).type, 11);
});

test("hubs without a matching template never reach the upstream", T, async (t) => {
  const calls = await startUpstream(t);
  const dave = await connect(t, "elsewhere", "dave");
  await assert.rejects(dave.connection.invoke("broadcast", "x"), /no upstream template matches/);
  await sleep(QUIET_MS);
  assert.deepEqual(await calls.drain(0, (c) => c.headers["x-asrs-hub"] === "elsewhere"), []);
});
