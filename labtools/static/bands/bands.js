// Band votes: the server sends the whole list (band-list) after every change; the page redraws it.
import { EventSocket } from "./events.js";
import { bindStatus } from "./status.js";

const errorEl = document.getElementById("error");
const tbody = document.querySelector("#bands tbody");
const chart = document.getElementById("chart");
const SVG = "http://www.w3.org/2000/svg";

const socket = new EventSocket();
bindStatus(document.getElementById("status"), socket);
socket.on("error", (error) => { errorEl.textContent = error.message; });

function button(text, title, onClick) {
  const b = document.createElement("button");
  b.textContent = text;
  b.title = title;
  b.addEventListener("click", onClick);
  return b;
}

function renderTable(bands) {
  const rows = bands.map((band) => {
    const tr = document.createElement("tr");
    tr.dataset.id = band.id;
    const votes = document.createElement("td");
    votes.className = "votes";
    votes.textContent = String(band.votes);
    const name = document.createElement("input");
    name.value = band.name;
    name.maxLength = 60;
    name.setAttribute("aria-label", "Name of " + band.name);
    name.addEventListener("change", () => socket.emit("rename-band", { id: band.id, name: name.value }));
    const nameCell = document.createElement("td");
    nameCell.append(name);
    const vote = document.createElement("td");
    vote.append(button("+1", "Vote for " + band.name, () => socket.emit("vote-band", band.id)));
    const remove = document.createElement("td");
    remove.append(button("Delete", "Delete " + band.name, () => socket.emit("remove-band", band.id)));
    tr.append(votes, nameCell, vote, remove);
    return tr;
  });
  // A redraw must not eat an edit in progress: carry the focused input's text over.
  const active = document.activeElement;
  const editing = active && active.tagName === "INPUT" ? active.closest("tr") : null;
  tbody.replaceChildren(...rows);
  if (editing) {
    const fresh = rows.find((row) => row.dataset.id === editing.dataset.id);
    if (fresh) {
      const input = fresh.querySelector("input");
      input.value = active.value;
      input.focus();
    }
  }
}

function renderChart(bands) {
  const width = Number(chart.getAttribute("width"));
  const rowHeight = 26;
  const labelWidth = 150;
  chart.setAttribute("height", String(Math.max(40, bands.length * rowHeight + 10)));
  const most = Math.max(1, ...bands.map((b) => b.votes));
  const nodes = [];
  bands.forEach((band, i) => {
    const y = 5 + i * rowHeight;
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", "0");
    label.setAttribute("y", String(y + 16));
    label.setAttribute("class", "label");
    label.textContent = band.name.length > 22 ? band.name.slice(0, 21) + "…" : band.name;
    const bar = document.createElementNS(SVG, "rect");
    const barWidth = ((width - labelWidth - 10) * band.votes) / most;
    bar.setAttribute("x", String(labelWidth));
    bar.setAttribute("y", String(y));
    bar.setAttribute("height", String(rowHeight - 6));
    bar.setAttribute("width", String(Math.max(1, barWidth)));
    bar.setAttribute("class", "bar");
    bar.dataset.id = band.id;
    const count = document.createElementNS(SVG, "text");
    count.setAttribute("x", String(labelWidth + 4));
    count.setAttribute("y", String(y + 15));
    count.setAttribute("class", "count");
    count.textContent = String(band.votes);
    nodes.push(label, bar, count);
  });
  chart.replaceChildren(...nodes);
}

socket.on("band-list", (bands) => {
  errorEl.textContent = "";
  renderTable(bands);
  renderChart(bands);
});

document.getElementById("add-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("new-name");
  if (socket.emit("create-band", { name: input.value })) input.value = "";
});
