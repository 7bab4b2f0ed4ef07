"""The mini chat page in real Chromium recovers what it missed while its connection was down.

A ``FaultyProxy`` stands between the page and the server, so that the page's link can be cut
while the server keeps running (and keeps taking messages from a Python client); then the
server itself restarts on the same port, and its history with it.
"""

from __future__ import annotations

from waiting import wait_until

import labtools as lt
from labtools import runtime
from labtools.events import EventClient
from labtools.sim.faults import serve_proxy

MESSAGES = "#messages li"


async def send(url: str, texts: list[str]) -> None:
    sender = await EventClient.connect(url, name="ana")
    for text in texts:
        await sender.request("msg-to-server", {"text": text, "name": "Ana"})
    await sender.aclose()


def shown(page) -> list[str]:
    return page.locator(f"{MESSAGES} .text").all_text_contents()


def test_the_page_recovers_missed_messages_and_says_when_it_cannot(browser) -> None:
    server = lt.serve("minichat", name="browser-resume")
    port = server.port
    proxy = serve_proxy(server.url, name="browser-resume-proxy")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{proxy.url}?name=Pedro")
        page.wait_for_selector('#status[data-status="online"]', timeout=10_000)
        lt.run(send(server.url, ["before"]))
        page.locator(MESSAGES, has_text="before").wait_for(timeout=5_000)
        assert page.locator("#notice").is_hidden()
        where = page.evaluate("minichat.socket.position")  # {offset, epoch} of "before"

        proxy.blackhole()  # the page's next tries hang until the link is back...
        proxy.cut()  # ...and its connection is gone; the server runs on
        page.wait_for_selector('#status:not([data-status="online"])', timeout=10_000)
        lt.run(send(server.url, ["one", "two", "three"]))
        proxy.passthrough()
        page.wait_for_selector('#status[data-status="online"]', timeout=15_000)
        page.wait_for_function("document.getElementById('notice').textContent.includes('recovered')",
                               timeout=5_000)
        assert page.text_content("#notice") == "reconnected: 3 missed messages recovered"
        assert shown(page) == ["before", "one", "two", "three"]  # each once, in order
        # Asked again from before the cut, the server replays nothing: this socket has them already.
        answer = page.evaluate("(where) => minichat.socket.resume(where)", where)
        assert answer["missed"] == 0 and shown(page) == ["before", "one", "two", "three"]
        lt.run(send(server.url, ["live"]))
        page.locator(MESSAGES, has_text="live").wait_for(timeout=5_000)

        server.stop()  # the embedded server's history goes with it: a new epoch after the restart
        page.wait_for_selector('#status:not([data-status="online"])', timeout=10_000)
        server = lt.serve("minichat", name="browser-resume", port=port)
        page.wait_for_selector('#status[data-status="online"]', timeout=15_000)
        page.wait_for_function("document.getElementById('notice').textContent.includes('missing')",
                               timeout=5_000)
        assert page.text_content("#notice") == "reconnected: some messages may be missing (the server restarted)"
        assert "gap" in (page.get_attribute("#notice", "class") or "")
        lt.run(send(server.url, ["after the restart"]))
        page.locator(MESSAGES, has_text="after the restart").wait_for(timeout=5_000)
        assert shown(page) == ["before", "one", "two", "three", "live", "after the restart"]
    finally:
        context.close()
        lt.run(proxy.aclose())
        server.stop()


def test_the_stateful_pages_still_work_after_a_reconnection(browser) -> None:
    """Bands resumes too (the state once more, shown once); the page keeps working."""
    server = lt.serve("bands", name="browser-resume-bands")
    proxy = serve_proxy(server.url, name="browser-resume-bands-proxy")
    context = browser.new_context()
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(proxy.url)
        page.wait_for_selector('#status[data-status="online"]', timeout=10_000)
        rows = page.locator("#bands tbody tr")
        rows.first.wait_for(timeout=5_000)
        count = rows.count()
        first_votes = page.locator("#bands tbody tr .votes").first
        before = int(first_votes.text_content() or "0")
        proxy.blackhole()
        proxy.cut()
        page.wait_for_selector('#status:not([data-status="online"])', timeout=10_000)
        proxy.passthrough()
        page.wait_for_selector('#status[data-status="online"]', timeout=15_000)

        async def vote() -> None:
            voter = await EventClient.connect(server.url)
            bands = await voter.wait_for("band-list")
            await voter.request("vote-band", bands[0]["id"])
            await voter.aclose()

        lt.run(vote())
        page.wait_for_function(f"Number(document.querySelector('#bands tbody tr .votes').textContent) === {before + 1}",
                               timeout=5_000)
        assert rows.count() == count and errors == []
    finally:
        context.close()
        lt.run(proxy.aclose())
        server.stop()


def test_the_page_retries_after_the_codes_lesson_10_retries_and_not_after_a_meant_close(browser) -> None:
    """1013 (a node that fell behind) and 1012 bring the page back; a 1000 from the server is
    meant and the page stays closed; the page's own ``reconnect()`` (which closes with 1000 too)
    still reconnects."""
    server = lt.serve("minichat", name="browser-close-codes")

    async def close_all(code: int) -> None:
        for client in list(server.server.clients.values()):
            client.close(code, "test")

    def connections() -> set[int]:
        return runtime.call(lambda: set(server.server.clients))  # read on the loop that changes it

    def comes_back(before: set[int]) -> None:
        # A socket that was not there before: the old ones may still be closing (their closing
        # handshake waits for the page), so "the set changed" is not enough.
        wait_until(lambda: connections() - before, within=10, what="a new connection")

    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{server.url}?name=Pedro")
        page.wait_for_selector('#status[data-status="online"]', timeout=10_000)
        for code in (1013, 1012):
            before = connections()
            lt.run(close_all(code))
            comes_back(before)
        lt.run(close_all(1000))
        page.wait_for_selector('#status:not([data-status="online"])', timeout=5_000)
        page.wait_for_timeout(2_000)  # longer than the first backoffs: it would be back by now
        assert page.get_attribute("#status", "data-status") != "online" and not connections()
        page.evaluate("minichat.socket.connect()")  # the page opens a new one when it chooses to
        page.wait_for_selector('#status[data-status="online"]', timeout=10_000)
        before = connections()
        page.evaluate("minichat.socket.reconnect()")  # a close of its own, with 1000 too: on it goes
        comes_back(before)
    finally:
        context.close()
        server.stop()
