"""Dispatch: what happens to one incoming text frame, from its bytes to its handler's answer.

Admit (take one frame and its size from the sender's rate limit, before parsing), decode
(PROTOCOL.md's emit shape, refused at the edge), charge (the rest of a weighted event's cost),
refuse (a failed acknowledgement or an ``error`` event, to the sender only) or run (the handler,
then its acknowledgement). Nothing here touches a socket: replies go through ``send``, so unit
tests drive a ``Dispatcher`` with plain objects.

The rate limit counts every frame, malformed ones included, so a flood of junk is throttled like
a flood of valid emits; it is taken before the text is parsed, so a flood of large frames costs
no parsing either. Frames of one socket are handled one after another, so a client's events
reach its handlers in the order it sent them: a frame is dispatched inline, as it is read; an
async handler is stepped inline too and gets a Task only if it suspends, and then the client's
next frames wait (``Connection.inbox``) until it has finished. Other sockets' frames do not
wait: the chat's group commit still gathers messages from many senders into one batch.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from types import CoroutineType
from typing import Any

from ..measure.metrics import Trace, Traffic
from .connection import Client
from .frames import Emit, EventError, decode_emit, encode_ack, encode_error, encode_failed_ack, peek_id
from .inline import finish, step

#: ``handler(client, data)``, sync or async; its return value is the acknowledgement's data.
Handler = Callable[[Client, Any], Any]
#: ``send(targets, event, text)``: write one encoded frame to some clients.
Send = Callable[[Iterable[Client], str, str], int]


class Dispatcher:
    """The handlers of a server by event name, and how one frame reaches one of them."""

    def __init__(self, traffic: Traffic, send: Send, errors: list[str], trace: Trace | None = None,
                 release: Callable[[Client], None] = lambda client: client.flush()) -> None:
        """``release(client)``: a handler that suspended has finished and the frames it wrote
        for its client, acknowledgement last, are held; the server passes ``TurnWrites.release``
        (they leave with the rest of the turn's frames for that client), the default writes them
        now."""
        self.traffic = traffic
        self.send = send
        self.release = release
        self.errors = errors
        self.trace = trace
        self.handlers: dict[str, Handler] = {}
        self.costs: dict[str, int] = {}
        #: Async handlers running now: cancelled when the server shuts down.
        self.running: set[asyncio.Future] = set()
        self.closing = False

    def register(self, event: str, handler: Handler, cost: int = 1) -> None:
        self.handlers[event] = handler
        self.costs[event] = cost

    def dispatch(self, client: Client, text: str, then: Callable[[], None] | None = None) -> asyncio.Task | None:
        """Answer one text frame: run its handler, or tell the sender (only) what is wrong.

        Runs inline; returns the Task that goes on with the handler when it suspended (the
        connection holds the client's next frames until it is done; the Task calls ``then`` as
        its last act), else None.
        """
        wait = client.admit(len(text))
        if wait > 0:
            self.traffic.request("recv (rate-limited)")
            self.refuse(client, peek_id(text), rate_limited(wait))
            return None
        emit, error = decode_emit(text)
        if error is not None or emit is None:
            self.traffic.request("recv (invalid)")
        else:
            known = emit.event in self.handlers
            # Unknown names are counted together: a client must not grow the server's counters.
            self.traffic.request(f"recv {emit.event}" if known else "recv (unknown)")
            if self.trace is not None:
                self.trace.record(client.name, "server", emit.event if known else "(unknown)")
            error = charge(client, self.costs[emit.event]) if known else \
                EventError("unknown-event", f"no event called {emit.event[:64]!r}")
            if error is None:
                return self.run(client, emit, then)
        self.refuse(client, emit.id if emit is not None else None, error)
        return None

    def refuse(self, client: Client, id: int | None, error: EventError) -> None:
        """A failed acknowledgement when the frame had an ``id``, else an ``error`` event."""
        reply = encode_failed_ack(id, error) if id is not None else encode_error(error)
        self.send([client], "error", reply)

    def acknowledge(self, client: Client, emit: Emit, result: Any) -> None:
        if emit.id is not None:
            self.send([client], "ack", encode_ack(emit.id, result))

    def run(self, client: Client, emit: Emit, then: Callable[[], None] | None = None) -> asyncio.Task | None:
        """Run the handler and send its acknowledgement, both inside the error handling: a
        result that cannot be sent answers ``internal`` and the connection carries on.

        An async handler is stepped inline (``inline.step``) and gets a Task only if it
        suspends; a sync one just runs.
        """
        try:
            result = self.handlers[emit.event](client, emit.data)
            coroutine = result if type(result) is CoroutineType else \
                _awaited(result) if inspect.isawaitable(result) else None
            if coroutine is not None:
                done, result = step(coroutine)
                if not done:
                    task = asyncio.get_running_loop().create_task(self._finish(client, emit, coroutine, result, then))
                    self.running.add(task)
                    task.add_done_callback(self.running.discard)
                    return task
            self.acknowledge(client, emit, result)
        except EventError as error:
            self.refuse(client, emit.id, error)
        except Exception as exc:  # a bug in a handler (or an unencodable result) answers this client only
            self.failed(client, emit, exc)
        return None

    async def _finish(self, client: Client, emit: Emit, coroutine: Coroutine, awaited: Any,
                      then: Callable[[], None] | None) -> None:
        """The rest of a handler that suspended, then its acknowledgement: the last step's
        pushes to the sender and the acknowledgement leave in one write (``release``)."""
        try:
            self.acknowledge(client, emit, await finish(coroutine, awaited, client))
        except EventError as error:
            self.refuse(client, emit.id, error)
        except asyncio.CancelledError:
            if not self.closing:
                raise
        except Exception as exc:
            self.failed(client, emit, exc)
        finally:
            self.release(client)
            if then is not None:
                then()

    def failed(self, client: Client, emit: Emit, exc: Exception) -> None:
        self.errors.append(f"{emit.event}: {exc!r}")
        self.refuse(client, emit.id, EventError("internal", "the server failed to handle this event"))

    def cancel_running(self) -> None:
        """Shutting down: handlers still running are cancelled, frames not yet handled dropped."""
        self.closing = True
        for task in list(self.running):
            task.cancel()


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    """A handler that returned an awaitable (a future) without being a coroutine itself."""
    return await awaitable


def charge(client: Client, cost: int) -> EventError | None:
    """Take the rest of a weighted event's cost (its first frame is taken already)."""
    if cost == 1:
        return None
    if client.frames.wait(cost - 1) > 0:
        return rate_limited(client.frames.wait(cost))
    client.frames.take(cost - 1)
    return None


def rate_limited(wait: float) -> EventError:
    return EventError("rate-limited", "too many frames or bytes; retry after retryAfter seconds", retry_after=wait)
