// The Node.js peers: Socket.IO 4 servers doing what the course's minichat and chat do.
//
//   node server.mjs minichat [--port N]
//   node server.mjs chat --driver sqlite3|better-sqlite3 --db PATH [--port N]
//
// Prints http://127.0.0.1:PORT/ on a line of its own once listening, like
// `python -m labtools serve`; SIGTERM or SIGINT closes everything and exits 0.
//
// minichat: `msg-to-server` {text, sentAt?} -> `msg-from-server` {text, at, sentAt?} to everyone,
// the sender included (io.emit).
//
// chat: the "server delivery" pattern of the Socket.IO tutorial. A socket names its user in the
// handshake (auth: {uid}); the user is registered (INSERT OR IGNORE) before the connection is
// accepted and the socket joins the room named after the uid. `personal-message`
// {to, message, clientId?} is inserted into SQLite (WAL, synchronous=NORMAL, the course's
// schema with UNIQUE(sender, client_id)), acknowledged with the stored row once the insert
// returned, and emitted as `personal-message` to the rooms of both parties (what the course's
// chat does: the sender's sockets and the recipient's). A clientId sent again stores nothing
// and is acknowledged with the first row. A failure is acknowledged as {error: {code, message}}.
// No passwords, tokens or presence lists: those are outside what the benchmark times.

import http from 'node:http';
import { Server } from 'socket.io';

const MAX_TEXT = 2000;
const MAX_CLIENT_ID = 100;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS users (
    uid TEXT PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pair TEXT NOT NULL,
    sender TEXT NOT NULL REFERENCES users(uid),
    recipient TEXT NOT NULL REFERENCES users(uid),
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    client_id TEXT,
    UNIQUE (sender, client_id)
);
CREATE INDEX IF NOT EXISTS messages_by_pair ON messages (pair, id);
`;
const COLUMNS = 'id, sender, recipient, body, created_at, client_id';
const INSERT =
  'INSERT INTO messages (pair, sender, recipient, body, created_at, client_id) VALUES (?, ?, ?, ?, ?, ?)' +
  ` ON CONFLICT (sender, client_id) DO NOTHING RETURNING ${COLUMNS}`;
const FIRST = `SELECT ${COLUMNS} FROM messages WHERE sender = ? AND client_id = ?`;

function parseArgs(argv) {
  const args = { app: argv[0], port: 0, driver: 'better-sqlite3', db: null };
  for (let i = 1; i < argv.length; i += 2) args[argv[i].replace(/^--/, '')] = argv[i + 1];
  args.port = Number(args.port);
  return args;
}

function pairKey(a, b) {
  return a <= b ? `${a}|${b}` : `${b}|${a}`;
}

function asMessage(row) {
  const message = { id: row.id, from: row.sender, to: row.recipient, message: row.body, createdAt: row.created_at };
  if (row.client_id !== null) message.clientId = row.client_id;
  return message;
}

function failure(code, message) {
  return { error: { code, message } };
}

// ----- the two SQLite drivers behind one promise-returning interface ------------------------------

async function openBetterSqlite(path) {
  const { default: Database } = await import('better-sqlite3');
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  db.exec(SCHEMA);
  const insert = db.prepare(INSERT);
  const first = db.prepare(FIRST);
  const addUser = db.prepare('INSERT OR IGNORE INTO users (uid, name) VALUES (?, ?)');
  return {
    // Synchronous on the event loop: the call returns when the row is committed.
    async addUser(uid, name) {
      addUser.run(uid, name);
    },
    async users() {
      return db.prepare('SELECT uid FROM users').all().map((r) => r.uid);
    },
    async addMessage(params) {
      const row = insert.get(params);
      if (row !== undefined) return [row, true];
      return [first.get(params[1], params[5]), false];
    },
    async close() {
      db.close();
    },
  };
}

async function openSqlite3(path) {
  const { default: sqlite3 } = await import('sqlite3');
  const db = await new Promise((resolve, reject) => {
    const d = new sqlite3.Database(path, (err) => (err ? reject(err) : resolve(d)));
  });
  const run = (fn, ...args) =>
    new Promise((resolve, reject) => fn(...args, function done(err, value) {
      if (err) reject(err);
      else resolve(value);
    }));
  await run(db.exec.bind(db), 'PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;');
  await run(db.exec.bind(db), SCHEMA);
  const insert = db.prepare(INSERT);
  const first = db.prepare(FIRST);
  const addUser = db.prepare('INSERT OR IGNORE INTO users (uid, name) VALUES (?, ?)');
  return {
    // Asynchronous: the statement runs on libuv's thread pool, the callback comes back to the loop.
    addUser: (uid, name) => run(addUser.run.bind(addUser), uid, name),
    users: async () => (await run(db.all.bind(db), 'SELECT uid FROM users')).map((r) => r.uid),
    async addMessage(params) {
      const row = await run(insert.get.bind(insert), params);
      if (row !== undefined) return [row, true];
      return [await run(first.get.bind(first), params[1], params[5]), false];
    },
    async close() {
      await Promise.all([insert, first, addUser].map((s) => new Promise((r) => s.finalize(r))));
      await new Promise((r) => db.close(r));
    },
  };
}

// ----- the apps -------------------------------------------------------------------------------------

function minichat(io) {
  io.on('connection', (socket) => {
    socket.on('msg-to-server', (data) => {
      if (data === null || typeof data !== 'object' || typeof data.text !== 'string' || !data.text.trim()) return;
      const reply = { text: data.text, at: Date.now() / 1000 };
      if (typeof data.sentAt === 'number') reply.sentAt = data.sentAt;
      io.emit('msg-from-server', reply);
    });
  });
}

async function chat(io, store) {
  const users = new Set(await store.users());
  io.use(async (socket, next) => {
    const uid = socket.handshake.auth && socket.handshake.auth.uid;
    if (typeof uid !== 'string' || uid.length === 0 || uid.length > 100) return next(new Error('unauthorized'));
    try {
      if (!users.has(uid)) {
        await store.addUser(uid, uid);
        users.add(uid);
      }
    } catch (err) {
      return next(err);
    }
    socket.data.uid = uid;
    return next();
  });
  io.on('connection', (socket) => {
    const sender = socket.data.uid;
    socket.join(sender);
    socket.on('personal-message', async (data, ack) => {
      const reply = typeof ack === 'function' ? ack : () => {};
      if (data === null || typeof data !== 'object') return reply(failure('invalid-data', 'takes {to, message}'));
      const { to, message, clientId } = data;
      if (typeof to !== 'string' || !users.has(to)) return reply(failure('invalid-data', "'to' must be a user"));
      if (typeof message !== 'string' || !message.trim() || message.length > MAX_TEXT) {
        return reply(failure('invalid-data', "'message' must be a non-empty string"));
      }
      if (clientId !== undefined && (typeof clientId !== 'string' || !clientId || clientId.length > MAX_CLIENT_ID)) {
        return reply(failure('invalid-data', "'clientId' must be a short string"));
      }
      let row;
      let fresh;
      try {
        [row, fresh] = await store.addMessage([pairKey(sender, to), sender, to, message, Date.now(), clientId ?? null]);
      } catch (err) {
        return reply(failure('server-error', String(err)));
      }
      const stored = asMessage(row);
      if (fresh) io.to([sender, to]).emit('personal-message', stored);
      return reply(stored);
    });
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const httpServer = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`socket.io peer: ${args.app}\n`);
  });
  const io = new Server(httpServer, { transports: ['websocket'], perMessageDeflate: false, serveClient: false });
  let store = null;
  if (args.app === 'minichat') {
    minichat(io);
  } else if (args.app === 'chat') {
    if (!args.db) throw new Error('chat needs --db PATH');
    store = args.driver === 'sqlite3' ? await openSqlite3(args.db) : await openBetterSqlite(args.db);
    await chat(io, store);
  } else {
    throw new Error(`unknown app ${args.app}`);
  }
  await new Promise((resolve) => httpServer.listen(args.port, '127.0.0.1', resolve));
  process.stdout.write(`http://127.0.0.1:${httpServer.address().port}/\n`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    io.disconnectSockets(true);
    await new Promise((resolve) => io.close(() => resolve()));
    if (store) await store.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
