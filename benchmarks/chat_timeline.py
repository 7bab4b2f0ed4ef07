"""Find the latency: the timeline of one acknowledged private message, stage by stage, under load.

    .venv/bin/python benchmarks/chat_timeline.py                  # P=100 pairs, 5 s, uvloop if installed
    .venv/bin/python benchmarks/chat_timeline.py --seconds 3 --loop asyncio --json timeline.json
    .venv/bin/python benchmarks/chat_timeline.py --checkpoints copy-only   # what the log's resets cost
    .venv/bin/python benchmarks/chat_timeline.py --quick          # a smoke pass: 5 pairs, 1 s

What it measures. The chat server (``python -m labtools serve chat --db FILE``'s server: the same
``serving.build("chat", db=...)`` and ``serving.start``, on the loop ``labtools.cli.loop_factory``
chooses, uvloop when installed) runs in this script's own process, on its main thread, with a
temporary database. The load is the peers benchmark's own load generator
(``benchmarks/peers/loadgen.mjs``, Node.js, in a subprocess) with the configuration ``run.py``
gives its ``chat`` workload, reduced to one closed-loop phase: P pairs (default 100, 2P sockets,
every user signed up with argon2 at its real cost before anything is measured, then a 1 s
warm-up on 5 pairs), each user sending its next ``personal-message`` to its partner the moment
the last one is acknowledged, for S seconds, with the chat's default limits (100 frames/s per
socket: a ``rate-limited`` answer is retried by the load generator after 10 ms).

The server's methods are wrapped at run time (in this process only; labtools' files are not
touched) to stamp ``time.perf_counter_ns()`` per message, correlated by the message's
``clientId`` (unique per phase, sender and message), and per batch of the group commit (one
batch is in flight at a time, so the k-th ``write_batch``, the k-th transaction that succeeds
and the k-th ``_answer`` are the same batch). Each acknowledged message of the measured phase gets:

1. bytes read (``Connection.data_received`` entered) -> its handler called (frame parsing,
   rate limit, JSON decoding, dispatch);
2. handler called -> ``Store.add_message`` (validation, the recipient's lookup);
3. add_message -> its batch written (``Store.write_batch``): waiting for the rest of the loop's
   turn (group commit), for a batch the thread is writing, or for the end of a checkpoint on the
   thread (its last pages are copied while no batch is written: ``Store._finish``);
4. write_batch -> the batch's transaction begins (``Store._add_messages``): nothing on the loop;
   the executor's hand-off for a batch that found the write lock taken and went to the thread;
5. the batch's INSERTs and COMMIT (wall time; its CPU is printed too), on the loop or the thread;
6. the transaction done -> the batch's futures answered (``Store._answer``; from the thread, after
   ``call_soon_threadsafe``);
7. answered -> the handler's coroutine resumes after its ``await`` (the Task's wake-up, behind
   the batch's earlier messages);
8. resumed -> the acknowledgement written (the pushes to both users, the ack, one write).

The log's resets. Every ``CHECKPOINT_EVERY`` messages the store copies its log into the database
in two steps on its thread; the second one, begun right after a commit, holds back any batch that
comes due before the log's last pages are copied and synced, so that the log can start over
(``Store._finish``). The report gives how long each reset took and how long it held a batch
back, and the server's read -> ack of the messages in the batches written right after one,
against the others'. ``--checkpoints copy-only`` skips the
second step (the log never starts over and grows without bound) and ``--checkpoints none``
every checkpoint: measurements of what the resets cost, never a way to run a chat.

Also: batch sizes, the event loop's lag (the lateness of a 1 ms timer), the CPU of the process,
of the loop's thread and of the database thread, how many batches went to the thread, the
throughput, and the load generator's own ack latency (send -> ack at the client), whose p50
minus the server's median is the time a message spends outside the server's handling: in the
client, the kernel and the network stack, and in the socket waiting to be read.

Why: in a closed loop, throughput = messages in flight / mean ack latency (Little's law: here
2P messages are always in flight). So any wait, anywhere, caps the throughput whatever the CPU
does: a message that waits 5 ms for a batch, a wake-up or a read costs as much throughput as
5 ms of computing. The table says where the milliseconds go.

Instrumentation cost: a few wrapper calls and list appends per message (a few µs of the loop's
CPU per message); everything else is computed after the run. Exits non-zero when the load
generator fails or no message was acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
import resource
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labtools import cli, serving
from labtools.apps.chat import server as chat_server
from labtools.events.connection import Connection

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "peers" / "loadgen.mjs"
ns = time.perf_counter_ns
CHECKPOINT_MODES = ("two-step", "copy-only", "none")
STAGES = (
    "1. bytes read → handler called",
    "2. handler called → Store.add_message",
    "3. add_message → `write_batch` (group commit: the end of the loop's turn)",
    "4. `write_batch` → the batch's transaction begins (the thread's hand-off, if it went there)",
    "5. the batch's INSERTs + COMMIT (loop, or thread if the lock was taken)",
    "6. transaction done → its futures answered (`_answer`)",
    "7. answered → handler's coroutine resumes (Task wake-up)",
    "8. resumed → acknowledgement written (pushes + ack)",
)


# ----- instrumentation ------------------------------------------------------------------------------------


class Timeline:
    """Stamps taken while the server runs: tuples appended to lists, read after the run."""

    def __init__(self) -> None:
        self.reading = [0]  # when the bytes of the frame being dispatched were read (0: not known)
        self.dequeued = [0]  # when a frame that waited in its connection's inbox was dispatched (0: it did not)
        self.queued: dict[Any, list[int]] = {}  # connection -> read stamps of its frames in the inbox, in order
        self.handled: list[tuple[Any, int, int, int]] = []  # (clientId, read, handler called, dequeued or 0)
        self.added: list[tuple[Any, int]] = []  # (clientId, add_message called)
        self.handed: list[int] = []  # per batch: write_batch called
        self.db: list[tuple[int, int, int, int]] = []  # per batch: (start, end, thread CPU ns, rows), loop or thread
        #: per batch: (_answer called, its rows' clientIds). Not the rows: their futures hold every stored message,
        #: and the collector's full passes would walk all of them, stalling the loop the run measures.
        self.written: list[tuple[int, list]] = []
        self.on_thread = 0  # batches written on the database thread (they found the write lock taken)
        #: per log reset: (began, ended, when a batch came due meanwhile and was held back, or 0)
        self.resets: list[tuple[int, int, int]] = []
        self.holding = 0  # when the reset under way began holding a batch back (0: it holds none)
        self.held: set[int] = set()  # the batches a log reset held back, written right after it
        self.resumed: list[tuple[Any, int]] = []  # (clientId, the handler resumed)
        self.acked: list[tuple[Any, int]] = []  # (clientId, acknowledgement written)
        self.refused: list[tuple[int, str]] = []  # (when, code): refusals of any frame
        self.lag: list[tuple[int, int]] = []  # (when, lateness ns) of the 1 ms timer
        #: (when, process CPU s, loop thread CPU s, (loop thread, DB thread) schedstat: (on CPU, runqueue) ns)
        self.cpu: list[tuple[int, float, float, tuple[tuple[int, int], tuple[int, int]]]] = []
        self.threads = [threading.get_native_id(), 0]  # the loop's thread, the DB thread (once it ran a batch)
        self.idle = (0, 0)  # a stretch with the server up and no load: the timer's own lateness
        self.restore: list[Callable[[], None]] = []
        self.resume_point = ""
        self.ack_point = ""


def need(owner: Any, name: str, where: str) -> Any:
    """``owner.name``, or a clear exit when the server's code no longer has it."""
    value = getattr(owner, name, None)
    if value is None:
        raise SystemExit(f"chat_timeline: {where}.{name} not found: the server's code changed; adapt the wrapper")
    return value


def instrument(server: Any, timeline: Timeline) -> None:
    """Wrap the server's methods (before it starts: uvloop binds ``data_received`` per connection)."""
    chat = server.state
    store, mailbox, dispatcher = chat.store, chat.mailbox, server.dispatcher
    reading = timeline.reading

    original_received = need(Connection, "data_received", "Connection")

    def data_received(self: Connection, data: bytes) -> None:
        reading[0] = ns()
        try:
            original_received(self, data)
        finally:
            reading[0] = 0

    # A frame read while its connection's previous handler still runs waits in the connection's inbox,
    # and is dispatched later (``Connection._finished``), outside data_received: keep its read stamp.
    original_text = need(Connection, "_text", "Connection")
    original_dispatch = need(Connection, "_dispatch", "Connection")
    queued, dequeued = timeline.queued, timeline.dequeued

    def _text(self: Connection, text: str) -> None:
        if getattr(self, "busy", None) is not None:  # it goes to the inbox
            queued.setdefault(self, []).append(reading[0])
        original_text(self, text)

    def _dispatch(self: Connection, text: str) -> None:
        if reading[0]:
            original_dispatch(self, text)
            return
        stamps = queued.get(self)
        reading[0] = stamps.pop(0) if stamps else 0
        if stamps == []:
            del queued[self]
        dequeued[0] = ns()
        try:
            original_dispatch(self, text)
        finally:
            reading[0] = dequeued[0] = 0

    for name, wrapper, original in (("data_received", data_received, original_received),
                                    ("_text", _text, original_text), ("_dispatch", _dispatch, original_dispatch)):
        setattr(Connection, name, wrapper)
        timeline.restore.append(lambda name=name, original=original: setattr(Connection, name, original))

    handlers = need(dispatcher, "handlers", "Dispatcher")
    original_handler = handlers["personal-message"]
    handled = timeline.handled.append

    def handler(client: Any, data: Any) -> Any:
        handled((data.get("clientId") if type(data) is dict else None, reading[0], ns(), dequeued[0]))
        return original_handler(client, data)  # the coroutine itself: stepped inline as before

    handlers["personal-message"] = handler

    original_add = need(store, "add_message", "Store")
    added = timeline.added.append

    def add_message(*args: Any, **kwargs: Any) -> Any:
        added((args[3] if len(args) > 3 else kwargs.get("client_id"), ns()))
        return original_add(*args, **kwargs)

    store.add_message = add_message

    original_write = need(store, "write_batch", "Store")
    handed = timeline.handed.append

    need(store, "_finishing", "Store")

    def write_batch(loop: asyncio.AbstractEventLoop) -> None:
        if not store._finishing:
            handed(ns())
        elif not timeline.holding:  # a log reset holds this batch back; it is written when the reset ends
            timeline.holding = ns()
            timeline.held.add(len(timeline.handed))
        original_write(loop)

    store.write_batch = write_batch

    original_checkpoint = need(store, "_checkpoint", "Store")

    def checkpoint(loop: asyncio.AbstractEventLoop, then: Callable[[], None], *, finish: bool) -> bool:
        if not finish:  # the first step, beside the writes
            return original_checkpoint(loop, then, finish=False)
        began = ns()

        def reset_done() -> None:
            timeline.resets.append((began, ns(), timeline.holding))
            timeline.holding = 0
            then()

        return original_checkpoint(loop, reset_done, finish=True)

    store._checkpoint = checkpoint

    original_insert = need(store, "_add_messages", "Store")
    db = timeline.db.append
    threads = timeline.threads

    def add_messages(connection: Any, rows: list) -> Any:  # on the loop, or the database thread
        start, cpu = ns(), time.thread_time_ns()
        if threading.get_native_id() != threads[0]:
            threads[1] = threading.get_native_id()
            timeline.on_thread += 1
        result = original_insert(connection, rows)  # a busy error (the lock taken) is not a batch's run
        db((start, ns(), time.thread_time_ns() - cpu, len(rows)))
        return result

    store._add_messages = add_messages

    original_answer = need(store, "_answer", "Store")
    written = timeline.written.append

    def _answer(batch: list, results: Any, error: Any) -> None:
        written((ns(), [row[3] for row in batch]))
        original_answer(batch, results, error)

    store._answer = _answer

    resumed = timeline.resumed.append
    handler_code = getattr(getattr(original_handler, "func", None), "__code__", None)
    if handler_code is not None and "dumps" in handler_code.co_names and hasattr(chat_server, "dumps"):
        # The first thing personal_message does after its await: encode the stored message.
        original_dumps = chat_server.dumps

        def dumps(value: Any) -> str:
            if type(value) is dict:
                client_id = value.get("clientId")
                if client_id is not None:
                    resumed((client_id, ns()))
            return original_dumps(value)

        chat_server.dumps = dumps
        timeline.restore.append(lambda: setattr(chat_server, "dumps", original_dumps))
        timeline.resume_point = "the handler's first call after its await (encoding the stored message)"
    else:
        original_stored = need(mailbox, "stored", "Mailbox")

        def stored(message: dict[str, Any], *args: Any) -> None:
            resumed((message.get("clientId"), ns()))
            original_stored(message, *args)

        mailbox.stored = stored
        timeline.resume_point = "Mailbox.stored (the push; the encoding before it counts in stage 7)"

    acked = timeline.acked.append
    original_finish = getattr(dispatcher, "_finish", None)
    if original_finish is not None:

        async def finish(client: Any, emit: Any, coroutine: Any, awaited: Any, *rest: Any) -> None:
            try:
                await original_finish(client, emit, coroutine, awaited, *rest)
            finally:  # after its acknowledge and its flush: the ack is written
                if emit.event == "personal-message" and type(emit.data) is dict:
                    acked((emit.data.get("clientId"), ns()))

        dispatcher._finish = finish
        timeline.ack_point = "Dispatcher._finish returned (ack sent, the corked write flushed)"
    else:
        original_ack = need(dispatcher, "acknowledge", "Dispatcher")

        def acknowledge(client: Any, emit: Any, result: Any) -> None:
            original_ack(client, emit, result)
            if emit.event == "personal-message" and type(emit.data) is dict:
                acked((emit.data.get("clientId"), ns()))

        dispatcher.acknowledge = acknowledge
        timeline.ack_point = "Dispatcher.acknowledge returned (the ack queued, maybe still corked)"

    original_refuse = need(dispatcher, "refuse", "Dispatcher")
    refused = timeline.refused.append

    def refuse(client: Any, id: Any, error: Any) -> None:
        refused((ns(), getattr(error, "code", "?")))
        original_refuse(client, id, error)

    dispatcher.refuse = refuse


def change_checkpoints(store: Any, mode: str) -> None:
    """For ``--checkpoints``: the store's own checkpoints (``two-step``), or, to measure what
    resetting the log costs the messages, only their first step (``copy-only``: the log is copied
    beside the writes, no batch is ever held back, and under load, where a copy never catches up
    with the writes, the log never starts over and grows without bound) or none at all."""
    if mode == "copy-only":
        need(store, "_copied", "Store")
        store._copied = lambda loop: setattr(store, "_copying", False)  # never asks for the second step
    elif mode == "none":
        need(store, "_written_messages", "Store")
        store._written_messages = lambda loop, count: None  # never counts towards a checkpoint


def schedstat(tid: int) -> tuple[int, int]:
    """(ns on a CPU, ns runnable but waiting for a CPU) of this process's thread ``tid``; zeros if unknown."""
    if not tid:
        return 0, 0
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as file:
            on_cpu, waiting, _ = file.read().split()
    except (OSError, ValueError):
        return 0, 0
    return int(on_cpu), int(waiting)


def start_ticker(timeline: Timeline, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """A 1 ms timer whose lateness is the loop's lag; every 50th tick samples the CPU."""
    lag, cpu, threads = timeline.lag.append, timeline.cpu.append, timeline.threads
    due = [ns() + 1_000_000]
    count = [0]
    handle: list[asyncio.TimerHandle] = []

    def tick() -> None:
        now = ns()
        lag((now, now - due[0]))
        count[0] += 1
        if count[0] % 50 == 0:
            own = resource.getrusage(resource.RUSAGE_SELF)
            thread = resource.getrusage(resource.RUSAGE_THREAD)
            cpu((now, own.ru_utime + own.ru_stime, thread.ru_utime + thread.ru_stime,
                 (schedstat(threads[0]), schedstat(threads[1]))))
        due[0] = ns() + 1_000_000
        handle[:] = [loop.call_later(0.001, tick)]

    handle.append(loop.call_later(0.001, tick))
    return lambda: handle[0].cancel()


# ----- the run --------------------------------------------------------------------------------------------


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


async def run_loadgen(node: str, config: dict[str, Any], timeout: float) -> tuple[dict[str, Any], int]:
    """loadgen.mjs with ``config``, its progress on our stderr; (its JSON result, its exit code)."""
    process = await asyncio.create_subprocess_exec(
        node, str(LOADGEN), json.dumps(config), cwd=LOADGEN.parent, stdout=asyncio.subprocess.PIPE,
        start_new_session=True)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        raise
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"the load generator printed no result (exit code {process.returncode})"}, process.returncode
    return json.loads(lines[-1]), process.returncode or 0


async def measure(args: argparse.Namespace, node: str, folder: Path) -> tuple[Timeline, dict[str, Any], int, str]:
    options: dict[str, Any] = {"db": str(folder / "chat.db")}
    if args.fast_hashing:
        options["fast_hashing"] = True
    server = serving.build("chat", **options)  # what `python -m labtools serve chat --db FILE` builds
    timeline = Timeline()
    instrument(server, timeline)
    change_checkpoints(server.state.store, args.checkpoints)
    loop = asyncio.get_running_loop()
    loop_name = type(loop).__module__.split(".")[0]
    stop_ticker = start_ticker(timeline, loop)
    try:
        server = await serving.start(server, "127.0.0.1", 0)
        cli.settle_heap()  # as ``serve`` does once its server is up
        try:
            idle = ns()
            await asyncio.sleep(0.3)  # the idle loop's lag: the timer's own baseline
            timeline.idle = (idle, ns())
            print(f"chat server at {server.url} on {loop_name}'s loop; loadgen: {args.pairs} pairs, "
                  f"{args.seconds:g} s", file=sys.stderr, flush=True)
            config = {
                "name": "chat_timeline", "proto": "course", "url": server.url, "pid": os.getpid(),
                "clkTck": os.sysconf("SC_CLK_TCK"), "runTag": args.tag, "workload": "chat", "p99GoalMs": 100.0,
                "senders": 10, "watchdogS": 900, "closedPairs": [args.pairs], "openPairs": args.pairs,
                "openRates": [], "seconds": args.seconds, "warmupSeconds": 1.0,
            }
            result, code = await run_loadgen(node, config, timeout=900)
        finally:
            await server.aclose()
    finally:
        stop_ticker()
        for undo in timeline.restore:
            undo()
    errors = list(getattr(server, "errors", []))
    if errors:
        result.setdefault("serverErrors", errors[:20])
    return timeline, result, code, loop_name


# ----- the figures ----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank, as loadgen.mjs computes it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q / 100))]


def summary(values: list[float]) -> dict[str, float | None]:
    return {"median": percentile(values, 50), "p90": percentile(values, 90), "p99": percentile(values, 99),
            "mean": statistics.fmean(values) if values else None, "max": max(values) if values else None}


def analyse(timeline: Timeline, prefix: str) -> dict[str, Any]:
    """Per message of the measured phase (clientId starting with ``prefix``): its nine stamps, then the figures."""
    def mine(records: list) -> dict[Any, Any]:
        found: dict[Any, Any] = {}
        for key, *rest in records:
            if isinstance(key, str) and key.startswith(prefix):  # a key seen twice is not used (None)
                found[key] = None if key in found else (rest[0] if len(rest) == 1 else tuple(rest))
        return found

    handled, added, resumed, acked = (mine(records) for records in (
        timeline.handled, timeline.added, timeline.resumed, timeline.acked))
    # One batch in flight at a time: the k-th write_batch, successful transaction and _answer are the same batch.
    batches = min(len(timeline.handed), len(timeline.db), len(timeline.written))
    per_message: dict[str, tuple[int, int, int, int, int, int]] = {}  # ..., batch size, batch index
    mismatched = 0
    for k in range(batches):
        start, end, _cpu, rows = timeline.db[k]
        when, batch = timeline.written[k]
        if rows != len(batch):
            mismatched += 1
            continue
        for key in batch:
            if isinstance(key, str) and key.startswith(prefix):
                per_message[key] = (timeline.handed[k], start, end, when, len(batch), k)
    complete: list[tuple[int, ...]] = []
    sizes_seen: list[int] = []
    held_back: list[bool] = []  # per complete message: its batch waited for a log reset
    inbox: list[float] = []
    missing = {"twice": 0, "handler": 0, "read": 0, "add_message": 0, "batch": 0, "resumed": 0, "disordered": 0}
    for key, ack in acked.items():
        found = handled.get(key), added.get(key), per_message.get(key), resumed.get(key)
        reason = "twice" if ack is None else next(
            (name for name, value in zip(("handler", "add_message", "batch", "resumed"), found, strict=True)
             if value is None), None)
        if reason is None and not found[0][0]:
            reason = "read"
        if reason is not None:
            missing[reason] += 1
            continue
        (read, called, dequeued), add, stamps, resume = found
        t = (read, called, add, *stamps[:4], resume, ack)
        if any(b < a for a, b in itertools.pairwise(t)):
            missing["disordered"] += 1
            continue
        complete.append(t)
        sizes_seen.append(stamps[4])
        held_back.append(stamps[5] in timeline.held)
        if dequeued:
            inbox.append((dequeued - read) / 1000)
    base = {"messages": len(complete), "acked": len(acked), "missing": missing, "mismatchedBatches": mismatched}
    if not complete:
        return base
    first, last = min(t[0] for t in complete), max(t[-1] for t in complete)
    seconds = (last - first) / 1e9
    stages = [[(t[i + 1] - t[i]) / 1000 for t in complete] for i in range(8)]
    e2e = [(t[-1] - t[0]) / 1000 for t in complete]
    window = [k for k in range(batches) if first <= timeline.handed[k] <= last]
    sizes = [float(timeline.db[k][3]) for k in window]
    in_flight = sum(timeline.db[k][1] - timeline.handed[k] for k in window) / 1e9  # handed -> DB done
    db_wall = [(timeline.db[k][1] - timeline.db[k][0]) / 1000 for k in window]
    db_cpu = [timeline.db[k][2] / 1000 for k in window]
    lag = [late / 1e6 for when, late in timeline.lag if first <= when <= last]
    idle = [late / 1e6 for when, late in timeline.lag if timeline.idle[0] <= when <= timeline.idle[1]]
    inside = [sample for sample in timeline.cpu if first <= sample[0] <= last]
    cpu: dict[str, Any] = {}
    if len(inside) >= 2:
        (t0, process0, loop0, sched0), (t1, process1, loop1, sched1) = inside[0], inside[-1]
        span = (t1 - t0) / 1e9

        def pct(a: float, b: float, unit: float = 1.0) -> float:
            return 100 * (b - a) / unit / span

        cpu = {"processPct": pct(process0, process1), "loopThreadPct": pct(loop0, loop1),
               "loopOnCpuPct": pct(sched0[0][0], sched1[0][0], 1e9),
               "loopRunqueuePct": pct(sched0[0][1], sched1[0][1], 1e9),
               "dbOnCpuPct": pct(sched0[1][0], sched1[1][0], 1e9),
               "dbRunqueuePct": pct(sched0[1][1], sched1[1][1], 1e9)}
        # From write_batch to the batch's end. For batches on the DB thread, that thread is on a CPU, waiting
        # for one, or blocked: on the GIL (the loop's thread holds it while it runs Python), or a lock.
        cpu["dbInFlightPct"] = 100 * in_flight / seconds
        cpu["dbBlockedPct"] = cpu["dbInFlightPct"] - cpu["dbOnCpuPct"] - cpu["dbRunqueuePct"]
    in_window = [reset for reset in timeline.resets if first <= reset[0] <= last]
    resets = [(end - began) / 1e6 for began, end, _holding in in_window]
    holds = [(end - holding) / 1e6 if holding else 0.0 for _began, end, holding in in_window]
    held_e2e = [us for us, held in zip(e2e, held_back, strict=True) if held]
    rest_e2e = [us for us, held in zip(e2e, held_back, strict=True) if not held]
    refused: dict[str, int] = {}
    for when, code in timeline.refused:
        if first <= when <= last:
            refused[code] = refused.get(code, 0) + 1
    median = sorted(range(len(e2e)), key=e2e.__getitem__)[len(e2e) // 2]
    return {
        **base, "windowS": seconds,
        "acksPerS": sum(1 for ack in acked.values() if ack is not None and first <= ack <= last) / seconds,
        "stagesUs": {name: summary(values) for name, values in zip(STAGES, stages, strict=True)},
        "endToEndUs": summary(e2e),
        "inbox": {"messages": len(inbox), "waitUs": summary(inbox)},
        "batches": {"count": len(sizes), "size": summary(sizes),
                    "sizePerMessage": summary([float(size) for size in sizes_seen]),
                    "dbWallUs": summary(db_wall), "dbCpuUs": summary(db_cpu)},
        "loopLagMs": summary(lag), "idleLagMs": summary(idle), "cpu": cpu, "refused": refused,
        "logResets": {"count": len(resets), "stepMs": summary(resets), "holdMs": summary(holds),
                      "holding": sum(1 for hold in holds if hold), "heldMessages": len(held_e2e),
                      "otherMessages": len(rest_e2e), "heldEndToEndUs": summary(held_e2e),
                      "otherEndToEndUs": summary(rest_e2e)},
        "switchIntervalMs": sys.getswitchinterval() * 1000,
        "medianMessageUs": [(stamp - complete[median][0]) / 1000 for stamp in complete[median]],
    }


def fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def ms(microseconds: float | None) -> str:
    return fmt(None if microseconds is None else microseconds / 1000, 2)


def report(figures: dict[str, Any], phase: dict[str, Any], args: argparse.Namespace, loop_name: str,
           timeline: Timeline) -> str:
    e2e = figures["endToEndUs"]
    rows = ["| stage | median µs | p90 µs | mean µs | share of median e2e | share of mean e2e |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, stage in figures["stagesUs"].items():
        rows.append(f"| {name} | {fmt(stage['median'])} | {fmt(stage['p90'])} | {fmt(stage['mean'])} | "
                    f"{100 * stage['median'] / e2e['median']:.0f}% | {100 * stage['mean'] / e2e['mean']:.0f}% |")
    rows.append(f"| **end to end in the server: read → ack written** | **{fmt(e2e['median'])}** | "
                f"**{fmt(e2e['p90'])}** | **{fmt(e2e['mean'])}** | 100% | 100% |")
    batches, lag, idle, cpu = figures["batches"], figures["loopLagMs"], figures["idleLagMs"], figures["cpu"]
    inbox = figures["inbox"]
    p50, p99 = phase.get("ackP50"), phase.get("ackP99")
    outside = None if p50 is None else p50 - e2e["median"] / 1000
    missing = {reason: n for reason, n in figures["missing"].items() if n}
    lines = [
        f"## Chat timeline: closed loop, {args.pairs} pairs, {figures['windowS']:.2f} s "
        f"({loop_name}'s loop, {os.cpu_count()} cores, Python {sys.version.split()[0]})",
        "",
        f"**{figures['acksPerS']:,.0f} acks/s** in the server's window (loadgen: {fmt(phase.get('msgPerS'))} msg/s); "
        f"{figures['messages']:,} of the {figures['acked']:,} acknowledged messages have a complete timeline"
        + (f" (left out: {missing})" if missing else "") + ".",
        "",
        *rows,
        "",
        "Medians do not add up (each stage's median is another message's); the means do.",
        "",
        f"- **Loadgen's ack latency** (send → ack, at the client): p50 **{fmt(p50, 2)} ms**, p99 {fmt(p99, 2)} ms; "
        f"the server's read → ack written: median **{e2e['median'] / 1000:.2f} ms**, p90 {e2e['p90'] / 1000:.2f} ms. "
        f"The difference, **{fmt(outside, 2)} ms** at the median, is spent outside the server's handling: in the "
        "client (Node: the ack's parsing, the next send), in the kernel and the network stack both ways, and in "
        "the server's socket, waiting to be read (the loop reads a socket only once per turn).",
        f"- **Read while the sender's previous handler was still running** (the ack was out, its Task not yet "
        f"done): {inbox['messages']:,} messages waited in their connection's inbox, median "
        f"{fmt(inbox['waitUs']['median'])} µs, p90 {fmt(inbox['waitUs']['p90'])} µs (inside stage 1).",
        f"- **Batches** (group commit): {batches['count']:,} in the window, size median "
        f"{fmt(batches['size']['median'])}, p90 {fmt(batches['size']['p90'])}, largest "
        f"{fmt(batches['size']['max'])}; the batch a message rode in: median "
        f"{fmt(batches['sizePerMessage']['median'])}, p90 {fmt(batches['sizePerMessage']['p90'])}. "
        f"Per batch (stage 5): wall median {fmt(batches['dbWallUs']['median'])} µs, of which on its thread's "
        f"CPU clock {fmt(batches['dbCpuUs']['median'])} µs; {timeline.on_thread:,} batches of the whole run went "
        "to the database thread (the write lock was taken), the rest were written on the loop.",
        log_resets(figures["logResets"], args.checkpoints),
        f"- **Event loop lag** (lateness of a 1 ms timer): p50 {fmt(lag['median'], 2)} ms, p90 {fmt(lag['p90'], 2)}, "
        f"p99 {fmt(lag['p99'], 2)}, max {fmt(lag['max'], 2)} ms (idle, before the load: p50 "
        f"{fmt(idle['median'], 2)} ms).",
    ]
    if cpu:
        lines.append(
            f"- **CPU** (% of one core, over the window): this process {fmt(cpu['processPct'])}% "
            f"(loadgen's view: {fmt(phase.get('serverCpuPct'))}%, {fmt(phase.get('serverCpuUsPerMsg'))} µs/msg); "
            f"the loop's thread on CPU {fmt(cpu['loopOnCpuPct'])}%, runnable but waiting for a core "
            f"{fmt(cpu['loopRunqueuePct'])}%; the load generator {fmt(phase.get('loadgenCpuPct'))}%. A batch is "
            f"being written (stages 4–5) {fmt(cpu['dbInFlightPct'])}% of the time"
            + ("." if not timeline.on_thread else
               f"; the DB thread, for the batches it wrote, on CPU {fmt(cpu['dbOnCpuPct'])}%, waiting for a core "
               f"{fmt(cpu['dbRunqueuePct'])}%, blocked {fmt(cpu['dbBlockedPct'])}% (off CPU and not runnable: "
               f"waiting for the GIL while the loop's thread runs Python, switch interval "
               f"{figures['switchIntervalMs']:g} ms, or for the write lock)."))
    example = figures["medianMessageUs"]
    lines += [
        f"- **Refusals** in the window: {figures['refused'] or 'none'}; loadgen's rate-limited retries "
        f"{phase.get('rateLimitedRetries', '?')}, errors {phase.get('errors') or 'none'}.",
        "- **The median message** (µs after its bytes were read): " + ", ".join(
            f"{label} +{value:,.0f}" for label, value in zip(
                ("handler", "add_message", "write_batch", "DB start", "DB done", "answered", "resumed", "ack written"),
                example[1:], strict=True)) + ".",
        f"- Stamps: resumed = {timeline.resume_point}; ack written = {timeline.ack_point}.",
    ]
    if figures.get("mismatchedBatches"):
        lines.append(f"- {figures['mismatchedBatches']} batches did not line up "
                     "(write_batch, transaction, _answer): skipped.")
    return "\n".join(lines)


def log_resets(resets: dict[str, Any], mode: str) -> str:
    """The report's line on the log's resets: how long each held the batches back, and what the
    messages of the batches it held waited, against the others'."""
    if mode != "two-step":
        return (f"- **Log resets**: none (`--checkpoints {mode}`: "
                + ("the checkpoints' second step skipped, so the log never starts over" if mode == "copy-only"
                   else "no checkpoint at all") + "; a measurement, not a way to run a chat).")
    held, other = resets["heldEndToEndUs"], resets["otherEndToEndUs"]
    step, hold = resets["stepMs"], resets["holdMs"]
    line = (f"- **Log resets** (a checkpoint's second step, on the thread, begun right after a commit: the "
            f"log's last pages copied and two `fsync`s, while no batch is written; then the log starts "
            f"over): {resets['count']:,} in the window, each taking median {fmt(step['median'], 1)} ms, max "
            f"{fmt(step['max'], 1)}; {resets['holding']:,} of them held a batch that came due meanwhile, "
            f"by median {fmt(hold['median'], 1)} ms, p90 {fmt(hold['p90'], 1)}, max {fmt(hold['max'], 1)} "
            "(the median over every reset, counting those that held none as 0).")
    if resets["heldMessages"]:
        total = resets["heldMessages"] + resets["otherMessages"]
        line += (f" The batches written right after one held {resets['heldMessages']:,} of the messages "
                 f"({100 * resets['heldMessages'] / total:.1f}%): server read → ack median "
                 f"{ms(held['median'])} ms, p99 {ms(held['p99'])} ms, against "
                 f"{ms(other['median'])} / {ms(other['p99'])} ms for the others.")
    return line


def install_load_generator() -> str:
    """Node and the load generator's packages, installed as the peers benchmark installs them
    (``npm ci`` when ``node_modules`` is missing): its own functions, loaded from its file."""
    spec = importlib.util.spec_from_file_location("peers_run", LOADGEN.parent / "run.py")
    assert spec is not None and spec.loader is not None
    peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    node, npm = peers.need_node()  # exits with a one-line message when Node.js is missing
    peers.install_node_modules(node, npm)
    return node


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=100, help="closed-loop pairs (default 100, as run.py's P=100)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of closed loop measured (default 5)")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"],
                        help="the event loop (default: labtools.cli's choice: uvloop when installed, LABTOOLS_LOOP)")
    parser.add_argument("--json", type=Path, help="also write the figures and the load generator's result here")
    parser.add_argument("--fast-hashing", action="store_true",
                        help="argon2 at a low cost for the sign-ups (set-up only: the message path is the same)")
    parser.add_argument("--checkpoints", choices=CHECKPOINT_MODES, default="two-step",
                        help="two-step: the store's own (default); copy-only: the second step skipped, the log never "
                             "starts over; none: no checkpoint. The last two only measure what the resets cost")
    parser.add_argument("--quick", action="store_true", help="a smoke pass: 5 pairs, 1 s, fast hashing")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.seconds, args.fast_hashing = 5, 1.0, True
    if args.pairs < 1 or args.seconds <= 0:
        parser.error("--pairs and --seconds must be positive")
    node = install_load_generator()
    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        parser.error("--loop uvloop: uvloop is not installed")
    factory = cli.loop_factory() if args.loop is None else None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    args.tag = f"tl{int(time.time())}"
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="chat-timeline-") as folder, \
            asyncio.Runner(loop_factory=factory) as runner:
        timeline, result, code, loop_name = runner.run(measure(args, node, Path(folder)))
    if "error" in result or code != 0:
        print(f"chat_timeline: the load generator failed (exit code {code}): {result.get('error', '')}",
              file=sys.stderr)
        return 1
    phase = result["closed"][0]
    figures = analyse(timeline, f"{args.tag}c{args.pairs}-")
    if args.json:
        args.json.write_text(json.dumps({"pairs": args.pairs, "seconds": args.seconds, "loop": loop_name,
                                         "figures": figures, "loadgen": result}, indent=1) + "\n")
    if not figures["messages"]:
        print(f"chat_timeline: no acknowledged message with a complete timeline ({figures})", file=sys.stderr)
        return 1
    print(report(figures, phase, args, loop_name, timeline))
    if result.get("serverErrors"):
        print(f"\nServer errors: {result['serverErrors']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
