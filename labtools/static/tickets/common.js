// What every ticket page shares: one socket, its status badge bound to #status.
import { EventSocket } from "./events.js";
import { bindStatus } from "./status.js";

export function ticketSocket() {
  const socket = new EventSocket();
  bindStatus(document.getElementById("status"), socket);
  return socket;
}
