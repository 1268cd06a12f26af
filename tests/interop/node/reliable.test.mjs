// The official client SDK with its DEFAULT protocol, `json.reliable.webpubsub.azure.v1`.

import { test } from "node:test";
import assert from "node:assert/strict";
import { WebPubSubJsonReliableProtocol } from "@azure/web-pubsub-client";
import { ALL_ROLES, Ctx, randomName, sleep } from "./helpers.mjs";

test(
  "default (reliable) protocol: connected, group and server messages carry sequenceIds",
  { timeout: 30_000 },
  async (t) => {
    const ctx = new Ctx(t);
    const g = randomName("grp");
    // No `protocol` option at all ⇒ the SDK default, which is the reliable JSON subprotocol.
    const a = await ctx.connect({ userId: "alice", roles: ALL_ROLES, protocol: null });
    const b = await ctx.connect({ userId: "bob", roles: ALL_ROLES, protocol: null });
    assert.equal(a.client["_protocol"].name, WebPubSubJsonReliableProtocol().name);
    assert.equal(a.client["_protocol"].isReliableSubProtocol, true);
    assert.equal(a.userId, "alice");
    assert.equal(typeof a.client["_reconnectionToken"], "string", "connected carries reconnectionToken");

    await a.client.joinGroup(g);
    await b.client.joinGroup(g);
    await a.client.sendToGroup(g, "reliable 1", "text");
    await a.client.sendToGroup(g, { n: 2 }, "json");
    const m1 = await b.events.group.next();
    const m2 = await b.events.group.next();
    assert.equal(m1.data, "reliable 1");
    assert.deepEqual(m2.data, { n: 2 });
    assert.equal(typeof m1.sequenceId, "number");
    assert.ok(m1.sequenceId >= 1);
    assert.ok(m2.sequenceId > m1.sequenceId, `sequence ids increase: ${m1.sequenceId} → ${m2.sequenceId}`);

    await ctx.service.sendToConnection(b.connectionId, "server", { contentType: "text/plain" });
    const s = await b.events.server.next();
    assert.equal(s.data, "server");
    assert.ok(s.sequenceId > m2.sequenceId, "server messages share the per-connection sequence");

    // The client acks cumulatively ({"type":"sequenceAck"}) about once a second; the
    // connection must stay up and keep numbering after that.
    await sleep(1500);
    assert.deepEqual(await b.events.disconnected.drain(0), []);
    await ctx.service.sendToConnection(b.connectionId, { after: "ack" });
    const s2 = await b.events.server.next();
    assert.deepEqual(s2.data, { after: "ack" });
    assert.ok(s2.sequenceId > s.sequenceId, `${s2.sequenceId} > ${s.sequenceId}`);
  },
);
