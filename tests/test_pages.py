"""The app pages' structure: ES modules only, one shared stylesheet, one status badge.

Files are resolved the way EventServer._static_file serves them: ``./name.ext`` from the app's
own folder, else from ``static/common/``; one path segment only.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

import labtools as lt

STATIC = Path(__file__).parent.parent / "labtools" / "static"
COMMON = STATIC / "common"
APPS = sorted(p for p in STATIC.iterdir() if p.is_dir() and p.name != "common")
PAGES = sorted(p for app in APPS for p in app.glob("*.html"))
SCRIPTS = sorted(STATIC.rglob("*.js"))
IMPORT = re.compile(
    r"""^\s*(?:import\s+(?:[\w$*{}\s,]+?\s+from\s+)?|export\s+(?:\*|\{[^}]*\})\s+from\s+)["']([^"']+)["']""",
    re.MULTILINE,
)
# What the status badge does (set its text/class/data-status from a socket's state): only common/status.js.
STATUS_LOGIC = re.compile(
    r"""dataset\.status|data-status|className\s*=\s*["']status\b|["']status\s["']\s*\+|\.onStatus\("""
    r"""|classList\.\w+\([^)]*["'](?:online|offline|connecting)["']"""
)


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_script = False
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script = True


def parse(page: Path) -> Tags:
    tags = Tags()
    tags.feed(page.read_text(encoding="utf-8"))
    return tags


def resolve(app: Path, ref: str) -> Path | None:
    """The file the server sends for ``ref`` asked from a page or module of ``app``."""
    name = ref.removeprefix("./")
    if "/" in name or ":" in name or not name:
        return None
    for folder in (app, COMMON):
        if (folder / name).is_file():
            return folder / name
    return None


def module_graph(app: Path, entry: str) -> set[Path]:
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        path = resolve(app, todo.pop())
        assert path is not None
        if path in seen:
            continue
        seen.add(path)
        for spec in IMPORT.findall(path.read_text(encoding="utf-8")):
            assert re.fullmatch(r"\./[\w.-]+\.js", spec), f"{path.relative_to(STATIC)}: import {spec!r}"
            assert resolve(app, spec), f"{path.relative_to(STATIC)}: {spec} is not served"
            todo.append(spec)
    return seen


def test_the_pages_are_found() -> None:
    assert {app.name for app in APPS} == {"minichat", "bands", "tickets", "map", "chat", "watch"}
    assert len(PAGES) == 9


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(STATIC)))
def test_every_page_loads_modules_and_course_css(page: Path) -> None:
    tags = parse(page)
    assert not tags.inline_script, "inline script"
    for tag, attrs in tags.tags:
        assert not [a for a in attrs if a.startswith("on")], f"inline handler on <{tag}>"
        if tag == "script":
            assert attrs.get("type") == "module", f"classic script {attrs.get('src')}"
            assert attrs.get("src", "").startswith("./")
        for attr in ("src", "href"):
            ref = attrs.get(attr)
            if ref and ref != "./" and tag != "a":
                assert ref.startswith("./") and resolve(page.parent, ref), f"{ref} is not served"
    sheets = [a["href"] for t, a in tags.tags if t == "link" and a.get("rel") == "stylesheet"]
    assert sheets[0] == "./course.css", sheets  # first, so the app's own rules come after it
    assert resolve(page.parent, "./course.css") == COMMON / "course.css"
    scripts = [a["src"] for t, a in tags.tags if t == "script"]
    preloads = {a["href"] for t, a in tags.tags if t == "link" and a.get("rel") == "modulepreload"}
    has_badge = any(a.get("id") == "status" for _, a in tags.tags)
    if has_badge:
        assert len(scripts) == 1
        graph = module_graph(page.parent, scripts[0])
        assert COMMON / "status.js" in graph and COMMON / "events.js" in graph
        # Preloaded modules are ones the page imports (a stale preload is a wasted request).
        assert {resolve(page.parent, p) for p in preloads} <= graph
        badge = next(a for _, a in tags.tags if a.get("id") == "status")
        assert "status" in (badge.get("class") or "").split()
    else:
        assert not scripts and not preloads


def test_common_modules_export_instead_of_setting_globals() -> None:
    events = (COMMON / "events.js").read_text(encoding="utf-8")
    assert "export class EventSocket" in events and "export function socketUrl" in events
    status = (COMMON / "status.js").read_text(encoding="utf-8")
    assert re.search(r"export function bindStatus\(element, socket\)", status)
    for script in SCRIPTS:
        text = script.read_text(encoding="utf-8")
        assert "LabEvents" not in text and "window.ticketSocket" not in text, script
        assert "(function () {" not in text, f"{script.relative_to(STATIC)}: an IIFE; modules have their own scope"


def test_only_status_js_has_the_status_badge_logic() -> None:
    offenders = [
        str(p.relative_to(STATIC)) for p in SCRIPTS
        if p != COMMON / "status.js" and STATUS_LOGIC.search(p.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"status badge logic outside common/status.js: {offenders}"
    assert STATUS_LOGIC.search((COMMON / "status.js").read_text(encoding="utf-8"))


def test_only_course_css_styles_the_status_badge() -> None:
    sheets = sorted(STATIC.rglob("*.css"))
    offenders = [str(p.relative_to(STATIC)) for p in sheets
                 if p != COMMON / "course.css" and re.search(r"\.status\b", p.read_text(encoding="utf-8"))]
    assert not offenders, f"status badge styled outside common/course.css: {offenders}"
    course = (COMMON / "course.css").read_text(encoding="utf-8")
    for state in ("online", "offline"):
        assert f'.status[data-status="{state}"]' in course and f"--{state}:" in course


def test_the_chat_page_never_puts_the_token_in_the_url() -> None:
    chat = (STATIC / "chat" / "chat.js").read_text(encoding="utf-8")
    assert "token=" not in chat and "new EventSocket({ resume: false })" in chat  # no query option
    assert 'socket.request("auth"' in chat


# ----- the same in real Chromium ------------------------------------------------------------------

APP_PAGES = [("minichat", ""), ("bands", ""), ("map", ""), ("chat", ""),
             ("tickets", "kiosk.html"), ("tickets", "desk.html"), ("tickets", "public.html")]


@pytest.mark.timeout(90)
def test_every_page_goes_online_with_one_badge_palette(browser, tmp_path) -> None:
    """Each page's module graph loads without an error or a failed request, the badge turns
    online through common/status.js, and it has the same colours on every page."""
    options = {"chat": {"db": str(tmp_path / "chat.db"), "fast_hashing": True}}
    servers = {app: lt.serve(app, name=f"pages-{app}", **options.get(app, {})) for app, _ in APP_PAGES}
    context = browser.new_context()
    problems: list[str] = []
    colours = {}
    try:
        for app, path in APP_PAGES:
            page = context.new_page()
            page.on("pageerror", lambda error, app=app: problems.append(f"{app}: {error}"))
            # (Chromium's own favicon.ico request is the one 404 a page may cause.)
            page.on("response", lambda r, app=app: r.status >= 400 and not r.url.endswith("/favicon.ico")
                    and problems.append(f"{app}: {r.status} {r.url}"))
            page.goto(servers[app].page_url() + path)
            page.wait_for_selector('#status.online[data-status="online"]', timeout=10_000)
            assert page.text_content("#status") == "online"
            assert page.evaluate("typeof window.LabEvents") == "undefined"
            colours[f"{app}/{path}"] = page.evaluate(
                "(() => { const s = getComputedStyle(document.getElementById('status'));"
                " return [s.backgroundColor, s.color, s.borderRadius]; })()")
            page.close()
    finally:
        context.close()
        for server in servers.values():
            server.stop()
    assert not problems, problems
    assert len({tuple(c) for c in colours.values()}) == 1, colours
    assert next(iter(colours.values()))[0] == "rgb(31, 122, 58)"  # --online
