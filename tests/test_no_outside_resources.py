"""The pages load nothing from outside: the course must work offline and on Binder."""

import re
from pathlib import Path

STATIC = Path(__file__).parent.parent / "labtools" / "static"
OUTSIDE = re.compile(r"""(src|href)\s*=\s*["'](https?:)?//|url\(\s*["']?(https?:)?//|import\s+[^;]*["']https?://""")


def test_pages_load_nothing_from_outside() -> None:
    files = [p for p in STATIC.rglob("*") if p.suffix in {".html", ".js", ".css"}]
    assert files, "no pages found"
    offenders = [str(p.relative_to(STATIC)) for p in files if OUTSIDE.search(p.read_text(encoding="utf-8"))]
    assert not offenders, f"pages that load outside resources: {offenders}"


HTML_FROM_STRINGS = re.compile(
    r"""\.(inner|outer)HTML\s*\+?=\s*(?!(""|''|``)\s*;)|insertAdjacentHTML|document\.write"""
)


def test_pages_never_render_text_as_html() -> None:
    """Message text reaches the DOM through textContent, never innerHTML (no injection)."""
    offenders = [
        str(p.relative_to(STATIC))
        for p in STATIC.rglob("*")
        if p.suffix in {".html", ".js"} and HTML_FROM_STRINGS.search(p.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"pages that write HTML from strings: {offenders}"
