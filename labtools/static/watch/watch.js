// The watch page: a server's traffic, live. The watch sends the recent "history" on connect, then
// one "sample" per period ({t, requests, empty, bytes, connections, wasted}; rates per second).
// Three charts on canvases, the figures above them, and the last figures in #latest's data-*
// attributes (for scripts and the browser tests). The page sends nothing.
import { EventSocket } from "./events.js";
import { bindStatus } from "./status.js";

const WINDOW = 120; // seconds on the charts' time axis
const INK = "#1d2330";
const ACCENT = "#3d6fd6";
const EMPTY = "#b8bec9";

const latest = document.getElementById("latest");
const notice = document.getElementById("notice");
let samples = [];
let period = 0.25;

const socket = new EventSocket();
bindStatus(document.getElementById("status"), socket);

socket.on("history", (history) => {
  period = history.period;
  samples = history.samples;
  document.getElementById("title").textContent = "Watching " + history.server;
  document.body.classList.toggle("no-empty", !history.emptyCounted);
  draw();
});

socket.on("sample", (sample) => {
  samples.push(sample);
  const first = sample.t - WINDOW;
  while (samples.length && samples[0].t < first) samples.shift();
  draw();
});

// The watched server stopped: say so, and stop reconnecting to a watch that is gone.
socket.on("stopped", (info) => {
  notice.textContent = info.reason + ": this view stopped with it.";
  notice.hidden = false;
  socket.close();
});

// The share of empty answers over the last second: steadier than one period's.
function emptyShare() {
  const recent = samples.slice(-Math.max(1, Math.round(1 / period))).filter((s) => s.empty !== null);
  const requests = recent.reduce((sum, s) => sum + s.requests, 0);
  if (!requests) return null;
  return recent.reduce((sum, s) => sum + s.requests * s.empty, 0) / requests;
}

function show(id, key, value, text) {
  document.getElementById(id).textContent = text;
  latest.dataset[key] = value === null ? "" : String(value);
}

function draw() {
  if (!samples.length) return;
  const last = samples[samples.length - 1];
  const share = emptyShare();
  show("requests", "requests", last.requests, last.requests.toFixed(0));
  show("empty", "empty", share, share === null ? "–" : (100 * share).toFixed(1) + " %");
  show("wasted", "wasted", last.wasted, last.wasted.toLocaleString("en"));
  show("bytes", "bytes", last.bytes, (last.bytes / 1000).toFixed(1));
  show("connections", "connections", last.connections, last.connections === null ? "–" : String(last.connections));
  latest.dataset.t = String(last.t);
  latest.dataset.samples = String(samples.length);
  const empty = (s) => (s.empty === null ? 0 : s.requests * s.empty);
  chart("requests-chart", [{ value: (s) => s.requests, colour: ACCENT }, { value: empty, colour: EMPTY, fill: true }], "");
  chart("bytes-chart", [{ value: (s) => s.bytes / 1000, colour: ACCENT }], " KB/s");
  chart("connections-chart", [{ value: (s) => s.connections || 0, colour: INK }], "");
}

// One chart: time runs left to right, over the samples kept (at least 10 s, at most WINDOW); the
// scale fits the largest value shown, written in the top left corner. A filled series is drawn
// first, under the lines.
function chart(id, series, unit) {
  const canvas = document.getElementById(id);
  canvas.width = canvas.clientWidth || 600;
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  const end = samples[samples.length - 1].t;
  const top = Math.max(1, ...samples.map((s) => Math.max(...series.map((line) => line.value(s)))));
  const span = Math.max(10, Math.min(WINDOW, end - samples[0].t));
  const x = (t) => width - ((end - t) / span) * width;
  const y = (v) => height - 2 - (v / top) * (height - 18);
  context.clearRect(0, 0, width, height);
  for (const line of [...series].sort((a, b) => Boolean(b.fill) - Boolean(a.fill))) {
    context.beginPath();
    samples.forEach((s, i) => (i ? context.lineTo(x(s.t), y(line.value(s))) : context.moveTo(x(s.t), y(line.value(s)))));
    if (line.fill) {
      context.lineTo(x(end), y(0));
      context.lineTo(x(samples[0].t), y(0));
      context.fillStyle = line.colour;
      context.fill();
    } else {
      context.strokeStyle = line.colour;
      context.lineWidth = 1.5;
      context.stroke();
    }
  }
  context.fillStyle = INK;
  context.font = "11px system-ui, sans-serif";
  context.fillText("max " + top.toLocaleString("en", { maximumFractionDigits: top < 10 ? 1 : 0 }) + unit, 4, 12);
  context.textAlign = "right";
  context.fillText("last " + Math.round(span) + " s", width - 4, 12);
}

// A module's names are its own: the socket is published for the console and the browser tests.
window.watch = { socket: socket };
