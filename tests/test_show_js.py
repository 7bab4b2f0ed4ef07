"""``show_js``: a named function, class or method of a page's JavaScript, as lessons show it."""

from __future__ import annotations

import pytest

from labtools.plots.source import js_source


def test_a_method_with_the_comment_above_it_up_to_its_closing_brace() -> None:
    text = js_source("common/events.js", "EventSocket.emit")
    lines = text.splitlines()
    assert lines[0] == "// labtools/static/common/events.js, EventSocket.emit"
    assert lines[1].startswith("// Emit") and lines[2].startswith("emit(event, data) {") and lines[-1] == "}"
    assert "request(" not in text  # the next method is not part of it


def test_a_top_level_function_and_a_whole_class() -> None:
    assert js_source("common/events.js", "socketUrl").splitlines()[-2].strip() == "return url.href;"
    whole = js_source("common/events.js", "EventSocket")
    assert "export class EventSocket {" in whole and "close() {" in whole and whole.rstrip().endswith("}")


def test_a_name_that_is_not_there_is_refused() -> None:
    with pytest.raises(LookupError, match="'nothing'"):
        js_source("common/events.js", "EventSocket.nothing")
