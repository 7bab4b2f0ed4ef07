"""Frames of live app pages, replaced by a note in the book.

A lesson shows an app's page in an ``<iframe>`` whose address is a port of the kernel that ran
it (``http://127.0.0.1:PORT/``, or Binder's ``…/proxy/PORT/``; see
``labtools/plots/embed.py``). In a static page nothing listens there, so the frame would be a
dead box: the book says instead that a live page runs there when the notebook runs, and links
to the lesson on Binder. Only the frame goes: the output's captions and layout stay.
"""

from __future__ import annotations

import html
import re

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform

from .urls import binder_notebook

# An <iframe ...>...</iframe> (or self-closed) whose src is on this machine or behind Binder's proxy.
LIVE_FRAME = re.compile(
    r"""<iframe\b[^>]*?\bsrc\s*=\s*["']?(?P<src>
          (?:https?:)?//(?:127\.\d+\.\d+\.\d+|localhost|0\.0\.0\.0|\[::1\])(?:[:/?#][^"'\s>]*)?
        | [^"'\s>]*/proxy/\d+[^"'\s>]*
        )["']?[^>]*>(?:.*?</iframe\s*>)?""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)
NOTE = (
    '<div class="admonition note live-page-note"><p class="admonition-title">A live page runs here</p>'
    "<p>When you run this notebook, this is where the app's page appears, to type into. "
    '<a href="{binder}">Launch this lesson on Binder</a> to run it.</p></div>'
)


def replace_live_frames(text: str, binder_url: str) -> tuple[str, int]:
    """``text`` (HTML) with each live frame replaced by the note, and how many were."""
    note = NOTE.format(binder=html.escape(binder_url, quote=True))
    return LIVE_FRAME.subn(lambda _match: note, text)


class LiveFrames(SphinxTransform):
    """Rewrite the raw HTML of every output and Markdown cell that embeds a live page."""

    default_priority = 500

    def apply(self, **kwargs: object) -> None:
        path = self.env.doc2path(self.env.docname).relative_to(self.env.srcdir).as_posix()
        binder = binder_notebook(self.config.course_repository, path)
        for raw in list(self.document.findall(nodes.raw)):
            if "html" not in raw.get("format", "").split():
                continue
            text, count = replace_live_frames(raw.astext(), binder)
            if count:
                raw.replace_self(nodes.raw("", text, format="html"))


def setup(app: Sphinx) -> None:
    app.add_transform(LiveFrames)
