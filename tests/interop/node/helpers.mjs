// Shared helpers for the Node interop tests (not a test file itself).
//
// Everything here drives the OFFICIAL, unmodified npm packages `@azure/web-pubsub`
// (service SDK) and `@azure/web-pubsub-client` (client SDK) against a real hubbub
// process whose connection string is given in HUBBUB_CONNECTION_STRING.

import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { WebPubSubServiceClient } from "@azure/web-pubsub";
import { WebPubSubClient, WebPubSubJsonProtocol } from "@azure/web-pubsub-client";

export { sleep };

export const ALL_ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];

/** Client options that disable the SDK's keep-alive ping loop and timeout monitor. */
export const NO_KEEPALIVE = Object.freeze({ keepAliveIntervalInMs: 0, keepAliveTimeoutInMs: 0 });

/** How long we wait for something that should happen. */
export const WAIT_MS = 5000;
/** How long we watch for something that must NOT happen. */
export const QUIET_MS = 600;

export function connectionString() {
  const cs = process.env.HUBBUB_CONNECTION_STRING;
  if (!cs) {
    throw new Error(
      "HUBBUB_CONNECTION_STRING is not set (expected 'Endpoint=http://localhost;Port=NNNN;AccessKey=...;Version=1.0;')",
    );
  }
  return cs;
}

/** Parses the connection string the same lenient way the SDKs do (for assertions only). */
export function parsedConnectionString() {
  const parts = {};
  for (const seg of connectionString().split(";")) {
    const i = seg.indexOf("=");
    if (i > 0) parts[seg.slice(0, i).toLowerCase()] = seg.slice(i + 1);
  }
  const url = new URL(parts.endpoint);
  if (parts.port) url.port = parts.port;
  return { endpoint: url.toString(), accessKey: parts.accesskey };
}

/**
 * The official service client. `allowInsecureConnection: true` is REQUIRED for an http://
 * endpoint: with the locked @azure/core-rest-pipeline 1.24.0 (→ @typespec/ts-http-runtime
 * 0.3.6) the Node HTTP client throws "Cannot connect to http://... while
 * allowInsecureConnection is false" before sending anything.
 */
export function serviceClient(hub, cs = connectionString()) {
  return new WebPubSubServiceClient(cs, hub, { allowInsecureConnection: true });
}

/** A fresh hub name per test (hub rule: ^[A-Za-z][A-Za-z0-9_`,.[\]]{0,127}$). */
export function randomHub(prefix = "node") {
  return `${prefix}_${randomBytes(6).toString("hex")}`;
}

export function randomName(prefix) {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

/** Base64url JWT payload decoding (no signature check; the server checks it). */
export function decodeJwt(token) {
  const [, payload] = token.split(".");
  return JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
}

/** Bytes of an ArrayBuffer / view as a plain Buffer, for deepStrictEqual. */
export function bytes(data) {
  if (data instanceof ArrayBuffer) return Buffer.from(new Uint8Array(data));
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError(`expected binary data, got ${Object.prototype.toString.call(data)}`);
}

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** An unbounded async queue of events with timeouts, so tests can await "the next one". */
export class EventQueue {
  constructor(name) {
    this.name = name;
    this.items = [];
    this.waiters = [];
  }

  push(item) {
    const waiter = this.waiters.findIndex((w) => w.predicate(item));
    if (waiter >= 0) {
      const [w] = this.waiters.splice(waiter, 1);
      clearTimeout(w.timer);
      w.resolve(item);
      return;
    }
    this.items.push(item);
  }

  /** Resolves with (and removes) the first queued/incoming item matching predicate. */
  next(timeoutMs = WAIT_MS, predicate = () => true) {
    const idx = this.items.findIndex(predicate);
    if (idx >= 0) return Promise.resolve(this.items.splice(idx, 1)[0]);
    return new Promise((resolve, reject) => {
      const w = { predicate, resolve };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${this.name}; ` +
              `unmatched items so far: ${safeJson(this.items)}`,
          ),
        );
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  /** Waits quietMs and returns everything (matching) that arrived, removing it. */
  async drain(quietMs = QUIET_MS, predicate = () => true) {
    await sleep(quietMs);
    const got = this.items.filter(predicate);
    this.items = this.items.filter((i) => !predicate(i));
    return got;
  }
}

function safeJson(v) {
  try {
    return JSON.stringify(v, (_k, x) =>
      x instanceof ArrayBuffer ? `<ArrayBuffer ${x.byteLength}>` : x,
    ).slice(0, 2000);
  } catch {
    return String(v);
  }
}

/**
 * Per-test context: a fresh hub, a service client for it, and client factories whose
 * clients are all stopped when the test ends (so the node process can exit).
 */
export class Ctx {
  constructor(t, hub = randomHub()) {
    this.hub = hub;
    this.service = serviceClient(hub);
    this.clients = [];
    t.after(() => this.cleanup());
  }

  /**
   * Starts an official WebPubSubClient (JSON, non-reliable by default) with a token from the
   * service SDK and waits for its `connected` event. Returns { client, events, connectionId, userId }.
   */
  async connect({ userId, roles, groups, protocol, options = {} } = {}) {
    const service = this.service;
    const events = {
      connected: new EventQueue("connected"),
      disconnected: new EventQueue("disconnected"),
      stopped: new EventQueue("stopped"),
      server: new EventQueue("server-message"),
      group: new EventQueue("group-message"),
      rejoinFailed: new EventQueue("rejoin-group-failed"),
    };
    const clientOptions = {
      autoReconnect: false,
      // Do not let the client retry failed sends: a failed ack must surface immediately.
      messageRetryOptions: { maxRetries: 0 },
      // The SDK's keep-alive loops `await delay(interval)` without an abort signal, so after
      // stop() they keep the process alive for up to 20 s (ping) / 40 s (timeout monitor).
      // Disable them here; the keep-alive test turns them on with short intervals.
      ...NO_KEEPALIVE,
      ...options,
    };
    // protocol: undefined ⇒ the non-reliable JSON subprotocol; null ⇒ the SDK default (reliable).
    // NB: in @azure/web-pubsub-client 1.1.0 the protocol factories are arrow functions:
    // `WebPubSubJsonProtocol()` works, `new WebPubSubJsonProtocol()` throws a TypeError.
    if (protocol !== null) clientOptions.protocol = protocol ?? WebPubSubJsonProtocol();
    const client = new WebPubSubClient(
      {
        getClientAccessUrl: async () => (await service.getClientAccessToken({ userId, roles, groups })).url,
      },
      clientOptions,
    );
    client.on("connected", (e) => events.connected.push(e));
    client.on("disconnected", (e) => events.disconnected.push(e));
    client.on("stopped", (e) => events.stopped.push(e));
    client.on("server-message", (e) => events.server.push(e.message));
    client.on("group-message", (e) => events.group.push(e.message));
    client.on("rejoin-group-failed", (e) => events.rejoinFailed.push(e));
    const entry = { client, events, stopped: false };
    client.on("stopped", () => {
      entry.stopped = true;
    });
    this.clients.push(entry);
    try {
      await withTimeout(client.start(), WAIT_MS, "client.start()");
    } catch (err) {
      // A client whose start() failed is back in the Stopped state and emits no "stopped".
      entry.stopped = true;
      client.stop();
      throw err;
    }
    const connected = await events.connected.next(WAIT_MS);
    return { client, events, connectionId: connected.connectionId, userId: connected.userId };
  }

  async cleanup() {
    await Promise.all(
      this.clients.map(async ({ client, events, stopped }) => {
        if (stopped) return;
        const done = events.stopped.next(WAIT_MS).catch(() => undefined);
        try {
          client.stop();
        } catch {
          /* already stopped */
        }
        await done;
      }),
    );
    this.clients = [];
  }
}

/** Asserts that `promise` rejects, returning the error. */
export async function rejection(promise, what = "operation") {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error(`expected ${what} to fail, but it succeeded`);
}
