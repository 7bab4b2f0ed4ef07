// The public screen only listens: the last 13 calls, newest first, the latest highlighted.
import { ticketSocket } from "./common.js";

const socket = ticketSocket();
const list = document.getElementById("calls");
const empty = document.getElementById("empty");
socket.on("assigned-tickets", (tickets) => {
  const items = tickets.map((ticket, i) => {
    const li = document.createElement("li");
    if (i === 0) li.className = "latest";
    const number = document.createElement("span");
    number.className = "ticket";
    number.textContent = "Ticket " + ticket.number;
    const where = document.createElement("span");
    where.textContent = "Desk " + ticket.desktop + " · " + ticket.agent;
    li.append(number, where);
    return li;
  });
  list.replaceChildren(...items);
  empty.hidden = tickets.length > 0;
});
