"""The three pages in real Chromium: two pages of one app see each other's changes live."""

from __future__ import annotations

import pytest

import labtools as lt

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def pages(browser):
    """Two pages in separate contexts (two users), collecting JavaScript errors."""
    contexts = [browser.new_context() for _ in range(2)]
    opened = [context.new_page() for context in contexts]
    errors: list[str] = []
    for page in opened:
        page.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors: {errors}"


def online(page) -> None:
    page.wait_for_selector("#status.online", timeout=5000)


def test_bands_pages_share_votes_and_names(pages) -> None:
    server = lt.serve("bands", name="browser-bands")
    ana, pedro = pages
    for page in pages:
        page.goto(server.page_url())
        online(page)
    ana.get_by_title("Vote for Metallica").click()
    ana.get_by_title("Vote for Metallica").click()
    first_votes = "#bands tbody tr:first-child td.votes"
    pedro.wait_for_function(f"document.querySelector({first_votes!r}).textContent === '2'")
    pedro.fill("#new-name", "<b>Soda</b> Stereo")
    pedro.press("#new-name", "Enter")
    ana.wait_for_function("document.querySelectorAll('#bands tbody tr').length === 5")
    assert ana.locator("#bands tbody tr:last-child input").input_value() == "<b>Soda</b> Stereo"
    assert ana.locator("#chart text.label").last.text_content() == "<b>Soda</b> Stereo"  # text, not markup
    assert ana.locator("#chart rect.bar").count() == 5
    pedro.get_by_title("Delete Bon Jovi").click()
    ana.wait_for_function("document.querySelectorAll('#bands tbody tr').length === 4")
    # Bad input from a page: an error for that page only, nothing changes.
    pedro.fill("#new-name", "   ")
    pedro.press("#new-name", "Enter")
    pedro.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert ana.locator("#error").text_content() == ""


def test_ticket_kiosk_desk_and_public_screen(pages) -> None:
    server = lt.serve("tickets", name="browser-tickets")
    kiosk, desk = pages
    # Its own context: a second tab of one window is a background page, where rAF polling stalls.
    screen_context = desk.context.browser.new_context()
    screen = screen_context.new_page()
    kiosk.goto(server.page_url() + "kiosk.html")
    desk.goto(server.page_url() + "desk.html")
    screen.goto(server.page_url() + "public.html")
    for page in (kiosk, desk, screen):
        online(page)
    for expected in ("1", "2"):
        kiosk.click("#take")
        kiosk.wait_for_function(f"document.getElementById('number').textContent === {expected!r}")
    desk.fill("#agent", "Ana")
    desk.fill("#desktop", "3")
    desk.click("#sign-in button")
    desk.click("#next")
    desk.wait_for_function("document.getElementById('serving').textContent === '1'")
    screen.wait_for_selector("#calls li.latest")
    assert screen.locator("#calls li.latest").text_content() == "Ticket 1Desk 3 · Ana"
    desk.click("#next")
    screen.wait_for_function("document.querySelectorAll('#calls li').length === 2")
    assert screen.locator("#calls li.latest .ticket").text_content() == "Ticket 2"
    desk.click("#next")
    desk.wait_for_function("document.getElementById('error').textContent === 'Nobody is waiting.'")
    assert desk.locator("#serving").text_content() == "–"
    screen_context.close()


def test_map_markers_appear_and_move_on_the_other_page(pages) -> None:
    server = lt.serve("map", name="browser-map")
    ana, pedro = pages
    for page in pages:
        page.set_viewport_size({"width": 900, "height": 600})
        page.goto(server.page_url())
        online(page)
    box = ana.locator("#map").bounding_box()
    assert box is not None
    center = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    ana.mouse.click(*center)  # lng 0, lat 0
    pedro.wait_for_selector("#markers circle")
    cx = float(pedro.locator("#markers circle").get_attribute("cx"))
    assert abs(cx) < 2
    # Drag it 100 px right in small steps: Pedro sees it move; Ana sent fewer updates than moves.
    ana.mouse.move(*center)
    ana.mouse.down()
    for step in range(1, 21):
        ana.mouse.move(center[0] + 5 * step, center[1])
    ana.mouse.up()
    pedro.wait_for_function("Number(document.querySelector('#markers circle').getAttribute('cx')) > 20")
    final_a = float(ana.locator("#markers circle").get_attribute("cx"))
    pedro.wait_for_function(
        f"Math.abs(Number(document.querySelector('#markers circle').getAttribute('cx')) - {final_a}) < 1e-6"
    )
    sent = int(ana.locator("#counts").text_content().split()[1])
    assert 2 <= sent <= 22  # the new marker, throttled updates and the final position
    # A page opened later gets every marker on connect.
    late = pedro.context.new_page()
    late.goto(server.page_url())
    late.wait_for_selector("#markers circle")
    assert abs(float(late.locator("#markers circle").get_attribute("cx")) - final_a) < 1e-6
