// The Socket.IO peer of benchmarks/cluster.py: one node of the minichat, several nodes sharing
// through Redis with the official adapter (@socket.io/redis-adapter on the `redis` client).
//
//   node server_sio_redis.mjs --redis redis://127.0.0.1:PORT [--node NAME] [--port N]
//
// The same app as server.mjs's minichat: `msg-to-server` {text, sentAt?} -> `msg-from-server`
// {text, at, sentAt?} to everyone, the sender included. `io.emit` sends to this node's sockets
// and PUBLISHes the packet once on Redis; every other node's adapter receives it through its
// PSUBSCRIBE and sends it to its own sockets. That is the role of labtools' `--broker`, so the
// two are compared doing the same work.
//
// Prints http://127.0.0.1:PORT/ once listening and connected to Redis, like
// `python -m labtools serve`; SIGTERM or SIGINT closes everything and exits 0.

import http from 'node:http';
import { createAdapter } from '@socket.io/redis-adapter';
import { createClient } from 'redis';
import { Server } from 'socket.io';

function parseArgs(argv) {
  const args = { port: 0, redis: null, node: `${process.pid}` };
  for (let i = 0; i < argv.length; i += 2) args[argv[i].replace(/^--/, '')] = argv[i + 1];
  args.port = Number(args.port);
  if (!args.redis) throw new Error('--redis URL is required');
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  // The adapter needs two connections: a subscribed connection can issue no other command.
  // No command timeout: node-redis 5+ fails a command after 5 s by default, the adapter does not
  // catch a failed PUBLISH, and the unhandled rejection kills a node whose loop is 5 s behind
  // (an overloaded node must show as latency, as the course's nodes do, not as a crash).
  const pubClient = createClient({ url: args.redis, name: `sio-${args.node}-pub`, commandOptions: { timeout: 0 } });
  const subClient = pubClient.duplicate({ name: `sio-${args.node}-sub` });
  for (const client of [pubClient, subClient]) {
    client.on('error', (err) => process.stderr.write(`[${args.node}] redis: ${err}\n`));
  }
  await Promise.all([pubClient.connect(), subClient.connect()]);
  const httpServer = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`socket.io redis peer, node ${args.node}\n`);
  });
  const io = new Server(httpServer, {
    transports: ['websocket'], perMessageDeflate: false, serveClient: false,
    adapter: createAdapter(pubClient, subClient),
  });
  io.on('connection', (socket) => {
    socket.on('msg-to-server', (data) => {
      if (data === null || typeof data !== 'object' || typeof data.text !== 'string' || !data.text.trim()) return;
      const reply = { text: data.text, at: Date.now() / 1000 };
      if (typeof data.sentAt === 'number') reply.sentAt = data.sentAt;
      io.emit('msg-from-server', reply);
    });
  });
  await new Promise((resolve) => httpServer.listen(args.port, '127.0.0.1', resolve));
  process.stdout.write(`http://127.0.0.1:${httpServer.address().port}/\n`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    io.disconnectSockets(true);
    await new Promise((resolve) => io.close(() => resolve()));
    await Promise.allSettled([pubClient.quit(), subClient.quit()]);
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
