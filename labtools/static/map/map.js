// The live map: new-marker / update-marker go to everyone but the sender; active-marker on connect.
// A drag sends at most one update per animation frame (the latest position wins).
import { EventSocket } from "./events.js";
import { bindStatus } from "./status.js";

const SVG = "http://www.w3.org/2000/svg";
const svg = document.getElementById("map");
const grid = document.getElementById("grid");
const layer = document.getElementById("markers");
const errorEl = document.getElementById("error");
const countsEl = document.getElementById("counts");
const counts = { sent: 0, received: 0 };
const markers = new Map(); // id -> circle

function showCounts() {
  countsEl.textContent = "sent " + counts.sent + " · received " + counts.received;
}

function line(x1, y1, x2, y2, axis) {
  const l = document.createElementNS(SVG, "line");
  l.setAttribute("x1", x1); l.setAttribute("y1", y1); l.setAttribute("x2", x2); l.setAttribute("y2", y2);
  l.setAttribute("class", axis ? "grid axis" : "grid");
  return l;
}
function label(x, y, text) {
  const t = document.createElementNS(SVG, "text");
  t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("class", "grid-label");
  t.textContent = text;
  return t;
}
// The base map: a graticule every 30 degrees (SVG y grows down, so y = -lat).
for (let lng = -180; lng <= 180; lng += 30) {
  grid.append(line(lng, -90, lng, 90, lng === 0), label(lng + 1, 88, lng + "°"));
}
for (let lat = -90; lat <= 90; lat += 30) {
  grid.append(line(-180, -lat, 180, -lat, lat === 0), label(-179, -lat - 1, lat + "°"));
}

const socket = new EventSocket();
bindStatus(document.getElementById("status"), socket);
socket.on("error", (error) => { errorEl.textContent = error.message; });

function place(marker, mine) {
  let dot = markers.get(marker.id);
  if (!dot) {
    dot = document.createElementNS(SVG, "circle");
    dot.setAttribute("r", "3");
    dot.setAttribute("class", mine ? "marker mine" : "marker");
    dot.dataset.id = marker.id;
    const title = document.createElementNS(SVG, "title");
    title.textContent = marker.id;
    dot.append(title);
    dot.addEventListener("pointerdown", startDrag);
    markers.set(marker.id, dot);
    layer.append(dot);
  }
  dot.setAttribute("cx", String(marker.lng));
  dot.setAttribute("cy", String(-marker.lat));
  dot.dataset.lng = String(marker.lng);
  dot.dataset.lat = String(marker.lat);
}

function send(event, marker) {
  if (socket.emit(event, marker)) counts.sent += 1;
  showCounts();
}

function received(marker) {
  counts.received += 1;
  showCounts();
  place(marker, false);
}

socket.on("active-marker", (all) => Object.values(all).forEach((m) => place(m, false)));
socket.on("new-marker", received);
socket.on("update-marker", received);

function toLngLat(event) {
  const point = new DOMPoint(event.clientX, event.clientY).matrixTransform(svg.getScreenCTM().inverse());
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  return { lng: +clamp(point.x, -180, 180).toFixed(5), lat: +clamp(-point.y, -90, 90).toFixed(5) };
}

svg.addEventListener("click", (event) => {
  if (event.target.classList.contains("marker")) return;
  const marker = Object.assign({ id: Math.random().toString(36).slice(2, 10) }, toLngLat(event));
  place(marker, true);
  send("new-marker", marker);
});

let drag = null; // { dot, latest, frame }
function startDrag(event) {
  event.stopPropagation();
  const dot = event.currentTarget;
  dot.setPointerCapture(event.pointerId);
  dot.classList.add("dragging");
  drag = { dot: dot, latest: null, frame: 0 };
}
svg.addEventListener("pointermove", (event) => {
  if (!drag) return;
  drag.latest = Object.assign({ id: drag.dot.dataset.id }, toLngLat(event));
  place(drag.latest, false);
  // Throttle: one update per animation frame, carrying the latest position.
  if (!drag.frame) {
    const current = drag;
    current.frame = requestAnimationFrame(() => {
      current.frame = 0;
      if (current.latest) send("update-marker", current.latest);
    });
  }
});
function endDrag() {
  if (!drag) return;
  if (drag.frame) cancelAnimationFrame(drag.frame);
  if (drag.latest) send("update-marker", drag.latest); // the final position always goes out
  drag.dot.classList.remove("dragging");
  drag = null;
}
svg.addEventListener("pointerup", endDrag);
svg.addEventListener("pointercancel", endDrag);
showCounts();
