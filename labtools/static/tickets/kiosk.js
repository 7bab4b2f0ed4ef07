// The kiosk needs the ticket's number back: an acknowledged request, not a fire-and-forget emit.
import { ticketSocket } from "./common.js";

const socket = ticketSocket();
const numberEl = document.getElementById("number");
const errorEl = document.getElementById("error");
const take = document.getElementById("take");
take.addEventListener("click", async () => {
  take.disabled = true;
  errorEl.textContent = "";
  try {
    const ticket = await socket.request("request-ticket", null, 3000);
    numberEl.textContent = String(ticket.number);
  } catch (error) {
    errorEl.textContent = "No ticket: " + error.message + ". Please try again.";
  } finally {
    take.disabled = false;
  }
});
