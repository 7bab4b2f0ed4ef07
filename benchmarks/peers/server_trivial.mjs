// A trivial chat in the course's protocol, for one question only: how fast can the load
// generator go? No Socket.IO, no database, no password, no rate limit: Node's `ws` and a Map.
//
//   node server_trivial.mjs [--port N]
//
// `sign-up` {name, email, password} is acknowledged with {user: {uid, name, email}, token}, the
// token being the uid; a socket opened with ?token=UID is that user. `personal-message`
// {to, message, clientId?} is acknowledged with the message (an id counting up) and pushed as
// `personal-message` to every socket of both parties; a (sender, clientId) seen before is
// acknowledged with its first copy and not pushed again, so exactly-once holds as for the real
// servers. Whatever this server sustains is the load generator's ceiling on this machine: a
// real server measured beside it cannot be shown faster than that (benchmarks/peers/README.md).
import http from 'node:http';
import { WebSocketServer } from 'ws';

const port = Number(process.argv[process.argv.indexOf('--port') + 1] || 0);
const server = http.createServer((request, response) => response.end('trivial chat'));
const wss = new WebSocketServer({ server, perMessageDeflate: false });
const sockets = new Map(); // uid -> Set of sockets
const stored = new Map(); // `${sender}\n${clientId}` -> the message as first acknowledged
let nextUid = 1;
let nextId = 1;

function answer(socket, id, data) {
  if (id !== undefined) socket.send(JSON.stringify({ ack: id, data }));
}

function refuse(socket, id, code, message) {
  if (id !== undefined) socket.send(JSON.stringify({ ack: id, error: { code, message } }));
}

wss.on('connection', (socket, request) => {
  const uid = new URL(request.url, 'http://x').searchParams.get('token');
  if (uid) {
    if (!sockets.has(uid)) sockets.set(uid, new Set());
    sockets.get(uid).add(socket);
    socket.on('close', () => sockets.get(uid).delete(socket));
  }
  socket.on('message', (raw, isBinary) => {
    if (isBinary) return;
    let frame;
    try {
      frame = JSON.parse(raw.toString());
    } catch {
      return;
    }
    const { event, data, id } = frame || {};
    if (event === 'sign-up' && data && typeof data.name === 'string') {
      const user = { uid: `t${nextUid++}`, name: data.name, email: String(data.email) };
      return answer(socket, id, { user, token: user.uid });
    }
    if (event !== 'personal-message') return refuse(socket, id, 'invalid-data', 'unknown event');
    if (!uid) return refuse(socket, id, 'unauthorized', 'no token');
    if (!data || typeof data.to !== 'string' || typeof data.message !== 'string') {
      return refuse(socket, id, 'invalid-data', 'takes {to, message}');
    }
    const key = typeof data.clientId === 'string' ? `${uid}\n${data.clientId}` : null;
    const first = key === null ? undefined : stored.get(key);
    if (first !== undefined) return answer(socket, id, first);
    const message = { id: nextId++, from: uid, to: data.to, message: data.message, createdAt: Date.now() };
    if (key !== null) {
      message.clientId = data.clientId;
      stored.set(key, message);
    }
    const push = JSON.stringify({ event: 'personal-message', data: message });
    for (const party of new Set([uid, data.to])) for (const other of sockets.get(party) || []) other.send(push);
    return answer(socket, id, message);
  });
});

server.listen(port, '127.0.0.1', () => console.log(`http://127.0.0.1:${server.address().port}/`));
const stop = () => {
  for (const client of wss.clients) client.terminate();
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
