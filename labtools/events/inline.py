"""Run a coroutine inline until it first suspends; give it a Task only then.

Most handlers of the course never wait: the mini chat's relay, a vote, a map move. Wrapping
each in a Task costs a Task object, a copy of the context and a loop turn before the handler
even starts. Python 3.12's eager task factory starts every task this way; on 3.11 this module
does it for the event layer: ``step`` runs the coroutine in the caller's callback
(``data_received``), and only a coroutine that suspends (awaits a future that is not done) goes
on in a Task, with ``finish``.

What that changes for code that runs inline: until its first suspension it runs inside the
caller (a protocol callback, or the Task of the same socket's previous handler), so
``asyncio.current_task()`` is not its own there: use ``asyncio.wait_for`` rather than
``asyncio.timeout()`` before the first ``await``. After its first suspension it is in a Task of
its own like any other coroutine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Corkable(Protocol):
    """What ``finish`` holds the output of while it steps (a ``Client``)."""

    def cork(self) -> bool: ...

    def flush(self) -> None: ...


def step(coroutine: Coroutine[Any, Any, T]) -> tuple[bool, Any]:
    """Run ``coroutine`` until it first suspends.

    ``(True, result)`` when it finished without suspending; ``(False, awaited)`` when it waits
    for ``awaited`` (a future; None for a bare ``yield``, as in ``asyncio.sleep(0)``). What it
    raises propagates.
    """
    try:
        awaited = coroutine.send(None)
    except StopIteration as stop:
        return True, stop.value
    if asyncio.isfuture(awaited):
        # What a Task does at once with a yielded future: clear its "someone waits" flag. Left
        # set until ``finish`` runs, another handler awaiting the same future in between (two
        # frames read in one loop turn) would fail with "await wasn't used with future".
        awaited._asyncio_future_blocking = False
    return False, awaited


async def finish(coroutine: Coroutine[Any, Any, T], awaited: Any, corked: Corkable | None = None) -> T:
    """Go on with a coroutine that ``step`` left waiting for ``awaited``, in the current Task.

    What a Task does with a coroutine, step by step: wait for what it awaits, then resume it
    (it takes the outcome from its own ``await``). Cancelling this Task cancels what the
    coroutine awaits, or throws ``CancelledError`` into it, as a Task would. Each step runs
    with ``corked``'s output held and flushed after it, except the last one's, which is left
    held so that the caller can add a frame (the acknowledgement) to the same write.
    """
    while True:
        throw: BaseException | None = None
        try:
            await _wait(awaited)
        except asyncio.CancelledError as cancelled:
            if not (asyncio.isfuture(awaited) and awaited.cancelled()):  # this Task was cancelled
                throw = cancelled
        except BaseException as exc:
            if not asyncio.isfuture(awaited):
                throw = exc
        if corked is not None:
            corked.cork()
        try:
            awaited = coroutine.send(None) if throw is None else coroutine.throw(throw)
        except StopIteration as stop:
            return stop.value
        if corked is not None:
            corked.flush()


def _wait(awaited: Any) -> Any:
    """An awaitable that waits for what the coroutine yielded, as a Task would."""
    if awaited is None:
        return asyncio.sleep(0)
    if asyncio.isfuture(awaited):
        # What a Task does with a yielded future: take the coroutine's "I am waiting" flag
        # (otherwise awaiting it again would raise "await wasn't used with future").
        awaited._asyncio_future_blocking = False
        return awaited
    return _refuse(awaited)


async def _refuse(awaited: Any) -> None:
    raise RuntimeError(f"a coroutine yielded {awaited!r}, which is not a future")


def start(coroutine: Coroutine[Any, Any, Any], corked: Corkable | None = None) -> asyncio.Task | None:
    """Run ``coroutine`` inline; a Task that goes on with it if it suspends, else None."""
    done, awaited = step(coroutine)
    if done:
        return None
    return asyncio.get_running_loop().create_task(_finish_flushed(coroutine, awaited, corked))


async def _finish_flushed(coroutine: Coroutine[Any, Any, Any], awaited: Any, corked: Corkable | None) -> None:
    try:
        await finish(coroutine, awaited, corked)
    finally:
        if corked is not None:
            corked.flush()
