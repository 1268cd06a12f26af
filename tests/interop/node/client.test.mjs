// The official client SDK `@azure/web-pubsub-client` (unmodified) against a real hubbub process,
// using the non-reliable JSON subprotocol `json.webpubsub.azure.v1` (WebPubSubJsonProtocol()).
// Tokens come from the official service SDK `@azure/web-pubsub`.

import { test } from "node:test";
import assert from "node:assert/strict";
import { SendMessageError, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";
import { ALL_ROLES, QUIET_MS, Ctx, bytes, randomName, rejection, sleep } from "./helpers.mjs";

const T = { timeout: 30_000 };

async function expectGroupMessage(conn, { group, fromUserId, dataType, data }) {
  const m = await conn.events.group.next();
  assert.equal(m.group, group, JSON.stringify(m));
  assert.equal(m.fromUserId ?? null, fromUserId ?? null, `fromUserId of ${JSON.stringify(m)}`);
  assert.equal(m.dataType, dataType, JSON.stringify(m));
  if (dataType === "binary") assert.deepEqual(bytes(m.data), Buffer.from(data));
  else assert.deepEqual(m.data, data);
  assert.equal(m.sequenceId ?? undefined, undefined, "no sequenceId on the non-reliable protocol");
  return m;
}

async function expectNoGroupMessage(conn) {
  assert.deepEqual(await conn.events.group.drain(QUIET_MS), [], `${conn.connectionId} got unexpected messages`);
}

async function expectForbidden(promise, what) {
  const err = await rejection(promise, what);
  assert.ok(err instanceof SendMessageError, `${what}: expected SendMessageError, got ${err?.constructor?.name}: ${err}`);
  assert.equal(err.name, "SendMessageError");
  assert.equal(typeof err.ackId, "number", `${what}: ackId ${err.ackId}`);
  assert.equal(err.errorDetail?.name, "Forbidden", `${what}: errorDetail ${JSON.stringify(err.errorDetail)}`);
  assert.equal(typeof err.errorDetail?.message, "string");
  return err;
}

test("connects with json.webpubsub.azure.v1 and reports connectionId and userId", T, async (t) => {
  const ctx = new Ctx(t);
  const protocol = WebPubSubJsonProtocol();
  assert.equal(protocol.name, "json.webpubsub.azure.v1");
  assert.equal(protocol.isReliableSubProtocol, false);

  const alice = await ctx.connect({ userId: "alice", protocol });
  assert.equal(alice.userId, "alice");
  assert.equal(typeof alice.connectionId, "string");
  assert.ok(alice.connectionId.length > 0);
  assert.equal(await ctx.service.connectionExists(alice.connectionId), true);

  const anon = await ctx.connect();
  assert.equal(anon.userId ?? null, null, "anonymous user has no userId");
  assert.notEqual(anon.connectionId, alice.connectionId, "connection ids are unique");

  // Exactly one connected event per client.
  assert.deepEqual(await alice.events.connected.drain(QUIET_MS), []);
});

test("joinGroup / leaveGroup with the joinLeaveGroup role", T, async (t) => {
  const ctx = new Ctx(t);
  const g = randomName("grp");
  const c = await ctx.connect({ userId: "alice", roles: ["webpubsub.joinLeaveGroup"] });

  const joined = await c.client.joinGroup(g);
  assert.equal(typeof joined.ackId, "number");
  assert.equal(joined.isDuplicated, false);
  assert.equal(await ctx.service.groupExists(g), true);
  await ctx.service.group(g).sendToAll("to the group", { contentType: "text/plain" });
  await expectGroupMessage(c, { group: g, dataType: "text", data: "to the group" });

  const left = await c.client.leaveGroup(g);
  assert.equal(left.isDuplicated, false);
  assert.notEqual(left.ackId, joined.ackId);
  assert.equal(await ctx.service.groupExists(g), false);
  await ctx.service.group(g).sendToAll("after leave", { contentType: "text/plain" });
  await expectNoGroupMessage(c);
});

test("a group-scoped role only allows that group", T, async (t) => {
  const ctx = new Ctx(t);
  const [g1, g2] = [randomName("g1"), randomName("g2")];
  const c = await ctx.connect({
    roles: [`webpubsub.joinLeaveGroup.${g1}`, `webpubsub.sendToGroup.${g1}`],
  });
  await c.client.joinGroup(g1);
  await c.client.sendToGroup(g1, "allowed", "text");
  await expectGroupMessage(c, { group: g1, dataType: "text", data: "allowed" });
  await expectForbidden(c.client.joinGroup(g2), `joinGroup ${g2}`);
  await expectForbidden(c.client.sendToGroup(g2, "nope", "text"), `sendToGroup ${g2}`);
  assert.equal(await ctx.service.groupExists(g2), false);
});

test("sendToGroup with text, json and binary (echoed to the sender by default)", T, async (t) => {
  const ctx = new Ctx(t);
  const g = randomName("grp");
  const a = await ctx.connect({ userId: "alice", roles: ALL_ROLES });
  const b = await ctx.connect({ userId: "bob", roles: ALL_ROLES });
  const outsider = await ctx.connect({ userId: "carol", roles: ALL_ROLES });
  await a.client.joinGroup(g);
  await b.client.joinGroup(g);

  const r1 = await a.client.sendToGroup(g, "hello group", "text");
  assert.equal(r1.isDuplicated, false);
  await a.client.sendToGroup(g, { n: 1, s: "x", arr: [null, false] }, "json");
  await a.client.sendToGroup(g, "json string", "json");
  await a.client.sendToGroup(g, new Uint8Array([1, 2, 3, 0, 255]).buffer, "binary");

  for (const conn of [b, a]) {
    await expectGroupMessage(conn, { group: g, fromUserId: "alice", dataType: "text", data: "hello group" });
    await expectGroupMessage(conn, {
      group: g,
      fromUserId: "alice",
      dataType: "json",
      data: { n: 1, s: "x", arr: [null, false] },
    });
    await expectGroupMessage(conn, { group: g, fromUserId: "alice", dataType: "json", data: "json string" });
    await expectGroupMessage(conn, { group: g, fromUserId: "alice", dataType: "binary", data: [1, 2, 3, 0, 255] });
  }
  await expectNoGroupMessage(outsider);

  // An anonymous publisher: fromUserId absent.
  const anon = await ctx.connect({ roles: ALL_ROLES });
  await anon.client.sendToGroup(g, "from nobody", "text");
  await expectGroupMessage(b, { group: g, fromUserId: null, dataType: "text", data: "from nobody" });
});

test("sendToGroup with noEcho is not delivered back to the sender", T, async (t) => {
  const ctx = new Ctx(t);
  const g = randomName("grp");
  const a = await ctx.connect({ userId: "alice", roles: ALL_ROLES });
  const b = await ctx.connect({ userId: "bob", roles: ALL_ROLES });
  await a.client.joinGroup(g);
  await b.client.joinGroup(g);

  await a.client.sendToGroup(g, "no echo", "text", { noEcho: true });
  await a.client.sendToGroup(g, { no: "echo" }, "json", { noEcho: true });
  await a.client.sendToGroup(g, new Uint8Array([7]).buffer, "binary", { noEcho: true });
  await expectGroupMessage(b, { group: g, fromUserId: "alice", dataType: "text", data: "no echo" });
  await expectGroupMessage(b, { group: g, fromUserId: "alice", dataType: "json", data: { no: "echo" } });
  await expectGroupMessage(b, { group: g, fromUserId: "alice", dataType: "binary", data: [7] });
  await expectNoGroupMessage(a);

  // Fire-and-forget (no ackId) also works.
  await a.client.sendToGroup(g, "fire and forget", "text", { fireAndForget: true });
  await expectGroupMessage(b, { group: g, fromUserId: "alice", dataType: "text", data: "fire and forget" });
  await expectGroupMessage(a, { group: g, fromUserId: "alice", dataType: "text", data: "fire and forget" });
});

test("server messages of each data type arrive as server-message events", T, async (t) => {
  const ctx = new Ctx(t);
  const c = await ctx.connect({ userId: "alice" });
  await ctx.service.sendToConnection(c.connectionId, "plain text", { contentType: "text/plain" });
  await ctx.service.sendToConnection(c.connectionId, { a: [1, 2, { b: null }] });
  await ctx.service.sendToConnection(c.connectionId, true);
  await ctx.service.sendToConnection(c.connectionId, Buffer.from([255, 0, 128]));

  const expected = [
    ["text", "plain text"],
    ["json", { a: [1, 2, { b: null }] }],
    ["json", true],
    ["binary", [255, 0, 128]],
  ];
  for (const [dataType, data] of expected) {
    const m = await c.events.server.next();
    assert.equal(m.kind, "serverData");
    assert.equal(m.dataType, dataType, JSON.stringify(m));
    if (dataType === "binary") {
      assert.ok(m.data instanceof ArrayBuffer, "binary data is an ArrayBuffer");
      assert.deepEqual(bytes(m.data), Buffer.from(data));
    } else {
      assert.deepEqual(m.data, data);
    }
    assert.equal(m.sequenceId ?? undefined, undefined);
  }
  assert.deepEqual(await c.events.group.drain(QUIET_MS), [], "server messages are not group messages");
});

test("Forbidden ack error when lacking a role", T, async (t) => {
  const ctx = new Ctx(t);
  const g = randomName("grp");
  const c = await ctx.connect({ userId: "alice" }); // no roles at all
  const joinErr = await expectForbidden(c.client.joinGroup(g), "joinGroup without role");
  assert.equal(await ctx.service.groupExists(g), false);
  const sendErr = await expectForbidden(c.client.sendToGroup(g, "x", "text"), "sendToGroup without role");
  assert.notEqual(sendErr.ackId, joinErr.ackId);
  await expectForbidden(c.client.leaveGroup(g), "leaveGroup without role");

  // The connection survives a rejected operation.
  assert.equal(await ctx.service.connectionExists(c.connectionId), true);
  await ctx.service.sendToConnection(c.connectionId, "still here", { contentType: "text/plain" });
  const m = await c.events.server.next();
  assert.equal(m.data, "still here");

  // A role for sending does not grant joining, and vice versa.
  const sender = await ctx.connect({ roles: ["webpubsub.sendToGroup"] });
  await expectForbidden(sender.client.joinGroup(g), "joinGroup with only sendToGroup");
  const joiner = await ctx.connect({ roles: ["webpubsub.joinLeaveGroup"] });
  await joiner.client.joinGroup(g);
  await expectForbidden(joiner.client.sendToGroup(g, "x", "text"), "sendToGroup with only joinLeaveGroup");
  await expectNoGroupMessage(joiner);
});

test("disconnected event carries the reason of a REST close", T, async (t) => {
  const ctx = new Ctx(t);
  const c = await ctx.connect({ userId: "alice" });
  const reason = "closed by the app server: 🙂 ünïcode";
  await ctx.service.closeConnection(c.connectionId, { reason });
  const e = await c.events.disconnected.next();
  assert.equal(e.connectionId, c.connectionId);
  assert.equal(e.message?.kind, "disconnected", JSON.stringify(e));
  assert.equal(e.message?.message, reason, JSON.stringify(e));
  await c.events.stopped.next(); // autoReconnect disabled ⇒ stopped
  assert.equal(await ctx.service.connectionExists(c.connectionId), false);
});

test("keep-alive: JSON ping gets pong, connection stays healthy", T, async (t) => {
  const ctx = new Ctx(t);
  // Ping every 200 ms; the client closes itself if NO frame at all arrives for 1.5 s.
  // WebSocket-level ping frames do not count (the client only watches messages), so only
  // {"type":"pong"} replies keep this connection alive across the 3.5 s quiet period.
  const c = await ctx.connect({
    userId: "alice",
    options: { keepAliveIntervalInMs: 200, keepAliveTimeoutInMs: 1500 },
  });
  await sleep(3500);
  assert.deepEqual(await c.events.disconnected.drain(0), [], "connection dropped: no pong received?");
  assert.deepEqual(await c.events.stopped.drain(0), []);
  assert.equal(await ctx.service.connectionExists(c.connectionId), true);
  await ctx.service.sendToConnection(c.connectionId, { still: "alive" });
  const m = await c.events.server.next();
  assert.deepEqual(m.data, { still: "alive" });
});
