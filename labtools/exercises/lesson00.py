"""Lesson 00 (start here): a coroutine of your own, run on the labtools loop against a real server."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from .. import runtime
from ..polling.client import HttpClient, send
from ..polling.server import build
from .registry import exercise

TIMEOUT = 10.0
#: What the check's fresh server holds: two messages to Ana, then one to Luis.
SENT = [("Pedro", "Ana", "uno"), ("Pedro", "Ana", "dos"), ("Ana", "Luis", "tres")]


async def _ask_fresh_server(answer: Callable[[str, str], Awaitable[Any]]) -> Any:
    """Run ``answer(url, "Ana")`` against a fresh REST chat holding ``SENT``."""
    server = build()
    await server.start("127.0.0.1", 0)
    try:
        for sender, to, text in SENT:
            await send(server.url, sender, to, text)
        return await answer(server.url, "Ana")
    finally:
        await server.aclose()


def check_newest_for(answer: Any) -> None:
    assert inspect.iscoroutinefunction(answer), (
        "answer should be the function itself, defined with `async def newest_for(url, user)` "
        f"(answer = newest_for, without calling it), not {answer!r}"
    )
    try:
        got = runtime.run(_ask_fresh_server(answer), timeout=TIMEOUT)
    except Exception as error:
        raise AssertionError(f"newest_for(url, 'Ana') raised {type(error).__name__}: {error}") from error
    if isinstance(got, dict):
        raise AssertionError(f"return the message's text (message['text']), not the whole message {got}")
    assert got != "uno", "'uno' is Ana's oldest message: the server lists them oldest first, take the last"
    assert got != "tres", "'tres' went to Luis: ask for user=Ana's messages"
    assert got == "dos", f"Pedro wrote 'uno' then 'dos' to Ana: the newest is 'dos', not {got!r}"


@exercise("00.1", check_newest_for, imports="from labtools.polling.client import HttpClient")
async def newest_for(url: str, user: str) -> str:
    client = HttpClient(url)
    try:
        messages = await client.get_json(f"/messages?user={user}&since=0")  # oldest first
    finally:
        await client.aclose()
    return messages[-1]["text"]
