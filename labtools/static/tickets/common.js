// What every ticket page shares: one socket and its status badge.
window.ticketSocket = function () {
  "use strict";
  const statusEl = document.getElementById("status");
  return new LabEvents.EventSocket({
    onStatus: (status) => {
      statusEl.textContent = status;
      statusEl.className = "status " + status;
    },
  });
};
