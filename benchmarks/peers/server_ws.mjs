// The mini chat on Node's `ws` alone, no Socket.IO: PROTOCOL.md's frames, the reply encoded
// once (JSON.stringify) and sent to every open client. The raw floor a Node.js server reaches.
import http from "node:http";
import { WebSocketServer } from "ws";

const port = Number(process.argv[process.argv.indexOf("--port") + 1]);
const server = http.createServer((request, response) => response.end("minichat"));
const wss = new WebSocketServer({ server, perMessageDeflate: false });

wss.on("connection", (socket) => {
  socket.on("message", (raw) => {
    let frame;
    try {
      frame = JSON.parse(raw.toString());
    } catch {
      return;
    }
    const data = frame && frame.event === "msg-to-server" ? frame.data : null;
    if (data === null || typeof data !== "object" || typeof data.text !== "string" || !data.text.trim()) return;
    const reply = { text: data.text, at: Date.now() / 1000 };
    if (typeof data.sentAt === "number") reply.sentAt = data.sentAt;
    const out = JSON.stringify({ event: "msg-from-server", data: reply });
    for (const client of wss.clients) if (client.readyState === 1) client.send(out);
  });
});

server.listen(port, "127.0.0.1", () => console.log(`http://127.0.0.1:${port}/`));
const stop = () => {
  for (const client of wss.clients) client.terminate();
  server.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
