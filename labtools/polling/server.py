"""The REST chat server of the polling lessons (PROTOCOL.md, "The polling lessons").

Three ways to hear about new messages, on one store:

* ``GET /messages?user=NAME&since=ID``: short polling; answers at once, usually ``[]``;
* the same with ``&wait=SECONDS``: long polling; the answer waits for the first message;
* ``GET /events?user=NAME``: Server-Sent Events; one response that never ends.

``GET /stats`` shows what that cost, counted at the socket.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable

from aiohttp import web

from ..measure.metered_http import MeteredSite, metering_middleware
from ..measure.metrics import Traffic
from .store import MessageStore

MAX_BODY = 64 * 1024
MAX_TEXT = 4000
MAX_WAIT = 60.0
SSE_HEARTBEAT = 15.0
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")

STORE = web.AppKey("store", MessageStore)
TRAFFIC = web.AppKey("traffic", Traffic)
ROSTER = web.AppKey("roster", frozenset)
CLOSING = web.AppKey("closing", asyncio.Event)


class BadRequest(web.HTTPBadRequest):
    """A 4xx with a JSON body: ``{"error": {"code": SLUG, "message": TEXT}}``."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(
            text=json.dumps({"error": {"code": code, "message": message}}),
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


def _number(request: web.Request, field: str, default: float, low: float, high: float, kind=int):
    raw = request.query.get(field)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise BadRequest("invalid-data", f"{field!r} must be a number, not {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest("invalid-data", f"{field!r} must be between {low} and {high}")
    return value


async def post_message(request: web.Request) -> web.Response:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadRequest("too-large", f"the body may be at most {MAX_BODY} bytes", status=413) from None
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("bad-json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("invalid-data", 'the body must be an object {"from", "to", "text"}')
    sender = _check_name(request, body.get("from"), "from")
    to = _check_name(request, body.get("to"), "to")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise BadRequest("invalid-data", f"'text' must be a non-empty string of at most {MAX_TEXT} characters")
    message = request.app[STORE].add(sender, to, text)
    return web.json_response(message, status=201)


async def get_messages(request: web.Request) -> web.Response:
    user = _user(request)
    since = _number(request, "since", 0, 0, 2**53)
    wait = _number(request, "wait", 0.0, 0.0, MAX_WAIT, kind=float)
    store = request.app[STORE]
    if wait > 0:
        closing = asyncio.ensure_future(request.app[CLOSING].wait())
        waiting = asyncio.ensure_future(store.wait(user, since, wait))
        await asyncio.wait({closing, waiting}, return_when=asyncio.FIRST_COMPLETED)
        closing.cancel()
        waiting.cancel()
    return web.json_response(store.since(user, since))


def _sse(messages: Iterable[dict]) -> bytes:
    return b"".join(
        f"id: {m['id']}\nevent: message\ndata: {json.dumps(m)}\n\n".encode() for m in messages
    )


async def get_events(request: web.Request) -> web.StreamResponse:
    user = _user(request)
    last = request.headers.get("Last-Event-ID", request.query.get("since", "0"))
    if not last.isdigit():
        raise BadRequest("invalid-data", "'since' (or Last-Event-ID) must be a message id")
    store = request.app[STORE]
    queue: asyncio.Queue[dict] = asyncio.Queue()
    unsubscribe = store.listen(user, queue.put_nowait)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    closing = request.app[CLOSING]
    try:
        await response.prepare(request)
        backlog = store.since(user, int(last))
        await response.write(b": connected\n\n" + _sse(backlog))
        seen = backlog[-1]["id"] if backlog else int(last)
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


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[TRAFFIC].as_dict())


def make_app(traffic: Traffic, users: Iterable[str] = ()) -> web.Application:
    """The aiohttp application; ``users`` restricts who may send and receive (empty: anyone)."""
    app = web.Application(
        client_max_size=MAX_BODY, middlewares=[metering_middleware(traffic, _is_empty)]
    )
    app[STORE] = MessageStore()
    app[TRAFFIC] = traffic
    app[ROSTER] = frozenset(users)
    app[CLOSING] = asyncio.Event()

    async def on_shutdown(app: web.Application) -> None:
        app[CLOSING].set()

    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/messages", post_message)
    app.router.add_get("/messages", get_messages)
    app.router.add_get("/events", get_events)
    app.router.add_get("/stats", get_stats)
    return app


class PollingServer(MeteredSite):
    """The running REST chat: ``url``, ``traffic`` and ``store`` for a cell to inspect."""

    def __init__(self, users: Iterable[str] = ()) -> None:
        traffic = Traffic()
        super().__init__(make_app(traffic, users), traffic)
        self.store = self.app[STORE]


def build(users: Iterable[str] = ()) -> PollingServer:
    """The REST chat, not started; ``users`` restricts who may send and receive (empty: anyone)."""
    return PollingServer(users)
