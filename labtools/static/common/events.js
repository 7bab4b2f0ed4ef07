// PROTOCOL.md's frames in the browser: emit, listen (on), acknowledged requests, reconnection,
// and recovery of what was missed while disconnected (resume).
// An ES module shared by every app page (served at ./events.js): import { EventSocket } from "./events.js".
// No outside resources: the course works offline.

// Pushes remembered to recognise one received twice (a replay overlapping what arrived live).
// A replay never reaches back further than the position the page itself sent, so recent ones suffice.
const SEEN = 4096;

// The socket lives at the page's own folder, so the page works at http://127.0.0.1:PORT/
// and behind a proxy prefix such as Binder's /user/NAME/proxy/PORT/.
export function socketUrl(query) {
  const url = new URL(".", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.search = query || "";
  url.hash = "";
  return url.href;
}

// Close codes after which a page reconnects (lesson 10's rule, the same as the Python clients':
// labtools/events/client.py, RECONNECT_AFTER; a test checks that they agree for every code
// 1000-1015 and 3000-4999). Reconnect when the cause is temporary and not this page's: the
// server went away (1001), the connection was lost without a close frame (1006: the network, a
// crash), a server error (1011), a restart (1012), "try again later" (1013, a node that fell
// behind: resume elsewhere), a proxy whose server failed (1014). After any other code it stays
// closed: 1000 and 1005 are closes the server meant, 1002, 1003 and 1007-1010 were caused by what
// this page sent or lacks (it would do it again), 1015 is a TLS failure (it would fail again), and
// 3000-4999 are libraries' and apps' own (the chat's 4001: do not come back).
const RETRY_AFTER = new Set([1001, 1006, 1011, 1012, 1013, 1014]);

export function shouldReconnect(code) {
  return RETRY_AFTER.has(code);
}

export class EventSocket {
  // options.query: a query string for the upgrade, or a function giving one (none by default;
  // the chat authenticates with an auth event, never with a token in the URL).
  // options.resume: false to leave resuming to the page (an app that must sign in first calls
  // resume() itself); by default a reconnection resumes before anything else is sent.
  // options.onGap(message): called when the server cannot fill the gap ("too-old"): the page
  // starts over from what it is sent on connect. The "resumed" and "gap" events say the same.
  constructor(options) {
    this.options = options || {};
    this.position = null; // {offset, epoch} of the last push (or position frame) received
    this.since = null; // the position a resume in flight started from, kept until it is answered
    this.held = null; // pushes received while a resume is answered: delivered in offset order after it
    this.seen = new Set(); // "event offset" of recent pushes, in this.seenEpoch
    this.seenEpoch = null;
    this.listeners = new Map();
    this.statusListeners = [];
    this.pending = new Map();
    this.nextId = 1;
    this.attempt = 0;
    this.closedByUser = false;
    this.reconnecting = false; // reconnect() closed this socket: open another whatever its code
    this.state = "connecting";
    this.connect();
  }

  connect() {
    const query = typeof this.options.query === "function" ? this.options.query() : this.options.query;
    this.setState("connecting");
    const ws = new WebSocket(socketUrl(query));
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      // Before anything else (the connect listeners may emit): ask for what was missed, from
      // where the last socket stood, or where an unanswered resume started.
      if (this.options.resume !== false) {
        if (!this.since) this.since = this.position;
        if (this.since) this.resume(this.since).catch(() => {});
      }
      this.setState("online");
      this.fire("connect", null);
    };
    ws.onmessage = (message) => this.receive(message.data);
    ws.onclose = (event) => {
      for (const [, pending] of this.pending) {
        clearTimeout(pending.timer);
        pending.reject(new Error("connection closed"));
      }
      this.pending.clear();
      this.setState("offline");
      this.fire("disconnect", { code: event.code, reason: event.reason });
      const asked = this.reconnecting;
      this.reconnecting = false;
      if (!this.closedByUser && (asked || shouldReconnect(event.code))) this.retry();
    };
  }

  // Exponential backoff with full jitter, as labtools' Python clients do (sim/reconnect.py): a
  // random delay up to 0.25 s, 0.5 s, 1 s ... at most 5 s, so that pages that lost the same
  // server do not come back at the same moment.
  retry() {
    const delay = Math.random() * Math.min(5000, 250 * 2 ** this.attempt);
    this.attempt += 1;
    setTimeout(() => this.connect(), delay);
  }

  setState(value) {
    this.state = value;
    for (const listener of this.statusListeners) listener(value);
  }

  // listener(state) now and on every change: "connecting" | "online" | "offline".
  onStatus(listener) {
    this.statusListeners.push(listener);
    listener(this.state);
    return this;
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (error) {
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    if ("ack" in frame) {
      const pending = this.pending.get(frame.ack);
      if (!pending) return;
      this.pending.delete(frame.ack);
      clearTimeout(pending.timer);
      if (frame.error) pending.reject(Object.assign(new Error(frame.error.message), frame.error));
      else pending.resolve(frame.data);
      return;
    }
    this.deliver(frame);
  }

  // Hand one push to the listeners, once. While a resume is answered, live pushes may overtake
  // the replayed ones: they are held, then delivered in offset order with the replay.
  deliver(frame) {
    if (typeof frame.offset === "string" && typeof frame.epoch === "string") {
      if (this.held && frame.event !== "position") {
        this.held.push(frame);
        return;
      }
      if (frame.event !== "position" && !this.firstTime(frame.event, frame.offset, frame.epoch)) return;
      this.position = { offset: frame.offset, epoch: frame.epoch };
    }
    this.fire(frame.event, frame.data);
  }

  // Release the held pushes, oldest first ("MS-SEQ" or "N": integers compared in order; frames of
  // several epochs as they came).
  release() {
    const held = this.held || [];
    this.held = null;
    const key = (frame) => frame.offset.split("-").map(Number);
    const oneEpoch = held.every((frame) => frame.epoch === held[0].epoch);
    const comparable = held.every((frame) => key(frame).every(Number.isSafeInteger));
    if (oneEpoch && comparable) {
      held.sort((a, b) => {
        const [x, y] = [key(a), key(b)];
        return x[0] - y[0] || (x[1] || 0) - (y[1] || 0);
      });
    }
    for (const frame of held) this.deliver(frame);
  }

  // False for a push this page already had: the same event at the same offset, in this epoch.
  // Offsets are opaque strings, compared only for equality; another epoch is another history.
  firstTime(event, offset, epoch) {
    if (epoch !== this.seenEpoch) {
      this.seenEpoch = epoch;
      this.seen.clear();
    }
    const key = event + " " + offset;
    if (this.seen.has(key)) return false;
    this.seen.add(key);
    if (this.seen.size > SEEN) this.seen.delete(this.seen.values().next().value);
    return true;
  }

  // Ask for the pushes missed since `since` ({offset, epoch}; default: the last position). They
  // reach the listeners first; then this resolves with {missed, offset, epoch}, also fired as
  // "resumed". When the gap cannot be filled (code "too-old") it calls options.onGap(message),
  // fires "gap" {code, message} and resolves with null. Other failures reject.
  resume(since) {
    const from = since || this.position;
    if (!from) return Promise.resolve(null);
    const holding = this.held === null; // a resume within a resume leaves the release to the outer one
    if (holding) this.held = [];
    return this.request("resume", { offset: from.offset, epoch: from.epoch }).then(
      (answer) => {
        if (this.since === from) this.since = null;
        if (answer && typeof answer.offset === "string" && typeof answer.epoch === "string") {
          this.position = { offset: answer.offset, epoch: answer.epoch };
        }
        if (holding) this.release();
        this.fire("resumed", answer);
        return answer;
      },
      (error) => {
        if (holding) this.release();
        // An answer from the server settles it; a lost connection keeps `since` for the next socket.
        if (error.code && this.since === from) this.since = null;
        if (error.code !== "too-old") throw error;
        if (this.options.onGap) this.options.onGap(error.message);
        this.fire("gap", { code: error.code, message: error.message });
        return null;
      },
    );
  }

  fire(event, data) {
    for (const listener of this.listeners.get(event) || []) listener(data);
  }

  // Listen: call listener(data) for every `event` the server emits (and "connect", "disconnect").
  // Listeners run in the order they were added.
  on(event, listener) {
    if (!this.listeners.has(event)) this.listeners.set(event, []);
    this.listeners.get(event).push(listener);
    return this;
  }

  // Emit without asking for an acknowledgement. Returns false when offline.
  emit(event, data) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ event: event, data: data === undefined ? null : data }));
    return true;
  }

  // Emit with an id; resolves with the acknowledgement's data, rejects with its error
  // (an Error carrying the server's code), or with a code-less Error when offline or timed out.
  request(event, data, timeoutMs) {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(new Error("offline"));
        return;
      }
      const id = this.nextId++;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error("timed out"));
      }, timeoutMs || 5000);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ event: event, data: data === undefined ? null : data, id: id }));
    });
  }

  // Drop this connection and open a new one, with the usual backoff (not a close by the user).
  reconnect() {
    this.reconnecting = true;
    if (this.ws) this.ws.close(1000);
  }

  close() {
    this.closedByUser = true;
    if (this.ws) this.ws.close(1000);
  }
}
