// The mini chat page: emit "msg-to-server" {text, name}; listen for "msg-from-server" from everyone.
// Every message goes on the page through textContent, never parsed as HTML: what people type is text.
// After a lost connection, events.js resumes: the messages missed meanwhile arrive (each once),
// and the notice line says how many, or that some may be missing (the server's history restarted).
import { EventSocket } from "./events.js";
import { bindStatus } from "./status.js";

const list = document.getElementById("messages");
const form = document.getElementById("send");
const input = document.getElementById("text");
const nameInput = document.getElementById("name");
const errorLine = document.getElementById("error");
const notice = document.getElementById("notice");

// ?name=Pedro names the page (the notebook embeds one page per person); else a guest name.
nameInput.value = new URLSearchParams(window.location.search).get("name") || "guest-" + Math.floor(Math.random() * 1000);

const socket = new EventSocket();
bindStatus(document.getElementById("status"), socket);

function show(message) {
  const item = document.createElement("li");
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = message.name || "anonymous";
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = message.text;
  item.append(who, text);
  if (typeof message.at === "number") {
    const when = document.createElement("time");
    when.className = "when";
    when.textContent = new Date(message.at * 1000).toLocaleTimeString();
    item.append(when);
  }
  list.append(item);
  list.scrollTop = list.scrollHeight;
}

// Listen: the server pushes every message, ours included, the moment it arrives.
socket.on("msg-from-server", show);
socket.on("error", (error) => {
  errorLine.textContent = error.message;
});

function say(text, gap) {
  notice.textContent = text;
  notice.classList.toggle("gap", gap);
  notice.hidden = false;
}

// Resuming after a reconnection: what was recovered, or that the gap could not be filled.
socket.on("resumed", (answer) => {
  const missed = answer && typeof answer.missed === "number" ? answer.missed : 0;
  say("reconnected: " + missed + " missed message" + (missed === 1 ? "" : "s") + " recovered", false);
});
// The server's message says why; "epoch" is its word for a history that restarted.
socket.on("gap", (gap) => {
  const why = /epoch/.test(gap.message || "") ? "the server restarted" : "too many to recover";
  say("reconnected: some messages may be missing (" + why + ")", true);
});

// Emit: ask for an acknowledgement so that a refused message says why.
form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value;
  if (!text.trim()) return;
  errorLine.textContent = "";
  socket
    .request("msg-to-server", { text: text, name: nameInput.value.trim().slice(0, 40) || undefined })
    .then(() => {
      input.value = "";
    })
    .catch((error) => {
      errorLine.textContent = error.message;
    });
});

// A module's names are its own: the socket is published for the console and the browser tests.
window.minichat = { socket: socket };
