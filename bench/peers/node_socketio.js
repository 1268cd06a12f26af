// Peer for `make bench`: a minimal Node socket.io broadcast server (WebSocket transport only).
// node node_socketio.js WS_PORT HTTP_PORT — Socket.IO clients on WS_PORT (/socket.io/);
// POST (any path) on HTTP_PORT emits its body as event "message" to every client, answers 202.
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const [wsPort, httpPort] = process.argv.slice(2).map(Number);
const server = http.createServer();
const io = new Server(server, { transports: ["websocket"], perMessageDeflate: false, serveClient: false });
server.listen(wsPort, "127.0.0.1");

http
  .createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      io.emit("message", Buffer.concat(chunks).toString());
      res.writeHead(202);
      res.end();
    });
  })
  .listen(httpPort, "127.0.0.1");
