// Driven by tests/interop/test_reliable_drops.py: receive EXPECTED group messages on the default
// (reliable) protocol while the test cuts the TCP connection; print one JSON summary line.
import { WebPubSubClient } from "@azure/web-pubsub-client";

const expected = Number(process.env.EXPECTED);
const client = new WebPubSubClient(process.env.CLIENT_URL, {
  keepAliveIntervalInMs: 0,
  keepAliveTimeoutInMs: 0,
  autoReconnect: false,
});
const connections = new Set();
let count = 0, next = 0, inOrder = true, duplicates = 0;
const done = new Promise((resolve) => {
  client.on("group-message", (e) => {
    const index = Number(String(e.message.data).slice(1));
    if (index < next) duplicates++;
    else {
      if (index !== next) inOrder = false;
      next = index + 1;
      count++;
    }
    if (count >= expected) resolve();
  });
});
client.on("connected", (e) => connections.add(e.connectionId));
const timer = setTimeout(() => finish(1), 120_000);

async function finish(code) {
  clearTimeout(timer);
  console.log(JSON.stringify({ count, inOrder, duplicates, connections: connections.size }));
  await client.stop();
  process.exit(code);
}

await client.start();
await new Promise((r) => setTimeout(r, 100));
console.log("READY");
await done;
await new Promise((r) => setTimeout(r, 500)); // catch duplicates arriving late
await finish(0);
