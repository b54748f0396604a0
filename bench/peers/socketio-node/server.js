// The Socket.IO (Node) peer of the Tidings benchmarks: the same behaviour as the Tidings
// bench setup. HS256 JWT verified on connect (auth: {token}), a personal room user:{sub},
// join (ack), publish to a room (ack after the broadcast), echo (ack with the data).
// WebSocket transport only. Environment: BIND (127.0.0.1:9002), JWT_SECRET,
// PING_INTERVAL_MS (25000), PING_TIMEOUT_MS (20000).
"use strict";
const http = require("node:http");
const { Server } = require("socket.io");
const jwt = require("jsonwebtoken");

const [host, port] = (process.env.BIND || "127.0.0.1:9002").split(":");
const secret = process.env.JWT_SECRET;
if (!secret) {
  console.error("JWT_SECRET is required");
  process.exit(1);
}

const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ["websocket"],
  serveClient: false,
  pingInterval: Number(process.env.PING_INTERVAL_MS || 25000),
  pingTimeout: Number(process.env.PING_TIMEOUT_MS || 20000),
});

io.use((socket, next) => {
  try {
    const claims = jwt.verify(String(socket.handshake.auth.token || ""), secret, {
      algorithms: ["HS256"],
    });
    socket.data.sub = claims.sub;
    next();
  } catch (e) {
    next(new Error("unauthenticated"));
  }
});

io.on("connection", (socket) => {
  socket.join("user:" + socket.data.sub);
  socket.on("join", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") ack("ok");
  });
  socket.on("publish", (room, payload, ack) => {
    io.to(room).emit("message", payload);
    if (typeof ack === "function") ack("ok");
  });
  socket.on("echo", (payload, ack) => {
    if (typeof ack === "function") ack(payload);
  });
});

// A large accept backlog, like the other servers.
httpServer.listen({ host, port: Number(port), backlog: 4096 }, () => {
  console.error(`socket.io peer listening on ${host}:${port}`);
});
