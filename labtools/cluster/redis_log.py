"""The log on Redis: one Redis Stream per app, that every node appends to and reads in order.

Why a Stream and not only PUBLISH: pub/sub (the role of Socket.IO's Redis adapter) is fire and
forget: a node whose connection to Redis blinks misses what was published meanwhile, and a
client that reconnects has nothing to catch up from. A Stream is the same fan-out with a
memory: entries have ids (the offsets clients see), every node reads from the last id it
applied (``XREAD BLOCK``, woken the moment an entry is added), and after any interruption it
goes on from there, so nothing is skipped and nothing is applied twice. The stream is trimmed
(``MAXLEN ~ keep``): what is older than that is gone, and a client asking for it is told so.

Redis keys (``labtools:APP:...``): ``log`` the stream, ``count`` the number of entries ever
added (each entry carries its number ``n``, so a node sees when entries it never read were
trimmed: it fell more than ``keep`` entries behind), ``epoch`` one life of the stream (a Redis
that lost its data gets a new one, and clients that resume learn their gap cannot be filled),
``snapshot`` a hash with the state as of an offset (and that entry's number), so that a node
starting later (or again, after kill -9, or after falling behind) restores it and replays only
what followed.

The numbering is checked from the first entry a node reads: where it starts (the snapshot's
entry, the newest entry, or the count when the stream is empty) has a number too, so a node
that falls behind before it has read anything still sees its gap.

An entry is data from the network like any frame: one that does not decode (broken JSON, not
an object, no number; written by anything but this code) is skipped, counted in ``malformed``
and reported, never fatal; it takes no number, so the numbering of the others stays whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .. import runtime
from ..events.log import START, Apply, Offset, Opened, Unavailable, format_offset, parse_offset
from .broker import check_broker_url, connection_options, redacted

#: Errors that mean "Redis is not reachable now" (as opposed to a bug in a command).
DOWN = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
READ_BATCH = 500
BLOCK_MS = 2000
#: Seconds any command but the blocking read may take: a frozen Redis (SIGSTOP, a stalled disk)
#: answers ``unavailable`` after this, instead of holding every request as long as it is frozen.
COMMAND_TIMEOUT = 2.0
#: The blocking read's socket timeout: longer than its block, or every quiet read would fail.
READ_TIMEOUT = BLOCK_MS / 1000 + 3.0
#: Milliseconds after which an appended entry is void: every node skips an entry whose stream
#: id (Redis's clock when it took it) is past the deadline the entry carries (the appending
#: node's clock when it sent it, plus this). So a write that a frozen Redis takes late, after
#: its node answered ``unavailable`` ("nothing was changed"), stays inert everywhere. The nodes'
#: and Redis's clocks must agree within this margin (one machine, or NTP).
DEADLINE_MS = int(COMMAND_TIMEOUT * 1000)

# Number the entry and add it in one step: the numbers have no holes, so a reader sees one.
APPEND = """
local n = redis.call('INCR', KEYS[2])
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'n', n, 'e', ARGV[1])
"""

# Keep the newest snapshot only: a node's older one must not overwrite another's newer one.
SAVE_IF_NEWER = """
local ms = tonumber(redis.call('HGET', KEYS[1], 'ms') or '-2')
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local nms, nseq = tonumber(ARGV[1]), tonumber(ARGV[2])
if nms > ms or (nms == ms and nseq > seq) then
  redis.call('HSET', KEYS[1], 'ms', ARGV[1], 'seq', ARGV[2], 'state', ARGV[3], 'n', ARGV[4])
  return 1
end
return 0
"""


def decode_entry(fields: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
    """An entry's number and its JSON object, or None when it does not decode (skipped)."""
    try:
        number = int(fields["n"])
        entry = json.loads(fields["e"])
    except (KeyError, ValueError, TypeError, RecursionError):
        return None
    return (number, entry) if isinstance(entry, dict) and number > 0 else None


def _newest_number(entries: list[tuple[str, dict[str, str]]]) -> int | None:
    """The number of the first entry of ``entries`` (newest first) that decodes, or None."""
    for _entry_id, fields in entries:
        decoded = decode_entry(fields)
        if decoded is not None:
            return decoded[0]
    return None


class RedisLog:
    """The ``Log`` of several nodes: a trimmed Redis Stream, an epoch and a snapshot."""

    immediate = False  # an entry is applied when it comes back from Redis, never at append

    def __init__(self, url: str, app: str, *, keep: int) -> None:
        self.url = check_broker_url(url)
        self.keep = keep
        prefix = f"labtools:{app}:"
        self.stream, self.epoch_key, self.snapshot_key = prefix + "log", prefix + "epoch", prefix + "snapshot"
        self.count_key = prefix + "count"
        self.epoch = ""
        # No automatic retry of a command: an XADD retried after a lost reply would be added twice.
        options = {"decode_responses": True, "retry": Retry(NoBackoff(), 0), "socket_connect_timeout": 2,
                   "health_check_interval": 0, **connection_options(url)}
        self.redis = Redis.from_url(url, socket_timeout=COMMAND_TIMEOUT, **options)
        self.reader = Redis.from_url(url, socket_timeout=READ_TIMEOUT, **options)  # the blocking reads
        self._apply: Apply | None = None
        self._offset: Offset = START
        self._state_now: Callable[[], Any] | None = None
        self._reset: Callable[[Any], None] | None = None
        self._gap: Callable[[Offset], None] | None = None
        self._follower: asyncio.Task | None = None
        self._number: int | None = None  # the number of the last entry applied
        self._append = self.redis.register_script(APPEND)
        self.reconnects = 0
        self.gaps = 0  # times this node found entries trimmed before it read them
        self.malformed = 0  # entries skipped because they did not decode
        self.late = 0  # entries skipped because Redis took them after their deadline
        self._report: Callable[[str], None] | None = None

    # ----- starting -----------------------------------------------------------------------

    async def open(self, initial: Any, apply: Apply, *, tail: int = 0,
                   state_now: Callable[[], Any] | None = None, reset: Callable[[Any], None] | None = None,
                   gap: Callable[[Offset], None] | None = None, report: Callable[[str], None] | None = None) -> Opened:
        """Join the log: the snapshot (seeded with ``initial`` by the first node) and the recent
        tail; ``follow`` then applies what came after.

        A stateless app (``initial`` None) starts at the newest entry: old messages are for
        replaying to clients that resume, not for broadcasting again. ``state_now`` and
        ``reset`` are for the day Redis comes back without its data (``_after_outage``) or this
        node falls behind what the stream keeps (``_fell_behind``); ``gap`` tells a stateless
        app the offset after which it missed entries.
        """
        self._apply = apply
        self._state_now = state_now
        self._reset = reset
        self._gap = gap
        self._report = report
        try:
            await self._seed(initial)
            opened = await self._restore(initial is None, tail)
        except DOWN as error:  # refused, unreachable, or connected but silent (frozen): say so now
            raise ConnectionError(f"cannot reach the broker at {redacted(self.url)}: {error}") from None
        self._offset = opened.offset
        return opened

    async def follow(self) -> Offset:
        """Apply every entry already after the start (so a node listens only once it has caught
        up), then keep following; returns the offset caught up to."""
        await self._catch_up()
        self._follower = asyncio.get_running_loop().create_task(self.read_forever())
        return self._offset

    async def _seed(self, initial: Any) -> None:
        """Create the epoch and the first snapshot unless another node did (both ``NX``)."""
        await self.redis.set(self.epoch_key, secrets.token_hex(6), nx=True)
        self.epoch = await self.redis.get(self.epoch_key) or ""
        if initial is not None:
            await self.redis.eval(SAVE_IF_NEWER, 1, self.snapshot_key, -1, 0, json.dumps(initial), 0)

    async def _restore(self, stateless: bool, tail: int) -> Opened:
        trimmed = await self._max_deleted()
        if stateless:
            newest = await self.redis.xrevrange(self.stream, "+", "-", count=max(tail, 1))
            entries = []
            for entry_id, fields in reversed(newest):
                decoded = self._decoded(entry_id, fields)
                if decoded is not None:
                    entries.append((parse_offset(entry_id) or START, decoded[1]))
            offset = (parse_offset(newest[0][0]) or START) if newest else START
            self._number = await self._number_at(newest)
            complete = trimmed == START and len(newest) < tail
            return Opened(None, offset, entries if tail else [], complete)
        snapshot = await self.redis.hgetall(self.snapshot_key)
        offset = (max(0, int(snapshot["ms"])), int(snapshot["seq"]))
        self._number = int(snapshot["n"]) if snapshot.get("n", "").isdigit() else None
        if offset < trimmed:
            raise RuntimeError(f"{self.stream}: the snapshot ({format_offset(offset)}) is older than what "
                               f"the stream keeps ({format_offset(trimmed)} was trimmed): the state cannot be rebuilt")
        return Opened(json.loads(snapshot["state"]), offset, [], trimmed == START)

    async def _number_at(self, newest: list[tuple[str, dict[str, str]]]) -> int:
        """The number of the newest entry that decodes (entries that do not take no number), the
        next one to read being the one after it; with none among ``newest`` nor the hundred
        newest, the count of entries ever added."""
        number = _newest_number(newest)
        if number is None and newest:
            number = _newest_number(await self.redis.xrevrange(self.stream, "+", "-", count=100))
        return number if number is not None else int(await self.redis.get(self.count_key) or 0)

    def _decoded(self, entry_id: str, fields: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        decoded = decode_entry(fields)
        if decoded is None:
            self.malformed += 1
            # Reported, but a flood of them must not grow the server: the first ten, then every thousandth.
            if self._report is not None and (self.malformed <= 10 or self.malformed % 1000 == 0):
                self._report(f"{self.stream}: entry {entry_id} does not decode: skipped "
                             f"({self.malformed} so far)")
        return decoded

    async def _max_deleted(self) -> Offset:
        """The newest id ever trimmed from the stream (``0-0``: none, or no stream yet)."""
        try:
            info = await self.redis.xinfo_stream(self.stream)
        except redis_errors.ResponseError:  # no such key: nothing was ever added
            return START
        return parse_offset(info.get("max-deleted-entry-id", "0-0")) or START

    # ----- following ----------------------------------------------------------------------

    async def _catch_up(self) -> None:
        """Apply every entry already after the offset, without blocking."""
        while True:
            response = await self.redis.xread({self.stream: format_offset(self._offset)}, count=READ_BATCH)
            if not response:
                return
            await self._deliver(response)

    async def _deliver(self, response: list) -> None:
        assert self._apply is not None
        for _stream, entries in response:
            for entry_id, fields in entries:
                offset = parse_offset(entry_id) or START
                decoded = self._decoded(entry_id, fields)
                if decoded is None:
                    self._offset = offset  # read past it; it takes no number
                    continue
                number, entry = decoded
                if self._number is not None and number != self._number + 1 and await self._fell_behind(offset):
                    return  # reading again from the snapshot restored
                self._number = number
                self._offset = offset
                deadline = entry.get("d")
                if type(deadline) is int and offset[0] > deadline:
                    self.late += 1  # taken after its node gave up on it: void on every node alike
                    continue
                self._apply(offset, entry)

    async def _fell_behind(self, offset: Offset) -> bool:
        """Entries before ``offset`` were trimmed before this node read them (it fell more than
        ``keep`` entries behind), or Redis lost them. Never skipped in silence: a stateful app
        restores the newest snapshot and reads on from it (True); a stateless one is told where
        its gap ends (``gap``), and goes on with this entry (False)."""
        self.gaps += 1
        if await self.redis.get(self.epoch_key) != self.epoch:
            await self._after_outage()
            return True
        if self._state_now is None:
            if self._gap is not None:
                self._gap(offset)
            return False
        snapshot = await self.redis.hgetall(self.snapshot_key)
        restart = (max(0, int(snapshot["ms"])), int(snapshot["seq"]))
        if restart < await self._max_deleted():
            raise RuntimeError(f"{self.stream}: this node fell behind what the stream and its snapshot keep")
        if self._reset is not None:
            self._reset(json.loads(snapshot["state"]))
        self._offset = restart
        self._number = int(snapshot["n"]) if snapshot.get("n", "").isdigit() else None
        return True

    async def read_forever(self) -> None:
        """Read the stream from the last applied entry, for ever; after an outage, go on from there."""
        pause = 0.05
        while True:
            try:
                response = await self.reader.xread({self.stream: format_offset(self._offset)},
                                                   count=READ_BATCH, block=BLOCK_MS)
                pause = 0.05
            except DOWN:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                with contextlib.suppress(*DOWN):
                    await self._after_outage()
                continue
            await self._deliver(response)

    async def _after_outage(self) -> None:
        """Back from an outage: if Redis lost its data (its epoch is gone), seed it again.

        The first node back seeds it with its own state (``SET NX``: one wins) and every node
        restarts from that snapshot at offset 0-0, so the nodes go on agreeing with each
        other; the new epoch tells resuming clients that the history before it is gone.
        """
        await self.redis.ping()
        self.reconnects += 1
        if await self.redis.get(self.epoch_key) == self.epoch:
            return
        state = self._state_now() if self._state_now is not None else None
        await self._seed(state)
        self._offset, self._number = START, 0  # a new life: its first entry is number 1
        snapshot = await self.redis.hgetall(self.snapshot_key)
        if self._reset is not None:
            self._reset(json.loads(snapshot["state"]) if snapshot else None)

    # ----- writing ------------------------------------------------------------------------

    async def append(self, entry: dict[str, Any]) -> None:
        """Add ``entry``, with its deadline (``DEADLINE_MS``); ``Unavailable`` when Redis did not
        answer in ``COMMAND_TIMEOUT``: the entry is then void if Redis takes it later."""
        try:
            text = json.dumps({**entry, "d": int(time.time() * 1000) + DEADLINE_MS}, ensure_ascii=False)
            await self._append(keys=[self.stream, self.count_key], args=[text, self.keep])
        except DOWN as error:
            raise Unavailable(f"the broker ({redacted(self.url)}) is unreachable: {error}") from None

    def save_snapshot(self, state: Any, offset: Offset) -> Awaitable[None]:
        """Save ``state`` as of ``offset`` (the entry just applied), with that entry's number,
        taken now: the save itself runs later, when more entries may have been applied."""
        return self._save(state, offset, self._number or 0)

    async def _save(self, state: Any, offset: Offset, number: int) -> None:
        with contextlib.suppress(*DOWN):  # a missed snapshot only means a longer replay later
            await self.redis.eval(SAVE_IF_NEWER, 1, self.snapshot_key, offset[0], offset[1], json.dumps(state), number)

    async def aclose(self) -> None:
        await runtime.cancel(self._follower)
        self._follower = None
        await self.redis.aclose()
        await self.reader.aclose()
