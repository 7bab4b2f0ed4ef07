"""The chat page in real Chromium: two people sign up in two browsers, talk, one reloads and
still sees the conversation (the token is kept in sessionStorage, the history is fetched)."""

from __future__ import annotations

import labtools


def sign_up(page, url: str, name: str) -> None:
    page.goto(url)
    form = page.locator("#signup-form")
    form.locator("[name=name]").fill(name)
    form.locator("[name=email]").fill(f"{name.lower()}@example.com")
    form.locator("[name=password]").fill("correct horse battery")
    form.locator("button").click()
    page.wait_for_selector("#chat:not([hidden])")


def say(page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def test_two_people_talk_and_a_reload_keeps_the_history(browser, tmp_path) -> None:
    chat = labtools.serve("chat", name="browser-chat", db=str(tmp_path / "chat.db"), fast_hashing=True)
    pedro_context, ana_context = browser.new_context(), browser.new_context()
    pedro, ana = pedro_context.new_page(), ana_context.new_page()
    try:
        sign_up(pedro, chat.url, "Pedro")
        sign_up(ana, chat.url, "Ana")
        pedro.click("#users li:has-text('Ana')")
        pedro.wait_for_selector("#users li.online:has-text('Ana')")
        say(pedro, "Hola Ana <img src=x onerror=alert(1)>")
        ana.wait_for_selector("#users li:has-text('Pedro') .unread")
        ana.click("#users li:has-text('Pedro')")
        ana.wait_for_selector("#messages li.theirs")
        assert ana.locator("#messages li .text").all_inner_texts() == ["Hola Ana <img src=x onerror=alert(1)>"]
        assert ana.locator("#messages img").count() == 0  # text, never HTML

        ana.type("#text", "¡Hola")
        pedro.wait_for_selector("#typing:has-text('Ana is typing')")
        ana.press("#text", "Enter")
        pedro.wait_for_selector("#messages li.theirs:has-text('¡Hola')")

        ana.reload()  # still logged in: the token is in sessionStorage
        ana.wait_for_selector("#chat:not([hidden])")
        ana.click("#users li:has-text('Pedro')")
        ana.wait_for_function("document.querySelectorAll('#messages li[data-id]').length === 2")
        assert ana.locator("#messages li .text").all_inner_texts() == [
            "Hola Ana <img src=x onerror=alert(1)>", "¡Hola"]
        assert ana.locator("#me").inner_text() == "Ana"
    finally:
        pedro_context.close()
        ana_context.close()
        chat.stop()


def test_the_page_reconnects_and_catches_up(browser, tmp_path) -> None:
    """The server restarts on the same database and port; the page reconnects by itself
    (events.js' backoff, then an auth event with the stored token, no new login) and the conversation goes on:
    a message sent right after the restart shows, live or fetched by the catch-up."""
    db = str(tmp_path / "chat.db")
    chat = labtools.serve("chat", name="browser-restart", db=db, fast_hashing=True)
    port = chat.port
    context = browser.new_context()
    page = context.new_page()
    try:
        sign_up(page, chat.url, "Ana")
        from labtools.sim.chat_users import ChatUser

        pedro = ChatUser("Pedro")
        labtools.run(pedro.sign_up(chat.url))
        page.click("#users li:has-text('Pedro')")
        labtools.run(pedro.send(page.evaluate("JSON.parse(sessionStorage.getItem('labtools-chat')).user.uid"),
                                "before"))
        page.wait_for_selector("#messages li:has-text('before')")
        chat.stop()
        page.wait_for_selector("#status.offline")
        chat = labtools.serve("chat", name="browser-restart", db=db, port=port, fast_hashing=True)
        labtools.run(pedro.log_in(chat.url))
        ana_uid = page.evaluate("JSON.parse(sessionStorage.getItem('labtools-chat')).user.uid")
        labtools.run(pedro.send(ana_uid, "while you were away"))
        page.wait_for_selector("#messages li:has-text('while you were away')", timeout=15000)
        assert page.locator("#messages li .text").all_inner_texts() == ["before", "while you were away"]
    finally:
        context.close()
        chat.stop()


def test_the_page_authenticates_with_an_auth_event_never_in_the_url(browser, tmp_path) -> None:
    """Every connection's URL is bare; after a reload the first frame sent is `auth` with the
    stored token, acknowledged; a refused token is forgotten and the login form comes back."""
    import json

    chat = labtools.serve("chat", name="browser-auth", db=str(tmp_path / "chat.db"), fast_hashing=True)
    context = browser.new_context()
    page = context.new_page()
    sockets: list[dict] = []

    def watch(ws) -> None:
        seen: dict = {"url": ws.url, "sent": [], "received": []}
        sockets.append(seen)
        ws.on("framesent", lambda payload: seen["sent"].append(json.loads(payload)))
        ws.on("framereceived", lambda payload: seen["received"].append(json.loads(payload)))

    page.on("websocket", watch)
    try:
        sign_up(page, chat.url, "Ana")
        token = page.evaluate("JSON.parse(sessionStorage.getItem('labtools-chat')).token")
        page.reload()
        page.wait_for_selector("#chat:not([hidden])")
        assert page.locator("#chat").is_visible() and page.locator("#auth").is_hidden()
        assert len(sockets) == 2
        assert all("token=" not in s["url"] and "?" not in s["url"] for s in sockets), [s["url"] for s in sockets]
        assert [f["event"] for f in sockets[0]["sent"]][:2] == ["sign-up", "auth"]
        first = sockets[1]["sent"][0]
        assert first["event"] == "auth" and first["data"] == {"token": token} and "id" in first
        page.wait_for_function("document.getElementById('status').dataset.status === 'online'")
        acks = [f for f in sockets[1]["received"] if f.get("ack") == first["id"]]
        assert len(acks) == 1 and "error" not in acks[0] and acks[0]["data"]["user"]["name"] == "Ana"

        # A token the server refuses (forged here): cleared, and back to the login form.
        page.evaluate("""() => {
            const account = JSON.parse(sessionStorage.getItem('labtools-chat'));
            account.token = account.token.slice(0, -4) + 'AAAA';
            sessionStorage.setItem('labtools-chat', JSON.stringify(account));
        }""")
        page.reload()
        page.wait_for_selector("#auth:not([hidden])")
        page.wait_for_function("document.getElementById('auth-error').textContent.length > 0")
        assert page.evaluate("sessionStorage.getItem('labtools-chat')") is None
        assert page.locator("#chat").is_hidden()
        assert sockets[-1]["sent"][0]["event"] == "auth" and "token=" not in sockets[-1]["url"]
    finally:
        context.close()
        chat.stop()


def test_the_page_follows_presence_by_user_status_and_stays_out_after_4001(browser, tmp_path) -> None:
    """The page subscribes to presence deltas after auth; a user-status turns a dot on and off.
    Closed with 4001 (one socket too many for its user), it says so and does not reconnect,
    which would close the user's other socket in turn."""
    import json
    import time

    from labtools.apps.chat import ChatLimits
    from labtools.events import EventClient
    from labtools.sim.chat_users import ChatUser

    chat = labtools.serve("chat", name="browser-presence", db=str(tmp_path / "chat.db"), fast_hashing=True,
                          limits=ChatLimits(max_sockets=1))
    context = browser.new_context()
    page = context.new_page()
    sent: list[dict] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(json.loads(payload))))
    try:
        sign_up(page, chat.url, "Ana")
        assert [f["event"] for f in sent][:3] == ["sign-up", "auth", "subscribe-presence"]
        pedro = ChatUser("Pedro")
        labtools.run(pedro.sign_up(chat.url))
        page.wait_for_selector("#users li.online:has-text('Pedro')")
        labtools.run(pedro.disconnect())
        page.wait_for_selector("#users li.offline:has-text('Pedro')")

        token = page.evaluate("JSON.parse(sessionStorage.getItem('labtools-chat')).token")
        other_tab = labtools.run(EventClient.connect(chat.url))
        labtools.run(other_tab.request("auth", {"token": token}))
        page.wait_for_selector("#notice:has-text('too many chat tabs')")
        time.sleep(3)  # events.js' backoff would have reconnected (and closed other_tab) by now
        assert not other_tab.closed
        ana = next(uid for uid, user in chat.server.state.directory.users.items() if user["name"] == "Ana")
        assert labtools.runtime.call(lambda: len(chat.server.state.connections[ana])) == 1  # on the loop thread
        labtools.run(other_tab.aclose())
    finally:
        context.close()
        chat.stop()
