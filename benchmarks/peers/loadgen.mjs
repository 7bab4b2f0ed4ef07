// The load generator of benchmarks/peers: one program, independent of labtools, for every server.
//
//   node loadgen.mjs '<json config>'      (run.py builds the config; prints one JSON object)
//
// It speaks two protocols:
//   - "course": PROTOCOL.md's frames over a plain WebSocket (the `ws` package), with its own
//     codec here: {"event","data","id"?} out, {"ack":id,"data"} / {"ack":id,"error"} and
//     {"event","data"} in;
//   - "sio": Socket.IO 4 (socket.io-client, websocket transport only, no compression).
//
// Workloads:
//   chat       closed-loop phases (each user sends its next message when the last is
//              acknowledged) and an open-loop ladder (a fixed total rate spread over the users);
//   broadcast  C clients connected; 10 of them send at a rate giving a target number of
//              deliveries per second; plus the server's RSS per idle connection.
//   cluster    the broadcast on several nodes (benchmarks/cluster.py): C clients spread
//              round-robin over `urls`, one warm-up and one measured step at `rate` messages/s;
//              prints {"window":"start"} and {"window":"end"} lines around the measured step,
//              so that the driver reads the nodes' and Redis's CPU over the same window.
//
// Server CPU comes from /proc/PID/stat (utime + stime, all threads of the server process), RSS
// from /proc/PID/status (VmRSS); the load generator's own CPU from process.cpuUsage(), over the
// same windows. Without a `pid` (cluster: several processes) the driver measures the servers. Latencies use performance.now() of this process on both ends (sender's stamp
// in the message, receive time), so no clock is shared across processes.

import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { io } from 'socket.io-client';
import WebSocket from 'ws';

const config = JSON.parse(process.argv[2]);
const now = () => performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (...args) => process.stderr.write(`[loadgen ${config.name || ''}] ${args.join(' ')}\n`);

// ----- process figures ------------------------------------------------------------------------------

const CLK_TCK = config.clkTck || 100;

function serverCpuSeconds() {
  const stat = readFileSync(`/proc/${config.pid}/stat`, 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / CLK_TCK; // utime, stime (fields 14 and 15)
}

function serverRssKiB() {
  const status = readFileSync(`/proc/${config.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
}

function selfCpuSeconds() {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

class Meter {
  // CPU of the server and of this process over one window.
  constructor() {
    this.t0 = now();
    this.server0 = config.pid ? serverCpuSeconds() : null;
    this.self0 = selfCpuSeconds();
  }

  stop() {
    this.seconds = (now() - this.t0) / 1000;
    this.server = config.pid ? serverCpuSeconds() - this.server0 : null;
    this.self = selfCpuSeconds() - this.self0;
    return this;
  }
}

function percentile(values, q) {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.round((sorted.length - 1) * q / 100))];
}

const round = (x, digits = 2) => (x === null || !Number.isFinite(x) ? null : Number(x.toFixed(digits)));

// ----- the two client kinds, one interface ------------------------------------------------------------
// connect() -> Promise; emit(event, data); request(event, data) -> Promise<{data} | {error}>;
// on(event, fn); close(). Handlers get the event's data.

const USER_LIST = Buffer.from('user-list');

class CourseClient {
  constructor(url) {
    this.url = url.replace(/^http/, 'ws');
    this.handlers = new Map();
    this.pending = new Map();
    this.nextId = 1;
    this.closed = false;
  }

  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
      this.ws = ws;
      ws.once('open', resolve);
      ws.once('error', reject);
      ws.on('error', () => {}); // after the handshake, 'close' follows and says it
      ws.on('close', () => {
        this.closed = true;
        for (const [, settle] of this.pending) settle({ error: { code: 'closed', message: 'connection closed' } });
        this.pending.clear();
      });
      ws.on('message', (buffer, isBinary) => {
        if (isBinary) return;
        // The presence list is large and not what is measured: skip it without parsing.
        const at = buffer.indexOf(USER_LIST);
        if (at >= 0 && at < 24) {
          this.userLists = (this.userLists || 0) + 1;
          return;
        }
        const frame = JSON.parse(buffer.toString());
        if ('ack' in frame) {
          const settle = this.pending.get(frame.ack);
          if (settle) {
            this.pending.delete(frame.ack);
            settle(frame.error ? { error: frame.error } : { data: frame.data });
          }
        } else {
          const handler = this.handlers.get(frame.event);
          if (handler) handler(frame.data);
          else if (frame.event === 'error') this.errors = (this.errors || 0) + 1;
        }
      });
    });
  }

  on(event, fn) {
    this.handlers.set(event, fn);
  }

  emit(event, data) {
    this.ws.send(JSON.stringify({ event, data }));
  }

  request(event, data) {
    if (this.closed) return Promise.resolve({ error: { code: 'closed', message: 'connection closed' } });
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.ws.send(JSON.stringify({ event, data, id }));
    });
  }

  close() {
    this.ws.terminate();
  }
}

class SioClient {
  constructor(url, auth) {
    this.socket = io(url, {
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      autoConnect: false,
      auth: auth || {},
      perMessageDeflate: false,
      timeout: 60000,
    });
    this.closed = false;
    this.socket.on('disconnect', () => {
      this.closed = true;
    });
  }

  connect() {
    return new Promise((resolve, reject) => {
      this.socket.once('connect', resolve);
      this.socket.once('connect_error', reject);
      this.socket.connect();
    });
  }

  on(event, fn) {
    this.socket.on(event, fn);
  }

  emit(event, data) {
    this.socket.emit(event, data);
  }

  request(event, data) {
    if (this.closed) return Promise.resolve({ error: { code: 'closed', message: 'connection closed' } });
    return new Promise((resolve) => {
      this.socket.emit(event, data, (reply) => {
        resolve(reply && typeof reply === 'object' && reply.error ? { error: reply.error } : { data: reply });
      });
    });
  }

  close() {
    this.socket.disconnect();
  }
}

async function pool(items, width, fn) {
  // Run fn over items, at most `width` at a time.
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  return results;
}

async function quiet(clients, ms, cap) {
  // Wait until no client received a presence list for `ms` (the course's login storm), at most `cap`.
  const total = () => clients.reduce((sum, c) => sum + (c.userLists || 0), 0);
  const deadline = now() + cap;
  let last = total();
  while (now() < deadline) {
    await sleep(ms);
    const current = total();
    if (current === last) return;
    last = current;
  }
}

// ----- the private chat ------------------------------------------------------------------------------

async function chatUsers(count) {
  // The course: sign up over unauthenticated sockets (argon2 at its real cost, not timed),
  // then one socket per user with ?token=. The peers: the uid in the handshake.
  const t0 = now();
  const users = [];
  if (config.proto === 'course') {
    // One socket per sign-up, as each user would: the course allows a connection 5 attempts
    // at once, then one every 5 s (a guessing limit), so a shared socket would be slowed down.
    const accounts = await pool([...Array(count).keys()], 4, async (i) => {
      const c = new CourseClient(config.url);
      await c.connect();
      const reply = await c.request('sign-up', {
        name: `u${i}`, email: `u${i}-${config.runTag}@bench.test`, password: 'benchmark-password',
      });
      c.close();
      if (reply.error) throw new Error(`sign-up failed: ${JSON.stringify(reply.error)}`);
      return reply.data;
    });
    const signUpS = (now() - t0) / 1000;
    const t1 = now();
    const clients = await pool(accounts, 16, async (account) => {
      const c = new CourseClient(`${config.url}?token=${encodeURIComponent(account.token)}`);
      await c.connect();
      return c;
    });
    await quiet(clients, 300, 120000);
    accounts.forEach((a, i) => users.push({ uid: a.user.uid, client: clients[i] }));
    return { users, signUpS, connectS: (now() - t1) / 1000 };
  }
  const clients = await pool([...Array(count).keys()], 32, async (i) => {
    const uid = `u${i}-${config.runTag}`;
    const c = new SioClient(config.url, { uid });
    await c.connect();
    return { uid, client: c };
  });
  clients.forEach((u) => users.push(u));
  return { users, signUpS: 0, connectS: (now() - t0) / 1000 };
}

class ChatPhase {
  // The bookkeeping of one phase: sends, acks, deliveries to the recipient, by clientId.
  constructor(tag) {
    this.tag = tag;
    this.sentAt = new Map(); // clientId -> first send time
    this.acked = new Set();
    this.delivered = new Set();
    this.duplicates = 0;
    this.ackMs = [];
    this.deliveryMs = [];
    this.errors = {};
    this.rateLimited = 0;
  }

  error(code) {
    this.errors[code] = (this.errors[code] || 0) + 1;
  }

  onDelivery(me, message) {
    // Called for every personal-message push; the sender's own copy is not a delivery.
    if (message.to !== me || typeof message.clientId !== 'string' || !message.clientId.startsWith(this.tag)) return;
    if (this.delivered.has(message.clientId)) {
      this.duplicates += 1;
      return;
    }
    this.delivered.add(message.clientId);
    const t0 = this.sentAt.get(message.clientId);
    if (t0 !== undefined) this.deliveryMs.push(now() - t0);
  }

  async drain(cap) {
    // Wait for the pushes of every acknowledged message (and the last acks), at most `cap` ms.
    const deadline = now() + cap;
    while (now() < deadline) {
      if (this.delivered.size >= this.acked.size && this.inFlight() === 0) return;
      await sleep(20);
    }
  }

  inFlight() {
    return this.sentAt.size - this.acked.size - this.failed();
  }

  failed() {
    return Object.values(this.errors).reduce((a, b) => a + b, 0);
  }

  summary(meter, extra) {
    const acked = this.acked.size;
    const missing = [...this.acked].filter((id) => !this.delivered.has(id)).length;
    return {
      tag: this.tag,
      sent: this.sentAt.size,
      acked,
      unacked: this.sentAt.size - acked - this.failed(),
      errors: this.errors,
      rateLimitedRetries: this.rateLimited,
      delivered: this.delivered.size,
      missingDeliveries: missing,
      duplicateDeliveries: this.duplicates,
      seconds: round(meter.seconds, 3),
      msgPerS: round(acked / meter.seconds, 1),
      ackP50: round(percentile(this.ackMs, 50)),
      ackP99: round(percentile(this.ackMs, 99)),
      deliveryP99: round(percentile(this.deliveryMs, 99)),
      serverCpuS: round(meter.server, 3),
      serverCpuUsPerMsg: acked ? round(meter.server / acked * 1e6, 1) : null,
      serverCpuPct: round(meter.server / meter.seconds * 100, 1),
      loadgenCpuPct: round(meter.self / meter.seconds * 100, 1),
      loadgenCpuUsPerMsg: acked ? round(meter.self / acked * 1e6, 1) : null,
      ...extra,
    };
  }
}

function attach(users, phaseRef) {
  for (const user of users) {
    user.client.on('personal-message', (message) => {
      if (phaseRef.current) phaseRef.current.onDelivery(user.uid, message);
    });
  }
}

async function closedLoop(users, pairs, seconds, tag, phaseRef) {
  const phase = new ChatPhase(tag);
  phaseRef.current = phase;
  const active = users.slice(0, 2 * pairs);
  const meter = new Meter();
  const end = now() + seconds * 1000;
  const loop = async (user, i) => {
    const partner = active[i ^ 1];
    for (let n = 0; now() < end; n++) {
      const clientId = `${tag}-${i}-${n}`;
      const data = { to: partner.uid, message: `${tag} from ${i} #${n}`, clientId };
      const t0 = now();
      phase.sentAt.set(clientId, t0);
      for (;;) {
        const reply = await withTimeout(user.client.request('personal-message', data), 30000);
        if (reply.error && reply.error.code === 'rate-limited') {
          // The course's per-client frame limit: retry the same clientId (exactly-once makes it safe).
          phase.rateLimited += 1;
          await sleep(10);
          continue;
        }
        if (reply.error) {
          phase.error(reply.error.code);
          if (reply.error.code === 'closed' || reply.error.code === 'timeout') return;
        } else {
          phase.acked.add(clientId);
          phase.ackMs.push(now() - t0);
        }
        break;
      }
    }
  };
  await Promise.all(active.map(loop));
  await phase.drain(5000);
  meter.stop();
  phaseRef.current = null;
  return phase.summary(meter, { mode: 'closed', pairs });
}

function withTimeout(promise, ms) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((resolve) => {
      timer = setTimeout(() => resolve({ error: { code: 'timeout', message: `no answer in ${ms} ms` } }), ms);
    }),
  ]);
}

async function openLoop(users, pairs, rate, seconds, tag, phaseRef) {
  // `rate` messages per second in total, user k % (2 pairs) sending the k-th one, no waiting.
  const phase = new ChatPhase(tag);
  phaseRef.current = phase;
  const active = users.slice(0, 2 * pairs);
  const total = Math.max(1, Math.round(rate * seconds));
  const meter = new Meter();
  const start = now();
  let k = 0;
  const send = (k) => {
    const i = k % active.length;
    const user = active[i];
    const clientId = `${tag}-${k}`;
    const t0 = now();
    phase.sentAt.set(clientId, t0);
    withTimeout(user.client.request('personal-message', {
      to: active[i ^ 1].uid, message: `${tag} #${k}`, clientId,
    }), 10000).then((reply) => {
      if (reply.error) {
        phase.error(reply.error.code);
      } else {
        phase.acked.add(clientId);
        phase.ackMs.push(now() - t0);
      }
    });
  };
  while (k < total) {
    const due = Math.min(total, Math.floor((now() - start) * rate / 1000) + 1);
    while (k < due) send(k++);
    await sleep(1);
  }
  const sendSeconds = (now() - start) / 1000;
  await phase.drain(10000);
  meter.stop();
  phaseRef.current = null;
  const result = phase.summary(meter, { mode: 'open', pairs, rate, sendSeconds: round(sendSeconds, 3) });
  result.lost = result.sent - result.acked + result.missingDeliveries + result.duplicateDeliveries;
  result.sustained = result.lost === 0 && result.ackP99 !== null && result.ackP99 <= config.p99GoalMs
    && result.deliveryP99 !== null && result.deliveryP99 <= config.p99GoalMs;
  return result;
}

async function chatWorkload() {
  const maxPairs = Math.max(...config.closedPairs, config.openPairs);
  const setup = await chatUsers(2 * maxPairs);
  log(`chat: ${setup.users.length} users connected (sign-up ${setup.signUpS.toFixed(1)} s, connect ${setup.connectS.toFixed(1)} s)`);
  const phaseRef = { current: null };
  attach(setup.users, phaseRef);
  // Warm-up: a second of closed loop on a few pairs, not reported.
  await closedLoop(setup.users, Math.min(5, maxPairs), config.warmupSeconds, `${config.runTag}w`, phaseRef);
  const closed = [];
  for (const pairs of config.closedPairs) {
    await sleep(500);
    const result = await closedLoop(setup.users, pairs, config.seconds, `${config.runTag}c${pairs}`, phaseRef);
    log(`closed P=${pairs}: ${result.msgPerS} msg/s, ack p99 ${result.ackP99} ms, errors ${JSON.stringify(result.errors)}`);
    closed.push(result);
  }
  const open = [];
  for (const rate of config.openRates) {
    await sleep(1000);
    const result = await openLoop(setup.users, config.openPairs, rate, config.seconds, `${config.runTag}o${rate}`, phaseRef);
    log(`open R=${rate}: p99 ${result.ackP99} ms, lost ${result.lost}, sustained ${result.sustained}`);
    open.push(result);
    if (!result.sustained) break;
  }
  const closedClients = setup.users.filter((u) => u.client.closed).length;
  setup.users.forEach((u) => u.client.close());
  return {
    workload: 'chat', users: setup.users.length, signUpS: round(setup.signUpS, 1), connectS: round(setup.connectS, 1),
    droppedConnections: closedClients, closed, open, warmupTag: `${config.runTag}w`,
  };
}

// ----- the broadcast ----------------------------------------------------------------------------------

function makeClient() {
  return config.proto === 'course' ? new CourseClient(config.url) : new SioClient(config.url, {});
}

async function connectMany(count) {
  return pool([...Array(count).keys()], 32, async () => {
    const c = makeClient();
    c.received = 0;
    await c.connect();
    return c;
  });
}

async function broadcastStep(clients, deliveries, seconds, tag, { stallMs = null, onWindow = () => {} } = {}) {
  // Waits for the last deliveries 3 s at most, or with `stallMs` until none arrived for that long
  // (an overloaded server's deliveries come late, not never: only those that never come are lost).
  const senders = clients.slice(0, Math.min(config.senders, clients.length));
  const rate = deliveries / clients.length; // messages per second
  const total = Math.max(1, Math.round(rate * seconds));
  const latencies = [];
  const counts = new Array(clients.length).fill(0);
  clients.forEach((c, i) => {
    c.onBroadcast = (data) => {
      if (data && typeof data.text === 'string' && data.text.startsWith(tag)) {
        counts[i] += 1;
        latencies.push(now() - data.sentAt);
      }
    };
  });
  const meter = new Meter();
  onWindow('start');
  const start = now();
  let k = 0;
  while (k < total) {
    const due = Math.min(total, Math.floor((now() - start) * rate / 1000) + 1);
    while (k < due) {
      senders[k % senders.length].emit('msg-to-server', { text: `${tag} ${k}`, sentAt: now() });
      k += 1;
    }
    await sleep(1);
  }
  const expected = total * clients.length;
  const sum = () => counts.reduce((a, b) => a + b, 0);
  let deadline = now() + (stallMs ?? 3000);
  for (let got = sum(), last = got; got < expected && now() < deadline; got = sum()) {
    if (stallMs !== null && got > last) [last, deadline] = [got, now() + stallMs];
    await sleep(20);
  }
  meter.stop();
  onWindow('end');
  const delivered = counts.reduce((a, b) => a + b, 0);
  const lost = counts.reduce((sum, n) => sum + Math.max(0, total - n), 0);
  const duplicated = counts.reduce((sum, n) => sum + Math.max(0, n - total), 0);
  return {
    targetDeliveriesPerS: deliveries,
    messagesPerS: round(rate, 2),
    sent: total,
    delivered,
    lost,
    duplicated,
    seconds: round(meter.seconds, 3),
    deliveriesPerS: round(delivered / meter.seconds, 0),
    p50: round(percentile(latencies, 50)),
    p99: round(percentile(latencies, 99)),
    serverCpuS: meter.server === null ? null : round(meter.server, 3),
    serverCpuUsPerDelivery: delivered && meter.server !== null ? round(meter.server / delivered * 1e6, 2) : null,
    serverCpuPct: meter.server === null ? null : round(meter.server / meter.seconds * 100, 1),
    loadgenCpuPct: round(meter.self / meter.seconds * 100, 1),
    loadgenCpuUsPerDelivery: delivered ? round(meter.self / delivered * 1e6, 2) : null,
  };
}

async function broadcastWorkload() {
  // Warm the server's paths (first connections, first broadcasts), then the idle baseline.
  const warm = await connectMany(config.senders);
  warm.forEach((c) => c.on('msg-from-server', () => {}));
  for (let i = 0; i < 20; i++) {
    warm[i % warm.length].emit('msg-to-server', { text: `warm ${i}`, sentAt: now() });
    await sleep(5);
  }
  await sleep(300);
  warm.forEach((c) => c.close());
  await sleep(1500);
  const rss0 = serverRssKiB();
  const t0 = now();
  const clients = await connectMany(config.clients);
  const connectS = (now() - t0) / 1000;
  clients.forEach((c) => c.on('msg-from-server', (data) => c.onBroadcast && c.onBroadcast(data)));
  await sleep(1500);
  const rss1 = serverRssKiB();
  log(`broadcast: ${clients.length} clients in ${connectS.toFixed(1)} s, RSS ${rss0} -> ${rss1} KiB`);
  const steps = [];
  for (const deliveries of config.deliveryRates) {
    const step = await broadcastStep(clients, deliveries, config.seconds, `${config.runTag}b${deliveries}`);
    log(`broadcast ${deliveries}/s: p99 ${step.p99} ms, lost ${step.lost}, ${step.serverCpuUsPerDelivery} us/delivery`);
    steps.push(step);
    await sleep(500);
  }
  const dropped = clients.filter((c) => c.closed).length;
  clients.forEach((c) => c.close());
  return {
    workload: 'broadcast', clients: clients.length, senders: Math.min(config.senders, clients.length),
    connectS: round(connectS, 1), rssIdleKiB: rss0, rssConnectedKiB: rss1,
    rssPerConnKiB: round((rss1 - rss0) / clients.length, 2), droppedConnections: dropped, steps,
  };
}

// ----- the cluster (benchmarks/cluster.py) --------------------------------------------------------------

async function clusterWorkload() {
  const t0 = now();
  const clients = await pool([...Array(config.clients).keys()], 32, async (i) => {
    const c = new SioClient(config.urls[i % config.urls.length], {});
    c.received = 0;
    await c.connect();
    return c;
  });
  const connectS = (now() - t0) / 1000;
  clients.forEach((c) => c.on('msg-from-server', (data) => c.onBroadcast && c.onBroadcast(data)));
  const deliveries = config.rate * clients.length;
  await broadcastStep(clients, deliveries, config.warmupSeconds, `${config.runTag}w`, { stallMs: 2000 });
  const mark = (window) => process.stdout.write(`${JSON.stringify({ window })}\n`);
  // Tags that are not prefixes of each other: a late warm-up message is not counted as measured.
  const step = await broadcastStep(clients, deliveries, config.seconds, `${config.runTag}m`, { stallMs: 2000, onWindow: mark });
  const dropped = clients.filter((c) => c.closed).length;
  clients.forEach((c) => c.close());
  return { workload: 'cluster', clients: clients.length, connectS: round(connectS, 2), droppedConnections: dropped, ...step };
}

// ----- main --------------------------------------------------------------------------------------------

const watchdog = setTimeout(() => {
  process.stdout.write(`${JSON.stringify({ error: `watchdog: no result in ${config.watchdogS} s` })}\n`);
  process.exit(2);
}, (config.watchdogS || 900) * 1000);

try {
  const workloads = { chat: chatWorkload, broadcast: broadcastWorkload, cluster: clusterWorkload };
  const result = await workloads[config.workload]();
  process.stdout.write(`${JSON.stringify(result)}\n`);
  clearTimeout(watchdog);
  setTimeout(() => process.exit(0), 200);
} catch (err) {
  process.stdout.write(`${JSON.stringify({ error: String(err && err.stack ? err.stack : err) })}\n`);
  process.exit(1);
}
