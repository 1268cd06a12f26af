// The official service SDK `@azure/web-pubsub` (unmodified) against a real hubbub process.
// Every REST operation the SDK exposes is exercised; effects are observed through real
// `@azure/web-pubsub-client` connections (JSON subprotocol) or the SDK's own HEAD/list calls.

import { test } from "node:test";
import assert from "node:assert/strict";
import { odata } from "@azure/web-pubsub";
import { WebPubSubClient, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";
import {
  ALL_ROLES,
  NO_KEEPALIVE,
  QUIET_MS,
  Ctx,
  WAIT_MS,
  bytes,
  connectionString,
  decodeJwt,
  parsedConnectionString,
  randomHub,
  randomName,
  rejection,
  serviceClient,
  sleep,
} from "./helpers.mjs";

const T = { timeout: 30_000 };

/** Asserts the next server message of `conn` is `{dataType, data}`. */
async function expectServer(conn, dataType, data) {
  const m = await conn.events.server.next();
  assert.equal(m.dataType, dataType, `server message dataType (got ${JSON.stringify(m)})`);
  if (dataType === "binary") assert.deepEqual(bytes(m.data), Buffer.from(data));
  else assert.deepEqual(m.data, data);
  assert.equal(m.group, undefined, "a server message has no group");
  return m;
}

/** Asserts the next group message of `conn` is a REST-originated message to `group`. */
async function expectGroup(conn, group, dataType, data) {
  const m = await conn.events.group.next();
  assert.equal(m.group, group, `group of ${JSON.stringify(m)}`);
  assert.equal(m.dataType, dataType, `group message dataType (got ${JSON.stringify(m)})`);
  if (dataType === "binary") assert.deepEqual(bytes(m.data), Buffer.from(data));
  else assert.deepEqual(m.data, data);
  assert.equal(m.fromUserId ?? undefined, undefined, "REST group messages carry no fromUserId");
  return m;
}

async function expectNothing(conn, what = "message") {
  const got = [...(await conn.events.server.drain(QUIET_MS)), ...(await conn.events.group.drain(0))];
  assert.deepEqual(got, [], `connection ${conn.connectionId} should not have received any ${what}`);
}

async function collectPages(iterPromise) {
  const iter = await iterPromise;
  const pages = [];
  for await (const page of iter.byPage()) pages.push([...page]);
  return pages;
}

// ---------------------------------------------------------------------------------------------
// Send operations
// ---------------------------------------------------------------------------------------------

test("sendToAll delivers text/plain, application/json and application/octet-stream", T, async (t) => {
  const ctx = new Ctx(t);
  const a = await ctx.connect({ userId: "alice" });
  const b = await ctx.connect();

  await ctx.service.sendToAll("hello text", { contentType: "text/plain" });
  await ctx.service.sendToAll({ kind: "json", list: [1, true, null, "x"], nested: { n: 1.5 } });
  await ctx.service.sendToAll("a json string literal"); // no contentType ⇒ JSON.stringify ⇒ "\"...\""
  await ctx.service.sendToAll(42, { messageTtlSeconds: 60 });
  await ctx.service.sendToAll(Buffer.from([0, 1, 2, 253, 254, 255]));

  for (const conn of [a, b]) {
    await expectServer(conn, "text", "hello text");
    await expectServer(conn, "json", { kind: "json", list: [1, true, null, "x"], nested: { n: 1.5 } });
    await expectServer(conn, "json", "a json string literal");
    await expectServer(conn, "json", 42);
    await expectServer(conn, "binary", [0, 1, 2, 253, 254, 255]);
  }
});

test("sendToAll honours excludedConnections", T, async (t) => {
  const ctx = new Ctx(t);
  const a = await ctx.connect();
  const b = await ctx.connect();
  const c = await ctx.connect();

  await ctx.service.sendToAll("not for a and c", {
    contentType: "text/plain",
    excludedConnections: [a.connectionId, c.connectionId],
  });
  await expectServer(b, "text", "not for a and c");
  await expectNothing(a);
  await expectNothing(c);
});

test("sendToAll honours an OData filter (incl. odata`` quoting)", T, async (t) => {
  const ctx = new Ctx(t);
  const alice = await ctx.connect({ userId: "alice" });
  const quoted = await ctx.connect({ userId: "o'brien" });
  const anon = await ctx.connect();

  await ctx.service.sendToAll({ to: "alice" }, { filter: "userId eq 'alice'" });
  await expectServer(alice, "json", { to: "alice" });
  await expectNothing(quoted);
  await expectNothing(anon);

  await ctx.service.sendToAll("to o'brien", {
    contentType: "text/plain",
    filter: odata`userId eq ${"o'brien"}`, // ⇒ userId eq 'o''brien'
  });
  await expectServer(quoted, "text", "to o'brien");
  await expectNothing(alice);
  await expectNothing(anon);

  await ctx.service.sendToAll("anonymous only", { contentType: "text/plain", filter: "userId eq null" });
  await expectServer(anon, "text", "anonymous only");
  await expectNothing(alice);
  await expectNothing(quoted);

  await ctx.service.sendToAll("not alice", {
    contentType: "text/plain",
    filter: `connectionId ne '${alice.connectionId}'`,
  });
  await expectServer(quoted, "text", "not alice");
  await expectServer(anon, "text", "not alice");
  await expectNothing(alice);
});

test("group sendToAll: text/json/binary, members only, excluded and filter", T, async (t) => {
  const ctx = new Ctx(t);
  const g = randomName("grp");
  const a = await ctx.connect({ userId: "alice", groups: [g] });
  const b = await ctx.connect({ userId: "bob", groups: [g] });
  const outsider = await ctx.connect({ userId: "carol" });
  const group = ctx.service.group(g);
  assert.equal(group.groupName, g);
  assert.equal(group.hubName, ctx.hub);

  await group.sendToAll("group text", { contentType: "text/plain" });
  await group.sendToAll({ hello: "group" });
  await group.sendToAll(new Uint8Array([9, 8, 7]));
  for (const conn of [a, b]) {
    await expectGroup(conn, g, "text", "group text");
    await expectGroup(conn, g, "json", { hello: "group" });
    await expectGroup(conn, g, "binary", [9, 8, 7]);
  }
  await expectNothing(outsider, "group message (not a member)");

  await group.sendToAll("excluding a", { contentType: "text/plain", excludedConnections: [a.connectionId] });
  await expectGroup(b, g, "text", "excluding a");
  await expectNothing(a);

  await group.sendToAll("only bob", { contentType: "text/plain", filter: "userId eq 'bob'" });
  await expectGroup(b, g, "text", "only bob");
  await expectNothing(a);
  await expectNothing(outsider);
});

test("sendToUser reaches every connection of that user (and honours filter)", T, async (t) => {
  const ctx = new Ctx(t);
  const a1 = await ctx.connect({ userId: "alice" });
  const a2 = await ctx.connect({ userId: "alice" });
  const bob = await ctx.connect({ userId: "bob" });

  await ctx.service.sendToUser("alice", "hi alice", { contentType: "text/plain" });
  await ctx.service.sendToUser("alice", { for: "alice" });
  await ctx.service.sendToUser("alice", Buffer.from("bin"));
  for (const conn of [a1, a2]) {
    await expectServer(conn, "text", "hi alice");
    await expectServer(conn, "json", { for: "alice" });
    await expectServer(conn, "binary", Buffer.from("bin"));
  }
  await expectNothing(bob);

  await ctx.service.sendToUser("alice", "only a2", {
    contentType: "text/plain",
    filter: `connectionId eq '${a2.connectionId}'`,
  });
  await expectServer(a2, "text", "only a2");
  await expectNothing(a1);

  // Sending to a user without connections is still accepted (202).
  await ctx.service.sendToUser("nobody-" + randomName("u"), "void", { contentType: "text/plain" });
});

test("sendToConnection reaches exactly that connection", T, async (t) => {
  const ctx = new Ctx(t);
  const a = await ctx.connect({ userId: "alice" });
  const b = await ctx.connect({ userId: "alice" });

  await ctx.service.sendToConnection(a.connectionId, "direct", { contentType: "text/plain" });
  await ctx.service.sendToConnection(a.connectionId, ["json", "array"]);
  await ctx.service.sendToConnection(a.connectionId, Buffer.from([0xde, 0xad, 0xbe, 0xef]), {
    messageTtlSeconds: 30,
  });
  await expectServer(a, "text", "direct");
  await expectServer(a, "json", ["json", "array"]);
  await expectServer(a, "binary", [0xde, 0xad, 0xbe, 0xef]);
  await expectNothing(b);
});

// ---------------------------------------------------------------------------------------------
// Existence checks
// ---------------------------------------------------------------------------------------------

test("connectionExists / userExists / groupExists", T, async (t) => {
  const ctx = new Ctx(t);
  const g = randomName("grp");
  assert.equal(await ctx.service.userExists("alice"), false);
  assert.equal(await ctx.service.groupExists(g), false);
  assert.equal(await ctx.service.connectionExists("no-such-connection"), false);

  const a = await ctx.connect({ userId: "alice", groups: [g] });
  assert.equal(await ctx.service.connectionExists(a.connectionId), true);
  assert.equal(await ctx.service.userExists("alice"), true);
  assert.equal(await ctx.service.userExists("bob"), false);
  assert.equal(await ctx.service.groupExists(g), true);
  assert.equal(await ctx.service.groupExists(randomName("other")), false);

  // Other hubs do not see this hub's connections.
  const otherHub = serviceClient(randomHub());
  assert.equal(await otherHub.connectionExists(a.connectionId), false);
  assert.equal(await otherHub.userExists("alice"), false);
  assert.equal(await otherHub.groupExists(g), false);

  a.client.stop();
  await a.events.stopped.next();
  await waitUntil(async () => !(await ctx.service.connectionExists(a.connectionId)), "connection gone");
  assert.equal(await ctx.service.userExists("alice"), false);
  assert.equal(await ctx.service.groupExists(g), false);
});

async function waitUntil(predicate, what, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await sleep(50);
  }
  throw new Error(`timed out waiting for: ${what}`);
}

// ---------------------------------------------------------------------------------------------
// Group membership management
// ---------------------------------------------------------------------------------------------

test("group.addConnection / group.removeConnection", T, async (t) => {
  const ctx = new Ctx(t);
  const g = randomName("grp");
  const group = ctx.service.group(g);
  const a = await ctx.connect();
  const b = await ctx.connect();

  await group.addConnection(a.connectionId);
  assert.equal(await ctx.service.groupExists(g), true);
  await group.sendToAll("after add", { contentType: "text/plain" });
  await expectGroup(a, g, "text", "after add");
  await expectNothing(b);

  await group.removeConnection(a.connectionId);
  assert.equal(await ctx.service.groupExists(g), false);
  await group.sendToAll("after remove", { contentType: "text/plain" });
  await expectNothing(a);

  // Removing a connection that is not in the group is not an error.
  await group.removeConnection(b.connectionId);
});

test("group.addConnection of an unknown connection fails with RestError 404", T, async (t) => {
  const ctx = new Ctx(t);
  const err = await rejection(ctx.service.group("g").addConnection("no-such-connection"), "addConnection");
  assert.equal(err.name, "RestError", String(err));
  assert.equal(err.statusCode, 404, String(err));
});

test("group.addUser / group.removeUser affect all of the user's connections", T, async (t) => {
  const ctx = new Ctx(t);
  const g = randomName("grp");
  const group = ctx.service.group(g);
  const a1 = await ctx.connect({ userId: "alice" });
  const a2 = await ctx.connect({ userId: "alice" });
  const bob = await ctx.connect({ userId: "bob" });

  await group.addUser("alice");
  assert.equal(await ctx.service.groupExists(g), true);
  await group.sendToAll({ n: 1 });
  await expectGroup(a1, g, "json", { n: 1 });
  await expectGroup(a2, g, "json", { n: 1 });
  await expectNothing(bob);

  await group.removeUser("alice");
  assert.equal(await ctx.service.groupExists(g), false);
  await group.sendToAll({ n: 2 });
  await expectNothing(a1);
  await expectNothing(a2);
});

test("removeUserFromAllGroups", T, async (t) => {
  const ctx = new Ctx(t);
  const [g1, g2] = [randomName("g1"), randomName("g2")];
  const a = await ctx.connect({ userId: "alice", groups: [g1, g2] });
  const bob = await ctx.connect({ userId: "bob", groups: [g1] });

  await ctx.service.removeUserFromAllGroups("alice");
  assert.equal(await ctx.service.groupExists(g2), false);
  assert.equal(await ctx.service.groupExists(g1), true, "bob is still in g1");
  await ctx.service.group(g1).sendToAll("g1", { contentType: "text/plain" });
  await ctx.service.group(g2).sendToAll("g2", { contentType: "text/plain" });
  await expectGroup(bob, g1, "text", "g1");
  await expectNothing(a);
});

test("removeConnectionFromAllGroups", T, async (t) => {
  const ctx = new Ctx(t);
  const [g1, g2] = [randomName("g1"), randomName("g2")];
  const a1 = await ctx.connect({ userId: "alice", groups: [g1, g2] });
  const a2 = await ctx.connect({ userId: "alice", groups: [g1] });

  await ctx.service.removeConnectionFromAllGroups(a1.connectionId);
  assert.equal(await ctx.service.groupExists(g2), false);
  assert.equal(await ctx.service.groupExists(g1), true, "a2 (same user) is still in g1");
  await ctx.service.group(g1).sendToAll("g1", { contentType: "text/plain" });
  await expectGroup(a2, g1, "text", "g1");
  await expectNothing(a1);
});

test("group.listConnections pages with maxPageSize and honours top", T, async (t) => {
  const ctx = new Ctx(t);
  const g = randomName("grp");
  const group = ctx.service.group(g);
  const members = [];
  for (const userId of ["u0", "u1", "u2", undefined, "u0"]) {
    members.push(await ctx.connect({ userId, groups: [g] }));
  }
  const notMember = await ctx.connect({ userId: "u9" });
  const expected = new Map(members.map((m) => [m.connectionId, m.userId ?? undefined]));

  // One page by default.
  const all = [];
  for await (const m of await group.listConnections()) all.push(m);
  assert.equal(all.length, members.length, JSON.stringify(all));
  assert.deepEqual(new Set(all.map((m) => m.connectionId)), new Set(expected.keys()));
  for (const m of all) assert.equal(m.userId ?? undefined, expected.get(m.connectionId), JSON.stringify(m));
  assert.ok(!all.some((m) => m.connectionId === notMember.connectionId));

  // Paged: every page ≤ 2, the SDK follows nextLink until it is absent.
  const pages = await collectPages(group.listConnections({ maxPageSize: 2 }));
  assert.ok(pages.length >= 3, `expected ≥3 pages of ≤2, got ${JSON.stringify(pages)}`);
  for (const page of pages) assert.ok(page.length <= 2, `page too big: ${JSON.stringify(page)}`);
  const paged = pages.flat().map((m) => m.connectionId);
  assert.equal(paged.length, members.length, `no duplicates across pages: ${JSON.stringify(pages)}`);
  assert.deepEqual(new Set(paged), new Set(expected.keys()));

  // top caps the total across pages.
  const topped = (await collectPages(group.listConnections({ maxPageSize: 2, top: 3 }))).flat();
  assert.equal(topped.length, 3, JSON.stringify(topped));
  for (const m of topped) assert.ok(expected.has(m.connectionId));

  // An empty group lists nothing.
  const empty = [];
  for await (const m of await ctx.service.group(randomName("empty")).listConnections()) empty.push(m);
  assert.deepEqual(empty, []);
});

test("addConnectionsToGroups / removeConnectionsFromGroups with an OData filter", T, async (t) => {
  const ctx = new Ctx(t);
  const [g1, g2] = [randomName("g1"), randomName("g2")];
  const alice = await ctx.connect({ userId: "alice" });
  const bob = await ctx.connect({ userId: "bob" });
  const carol = await ctx.connect({ userId: "carol" });

  await ctx.service.addConnectionsToGroups([g1, g2], "userId eq 'alice' or userId eq 'bob'");
  const ids = async (g) =>
    new Set((await collectPages(ctx.service.group(g).listConnections())).flat().map((m) => m.connectionId));
  assert.deepEqual(await ids(g1), new Set([alice.connectionId, bob.connectionId]));
  assert.deepEqual(await ids(g2), new Set([alice.connectionId, bob.connectionId]));

  await ctx.service.group(g1).sendToAll("g1 #1", { contentType: "text/plain" });
  await expectGroup(alice, g1, "text", "g1 #1");
  await expectGroup(bob, g1, "text", "g1 #1");
  await expectNothing(carol);

  await ctx.service.removeConnectionsFromGroups([g1], "userId eq 'bob'");
  assert.deepEqual(await ids(g1), new Set([alice.connectionId]));
  assert.deepEqual(await ids(g2), new Set([alice.connectionId, bob.connectionId]));

  // `groups` in the filter refers to the connection's groups.
  await ctx.service.addConnectionsToGroups([g1], `'${g2}' in groups and userId ne 'alice'`);
  assert.deepEqual(await ids(g1), new Set([alice.connectionId, bob.connectionId]));
  await ctx.service.removeConnectionsFromGroups([g1, g2], `'${g1}' in groups`);
  assert.equal(await ctx.service.groupExists(g1), false);
  assert.equal(await ctx.service.groupExists(g2), false);
});

// ---------------------------------------------------------------------------------------------
// Close operations (the reason reaches the client's `disconnected` event)
// ---------------------------------------------------------------------------------------------

async function expectClosed(conn, reason) {
  const e = await conn.events.disconnected.next();
  assert.equal(e.connectionId, conn.connectionId);
  assert.equal(e.message?.message, reason, `disconnected reason (event: ${JSON.stringify(e)})`);
  await conn.events.stopped.next(); // autoReconnect is off in the helper
}

async function expectOpen(ctx, conn) {
  assert.deepEqual(await conn.events.disconnected.drain(QUIET_MS), [], "should still be connected");
  assert.equal(await ctx.service.connectionExists(conn.connectionId), true);
}

test("closeConnection with reason", T, async (t) => {
  const ctx = new Ctx(t);
  const a = await ctx.connect({ userId: "alice" });
  const b = await ctx.connect({ userId: "alice" });
  await ctx.service.closeConnection(a.connectionId, { reason: "bye from closeConnection" });
  await expectClosed(a, "bye from closeConnection");
  assert.equal(await ctx.service.connectionExists(a.connectionId), false);
  await expectOpen(ctx, b);
});

test("closeAllConnections with reason (and excluded)", T, async (t) => {
  const ctx = new Ctx(t);
  const a = await ctx.connect({ userId: "alice" });
  const b = await ctx.connect();
  const keep = await ctx.connect({ userId: "keeper" });
  // `excluded` is not in the public typings of HubCloseAllConnectionsOptions, but the SDK
  // passes the options through to the generated operation, which serialises it.
  await ctx.service.closeAllConnections({ reason: "hub closing", excluded: [keep.connectionId] });
  await expectClosed(a, "hub closing");
  await expectClosed(b, "hub closing");
  await expectOpen(ctx, keep);
  assert.equal(await ctx.service.userExists("alice"), false);

  await ctx.service.closeAllConnections({ reason: "really closing" });
  await expectClosed(keep, "really closing");
});

test("closeUserConnections with reason", T, async (t) => {
  const ctx = new Ctx(t);
  const a1 = await ctx.connect({ userId: "alice" });
  const a2 = await ctx.connect({ userId: "alice" });
  const bob = await ctx.connect({ userId: "bob" });
  await ctx.service.closeUserConnections("alice", { reason: "user closed" });
  await expectClosed(a1, "user closed");
  await expectClosed(a2, "user closed");
  assert.equal(await ctx.service.userExists("alice"), false);
  await expectOpen(ctx, bob);
});

test("group.closeAllConnections with reason", T, async (t) => {
  const ctx = new Ctx(t);
  const g = randomName("grp");
  const m1 = await ctx.connect({ groups: [g] });
  const m2 = await ctx.connect({ userId: "bob", groups: [g] });
  const outsider = await ctx.connect({ userId: "bob" });
  await ctx.service.group(g).closeAllConnections({ reason: "group closed" });
  await expectClosed(m1, "group closed");
  await expectClosed(m2, "group closed");
  assert.equal(await ctx.service.groupExists(g), false);
  await expectOpen(ctx, outsider);
});

// ---------------------------------------------------------------------------------------------
// Permissions
// ---------------------------------------------------------------------------------------------

async function forbidden(promise, what) {
  const err = await rejection(promise, what);
  assert.equal(err.name, "SendMessageError", `${what}: ${err}`);
  assert.equal(err.errorDetail?.name, "Forbidden", `${what}: ${JSON.stringify(err.errorDetail)}`);
}

test("grantPermission / revokePermission / hasPermission (with and without targetName)", T, async (t) => {
  const ctx = new Ctx(t);
  const [g1, g2] = [randomName("g1"), randomName("g2")];
  const c = await ctx.connect({ userId: "alice" }); // no roles
  const id = c.connectionId;

  assert.equal(await ctx.service.hasPermission(id, "joinLeaveGroup", { targetName: g1 }), false);
  assert.equal(await ctx.service.hasPermission(id, "sendToGroup"), false);
  await forbidden(c.client.joinGroup(g1), "joinGroup before grant");

  // joinLeaveGroup scoped to g1.
  await ctx.service.grantPermission(id, "joinLeaveGroup", { targetName: g1 });
  assert.equal(await ctx.service.hasPermission(id, "joinLeaveGroup", { targetName: g1 }), true);
  assert.equal(await ctx.service.hasPermission(id, "joinLeaveGroup", { targetName: g2 }), false);
  assert.equal(await ctx.service.hasPermission(id, "sendToGroup", { targetName: g1 }), false);
  await c.client.joinGroup(g1);
  assert.equal(await ctx.service.groupExists(g1), true);
  await forbidden(c.client.joinGroup(g2), "joinGroup g2 with a g1-only grant");

  // sendToGroup for every group (no targetName).
  await forbidden(c.client.sendToGroup(g1, "x", "text"), "sendToGroup before grant");
  await ctx.service.grantPermission(id, "sendToGroup");
  assert.equal(await ctx.service.hasPermission(id, "sendToGroup"), true);
  const ack = await c.client.sendToGroup(g1, "now allowed", "text");
  assert.equal(ack.isDuplicated, false);
  await expectClientGroupMessage(c, g1, "now allowed");
  await c.client.sendToGroup(g2, "any group", "text");

  // Revoke.
  await ctx.service.revokePermission(id, "sendToGroup");
  assert.equal(await ctx.service.hasPermission(id, "sendToGroup"), false);
  await forbidden(c.client.sendToGroup(g1, "y", "text"), "sendToGroup after revoke");
  await ctx.service.revokePermission(id, "joinLeaveGroup", { targetName: g1 });
  assert.equal(await ctx.service.hasPermission(id, "joinLeaveGroup", { targetName: g1 }), false);
  await forbidden(c.client.leaveGroup(g1), "leaveGroup after revoke");
});

async function expectClientGroupMessage(conn, group, text) {
  const m = await conn.events.group.next();
  assert.equal(m.group, group);
  assert.equal(m.dataType, "text");
  assert.equal(m.data, text);
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

test("getClientAccessToken: url shape, claims, and the token works (userId/roles/groups)", T, async (t) => {
  const ctx = new Ctx(t);
  const g = randomName("grp");
  const { endpoint } = parsedConnectionString();
  const before = Math.floor(Date.now() / 1000);
  const tok = await ctx.service.getClientAccessToken({
    userId: "alice",
    roles: ["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup.x"],
    groups: [g],
    expirationTimeInMinutes: 5,
  });
  const wsBase = endpoint.replace(/^http/, "ws");
  assert.equal(tok.baseUrl, `${wsBase}client/hubs/${ctx.hub}`);
  assert.equal(tok.url, `${tok.baseUrl}?access_token=${tok.token}`);
  const claims = decodeJwt(tok.token);
  assert.equal(claims.aud, `${endpoint}client/hubs/${ctx.hub}`);
  assert.equal(claims.sub, "alice");
  assert.deepEqual(claims.role, ["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup.x"]);
  assert.deepEqual(claims["webpubsub.group"], [g]);
  assert.ok(claims.exp - before >= 299 && claims.exp - before <= 302, `exp ${claims.exp} vs now ${before}`);

  const listener = await ctx.connect({ roles: ["webpubsub.joinLeaveGroup"] });
  await listener.client.joinGroup(g);
  const c = await ctx.connect({
    userId: "alice",
    roles: ["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup.x"],
    groups: [g],
  });
  assert.equal(c.userId, "alice");
  assert.equal(await ctx.service.userExists("alice"), true);
  const members = (await collectPages(ctx.service.group(g).listConnections())).flat();
  assert.ok(
    members.some((m) => m.connectionId === c.connectionId && m.userId === "alice"),
    `token group joined on connect: ${JSON.stringify(members)}`,
  );
  await c.client.sendToGroup(g, "role ok", "text");
  const m = await listener.events.group.next();
  assert.equal(m.fromUserId, "alice");
  assert.equal(m.data, "role ok");
  await c.client.joinGroup("x"); // webpubsub.joinLeaveGroup.x
  await forbidden(c.client.joinGroup("y"), "joinGroup y with role joinLeaveGroup.x");
});

test("a token signed with another key, or for another hub, is refused", T, async (t) => {
  const ctx = new Ctx(t);
  const wrongKey = connectionString().replace(/AccessKey=[^;]*/i, "AccessKey=not-the-right-key-at-all-0123456789");
  const badService = serviceClient(ctx.hub, wrongKey);
  const badTok = await badService.getClientAccessToken({ userId: "mallory" });
  for (const [what, url] of [
    ["wrong key", badTok.url],
    [
      "other hub's token",
      `${(await ctx.service.getClientAccessToken()).baseUrl}?access_token=${
        (await serviceClient(randomHub()).getClientAccessToken()).token
      }`,
    ],
    ["no token", (await ctx.service.getClientAccessToken()).baseUrl],
  ]) {
    const client = new WebPubSubClient(url, {
      protocol: WebPubSubJsonProtocol(),
      autoReconnect: false,
      ...NO_KEEPALIVE,
    });
    const err = await rejection(client.start(), `start() with ${what}`);
    client.stop();
    assert.match(String(err?.message ?? err), /401/, `${what}: ${err}`);
  }
  assert.equal(await ctx.service.userExists("mallory"), false);
});

// ---------------------------------------------------------------------------------------------
// Errors and auth
// ---------------------------------------------------------------------------------------------

test("an invalid OData filter is rejected with RestError 400", T, async (t) => {
  const ctx = new Ctx(t);
  for (const [what, call] of [
    ["sendToAll", () => ctx.service.sendToAll("x", { contentType: "text/plain", filter: "userId eq" })],
    ["sendToUser", () => ctx.service.sendToUser("u", { a: 1 }, { filter: "userId eq 'unterminated" })],
    ["group sendToAll", () => ctx.service.group("g").sendToAll({ a: 1 }, { filter: "(userId eq 'a'" })],
    ["addConnectionsToGroups", () => ctx.service.addConnectionsToGroups(["g"], "userId eq 'a' and")],
    ["removeConnectionsFromGroups", () => ctx.service.removeConnectionsFromGroups(["g"], "eq eq eq")],
    // A type error rather than a syntax error (`not` binds tighter than `gt`).
    ["sendToAll (type error)", () => ctx.service.sendToAll({ a: 1 }, { filter: "not length(userId) gt 5" })],
  ]) {
    const err = await rejection(call(), what);
    assert.equal(err.name, "RestError", `${what}: ${err}`);
    assert.equal(err.statusCode, 400, `${what}: ${err}`);
  }
});

test("a wrong AccessKey is rejected with RestError 401", T, async (t) => {
  const ctx = new Ctx(t);
  const wrongKey = connectionString().replace(/AccessKey=[^;]*/i, "AccessKey=not-the-right-key-at-all-0123456789");
  const bad = serviceClient(ctx.hub, wrongKey);
  const err = await rejection(bad.sendToAll("x", { contentType: "text/plain" }), "sendToAll with wrong key");
  assert.equal(err.name, "RestError", String(err));
  assert.equal(err.statusCode, 401, String(err));
});

// ---------------------------------------------------------------------------------------------
// Operations the SDK generates but does not expose publicly (reached through its internal,
// unmodified generated client, with the SDK's own key-credential policy).
// ---------------------------------------------------------------------------------------------

test("internal generated ops: health (HEAD /api/health) and :generateToken", T, async (t) => {
  const ctx = new Ctx(t);
  const generated = ctx.service["client"];
  assert.ok(generated?.healthApi && generated?.webPubSub, "SDK internals changed");
  await generated.healthApi.getServiceStatus(); // only 200 is accepted

  const { token } = await generated.webPubSub.generateClientToken(ctx.hub, {
    userId: "tokenuser",
    roles: ["webpubsub.joinLeaveGroup"],
    groups: ["tg"],
    expirationTimeInMinutes: 10,
    clientType: "Default",
  });
  assert.equal(typeof token, "string");
  const claims = decodeJwt(token);
  assert.equal(claims.sub, "tokenuser");
  assert.deepEqual([claims.role].flat(), ["webpubsub.joinLeaveGroup"]);
  assert.deepEqual([claims["webpubsub.group"]].flat(), ["tg"]);
  assert.match(String(claims.aud), new RegExp(`/client/hubs/${ctx.hub}$`, "i"));
  const now = Math.floor(Date.now() / 1000);
  assert.ok(claims.exp - now > 8 * 60 && claims.exp - now <= 10 * 60 + 5, `exp ${claims.exp}, now ${now}`);

  // The service-minted token connects.
  const baseUrl = (await ctx.service.getClientAccessToken()).baseUrl;
  const client = new WebPubSubClient(`${baseUrl}?access_token=${token}`, {
    protocol: WebPubSubJsonProtocol(),
    autoReconnect: false,
    ...NO_KEEPALIVE,
  });
  const connected = new Promise((resolve) => client.on("connected", resolve));
  const stopped = new Promise((resolve) => client.on("stopped", resolve));
  t.after(async () => {
    client.stop();
    await Promise.race([stopped, sleep(WAIT_MS)]);
  });
  await client.start();
  const e = await Promise.race([connected, sleep(WAIT_MS).then(() => null)]);
  assert.ok(e, "no connected event");
  assert.equal(e.userId, "tokenuser");
  assert.equal(await ctx.service.groupExists("tg"), true);
  await client.joinGroup("other"); // role from the minted token
});

// ---------------------------------------------------------------------------------------------
// Path values the SDK must URL-encode (encodeURIComponent: '/', ' ', '#', '?', '%', non-ASCII).
// ---------------------------------------------------------------------------------------------

test("group and user names that need URL encoding round-trip through every route", T, async (t) => {
  const ctx = new Ctx(t);
  const g = "room/1 #?%25 ü.λ";
  const user = "user/with spaces@example.com?x=1#frag";
  const group = ctx.service.group(g);
  const c = await ctx.connect({ userId: user, roles: ALL_ROLES });
  assert.equal(c.userId, user);

  // Client-side join, service-side existence checks and listing.
  await c.client.joinGroup(g);
  assert.equal(await ctx.service.groupExists(g), true);
  assert.equal(await ctx.service.groupExists("room"), false);
  assert.equal(await ctx.service.userExists(user), true);
  assert.equal(await ctx.service.userExists("user"), false);
  const members = (await collectPages(group.listConnections())).flat();
  assert.deepEqual(members, [{ connectionId: c.connectionId, userId: user }]);

  // Sends.
  await group.sendToAll("to the odd group", { contentType: "text/plain" });
  await expectGroup(c, g, "text", "to the odd group");
  await ctx.service.sendToUser(user, "to the odd user", { contentType: "text/plain" });
  await expectServer(c, "text", "to the odd user");
  await c.client.sendToGroup(g, "client send", "text");
  const echoed = await c.events.group.next();
  assert.equal(echoed.group, g);
  assert.equal(echoed.fromUserId, user);

  // Membership and permission routes.
  await group.removeConnection(c.connectionId);
  assert.equal(await ctx.service.groupExists(g), false);
  await group.addUser(user);
  assert.equal(await ctx.service.groupExists(g), true);
  await group.removeUser(user);
  assert.equal(await ctx.service.groupExists(g), false);
  await group.addConnection(c.connectionId);
  await ctx.service.removeUserFromAllGroups(user);
  assert.equal(await ctx.service.groupExists(g), false);
  const noRoles = await ctx.connect();
  await ctx.service.grantPermission(noRoles.connectionId, "sendToGroup", { targetName: g });
  assert.equal(await ctx.service.hasPermission(noRoles.connectionId, "sendToGroup", { targetName: g }), true);
  assert.equal(
    await ctx.service.hasPermission(noRoles.connectionId, "sendToGroup", { targetName: "room" }),
    false,
  );
  await noRoles.client.sendToGroup(g, "granted", "text");
  await forbidden(noRoles.client.sendToGroup("room", "not granted", "text"), "sendToGroup room");

  await ctx.service.closeUserConnections(user, { reason: "odd names done" });
  const e = await c.events.disconnected.next();
  assert.equal(e.message?.message, "odd names done");
  assert.equal(await ctx.service.userExists(user), false);
});
