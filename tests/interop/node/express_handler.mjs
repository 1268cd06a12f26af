// An event-handler server written the way the `@azure/web-pubsub-express` README writes one, used by
// tests/interop/test_express_handler.py against a real `hubbub serve`.
//
//   PORT=<port> HUB=<hub> node express_handler.mjs
//
// Every callback is recorded; `GET /log` returns the records as a JSON array (each record is also
// printed as one JSON line on stdout). The handler's behaviour is steered by the client's query:
//   connect:  ?reject=1            -> res.fail(401, "rejected by the express handler")
//             ?user=<id>           -> userId (default "express-user")
//             ?group=<g> (repeat)  -> groups to join
//             ?role=<r> (repeat)   -> roles granted
//             always setState("connectedBy", "express") and setState("tag", ?tag)
//   user events: echo the data back with the same dataType (`res.success(data, dataType)`), after
//             setState("count", count + 1); event "whoami" answers {userId, states} as JSON.
import express from "express";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";

const port = Number(process.env.PORT ?? 8080);
const hub = process.env.HUB ?? "express_chat";
const records = [];

function record(kind, req, extra = {}) {
  // a copy: `res.setState` mutates req.context.states after this point
  const line = JSON.stringify({ kind, context: req.context, ...extra });
  records.push(JSON.parse(line));
  process.stdout.write(line + "\n");
}

function encode(data, dataType) {
  return dataType === "binary" ? Buffer.from(data).toString("base64") : data;
}

const handler = new WebPubSubEventHandler(hub, {
  path: "/eventhandler",
  handleConnect: (req, res) => {
    record("connect", req, {
      claims: req.claims,
      query: req.query,
      queries: req.queries,
      headers: req.headers,
      subprotocols: req.subprotocols,
      clientCertificates: req.clientCertificates,
    });
    const query = req.query ?? {};
    if (query.reject) {
      res.fail(401, "rejected by the express handler");
      return;
    }
    res.setState("connectedBy", "express");
    res.setState("tag", query.tag?.[0] ?? null);
    res.success({
      userId: query.user?.[0] ?? "express-user",
      groups: query.group ?? [],
      roles: query.role ?? [],
    });
  },
  onConnected: (req) => {
    record("connected", req);
  },
  onDisconnected: (req) => {
    record("disconnected", req, { reason: req.reason ?? null });
  },
  handleUserEvent: (req, res) => {
    record("user", req, { dataType: req.dataType, data: encode(req.data, req.dataType) });
    const count = (req.context.states.count ?? 0) + 1;
    res.setState("count", count);
    switch (req.context.eventName) {
      case "whoami":
        res.success(JSON.stringify({ userId: req.context.userId, states: req.context.states }), "json");
        return;
      default:
        if (req.dataType === "json") {
          res.success(JSON.stringify(req.data), "json");
        } else {
          res.success(req.data, req.dataType);
        }
    }
  },
});

const app = express();
app.use(handler.getMiddleware());
app.get("/log", (_req, res) => res.json(records));
app.delete("/log", (_req, res) => {
  records.length = 0;
  res.status(204).end();
});
app.listen(port, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ kind: "listening", port, hub, path: handler.path }) + "\n");
});
