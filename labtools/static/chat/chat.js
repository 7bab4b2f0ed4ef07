// The private chat page: sign up / log in, who is online, one conversation at a time.
// Text from the network only ever reaches the page through textContent, never as HTML.
import { EventSocket } from "./events.js";
import { bindStatus } from "./status.js";

// Two pages of the same origin in one tab (two iframes in a notebook) share sessionStorage,
// so ?slot=NAME keeps their logins apart.
const slot = new URLSearchParams(window.location.search).get("slot") || "";
const KEY = "labtools-chat" + (slot ? ":" + slot : "");
const $ = (id) => document.getElementById(id);

let account = JSON.parse(sessionStorage.getItem(KEY) || "null"); // {user, token} or null
let users = [];
let peer = null; // uid of the open conversation
let shown = new Map(); // message id -> <li> of the open conversation
let lastId = null; // the newest message id shown in the open conversation
let authenticated = false;
let evicted = false; // closed with 4001: this user opened too many tabs, and this one was the oldest
let catchUpDue = false;
let typingTimer = null;
let lastTypingSent = 0;
const unread = new Map();
const outbox = new Map(); // clientId -> message data not yet acknowledged

// No token in the socket's URL (URLs end up in logs and proxies): every connection
// authenticates with an auth event, the first frame it sends.
// It resumes itself, once authenticated (resume is for signed-in connections).
const socket = new EventSocket({ resume: false });
bindStatus($("status"), socket);

function save(value) {
  account = value;
  if (value) sessionStorage.setItem(KEY, JSON.stringify(value));
  else sessionStorage.removeItem(KEY);
}

function showChat(visible) {
  $("auth").hidden = visible;
  $("chat").hidden = !visible;
  $("logout").hidden = !visible;
  $("me").textContent = visible && account ? account.user.name : "";
}

// ----- accounts --------------------------------------------------------------------------

// Authenticate this connection with the stored token, then follow presence as deltas: the
// subscribe-presence acknowledgement is the whole list, and each change afterwards is one
// user-status instead of a new list. A refused token (expired, or signed by another install)
// is forgotten and the login form shows; offline or timed out, the next connection tries again.
async function authenticate() {
  if (!account) return;
  const token = account.token;
  try {
    await socket.request("auth", { token: token }, 10000);
    users = await socket.request("subscribe-presence", null, 10000);
  } catch (error) {
    if (!account || account.token !== token) return; // logged out or in again meanwhile
    if (!error.code) {
      if (socket.state === "online") socket.reconnect(); // timed out: try on a fresh connection
      return;
    }
    save(null);
    authenticated = false;
    showChat(false);
    $("auth-error").textContent = error.message;
    return;
  }
  if (!account || account.token !== token) return;
  authenticated = true;
  showChat(true);
  renderUsers();
  if (catchUpDue) {
    catchUpDue = false;
    resumeOrCatchUp();
    flushOutbox();
  }
}

async function enter(event, data) {
  $("auth-error").textContent = "";
  try {
    save(await socket.request(event, data, 10000));
  } catch (error) {
    const wait = error.code === "rate-limited" && error.retryAfter ? ` (${Math.ceil(error.retryAfter)} s)` : "";
    $("auth-error").textContent = error.message + wait;
    return;
  }
  await authenticate();
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const form = e.target;
  enter("login", { email: form.email.value, password: form.password.value });
});

$("signup-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const form = e.target;
  enter("sign-up", { name: form.name.value, email: form.email.value, password: form.password.value });
});

$("logout").addEventListener("click", () => {
  save(null);
  window.location.reload();
});

// ----- presence --------------------------------------------------------------------------

// The first "connect" listener, so auth goes out before anything else on every (re)connection.
socket.on("connect", () => {
  if (evicted) {
    socket.close(); // the reconnection events.js scheduled: stay out, or another tab would be closed
    return;
  }
  watchEviction(socket.ws);
  authenticated = false;
  catchUpDue = true;
  if (account) authenticate();
  else showChat(false);
});

// Close code 4001: the server closed this tab's socket because the same user opened too many
// (PROTOCOL.md, the chat's limits). Reconnecting would close the next oldest tab, and so on
// forever, so this tab stays offline and says why until it is reloaded.
function watchEviction(ws) {
  ws.addEventListener("close", (event) => {
    if (event.code !== 4001) return;
    evicted = true;
    authenticated = false;
    const notice = $("notice");
    notice.textContent = "This tab was disconnected: you have too many chat tabs open (" + event.reason +
      "). Close some, then reload this one.";
    notice.hidden = false;
  });
}

socket.on("disconnect", () => {
  authenticated = false;
});

// The list sent with authentication, before subscribe-presence is acknowledged.
socket.on("user-list", (list) => {
  users = list;
  if (authenticated) renderUsers();
});

// One user's change (a new account arrives offline); applied to the list in place.
socket.on("user-status", (status) => {
  const index = users.findIndex((user) => user.uid === status.uid);
  if (index === -1) users = [...users, status];
  else users = users.map((user, i) => (i === index ? status : user));
  renderUsers();
});

function renderUsers() {
  const items = users
    .filter((user) => !account || user.uid !== account.user.uid)
    .map((user) => {
      const li = document.createElement("li");
      li.dataset.uid = user.uid;
      li.className = (user.online ? "online" : "offline") + (user.uid === peer ? " selected" : "");
      const dot = document.createElement("span");
      dot.className = "dot";
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = user.name;
      li.append(dot, name);
      if (unread.get(user.uid)) {
        const badge = document.createElement("span");
        badge.className = "unread";
        badge.textContent = String(unread.get(user.uid));
        li.append(badge);
      }
      li.addEventListener("click", () => open(user.uid));
      return li;
    });
  $("users").replaceChildren(...items);
}

function nameOf(uid) {
  const user = users.find((u) => u.uid === uid);
  return user ? user.name : "someone";
}

// ----- the conversation ------------------------------------------------------------------

async function open(uid) {
  peer = uid;
  unread.delete(uid);
  shown = new Map();
  lastId = null;
  $("messages").replaceChildren();
  $("peer").textContent = nameOf(uid);
  $("typing").textContent = "";
  $("text").disabled = false;
  $("send-form").querySelector("button").disabled = false;
  renderUsers();
  if (!authenticated) return; // the catch-up after authentication loads it
  try {
    const history = await socket.request("history", { with: uid });
    if (peer === uid) history.forEach(show);
  } catch (error) {
    $("typing").textContent = "could not load the conversation: " + error.message;
  }
}

// After a reconnection: every message from or to me since the last one this page got, from
// any conversation (PROTOCOL.md, resume); when that gap is too old, or there is no position yet,
// the open conversation's history instead.
async function resumeOrCatchUp() {
  let resumed = null;
  try {
    resumed = await socket.resume();
  } catch (error) {
    // Offline again, or refused: the history below still fills the open conversation.
  }
  if (!resumed) catchUp();
}

// Fetch what arrived in the open conversation while this page was offline, page by page.
async function catchUp() {
  if (!peer) return;
  const uid = peer;
  try {
    for (;;) {
      const data = lastId === null ? { with: uid } : { with: uid, after: lastId };
      const page = await socket.request("history", data);
      if (peer !== uid) return;
      page.forEach(show);
      if (page.length < 30 || data.after === undefined) return;
    }
  } catch (error) {
    // Offline again: the next reconnection catches up.
  }
}

function show(message) {
  if (shown.has(message.id)) return;
  if (message.clientId) {
    const pending = document.querySelector('#messages li[data-client-id="' + CSS.escape(message.clientId) + '"]');
    if (pending) pending.remove();
  }
  const li = document.createElement("li");
  li.dataset.id = String(message.id);
  li.className = account && message.from === account.user.uid ? "mine" : "theirs";
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = message.message;
  const time = document.createElement("time");
  time.textContent = new Date(message.createdAt).toLocaleTimeString();
  li.append(text, time);
  const later = [...shown.entries()].filter(([id]) => id > message.id).sort((a, b) => a[0] - b[0]);
  const list = $("messages");
  if (later.length) list.insertBefore(li, later[0][1]);
  else list.insertBefore(li, list.querySelector("li.pending"));
  shown.set(message.id, li);
  if (lastId === null || message.id > lastId) lastId = message.id;
  list.scrollTop = list.scrollHeight;
}

socket.on("personal-message", (message) => {
  const other = account && message.from === account.user.uid ? message.to : message.from;
  if (other === peer) {
    show(message);
    if (message.from === peer) $("typing").textContent = "";
  } else if (account && message.from !== account.user.uid) {
    unread.set(other, (unread.get(other) || 0) + 1);
    renderUsers();
  }
});

// ----- sending: every message has a clientId, so a retry is never stored twice ------------

function newClientId() {
  return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 12);
}

async function deliver(clientId) {
  const data = outbox.get(clientId);
  if (!data || !authenticated) return; // kept in the outbox, sent once authenticated
  try {
    const stored = await socket.request("personal-message", data, 5000);
    outbox.delete(clientId);
    if (stored.to === peer) show(stored);
  } catch (error) {
    if (error.code) {
      outbox.delete(clientId); // refused by the server (e.g. invalid-data): a retry won't help
      $("typing").textContent = error.message;
    } // otherwise offline or timed out: stays in the outbox, sent again on reconnection
  }
}

function flushOutbox() {
  for (const clientId of outbox.keys()) deliver(clientId);
}

$("send-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("text");
  const text = input.value;
  if (!peer || !text.trim()) return;
  input.value = "";
  const clientId = newClientId();
  outbox.set(clientId, { to: peer, message: text, clientId: clientId });
  const li = document.createElement("li");
  li.className = "mine pending";
  li.dataset.clientId = clientId;
  li.textContent = text;
  $("messages").append(li);
  deliver(clientId);
});

// ----- typing ------------------------------------------------------------------------------

$("text").addEventListener("input", () => {
  const now = Date.now();
  if (peer && authenticated && now - lastTypingSent > 1500) {
    lastTypingSent = now;
    socket.emit("typing", { to: peer });
  }
});

socket.on("typing", (data) => {
  if (data.from !== peer) return;
  $("typing").textContent = nameOf(data.from) + " is typing…";
  clearTimeout(typingTimer);
  typingTimer = setTimeout(() => ($("typing").textContent = ""), 3000);
});

showChat(false);
