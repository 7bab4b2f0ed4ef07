"""The mini chat page in real Chromium: two pages, a message typed in one appears in both."""

from __future__ import annotations

import pytest

import labtools as lt


@pytest.fixture(scope="module")
def minichat() -> lt.ServerHandle:
    return lt.serve("minichat", name="browser-minichat")


def test_a_message_typed_in_one_page_appears_in_both(browser, minichat: lt.ServerHandle) -> None:
    context = browser.new_context()
    try:
        pedro, ana = context.new_page(), context.new_page()
        for page, name in ((pedro, "Pedro"), (ana, "Ana")):
            page.goto(f"{minichat.page_url()}?name={name}")  # as the notebook's embed names them
            page.wait_for_selector('#status[data-status="online"]', timeout=10_000)
            assert page.input_value("#name") == name
        pedro.fill("#text", "<img src=x onerror=alert(1)> hola Ana")
        pedro.press("#text", "Enter")
        for page in (pedro, ana):
            item = page.locator("#messages li").last
            item.wait_for(timeout=5_000)
            assert item.locator(".who").text_content() == "Pedro"
            # Rendered as text: the markup shows literally and no element was created from it.
            assert item.locator(".text").text_content() == "<img src=x onerror=alert(1)> hola Ana"
            assert page.locator("#messages img").count() == 0
        assert pedro.input_value("#text") == ""  # cleared once the server acknowledged it
        ana.fill("#text", "hola Pedro")
        ana.click("button[type=submit]")
        for page in (pedro, ana):  # the sender's page shows it too, once the broadcast comes back
            page.locator("#messages li", has_text="hola Pedro").wait_for(timeout=5_000)
        assert pedro.locator("#messages li").count() == ana.locator("#messages li").count() == 2
    finally:
        context.close()


def test_a_refused_message_shows_the_servers_reason(browser, minichat: lt.ServerHandle) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(minichat.page_url())
        page.wait_for_selector('#status[data-status="online"]', timeout=10_000)
        # Past the page's maxlength: the server is the one that says no.
        page.evaluate("minichat.socket.request('msg-to-server', {text: 'x'.repeat(3000)}).catch(e => "
                      "document.getElementById('error').textContent = e.message)")
        page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=5_000)
        assert "2000" in page.text_content("#error")
        assert page.locator("#messages li").count() == 0
    finally:
        context.close()


def test_the_page_reconnects_after_the_server_restarts(browser) -> None:
    server = lt.serve("minichat", name="browser-restart")
    port = server.port
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.page_url())
        page.wait_for_selector('#status[data-status="online"]', timeout=10_000)
        server.stop()
        page.wait_for_selector('#status[data-status="offline"], #status[data-status="connecting"]', timeout=10_000)
        server = lt.serve("minichat", name="browser-restart", port=port)
        page.wait_for_selector('#status[data-status="online"]', timeout=15_000)
        page.fill("#text", "back")
        page.press("#text", "Enter")
        page.locator("#messages li", has_text="back").wait_for(timeout=5_000)
    finally:
        context.close()
        server.stop()
