"""The bus: ephemeral publish/subscribe between the nodes of one app, on Redis.

This is the role of Socket.IO's Redis adapter. A node that broadcasts to a room reaches only
its own sockets; the members connected to the other nodes are reached by publishing the frame
on the bus, and every other node delivers it to its own members. The same bus carries the
nodes' small talk: who is online here, "there is a new message", heartbeats.

Why pub/sub and not something stronger: PUBLISH costs Redis nothing to keep (it keeps nothing),
so a broadcast costs one round trip whatever the number of nodes. The price is that pub/sub is
fire-and-forget: a node that is not subscribed at the moment a message is published (starting,
reconnecting, Redis restarting) never gets it, and nothing says it was missed. So the bus is
only a bell: whatever must not be lost is kept elsewhere (the chat's database, a Redis Stream
for the replicated apps), and a node re-reads from there when the bell rings and after every
reconnection, which is what ``on_reconnect`` is for.

Why one pattern subscription (``PSUBSCRIBE labtools:APP:*``), as Socket.IO's adapter does: the
channels of a node (rooms, presence, bells) then cost no SUBSCRIBE round trip each, ``subscribe``
is a local table, and a reconnection restores everything with one command. Every node receives
every message of its app and drops what it has no callback for.

Wire form: channel ``labtools:{app}:{channel}``, payload one JSON object, the publishing node's
id in ``"node"`` (so a node skips its own messages). Pub/sub channels belong to the whole Redis
server, not to one of its numbered databases, so a broker URL with a database other than 0 puts
its number in the name (``labtools:db{N}:{app}:{channel}``): two apps on ``/0`` and ``/1`` of one
Redis then hear nothing of each other, as their keys are apart too.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..events.adapter import BusCallback, default_node
from .broker import connection_options, database, redacted

#: Seconds between two attempts to subscribe again, doubling up to ``BACKOFF_LONGEST``.
BACKOFF_FIRST = 0.1
BACKOFF_LONGEST = 2.0
#: A subscription silent this long is pinged; one silent three times as long is taken for dead
#: (a Redis stopped or a network cut: no FIN ever comes, so the read alone would wait forever).
PING_AFTER = 1.0
#: Messages waiting to be published at most; beyond, the oldest is dropped (Redis is away).
QUEUE_LIMIT = 10_000
#: Errors kept for a look from a cell (the last ones).
ERRORS_KEPT = 50

#: Seconds a node waits for its first subscription at start before it gives up, loudly.
START_TIMEOUT = 5.0

def channel_prefix(app: str, db: int) -> str:
    """The channels' prefix: database 0 keeps the names it always had; any other says its number."""
    return f"labtools:{app}:" if not db else f"labtools:db{db}:{app}:"

class RedisBus:
    """The bus on Redis PUBLISH / PSUBSCRIBE: one listener task, one publisher task
    (``labtools.events.adapter.Bus``, reaching the other nodes).

    ``post`` queues a message and returns at once (an event server's broadcast cannot wait);
    ``publish`` waits until Redis took it. Both keep the order of the messages of this node:
    one task publishes them in order, pipelined, on one connection. When Redis is away the
    messages are dropped (and counted in ``dropped``), not retried: that is pub/sub.
    """

    reaches_others = True

    def __init__(self, url: str, app: str, node: str | None = None) -> None:
        self.url = url
        self.app = app
        self.node = node or default_node()
        self.prefix = channel_prefix(app, database(url))
        self.callbacks: dict[str, list[BusCallback]] = {}
        self.reconnect_callbacks: list[Callable[[], Any]] = []
        self.published = 0
        self.received = 0
        self.dropped = 0
        self.reconnects = 0
        self.errors: list[str] = []
        self.connected = False
        # Our loop does the backing off and the re-subscribing; redis-py's own retries would hide
        # a reconnection from us (and wait up to seconds inside a publish).
        options: dict[str, Any] = {"retry": Retry(NoBackoff(), 0), "socket_connect_timeout": 2.0,
                                   **connection_options(url)}
        self._redis = Redis.from_url(url, socket_timeout=5.0, **options)
        self._listening = Redis.from_url(url, **options)  # blocking reads: no socket timeout
        self._pubsub: PubSub | None = None
        self._queue: list[tuple[str, bytes, asyncio.Future[None] | None]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._closed = False

    # ----- subscribing --------------------------------------------------------------------

    def subscribe(self, channel: str, callback: BusCallback) -> None:
        """Call ``callback(message)`` for each message another node publishes on ``channel``.

        Callbacks run in the listener, one message after the other, in the order the node
        published them: keep them short (an async one is awaited before the next message).
        """
        self.callbacks.setdefault(channel, []).append(callback)

    def on_reconnect(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` each time a lost subscription is back: re-read what may be missed."""
        self.reconnect_callbacks.append(callback)

    async def start(self) -> None:
        """Subscribe (raising when Redis cannot be reached: a wrong URL must fail loudly), then listen."""
        if self._tasks:
            return
        try:  # a broker that accepts the connection but never answers (frozen) must fail too
            self._pubsub = await asyncio.wait_for(self._subscribe(), START_TIMEOUT)
        except (RedisError, OSError) as error:
            raise ConnectionError(f"cannot reach the broker at {redacted(self.url)}: {error}") from error
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen(), name=f"bus {self.node} listen"),
                       loop.create_task(self._send(), name=f"bus {self.node} publish")]

    async def _subscribe(self) -> PubSub:
        pubsub = self._listening.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.psubscribe(self.prefix + "*")
        except BaseException:
            await pubsub.aclose()
            raise
        self.connected = True
        return pubsub

    async def _listen(self) -> None:
        """Read and dispatch; on a lost connection back off, subscribe again, tell ``on_reconnect``."""
        delay = BACKOFF_FIRST
        while True:
            try:
                if self._pubsub is None:
                    self._pubsub = await self._subscribe()
                    self.reconnects += 1
                    delay = BACKOFF_FIRST
                    for callback in self.reconnect_callbacks:
                        await self._call(callback)
                await self._read(self._pubsub)
            except (RedisError, OSError) as error:
                self.connected = False
                self._note(f"subscription lost: {error!r}")
                pubsub, self._pubsub = self._pubsub, None
                if pubsub is not None:
                    await _quietly(pubsub.aclose())
                await asyncio.sleep(delay)
                delay = min(2 * delay, BACKOFF_LONGEST)

    async def _read(self, pubsub: PubSub) -> None:
        heard = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=PING_AFTER)
            now = time.monotonic()
            if message is None:
                if now - heard > 3 * PING_AFTER:
                    raise ConnectionError(f"Redis did not answer a ping in {3 * PING_AFTER:g} s")
                if now - heard > PING_AFTER:
                    await pubsub.ping()
                continue
            heard = now
            if message["type"] == "pmessage":
                await self._dispatch(message["channel"], message["data"])

    async def _dispatch(self, channel: bytes, payload: bytes) -> None:
        name = channel.decode()[len(self.prefix):]
        callbacks = self.callbacks.get(name)
        if not callbacks:
            return
        try:
            message = json.loads(payload)
        except ValueError as error:
            self._note(f"{name}: not JSON ({error})")
            return
        if not isinstance(message, dict) or message.get("node") == self.node:
            return
        self.received += 1
        for callback in callbacks:
            await self._call(callback, message)

    async def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        """One failing callback is noted, never the end of the listener."""
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                await result
        except Exception as error:
            self._note(f"callback {getattr(callback, '__name__', callback)}: {error!r}")

    def _note(self, error: str) -> None:
        self.errors.append(error)
        del self.errors[:-ERRORS_KEPT]

    # ----- publishing ---------------------------------------------------------------------

    def post(self, channel: str, message: dict[str, Any]) -> None:
        """Publish ``message`` on ``channel`` soon, in order, without waiting (fire and forget)."""
        self._enqueue(channel, message, None)

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        """Publish ``message`` and wait until Redis took it (``ConnectionError`` when it did not)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(channel, message, future)
        await future

    def _enqueue(self, channel: str, message: dict[str, Any], future: asyncio.Future[None] | None) -> None:
        """Queue one message. A closed bus drops it, as an unreachable Redis would: a server
        shutting down still broadcasts (a user going offline) and must not fail for it."""
        if self._closed:
            self.dropped += 1
            if future is not None:
                future.set_exception(ConnectionError("the bus is closed"))
            return
        payload = json.dumps({**message, "node": self.node}, ensure_ascii=False, separators=(",", ":")).encode()
        self._queue.append((self.prefix + channel, payload, future))
        if len(self._queue) > QUEUE_LIMIT:
            _channel, _payload, lost = self._queue.pop(0)
            self.dropped += 1
            if lost is not None and not lost.done():
                lost.set_exception(ConnectionError("dropped: too many messages waiting for Redis"))
        self._wake.set()

    async def _send(self) -> None:
        """Publish what waits, all of it in one pipeline (one round trip), in order."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            error: BaseException | None = None
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for channel, payload, _future in batch:
                        pipe.publish(channel, payload)
                    await pipe.execute()
                self.published += len(batch)
            except (RedisError, OSError) as failure:
                error = failure
                self.dropped += len(batch)
                self._note(f"publish failed, {len(batch)} dropped: {failure!r}")
            for _channel, _payload, future in batch:
                if future is not None and not future.done():
                    if error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(ConnectionError(f"not published: {error!r}"))

    # ----- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop both tasks and close both connections (idempotent). What waits is dropped."""
        if self._closed:
            return
        self._closed = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _channel, _payload, future in self._queue:
            if future is not None and not future.done():
                future.set_exception(ConnectionError("the bus closed first"))
        self._queue = []
        self.connected = False
        if self._pubsub is not None:
            await _quietly(self._pubsub.aclose())
            self._pubsub = None
        await _quietly(self._redis.aclose())
        await _quietly(self._listening.aclose())

    def __repr__(self) -> str:
        return f"<RedisBus {self.prefix}* node={self.node} {'connected' if self.connected else 'disconnected'}>"


async def _quietly(closing: Any) -> None:
    """Close something that may already be broken: its error says nothing new."""
    with contextlib.suppress(RedisError, OSError):
        await closing

