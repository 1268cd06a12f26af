// Peer for `make bench`: a minimal Node `ws` broadcast server.
// node node_ws.js WS_PORT HTTP_PORT — WebSocket clients on WS_PORT (any path, any subprotocol);
// POST (any path) on HTTP_PORT sends its body as one text message to every open client, answers 202.
"use strict";
const http = require("http");
const { WebSocketServer, WebSocket } = require("ws");

const [wsPort, httpPort] = process.argv.slice(2).map(Number);
const wss = new WebSocketServer({ host: "127.0.0.1", port: wsPort, perMessageDeflate: false });

http
  .createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString();
      for (const client of wss.clients) if (client.readyState === WebSocket.OPEN) client.send(body);
      res.writeHead(202);
      res.end();
    });
  })
  .listen(httpPort, "127.0.0.1");
