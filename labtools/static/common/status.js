// The status badge every page shows: one function binds an element to a socket's state.
// The element gets the state as its text and as data-status (course.css colours it), plus the
// state as a class (online / offline / connecting) for scripts and tests that select by class.
const STATES = ["connecting", "online", "offline"];

export function bindStatus(element, socket) {
  socket.onStatus((state) => {
    element.textContent = state;
    element.dataset.status = state;
    element.classList.remove(...STATES);
    element.classList.add(state);
  });
  return element;
}
