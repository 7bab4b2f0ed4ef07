"""The kernel runtime: one background event loop that servers and simulated clients live on.

Why a thread of our own instead of the kernel's loop: a notebook cell that blocks (a plain
``run_crowd(...)`` call, ``time.sleep``, JupyterLab's Run All queueing every cell) must not stop
the servers it is measuring. ipykernel 7 runs cells on its own asyncio loop; nesting loops with
nest-asyncio was measured to drop queued Run-All cells silently, so labtools owns a loop on a
daemon thread and hands work to it:

* ``run(coro)`` from plain code (cells, scripts, pytest) blocks until the coroutine finishes;
* ``await arun(coro)`` from top-level ``await`` in a cell (or any other loop) waits without
  blocking that loop.

Servers are registered by name, so re-running a cell that starts "polling" replaces the old
server instead of failing with "address already in use". Nothing here prints: output from a
background thread lands in whichever cell happens to be running, so errors are recorded in
``errors()`` and raised where the caller waits.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_services: dict[str, Service] = {}
_errors: list[str] = []


class Service(Protocol):
    """Anything the runtime can stop: a running server, a crowd, a client."""

    async def aclose(self) -> None: ...


def loop() -> asyncio.AbstractEventLoop:
    """Return the background loop, starting its thread on first use."""
    global _loop, _thread
    with _lock:
        if _loop is not None and _thread is not None and _thread.is_alive():
            return _loop
        new_loop = asyncio.new_event_loop()
        new_loop.set_exception_handler(_record_error)
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(new_loop)
            new_loop.call_soon(ready.set)
            new_loop.run_forever()

        thread = threading.Thread(target=main, name="labtools-loop", daemon=True)
        thread.start()
        ready.wait()
        _loop, _thread = new_loop, thread
        return new_loop


def _record_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Keep background errors for ``errors()`` instead of printing them into some cell."""
    exc = context.get("exception")
    message = context.get("message", "")
    _errors.append(f"{message}: {exc!r}" if exc else message)


def errors() -> list[str]:
    """Errors the background loop swallowed (unretrieved task exceptions and the like)."""
    return list(_errors)


def in_loop_thread() -> bool:
    """True when called from the background loop's own thread (where ``run`` would deadlock)."""
    return _thread is not None and threading.current_thread() is _thread


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on the background loop and return a thread-safe future."""
    if in_loop_thread():
        coro.close()
        raise RuntimeError("labtools.run() called from the labtools loop itself; await the coroutine")
    return asyncio.run_coroutine_threadsafe(coro, loop())


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the background loop and block until it finishes (the sync API)."""
    future = submit(coro)
    try:
        return future.result(timeout)
    except TimeoutError:
        if future.done():  # the coroutine itself timed out: its error, as it raised it
            raise
        future.cancel()
        raise TimeoutError(f"gave up after {timeout} s") from None
    except KeyboardInterrupt:
        future.cancel()
        raise


async def arun(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the background loop; await it from any other loop (top-level ``await``)."""
    if in_loop_thread():
        return await coro
    return await asyncio.wrap_future(submit(coro))


def call(fn: Callable[[], T]) -> T:
    """Call a plain function on the loop thread, for reading state that the loop mutates."""
    if in_loop_thread():
        return fn()

    async def wrapper() -> T:
        return fn()

    return run(wrapper())


async def cancel(task: asyncio.Task | None) -> None:
    """Cancel ``task`` (None: nothing) and wait until it has ended: its cancellation is not an error."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def register(name: str, start: Callable[[], Awaitable[Any]]) -> Any:
    """Stop the service called ``name`` if one runs, then start a new one under that name.

    Runs on the background loop. ``start`` returns the service (something with ``aclose``).
    """
    old = _services.pop(name, None)
    if old is not None:
        await old.aclose()
    service = await start()
    _services[name] = service
    return service


def services() -> dict[str, Service]:
    """The services running now, by name."""
    return call(lambda: dict(_services))


async def _stop_all() -> None:
    while _services:
        _name, service = _services.popitem()
        try:
            await service.aclose()
        except Exception as exc:  # keep stopping the others
            _errors.append(f"stopping {_name}: {exc!r}")


def stop_all(timeout: float = 10) -> None:
    """Stop every registered server and client (re-run safe; also runs at interpreter exit)."""
    if _loop is None or _thread is None or not _thread.is_alive():
        return
    run(_stop_all(), timeout)


def shutdown(timeout: float = 10) -> None:
    """Stop everything and the loop thread itself (kernel shutdown, end of a script)."""
    global _loop, _thread
    if _loop is None or _thread is None:
        return
    if _thread.is_alive():
        try:
            stop_all(timeout)
        finally:
            _loop.call_soon_threadsafe(_loop.stop)
            _thread.join(timeout)
    if not _thread.is_alive():
        _loop.close()
    _loop, _thread = None, None


atexit.register(shutdown)


async def unregister_and_close(name: str, service: Service) -> None:
    """Stop ``service`` and forget it; a no-op once it was stopped or replaced."""
    if _services.get(name) is service:
        del _services[name]
        await service.aclose()
