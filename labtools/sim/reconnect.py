"""Reconnection with exponential backoff and full jitter (lesson 10), and the thundering herd.

``Reconnecting`` keeps one ``EventClient`` connected: when the socket closes with a code after
which a client should come back (``events.client.should_reconnect``, the rule the pages'
``events.js`` keeps too), it waits, tries again, and after each success re-runs ``on_connect``
(join the room again, sign in again), then asks for what it missed while away (``resume`` from
the last offset it got, lesson 11). After any other code it stays closed.
The wait before retry ``attempt`` (0, 1, 2...) is

* with full jitter: ``random.uniform(0, min(cap, base * 2**attempt))`` (seeded);
* without: ``min(cap, base * 2**attempt)``, the same for every client.

``herd(...)`` is lesson 10's experiment: N clients on one server, the server crashed (every
connection reset at once) and restarted on the same port, and the connection attempts counted
per 100 ms when they start, and the reconnections per 100 ms when they complete (the handshake
and the resume done): the last reconnection is when everyone is back. Without jitter every client
retries at the same instants and the server gets the whole crowd at once, again and again; with
full jitter the attempts spread out.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .. import processes, runtime, serving
from ..events import EventClient
from ..events.client import AckError, Position, should_reconnect

OnConnect = Callable[[EventClient], Awaitable[Any]]


def backoff_delay(
    attempt: int, *, base: float = 0.1, cap: float = 5.0, jitter: bool = True, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry ``attempt`` (0 for the first retry)."""
    ceiling = min(cap, base * 2**attempt)
    if not jitter:
        return ceiling
    return (rng or random).uniform(0, ceiling)


class Reconnecting:
    """An ``EventClient`` kept connected: see the module's docstring.

    ``attempts`` lists ``(time.monotonic() when it started, attempt number, succeeded)`` for
    every try after the first connection, ``reconnected_at`` the ``time.monotonic()`` at which
    each successful one completed; ``connections`` counts the sockets opened, the first included.
    ``stayed_closed`` is the close code after which it did not reconnect (None while it does).
    Listeners given to ``on`` are attached again to every new socket.

    A reconnection resumes (``resume=False`` turns it off): the new socket emits ``resume`` with
    the position the last one reached, and the pushes missed meanwhile reach the listeners before
    ``connected`` is set again. ``recovered`` counts them; ``gaps`` counts the ``too-old``
    answers (the server could not fill the gap: another epoch, or too much missed); ``refused``
    keeps any other refusal (an app without recoverable streams says ``unknown-event``).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "client",
        base: float = 0.1,
        cap: float = 5.0,
        jitter: bool = True,
        seed: int = 0,
        on_connect: OnConnect | None = None,
        open_timeout: float = 3.0,
        resume: bool = True,
        **options: Any,
    ) -> None:
        self.url = url
        self.name = name
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self.random = random.Random(seed)
        self.on_connect = on_connect
        self.options = {"open_timeout": open_timeout, **options}
        self.client: EventClient | None = None
        self.attempts: list[tuple[float, int, bool]] = []
        self.reconnected_at: list[float] = []
        self.stayed_closed: int | None = None
        self.connections = 0
        self.resumes = resume
        self.recovered = 0
        self.gaps = 0
        self.refused: list[AckError] = []
        self.connected = asyncio.Event()
        self._since: Position | None = None
        self._listeners: list[tuple[str, Callable[[Any], Any]]] = []
        self._task: asyncio.Task | None = None
        self._closing = False

    def delay(self, attempt: int) -> float:
        return backoff_delay(attempt, base=self.base, cap=self.cap, jitter=self.jitter, rng=self.random)

    def on(self, event: str, listener: Callable[[Any], Any]) -> None:
        self._listeners.append((event, listener))
        if self.client is not None:
            self.client.on(event, listener)

    @property
    def position(self) -> Position | None:
        """Where this client stands in the server's stream: what the next resume starts from."""
        if self._since is not None:
            return self._since
        return self.client.position if self.client is not None else None

    async def _open(self) -> EventClient:
        if self.client is not None and self._since is None:
            self._since = self.client.position  # where the lost socket stood: resume from there
        # Pushes that beat the resume to the new socket wait for its replay (newer after older).
        hold = self.resumes and self._since is not None
        client = await EventClient.connect(self.url, name=self.name, hold=hold, **self.options)
        for event, listener in self._listeners:
            client.on(event, listener)
        self.client = client
        self.connections += 1
        try:
            if self.on_connect is not None:
                await self.on_connect(client)
            if self.resumes and self._since is not None:
                await self._resume(client, self._since)
        except BaseException:
            await client.aclose()  # this attempt failed: no socket left open behind it
            raise
        self.connected.set()
        return client

    async def _resume(self, client: EventClient, since: Position) -> None:
        """Ask for what was missed since ``since``; after ``on_connect``, because the server may
        need the session back (signed in, in its rooms) to know which pushes are this client's.

        A lost connection (or no answer) propagates and keeps ``since``: the next socket resumes
        from the same place, so nothing is skipped because one attempt failed half-way.
        """
        try:
            answer = await client.resume(*since)
        except AckError as error:
            if error.code == "too-old":
                self.gaps += 1  # from here on: the state the new socket was sent on connect
            else:
                self.refused.append(error)
        else:
            missed = answer.get("missed") if isinstance(answer, dict) else None
            if isinstance(missed, int) and not isinstance(missed, bool):
                self.recovered += missed
        self._since = None

    async def start(self) -> Reconnecting:
        """Connect (the first time without waiting) and keep the connection up from then on."""
        await self._open()
        self._task = asyncio.get_running_loop().create_task(self.supervise())
        return self

    async def supervise(self) -> None:
        while not self._closing:
            assert self.client is not None
            await self.client.connection.wait_closed()
            code = self.client.connection.close_code
            await self.client.aclose()
            if self._closing:
                return
            self.connected.clear()
            if not should_reconnect(code):
                self.stayed_closed = code  # the server meant it: coming back would meet the same answer
                return
            attempt = 0
            while not self._closing:
                await asyncio.sleep(self.delay(attempt))
                started = time.monotonic()  # when the attempt reaches the server, not when it ends
                try:
                    await self._open()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.attempts.append((started, attempt, False))
                    attempt += 1
                else:
                    self.attempts.append((started, attempt, True))
                    self.reconnected_at.append(time.monotonic())
                    break

    async def aclose(self) -> None:
        self._closing = True
        await runtime.cancel(self._task)
        if self.client is not None:
            await self.client.aclose()


# ----- the thundering herd -----------------------------------------------------------------------


class _KernelServer:
    """A minichat on the labtools loop that can come back on the same port."""

    def __init__(self, app: str) -> None:
        self.app = app
        self.server: Any = None
        self.port = 0

    async def start(self, port: int = 0) -> str:
        self.server = await serving.start(serving.build(self.app), "127.0.0.1", port)
        self.port = self.server.port
        return self.server.url

    async def stop(self) -> None:
        """A crash, not a polite shutdown: every connection is reset at once (as when the server's
        process dies), so that every client finds out at the same moment; a closing handshake
        with each client in turn would spread them out before the experiment starts."""
        for client in list(getattr(self.server, "clients", {}).values()):
            client.transport.abort()
        await self.server.aclose()


class _ProcessServer:
    def __init__(self, app: str) -> None:
        self.app = app
        self.child: processes.ChildServer | None = None
        self.port = 0

    async def start(self, port: int = 0) -> str:
        self.child = await processes.start_child(self.app, port=port)
        self.port = self.child.port
        return self.child.url

    async def stop(self) -> None:
        assert self.child is not None
        await self.child.aclose()


async def aherd(
    clients: int = 100,
    *,
    jitter: bool = True,
    base: float = 0.1,
    cap: float = 2.0,
    downtime: float = 1.0,
    seconds: float = 4.0,
    bin_ms: float = 100.0,
    where: str = "kernel",
    app: str = "minichat",
    seed: int = 0,
) -> dict[str, Any]:
    """One run of the herd (on the labtools loop): see ``herd``."""
    processes.raise_file_limit()  # a thousand clients and their server sides: two thousand sockets
    server: _KernelServer | _ProcessServer = _KernelServer(app) if where == "kernel" else _ProcessServer(app)
    url = await server.start()
    port = server.port
    users = [
        Reconnecting(url, name=f"u{k}", base=base, cap=cap, jitter=jitter, seed=seed * 100_003 + k)
        for k in range(clients)
    ]
    gate = asyncio.Semaphore(64)

    async def start(user: Reconnecting) -> None:
        async with gate:
            await user.start()

    try:
        await asyncio.gather(*(start(u) for u in users))
        outage = time.monotonic()
        await server.stop()
        await asyncio.sleep(downtime)
        back = time.monotonic()
        await server.start(port)
        await asyncio.sleep(max(0.0, outage + seconds - time.monotonic()))  # the whole window is counted
    finally:
        await asyncio.gather(*(u.aclose() for u in users), return_exceptions=True)
        await server.stop()
    return herd_counts(users, outage=outage, back=back, seconds=seconds, bin_ms=bin_ms, jitter=jitter)


def herd_counts(
    users: list[Reconnecting], *, outage: float, back: float, seconds: float, bin_ms: float, jitter: bool
) -> dict[str, Any]:
    """One run's counts, every figure from the same records (times in seconds since ``outage``).

    ``attempts``: tries per bin by when they started (when they reach the server);
    ``reconnections``: successes per bin by when they completed, so that the last green bar of
    lesson 10's figure ends where ``all reconnected after s`` says (None: someone was not back
    within ``seconds``); ``reconnected at s`` lists each completion, ``connect s`` how long each
    successful attempt took from its start (a connection request the server's full accept queue
    dropped is sent again by the client's kernel a second later). ``waves``: per attempt
    number (0 for the first retry), how many tries, their first and last start, and the most in
    one bin: without jitter each is one wave.
    """
    bins = int(seconds * 1000 / bin_ms)
    tries = [0] * bins
    successes = [0] * bins
    by_attempt: dict[int, list[float]] = {}
    for user in users:
        for at, attempt, _ok in user.attempts:
            k = int((at - outage) * 1000 / bin_ms)
            by_attempt.setdefault(attempt, []).append(at - outage)
            if 0 <= k < bins:
                tries[k] += 1
        for at in user.reconnected_at:
            k = int((at - outage) * 1000 / bin_ms)
            if 0 <= k < bins:
                successes[k] += 1
    everyone = all(user.reconnected_at for user in users)
    last = max((at for user in users for at in user.reconnected_at), default=outage)
    all_back = last - outage if everyone and last - outage < seconds else None
    waves = []
    for attempt, starts in sorted(by_attempt.items()):
        slots = [int(t * 1000 / bin_ms) for t in starts]
        waves.append({"attempt": attempt, "tries": len(starts), "from s": min(starts), "to s": max(starts),
                      "most in one bin": max(slots.count(k) for k in set(slots))})
    return {
        "jitter": jitter,
        "clients": len(users),
        "bin ms": bin_ms,
        "t": [k * bin_ms / 1000 for k in range(bins)],
        "attempts": tries,
        "reconnections": successes,
        "waves": waves,
        "reconnected at s": sorted(at - outage for user in users for at in user.reconnected_at),
        "connect s": sorted(done - started for user in users for (started, _a, _ok), done
                            in zip((a for a in user.attempts if a[2]), user.reconnected_at, strict=True)),
        "peak attempts per bin": max(tries),
        "peak reconnections per bin": max(successes),
        "total attempts": sum(len(u.attempts) for u in users),
        "server back at s": back - outage,
        "all reconnected after s": all_back,
    }


def herd(clients: int = 100, **options: Any) -> dict[str, dict[str, Any]]:
    """Lesson 10's thundering herd, with and without jitter: ``{"no jitter": run, "jitter": run}``.

    Each run: ``clients`` reconnecting clients on a fresh ``app`` server (``where="kernel"``:
    on the labtools loop; ``"process"``: a child process), the server stopped for ``downtime``
    seconds and started again on the same port; each run's ``t``, ``attempts`` and
    ``reconnections`` lists count per ``bin_ms`` from the outage on, for a plot.
    """
    return {
        "no jitter": runtime.run(aherd(clients, jitter=False, **options)),
        "jitter": runtime.run(aherd(clients, jitter=True, **options)),
    }
