"""One reconnection rule: ``events.client.should_reconnect`` decides, the pages' ``events.js`` and the Python
clients (``sim.reconnect.Reconnecting``) follow it, and lesson 10's exercise 10.2 checks it.

The page's rule is run in real Chromium (the module the pages import, served by a lesson app)
for every close code a client can see, 1000-1015 and 3000-4999.
"""

from __future__ import annotations

import asyncio

import pytest

import labtools as lt
from labtools import runtime, serving
from labtools.events import EventServer
from labtools.events.client import CLIENT_VISIBLE, RECONNECT_AFTER, should_reconnect
from labtools.exercises import get
from labtools.sim.reconnect import Reconnecting


def test_the_rule_covers_every_visible_code_and_reconnects_only_after_temporary_causes() -> None:
    assert (*range(1000, 1016), *range(3000, 5000)) == CLIENT_VISIBLE
    assert {code for code in CLIENT_VISIBLE if should_reconnect(code)} == RECONNECT_AFTER
    assert {1001, 1006, 1011, 1012, 1013, 1014} == RECONNECT_AFTER
    assert should_reconnect(None)  # no close frame at all: as 1006


def test_events_js_agrees_with_python_for_every_code(browser) -> None:
    server = lt.serve("minichat", name="close-codes")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.url)
        verdicts = page.evaluate(
            "async (codes) => { const m = await import('./events.js'); return codes.map(m.shouldReconnect); }",
            list(CLIENT_VISIBLE),
        )
    finally:
        context.close()
    disagree = [code for code, js in zip(CLIENT_VISIBLE, verdicts, strict=True) if js is not should_reconnect(code)]
    assert not disagree, f"events.js and events/client.py disagree on {disagree[:20]}"


def build_closer() -> EventServer:
    server = EventServer("closer", keepalive=None)

    @server.on("close-me")
    def close_me(client, data):
        client.close(data["code"], "asked")

    return server


@pytest.mark.parametrize(("code", "comes_back"), [(1012, True), (1013, True), (1000, False), (1008, False),
                                                  (4001, False)])
def test_a_reconnecting_client_follows_the_rule(code: int, comes_back: bool) -> None:
    async def go() -> None:
        server = await serving.start(build_closer())
        user = await Reconnecting(server.url, name="pedro", base=0.02, cap=0.05, seed=1, resume=False).start()
        try:
            assert user.client is not None
            await user.client.emit("close-me", {"code": code})
            await user.client.connection.wait_closed()
            if comes_back:
                await asyncio.wait_for(user.connected.wait(), 3)
                assert user.connections == 2 and user.stayed_closed is None
            else:
                await asyncio.sleep(0.3)  # many backoff windows: a reconnection would have happened
                assert user.connections == 1 and user.stayed_closed == code and not user.connected.is_set()
        finally:
            await user.aclose()
            await server.aclose()

    runtime.run(go())


def test_exercise_10_2_checks_every_code_and_rejects_the_old_five_code_rule() -> None:
    exercise = get("10.2")
    exercise.checker(exercise.answer())
    with pytest.raises(AssertionError, match=r"should_reconnect\(1014\) should be True"):
        exercise.checker(lambda code: code in (1001, 1006, 1011, 1012, 1013))
    with pytest.raises(AssertionError, match=r"should_reconnect\(3000\) should be False"):
        exercise.checker(lambda code: code in RECONNECT_AFTER or 3000 <= code < 4000)
