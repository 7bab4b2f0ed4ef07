// A desk signs in (agent name and desk number, kept in this tab) and calls the next ticket.
import { ticketSocket } from "./common.js";

const socket = ticketSocket();
const form = document.getElementById("sign-in");
const working = document.getElementById("working");
const serving = document.getElementById("serving");
const errorEl = document.getElementById("error");
const next = document.getElementById("next");

function show() {
  const agent = sessionStorage.getItem("agent");
  const desktop = sessionStorage.getItem("desktop");
  form.hidden = Boolean(agent);
  working.hidden = !agent;
  document.getElementById("who").textContent = agent ? agent + " at desk " + desktop : "";
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const agent = document.getElementById("agent").value.trim();
  const desktop = document.getElementById("desktop").value.trim();
  if (!agent || !desktop) return;
  sessionStorage.setItem("agent", agent);
  sessionStorage.setItem("desktop", desktop);
  show();
});

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.clear();
  serving.textContent = "–";
  show();
});

next.addEventListener("click", async () => {
  next.disabled = true;
  errorEl.textContent = "";
  try {
    const ticket = await socket.request(
      "next-desktop-ticket",
      { agent: sessionStorage.getItem("agent"), desktop: Number(sessionStorage.getItem("desktop")) },
      3000,
    );
    serving.textContent = ticket ? String(ticket.number) : "–";
    if (!ticket) errorEl.textContent = "Nobody is waiting.";
  } catch (error) {
    errorEl.textContent = "Could not call: " + error.message;
  } finally {
    next.disabled = false;
  }
});

show();
