"""``lt.watch``: a live view of a running server. Its sampler turns counters into rates; its
page, in real Chromium, draws a polling crowd's requests and empty answers as they happen, and a
WebSocket app's connections; the watch stops with its server and with ``lt.stop_all()``, and
watching again replaces it."""

from __future__ import annotations

import asyncio
import socket

import pytest
from waiting import wait_until

import labtools as lt
from labtools import runtime
from labtools.events import EventClient
from labtools.polling import server as polling
from labtools.sim.crowd import crowd
from labtools.watch.sampler import Sampler

pytestmark = pytest.mark.timeout(90)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_sampler_turns_counters_into_rates_and_survives_a_reset() -> None:
    server = polling.build()  # not started: its counters are all the sampler reads
    clock = Clock()
    sampler = Sampler(server, clock)
    traffic = server.traffic
    for _ in range(8):
        traffic.request("GET /messages", empty=True)
    traffic.request("POST /messages")
    traffic.request("GET /messages")
    traffic.total.bytes_in, traffic.total.bytes_out = 1000, 3000
    clock.now += 0.5
    sample = sampler.sample()
    assert (sample.t, sample.requests, sample.empty, sample.bytes) == (0.5, 20.0, 0.8, 8000.0)
    assert (sample.connections, sample.wasted) == (0, 8)
    clock.now += 0.25
    idle = sampler.sample()
    assert (idle.requests, idle.empty, idle.wasted) == (0.0, None, 8)  # nothing asked: no share
    traffic.reset()  # reset_stats: the counters start again from zero
    traffic.request("GET /messages", empty=True)
    clock.now += 1.0
    after = sampler.sample()
    assert (after.requests, after.empty, after.wasted) == (1.0, 1.0, 9)


def sampling_tasks() -> int:
    """The watches' sampling tasks alive on the labtools loop."""

    async def count() -> int:
        return sum(1 for task in asyncio.all_tasks() if task.get_coro().__name__ == "sample_every_period")

    return runtime.run(count())


def refuses(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_the_watch_stops_with_its_server_and_with_stop_all() -> None:
    lt.stop_all()
    server = lt.serve("polling", name="watched")
    view = lt.watch(server)
    assert view.name == "watch watched" and sampling_tasks() == 1
    wait_until(lambda: len(view.samples()) >= 2, what="two samples")
    server.stop()
    wait_until(lambda: "watch watched" not in runtime.services(), what="the watch to unregister")
    wait_until(lambda: sampling_tasks() == 0 and refuses(view.port), what="the watch to stop")
    with pytest.raises(ValueError, match="not running"):
        lt.watch(server)

    server = lt.serve("polling", name="watched")
    view = lt.watch(server)
    lt.stop_all()
    assert runtime.services() == {} and sampling_tasks() == 0 and refuses(view.port)


def test_watching_again_replaces_the_view() -> None:
    server = lt.serve("polling", name="watched-twice")
    first = lt.watch(server)
    second = lt.watch(server)
    assert refuses(first.port) and not refuses(second.port)
    assert [name for name in runtime.services() if name.startswith("watch ")] == ["watch watched-twice"]
    assert sampling_tasks() == 1
    with pytest.raises(TypeError, match=r"lt\.serve"):
        lt.watch(server.url)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="period"):
        lt.watch(server, period=0)
    lt.stop_all()


def latest(page) -> dict[str, str]:
    """The figures the page shows now, from ``#latest``'s data attributes."""
    return page.evaluate("({...document.getElementById('latest').dataset})")


def test_the_page_draws_a_polling_crowd_live(browser) -> None:
    server = lt.serve("polling", name="watched-crowd")
    view = lt.watch(server)
    context = browser.new_context()
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(view.page_url())
        page.wait_for_selector('#status[data-status="online"]', timeout=10_000)
        assert page.text_content("#title") == "Watching watched-crowd"
        page.wait_for_function("document.getElementById('latest').dataset.samples > 2", timeout=5_000)
        before = latest(page)
        assert float(before["requests"]) == 0 and before["wasted"] == "0" and before["empty"] == ""
        running = runtime.submit(crowd(server, users=200, mode="poll", interval=0.5, rate=1, duration=4, seed=3))
        page.wait_for_function("Number(document.getElementById('latest').dataset.requests) > 100", timeout=10_000)
        during = latest(page)
        page.wait_for_function(f"Number(document.getElementById('latest').dataset.wasted) > {during['wasted']}",
                               timeout=5_000)
        after = latest(page)
        assert float(during["empty"]) > 0.5 and int(after["wasted"]) > int(during["wasted"]) > 0
        assert int(during["connections"]) > 0 and float(during["bytes"]) > 0
        result = running.result(timeout=30)
        assert result.lost == 0
        drawn = page.evaluate("document.getElementById('requests-chart').toDataURL()")
        blank = page.evaluate("(() => { const c = document.createElement('canvas');"
                              " const r = document.getElementById('requests-chart');"
                              " c.width = r.width; c.height = r.height; return c.toDataURL(); })()")
        assert drawn != blank, "the requests chart is blank"
        server.stop()
        page.wait_for_function("!document.getElementById('notice').hidden", timeout=5_000)
        assert page.text_content("#notice") == "watched-crowd stopped: this view stopped with it."
        page.wait_for_selector('#status[data-status="offline"]', timeout=5_000)
    finally:
        context.close()
        lt.stop_all()
    assert not errors, errors


def test_the_page_watches_a_websocket_app(browser) -> None:
    server = lt.serve("minichat", name="watched-chat")
    view = lt.watch(server)
    context = browser.new_context()

    async def three_chatters() -> list[EventClient]:
        clients = [await EventClient.connect(server.url, name=f"c{i}") for i in range(3)]
        for client in clients:
            await client.request("msg-to-server", {"text": f"hello from {client.name}"})
        return clients

    clients = runtime.run(three_chatters())
    try:
        page = context.new_page()
        page.goto(view.page_url())
        page.wait_for_selector('#status[data-status="online"]', timeout=10_000)
        assert page.evaluate("document.body.classList.contains('no-empty')")  # a WebSocket app sends no []
        page.wait_for_function("document.getElementById('latest').dataset.connections === '3'", timeout=5_000)
        assert page.evaluate("document.getElementById('latest').dataset.empty") == ""
        # The history a page gets on connect holds the chatters' upgrades and messages.
        assert max(sample.requests for sample in view.samples()) > 0
    finally:
        context.close()
        for client in clients:
            runtime.run(client.aclose())
        lt.stop_all()
