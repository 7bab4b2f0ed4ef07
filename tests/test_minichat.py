"""The mini chat (PROTOCOL.md ``minichat``) and its page, served in the kernel with ``lt.serve``."""

from __future__ import annotations

import re
import urllib.request

import pytest
from deployments import deployment_fixture

import labtools as lt
from labtools.events import AckError, EventClient


@pytest.fixture(scope="module")
def minichat() -> lt.ServerHandle:
    return lt.serve("minichat", name="test-minichat")


#: The contract, on one node, on two nodes, and on two nodes behind the front door.
spread = deployment_fixture("minichat", "test-minichat-spread")


def test_a_message_reaches_everyone_the_sender_included(spread: lt.ServerHandle) -> None:
    minichat = spread
    async def scenario() -> None:
        pedro = await EventClient.connect(minichat.ws_url, name="pedro")
        ana = await EventClient.connect(minichat.ws_url, name="ana")
        try:
            await pedro.request("msg-to-server", {"text": "<b>hola</b> & adiós", "name": "Pedro"})
            for client in (pedro, ana):
                data = await client.wait_for("msg-from-server")
                assert data["text"] == "<b>hola</b> & adiós"  # the server relays text untouched
                assert data["name"] == "Pedro"
                assert isinstance(data["at"], float)
            await ana.emit("msg-to-server", {"text": "hi", "sentAt": 12.5})
            data = await pedro.wait_for("msg-from-server", where=lambda d: d["text"] == "hi")
            assert data["sentAt"] == 12.5 and "name" not in data
        finally:
            await pedro.aclose()
            await ana.aclose()

    lt.run(scenario())


@pytest.mark.parametrize(
    "data",
    [None, "just text", {"text": ""}, {"text": "   "}, {"text": 5}, {"text": "x" * 2001}, {"name": "x"}],
)
def test_bad_messages_are_refused_with_invalid_data(spread: lt.ServerHandle, data: object) -> None:
    minichat = spread

    async def scenario() -> None:
        pedro = await EventClient.connect(minichat.ws_url)
        try:
            with pytest.raises(AckError) as refused:
                await pedro.request("msg-to-server", data)
            assert refused.value.code == "invalid-data"
            assert pedro.events("msg-from-server") == []
        finally:
            await pedro.aclose()

    lt.run(scenario())


def test_the_page_is_served_on_the_socket_port_and_loads_nothing_from_outside(minichat: lt.ServerHandle) -> None:
    files = {}
    for path in ("", "minichat.js", "minichat.css", "events.js"):
        with urllib.request.urlopen(minichat.url + path, timeout=5) as response:
            assert response.status == 200
            files[path] = response.read().decode()
    page = files[""]
    assert '<script type="module" src="./minichat.js">' in page and 'href="./events.js"' in page
    assert 'import { EventSocket } from "./events.js"' in files["minichat.js"]
    for path, text in files.items():
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path
        assert "innerHTML" not in text, path
    assert "textContent" in files["minichat.js"]
    assert minichat.page_url() == minichat.url  # no JupyterHub prefix in the tests


def test_re_serving_replaces_the_server() -> None:
    first = lt.serve("minichat", name="test-minichat-twice")
    second = lt.serve("minichat", name="test-minichat-twice")
    try:
        assert first.server is not second.server
        with pytest.raises(OSError):  # the first one stopped listening
            urllib.request.urlopen(first.url, timeout=2)
        with urllib.request.urlopen(second.url, timeout=2) as response:
            assert response.status == 200
    finally:
        second.stop()


def test_side_by_side_embeds_one_named_page_per_person(minichat: lt.ServerHandle) -> None:
    from labtools import plots

    html = plots.embed.side_by_side(minichat, names=["Pedro", "Ana <3"]).data
    assert html.count("<iframe") == 2
    assert f'src="{minichat.page_url()}?name=Pedro"' in html
    assert "name=Ana+%3C3" in html and "Ana &lt;3" in html  # escaped in the URL and in the caption
    assert plots.embed.page_src("http://x/", name="Ana") == "http://x/?name=Ana"


def test_bytes_are_counted_after_the_stats_are_reset(minichat: lt.ServerHandle) -> None:
    """``reset_stats`` zeroes the counters the connections write into (it once replaced them, and
    every byte after a reset went to a counter nobody read)."""
    minichat.reset_stats()

    async def scenario() -> None:
        pedro = await EventClient.connect(minichat.ws_url, name="pedro")
        try:
            await pedro.request("msg-to-server", {"text": "after the reset", "name": "Pedro"})
            await pedro.wait_for("msg-from-server")
        finally:
            await pedro.aclose()

    lt.run(scenario())
    total = minichat.stats()["total"]
    assert total["bytesIn"] > len("after the reset") and total["bytesOut"] > len("after the reset")
