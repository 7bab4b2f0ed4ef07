"""Simulated chat users for lesson 08, the tests and the benchmark.

``ChatUser`` is what a browser tab does, in Python: sign up or log in (waiting and retrying
when the server answers ``rate-limited`` with a ``retryAfter``), authenticate the socket with
the ``auth`` event, follow presence with ``subscribe-presence`` (one ``user-status`` per
change rather than whole lists), send private messages with a ``clientId`` and retry on a lost
acknowledgement, and catch up with ``history``/``after`` after being offline. ``LossyLink`` is
the "unreliable network" (``FrameFaults`` dropping only acknowledgements): it drops a chosen
share of the acknowledgements a socket receives, which is exactly the failure that makes a
naive client send a message twice. ``run_pairs`` puts many pairs of users to work at once and
checks what arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..apps.chat.accounts import password_hasher
from ..events import AckError, EventClient
from ..measure.metrics import LatencyLog, Trace
from .faults import FrameFaults

#: Seconds a sign-up or login may take before the user gives up (argon2 is slow on purpose).
ENTER_TIMEOUT = 10.0
#: How many times a sign-up or login is sent again after ``rate-limited``.
RATE_LIMITED_ATTEMPTS = 8


@functools.cache
def argon2_seconds() -> float:
    """One argon2 hash at the server's default cost, timed on this machine (measured once)."""
    hasher = password_hasher(fast=False)
    start = time.perf_counter()
    hasher.hash("a password to time")
    return time.perf_counter() - start


def why_slow(event: str) -> str:
    """What a learner should know when ``event`` got no answer in time."""
    if event in ("sign-up", "login"):
        return (f"the server hashes passwords with argon2, which takes ~{argon2_seconds():.2f} s per hash on "
                "this machine, one hash per core at a time, so many sign-ups at once wait their turn; pass a "
                "longer timeout, or serve the chat with fast_hashing=True for crowds")
    return "the server is busy or unreachable (is it still running?)"


def is_ack(frame: Any) -> bool:
    """An acknowledgement (``{"ack": ID, ...}``), the only frames a ``LossyLink`` may lose."""
    return isinstance(frame, dict) and "ack" in frame


class LossyLink:
    """The "unreliable network": loses a share ``drop_acks`` of the acknowledgements a client receives.

    A thin use of ``FrameFaults``: ``drop``, but ``only`` acknowledgements. It sits on the
    client's ``intercept`` hook. The messages themselves still arrive at the server and are
    stored; only the answer is lost, so the sender cannot tell "stored" from "never arrived" and
    must retry. It outlives the user's sockets: ``attach`` it to each new one.
    """

    def __init__(self, name: str, trace: Trace | None = None, *, seed: int = 0) -> None:
        self.name = name
        self.trace = trace
        # No loss until ChatUser turns it on once signed in: the lesson is about messages.
        self.faults = FrameFaults(drop=0.0, only=is_ack, seed=seed)

    def attach(self, client: EventClient) -> EventClient:
        """Sit on ``client``'s intercept hook (the hook it had still runs first)."""
        self.faults.attach(client)
        client.intercept = self
        return client

    def __call__(self, frame: Any) -> bool:
        before = self.dropped
        passed = self.faults(frame)  # False also when FrameFaults delivered the frame itself
        if self.dropped > before and self.trace is not None:
            self.trace.record("server", self.name, "ack (lost)")
        return passed

    @property
    def drop_acks(self) -> float:
        return self.faults.drop

    @drop_acks.setter
    def drop_acks(self, share: float) -> None:
        self.faults.drop = share

    @property
    def dropped(self) -> int:
        """Acknowledgements lost so far, over every socket of this user."""
        return self.faults.counts["dropped"]

    @property
    def random(self) -> random.Random:
        return self.faults.random


class ChatUser:
    """One person of the chat, over one socket at a time (reconnecting makes a new socket)."""

    def __init__(
        self,
        name: str,
        email: str | None = None,
        password: str = "correct horse battery",
        *,
        trace: Trace | None = None,
        drop_acks: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.name = name
        self.email = email or f"{name.lower()}@example.com"
        self.password = password
        self.trace = trace
        self.drop_acks = drop_acks
        self.seed = seed
        self.uid = ""
        self.token = ""
        self.link = LossyLink(name, trace, seed=seed)
        self.client: EventClient | None = None
        self.inbox: list[tuple[float, dict[str, Any]]] = []  # (perf_counter, message) of every delivery
        self.retries = 0
        self.rate_limited = 0  # sign-ups and logins the server asked to retry later
        # Every state of presence this user has seen: the first user-list, then one per user-status.
        self.user_lists: list[list[dict[str, Any]]] = []
        self._retry_after: float | None = None  # the last rate-limited error's retryAfter
        self._presence_changed = asyncio.Event()

    # ----- the socket ---------------------------------------------------------------------

    async def open_socket(self, url: str) -> EventClient:
        """A new socket (closing the old one), behind this user's lossy link (off until signed in)."""
        await self._close_socket()
        self.link.drop_acks = 0.0
        client = self.link.attach(EventClient(self.name, self.trace, intercept=self._note_retry_after))
        client.on("personal-message", lambda message: self.inbox.append((time.perf_counter(), message)))
        client.on("user-list", self._seen_list)
        client.on("user-status", self._seen_status)
        await client.open(url)
        self.client = client
        return client

    def _note_retry_after(self, frame: Any) -> bool:
        """Note a ``rate-limited`` answer's ``retryAfter`` (the client keeps only code and message)."""
        if isinstance(frame, dict) and isinstance(frame.get("error"), dict):
            error = frame["error"]
            if error.get("code") == "rate-limited" and isinstance(error.get("retryAfter"), (int, float)):
                self._retry_after = float(error["retryAfter"])
        return True

    async def sign_up(self, url: str, *, timeout: float = ENTER_TIMEOUT) -> ChatUser:
        """Sign up on a fresh socket, then authenticate that socket with the token (as the page does)."""
        client = await self.open_socket(url)
        fields = {"name": self.name, "email": self.email, "password": self.password}
        account = await self._ask_patiently(client, "sign-up", fields, timeout)
        await self._authenticate(client, account)
        return self

    async def log_in(self, url: str, *, timeout: float = ENTER_TIMEOUT) -> ChatUser:
        client = await self.open_socket(url)
        account = await self._ask_patiently(client, "login", {"email": self.email, "password": self.password}, timeout)
        await self._authenticate(client, account)
        return self

    async def enter(self, url: str, *, timeout: float = ENTER_TIMEOUT) -> ChatUser:
        """Log in, or sign up first if there is no such account yet (so a re-run cell works)."""
        try:
            return await self.log_in(url, timeout=timeout)
        except AckError as error:
            if error.code != "unauthorized":
                raise
            return await self.sign_up(url, timeout=timeout)

    async def _ask_patiently(self, client: EventClient, event: str, data: Any, timeout: float) -> Any:
        """``request``, sent again after each ``rate-limited`` once its ``retryAfter`` has passed.

        At most ``RATE_LIMITED_ATTEMPTS`` tries; each wait gets up to half again at random, so
        that users refused together do not all come back at the same instant.
        """
        for _attempt in range(RATE_LIMITED_ATTEMPTS - 1):
            self._retry_after = None
            try:
                return await self._ask(client, event, data, timeout)
            except AckError as error:
                if error.code != "rate-limited":
                    raise
                self.rate_limited += 1
                wait = self._retry_after if self._retry_after is not None else 1.0
                await asyncio.sleep(wait * (1 + 0.5 * self.link.random.random()))
        return await self._ask(client, event, data, timeout)

    async def _ask(self, client: EventClient, event: str, data: Any, timeout: float) -> Any:
        """``client.request`` whose timeout says what got no answer, and why that may be."""
        try:
            return await client.request(event, data, timeout)
        except TimeoutError:
            raise TimeoutError(f"{event} of {self.name} got no answer in {timeout:g} s: {why_slow(event)}") from None

    async def _authenticate(self, client: EventClient, account: dict[str, Any]) -> None:
        self.uid, self.token = account["user"]["uid"], account["token"]
        await self._join(client)

    async def _join(self, client: EventClient) -> None:
        """Authenticate ``client`` with the token, then follow presence as deltas (as the page does)."""
        await self._ask(client, "auth", {"token": self.token}, ENTER_TIMEOUT)
        self._seen_list(await self._ask(client, "subscribe-presence", None, ENTER_TIMEOUT))
        self.link.drop_acks = self.drop_acks

    async def connect(self, url: str) -> ChatUser:
        """Reconnect and authenticate the new socket with the token, as the page does after a reload.

        The token goes in an ``auth`` event, not in the URL (``?token=`` still works, but URLs
        end up in logs).
        """
        await self._join(await self.open_socket(url))
        return self

    # ----- presence -----------------------------------------------------------------------

    def _seen_list(self, user_list: list[dict[str, Any]]) -> None:
        self.user_lists.append(user_list)
        self._presence_changed.set()

    def _seen_status(self, status: dict[str, Any]) -> None:
        """Apply one ``user-status`` to the last list seen (a new user is appended)."""
        current = list(self.user_lists[-1]) if self.user_lists else []
        index = next((i for i, user in enumerate(current) if user["uid"] == status["uid"]), None)
        if index is None:
            current.append(status)
        else:
            current[index] = status
        self._seen_list(current)

    def online(self) -> dict[str, bool]:
        """Who this user currently sees online, by name."""
        return {user["name"]: user["online"] for user in (self.user_lists[-1] if self.user_lists else [])}

    async def wait_for_presence(
        self, where: Callable[[list[dict[str, Any]]], bool], timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """The first user list seen (the current one included) for which ``where(list)`` holds."""

        async def until() -> list[dict[str, Any]]:
            while not (self.user_lists and where(self.user_lists[-1])):
                self._presence_changed.clear()
                await self._presence_changed.wait()
            return self.user_lists[-1]

        try:
            return await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.name}: presence did not change as expected in {timeout:g} s "
                               f"(now seen online: {self.online()})") from None

    async def disconnect(self) -> None:
        """Close the socket (the user goes offline); a trace shows it as a row of its own."""
        if self.client is not None and self.trace is not None:
            self.trace.record(self.name, "server", "socket closed (offline)")
        await self._close_socket()

    async def _close_socket(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            await client.aclose()

    @property
    def socket(self) -> EventClient:
        if self.client is None:
            raise RuntimeError(f"{self.name} is offline")
        return self.client

    # ----- chatting -----------------------------------------------------------------------

    async def send(
        self, to: ChatUser | str, text: str, *, client_id: str | None = None, timeout: float = 2.0, attempts: int = 10
    ) -> dict[str, Any]:
        """Send until acknowledged, every attempt with the same ``clientId``; the stored message."""
        uid = to.uid if isinstance(to, ChatUser) else to
        data = {"to": uid, "message": text, "clientId": client_id or uuid.uuid4().hex}
        for attempt in range(attempts):
            if attempt:
                self.retries += 1
            try:
                stored = await self.socket.request("personal-message", data, timeout)
            except TimeoutError:
                continue
            self._traced(f"ack: stored #{stored['id']}")
            return stored
        raise TimeoutError(f"{self.name}: no acknowledgement of a personal-message after {attempts} attempts of "
                           f"{timeout:g} s each: {why_slow('personal-message')}")

    async def typing(self, to: ChatUser) -> None:
        await self.socket.emit("typing", {"to": to.uid})

    async def history(
        self, other: ChatUser, after: int | None = None, *, timeout: float = 2.0, attempts: int = 10
    ) -> list[dict[str, Any]]:
        """The conversation with ``other`` (the last 30, or those after ``after``).

        Reading is idempotent, so a lost answer is simply asked for again; no id is needed.
        """
        data: dict[str, Any] = {"with": other.uid}
        if after is not None:
            data["after"] = after
        for _attempt in range(attempts):
            try:
                messages = await self.socket.request("history", data, timeout)
            except TimeoutError:
                continue
            self._traced(f"ack: {len(messages)} messages")
            return messages
        raise TimeoutError(f"{self.name}: no answer to history after {attempts} attempts of {timeout:g} s each: "
                           f"{why_slow('history')}")

    def _traced(self, label: str) -> None:
        """Acknowledgements go into the trace too: the sequence diagram shows what came back."""
        if self.trace is not None:
            self.trace.record("server", self.name, label)

    def conversation(self, other: ChatUser) -> list[dict[str, Any]]:
        """What this user has seen of the conversation with ``other``, by id, without repeats."""
        seen = {m["id"]: m for _t, m in self.inbox if other.uid in (m["from"], m["to"])}
        return [seen[id] for id in sorted(seen)]

    async def catch_up(self, other: ChatUser) -> list[dict[str, Any]]:
        """Fetch what arrived while offline: ``history`` ``after`` the last message seen, page by page."""
        known = self.conversation(other)
        page = await self.history(other, known[-1]["id"] if known else None)
        missed = list(page)
        while known and len(page) == 30:  # a full page: more may follow
            page = await self.history(other, page[-1]["id"])
            missed.extend(page)
        now = time.perf_counter()
        self.inbox.extend((now, message) for message in missed)
        return missed

    def __repr__(self) -> str:
        return f"<ChatUser {self.name} {'online' if self.client else 'offline'}>"


@dataclass
class PairsResult:
    """What ``run_pairs`` measured and checked."""

    pairs: int
    messages_per_user: int
    sent: int = 0
    delivered: int = 0
    duplicates: int = 0
    lost: int = 0
    out_of_order: int = 0
    retries: int = 0
    acks_dropped: int = 0
    seconds: float = 0.0
    latency: LatencyLog = field(default_factory=LatencyLog)
    #: One ``(index, sent_at, latency)`` per delivery: the message's place in its sender's
    #: sequence (0 = first), when it was sent (seconds after the first send) and how long it took.
    samples: list[tuple[int, float, float]] = field(default_factory=list)
    #: ``time.perf_counter()`` at the first send: ``sent_at`` in ``samples`` counts from here.
    began: float = 0.0

    mode = "websocket"  # what plots.latency labels a run with

    @property
    def users(self) -> int:
        return 2 * self.pairs

    @property
    def messages_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        latency = self.latency.summary()
        return {
            "pairs": self.pairs,
            "sent": self.sent,
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "lost": self.lost,
            "out_of_order": self.out_of_order,
            "retries": self.retries,
            "acks_dropped": self.acks_dropped,
            "p50_ms": round(latency["p50_ms"], 2),
            "p99_ms": round(latency["p99_ms"], 2),
            "messages_per_s": round(self.messages_per_s),
        }


async def sign_up_pairs(
    url: str, pairs: int, *, prefix: str = "user", **options: Any
) -> list[tuple[ChatUser, ChatUser]]:
    """``pairs`` pairs of new, connected users (``options`` go to every ``ChatUser``)."""
    users = [ChatUser(f"{prefix}{i}", seed=i, **options) for i in range(2 * pairs)]
    await asyncio.gather(*(user.sign_up(url) for user in users))
    return [(users[2 * i], users[2 * i + 1]) for i in range(pairs)]


async def run_pairs(
    url: str, pairs: int = 50, messages: int = 20, *, drop_acks: float = 0.0, timeout: float = 10.0,
    retry_after: float = 2.0, prefix: str = "user",
) -> PairsResult:
    """Sign up ``pairs`` pairs; both sides of every pair send ``messages`` to each other at once.

    Each user sends its messages one after another (each waits for its acknowledgement, as a
    person does), all users at the same time. Latency is from the start of the send to the
    recipient's socket receiving the message. Then every recipient's deliveries are checked:
    each message exactly once, in the order it was sent.
    """
    couples = await sign_up_pairs(url, pairs, prefix=prefix, drop_acks=drop_acks)
    result = PairsResult(pairs, messages)
    started_at: dict[str, float] = {}

    async def talk(sender: ChatUser, recipient: ChatUser) -> None:
        for i in range(messages):
            client_id = f"{sender.name}-{i}"
            started_at[client_id] = time.perf_counter()
            await sender.send(recipient, f"{sender.name} #{i}", client_id=client_id, timeout=retry_after)

    begin = result.began = time.perf_counter()
    await asyncio.gather(*(talk(a, b) for a, b in couples), *(talk(b, a) for a, b in couples))
    expected = 2 * pairs * messages

    async def all_delivered() -> None:
        while sum(_received_from(b, a) + _received_from(a, b) for a, b in couples) < expected:
            await asyncio.sleep(0.01)

    with contextlib.suppress(TimeoutError):  # what never arrived is counted as lost below
        await asyncio.wait_for(all_delivered(), timeout)
    result.seconds = time.perf_counter() - begin
    for a, b in couples:
        for sender, recipient in ((a, b), (b, a)):
            got = [(t, m) for t, m in recipient.inbox if m["from"] == sender.uid]
            ids = [m["clientId"] for _t, m in got]
            result.sent += messages
            result.delivered += len(set(ids))
            result.duplicates += len(ids) - len(set(ids))
            result.lost += messages - len(set(ids))
            sent_order = [f"{sender.name}-{i}" for i in range(messages)]
            if ids != [client_id for client_id in sent_order if client_id in set(ids)]:
                result.out_of_order += 1
            for t, m in got:
                result.latency.add(t - started_at[m["clientId"]])
                index = int(m["clientId"].rsplit("-", 1)[1])
                result.samples.append((index, started_at[m["clientId"]] - begin, t - started_at[m["clientId"]]))
            result.retries += sender.retries
            result.acks_dropped += sender.link.dropped
    await asyncio.gather(*(user.disconnect() for couple in couples for user in couple))
    return result


def _received_from(recipient: ChatUser, sender: ChatUser) -> int:
    return sum(1 for _t, m in recipient.inbox if m["from"] == sender.uid)
