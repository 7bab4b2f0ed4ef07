"""The REST chat server of the polling lessons (PROTOCOL.md, "The polling lessons").

Three ways to hear about new messages, on one store:

* ``GET /messages?user=NAME&since=ID``: short polling; answers at once, usually ``[]``;
* the same with ``&wait=SECONDS``: long polling; the answer waits for the first message;
* ``GET /events?user=NAME``: Server-Sent Events; one response that never ends.

``GET /stats`` shows what that cost, counted at the socket.

Its limits (PROTOCOL.md, "The polling server's limits"): an answer carries at most ``page``
messages and the store keeps the last ``keep`` (a ``since`` older than that is a ``410`` "gap",
never a silent hole); numbers in the query are ASCII digits, checked before anything is sent;
posts are JSON (415 otherwise) and never from another site's page (403); a connection must send
its request head within ``head_timeout`` seconds, and at most ``max_connections`` are open.

A post is stored through the running server (``request.app[SERVER].update``), which applies it
in one order on every node that serves the chat (``site``): the handlers are the same on one
node or many.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterable

from aiohttp import web

from ..events import EventError
from ..events.pages import HEALTH_PATH, HEALTHY
from ..measure.metered_http import HEAD_TIMEOUT, MAX_CONNECTIONS, metering_middleware
from ..measure.metrics import Traffic
from .site import SERVER, PollingServer
from .store import KEEP, PAGE, Gap, MessageStore, Page

MAX_BODY = 64 * 1024
MAX_TEXT = 4000
MAX_WAIT = 60.0
SSE_HEARTBEAT = 15.0
MAX_ID = 2**53
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
#: Query numbers as ASCII digits only: ``int()`` alone would take "²"-like digits, " 5" and "1_0".
ID_TEXT = re.compile(r"[0-9]{1,16}")
SECONDS_TEXT = re.compile(r"[0-9]{1,3}(\.[0-9]{1,6})?")
#: Set on an answer that was full: more messages wait after its last one (ask again from there).
MORE_HEADER = "X-More"

STORE = web.AppKey("store", MessageStore)
TRAFFIC = web.AppKey("traffic", Traffic)
ROSTER = web.AppKey("roster", frozenset)
CLOSING = web.AppKey("closing", asyncio.Event)
BODY_TIMEOUT = web.AppKey("body_timeout", float)


class BadRequest(web.HTTPBadRequest):
    """A 4xx with a JSON body: ``{"error": {"code": SLUG, "message": TEXT}}``."""

    def __init__(self, code: str, message: str, status: int = 400, **extra: object) -> None:
        super().__init__(
            text=json.dumps({"error": {"code": code, "message": message, **extra}}),
            content_type="application/json",
        )
        self.set_status(status)


def _is_empty(response: web.StreamResponse) -> bool:
    """An answer that told the client nothing new: ``[]`` from ``GET /messages``."""
    return isinstance(response, web.Response) and response.status == 200 and response.body == b"[]"


def _user(request: web.Request, field: str = "user") -> str:
    name = request.query.get(field)
    if name is None:
        raise BadRequest("invalid-data", f"the query needs ?{field}=NAME")
    _check_name(request, name, field)
    return name


def _check_name(request: web.Request, name: object, field: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise BadRequest("invalid-data", f"{field!r} must be 1-32 letters, digits, '_', '.' or '-'")
    roster = request.app[ROSTER]
    if roster and name not in roster:
        raise BadRequest("unknown-user", f"no user called {name!r}", status=404)
    return name


def _number(request: web.Request, field: str, default: float, high: float, kind: type = int) -> float:
    """A query number in ``[0, high]``, written in ASCII digits; a 400 otherwise."""
    raw = request.query.get(field)
    if raw is None:
        return default
    return _parse_number(raw, field, high, kind)


def _parse_number(raw: str, field: str, high: float, kind: type = int) -> float:
    pattern = ID_TEXT if kind is int else SECONDS_TEXT
    if not pattern.fullmatch(raw):
        raise BadRequest("invalid-data", f"{field!r} must be a number in ASCII digits, not {raw[:40]!r}")
    value = kind(raw)
    if value > high:
        raise BadRequest("invalid-data", f"{field!r} must be between 0 and {high}")
    return value


def _gap(exc: Gap) -> BadRequest:
    """``410 Gone``: the messages right after ``since`` were forgotten; resume as told."""
    return BadRequest("gap", f"{exc}; ask again with since={exc.resume}", status=410, resume=exc.resume)


def _check_origin(request: web.Request) -> None:
    """Refuse a post from another site's page (CSRF); clients that send no Origin are not browsers."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() != f"{request.scheme}://{request.host}".lower():
        raise BadRequest("forbidden-origin", f"posts from {origin[:80]!r} are not accepted", status=403)


def _check_json_body(request: web.Request) -> None:
    """Only ``application/json``: a form or ``text/plain`` post is what another site can forge."""
    if request.content_type != "application/json":
        raise BadRequest("unsupported-media-type", "the body must be sent as Content-Type: application/json",
                         status=415)


async def _read_body(request: web.Request) -> bytes:
    """The whole body, within the same deadline as a head: a trickled body holds no socket."""
    seconds = request.app[BODY_TIMEOUT]
    try:
        async with asyncio.timeout(seconds):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadRequest("too-large", f"the body may be at most {MAX_BODY} bytes", status=413) from None
    except TimeoutError:
        late = BadRequest("timeout", f"the body did not arrive within {seconds:g} seconds", status=408)
        late.force_close()  # the rest of that body must not be read as the next request
        raise late from None


async def post_message(request: web.Request) -> web.Response:
    _check_origin(request)
    _check_json_body(request)
    raw = await _read_body(request)
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # RecursionError: nesting too deep to parse
        raise BadRequest("bad-json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("invalid-data", 'the body must be an object {"from", "to", "text"}')
    sender = _check_name(request, body.get("from"), "from")
    to = _check_name(request, body.get("to"), "to")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise BadRequest("invalid-data", f"'text' must be a non-empty string of at most {MAX_TEXT} characters")
    try:
        message = await request.app[SERVER].update({"from": sender, "to": to, "text": text, "at": time.time()})
    except EventError as error:  # the broker is unreachable: nothing was stored
        raise BadRequest(error.code, error.message, status=503) from None
    return web.json_response(message, status=201)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


async def get_messages(request: web.Request) -> web.Response:
    user = _user(request)
    since = int(_number(request, "since", 0, MAX_ID))
    wait = _number(request, "wait", 0.0, MAX_WAIT, kind=float)
    store = request.app[STORE]
    try:
        page = await wait_for_page(request, user, since, wait) if wait > 0 else store.page_since(user, since)
    except Gap as exc:
        raise _gap(exc) from None
    headers = {MORE_HEADER: "1"} if page.more else None
    return web.json_response(page.messages, headers=headers)


async def wait_for_page(request: web.Request, user: str, since: int, wait: float) -> Page:
    """The long poll: the page once a message arrives, the wait runs out or the server stops."""
    store = request.app[STORE]
    store.check(user, since)  # a gap is answered at once, not after the wait
    closing = asyncio.ensure_future(request.app[CLOSING].wait())
    waiting = asyncio.ensure_future(store.wait(user, since, wait))
    await asyncio.wait({closing, waiting}, return_when=asyncio.FIRST_COMPLETED)
    closing.cancel()
    waiting.cancel()
    return store.page_since(user, since)  # a gap that opened meanwhile is raised here


def _sse(messages: Iterable[dict]) -> bytes:
    return b"".join(
        f"id: {m['id']}\nevent: message\ndata: {json.dumps(m)}\n\n".encode() for m in messages
    )


async def get_events(request: web.Request) -> web.StreamResponse:
    user = _user(request)
    last = request.headers.get("Last-Event-ID", request.query.get("since", "0"))
    seen = int(_parse_number(last, "since (or Last-Event-ID)", MAX_ID))
    store = request.app[STORE]
    try:
        store.check(user, seen)  # before the 200 goes out: a gap is a 410, not a broken stream
    except Gap as exc:
        raise _gap(exc) from None
    queue: asyncio.Queue[dict] = asyncio.Queue()
    unsubscribe = store.listen(user, queue.put_nowait)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    closing = request.app[CLOSING]
    try:
        await response.prepare(request)
        await response.write(b": connected\n\n")
        seen = await _replay(response, store, user, seen)
        while not closing.is_set():
            try:
                message = await asyncio.wait_for(queue.get(), SSE_HEARTBEAT)
            except TimeoutError:
                await response.write(b": heartbeat\n\n")
                continue
            batch = [message] + [queue.get_nowait() for _ in range(queue.qsize())]
            fresh = [m for m in batch if m["id"] > seen]
            if fresh:
                seen = fresh[-1]["id"]
                await response.write(_sse(fresh))
    except ConnectionResetError:
        pass  # the listener went away; nothing to tell it
    finally:
        unsubscribe()
    return response


async def _replay(response: web.StreamResponse, store: MessageStore, user: str, seen: int) -> int:
    """Send what ``user`` missed after ``seen``, a page per write; returns the last id sent."""
    while True:
        page = store.page_since(user, seen)
        if page.messages:
            await response.write(_sse(page.messages))
            seen = page.messages[-1]["id"]
        if not page.more:
            return seen


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[TRAFFIC].as_dict())


def make_app(
    traffic: Traffic,
    users: Iterable[str] = (),
    *,
    keep: int = KEEP,
    page: int = PAGE,
    body_timeout: float = HEAD_TIMEOUT,
) -> web.Application:
    """The aiohttp application; ``users`` restricts who may send and receive (empty: anyone)."""
    app = web.Application(
        client_max_size=MAX_BODY, middlewares=[metering_middleware(traffic, _is_empty, HEALTH_PATH)]
    )
    app[STORE] = MessageStore(keep, page)
    app[TRAFFIC] = traffic
    app[ROSTER] = frozenset(users)
    app[CLOSING] = asyncio.Event()
    app[BODY_TIMEOUT] = body_timeout

    async def on_shutdown(app: web.Application) -> None:
        app[CLOSING].set()

    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/messages", post_message)
    app.router.add_get("/messages", get_messages)
    app.router.add_get("/events", get_events)
    app.router.add_get("/stats", get_stats)
    app.router.add_get(HEALTH_PATH, healthy)
    return app


async def healthy(request: web.Request) -> web.Response:
    """The front door's health check (``events.pages.HEALTH_PATH``): this node's loop answers."""
    status, content_type, body = HEALTHY
    return web.Response(status=status, body=body, content_type=content_type.split(";")[0])


def build(
    users: Iterable[str] = (),
    *,
    keep: int = KEEP,
    page: int = PAGE,
    head_timeout: float = HEAD_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> PollingServer:
    """The REST chat, not started; ``users`` restricts who may send and receive (empty: anyone).

    ``keep`` messages are kept and ``page`` go in one answer at most; a connection must send a
    whole request head (and then a post's whole body) within ``head_timeout`` seconds, and
    ``max_connections`` may be open.
    """
    traffic = Traffic()
    app = make_app(traffic, users, keep=keep, page=page, body_timeout=head_timeout)
    return PollingServer(app, traffic, app[STORE], head_timeout=head_timeout, max_connections=max_connections)
