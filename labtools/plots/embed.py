"""App pages inside a notebook's output: two chat windows side by side, to type into.

The pages come from ``ServerHandle.page_url()``, which is ``http://127.0.0.1:PORT/`` on a
laptop and ``/user/.../proxy/PORT/`` on Binder (jupyter-server-proxy forwards the page and its
WebSocket), so the same cell works in both places. In CI nothing renders the HTML; the cell
still runs.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from IPython.display import HTML


def page_src(server: Any, **query: str) -> str:
    """The address of ``server``'s page (a ``ServerHandle`` or a URL), with ``?name=...`` and such."""
    url = server if isinstance(server, str) else server.page_url()
    return f"{url}?{urlencode(query)}" if query else url


def side_by_side(
    server: Any,
    names: Sequence[str] = ("Pedro", "Ana"),
    *,
    width: int = 360,
    height: int = 400,
) -> HTML:
    """One IFrame of ``server``'s page per name, in a row; each page starts with that name.

    HTML rather than ``IPython.display.IFrame`` so that the frames share one row (and wrap on a
    narrow screen) and each has a caption saying who it is.
    """
    frames = []
    for name in names:
        src = html.escape(page_src(server, name=name), quote=True)
        caption = html.escape(name)
        frames.append(
            f'<figure style="margin:0"><figcaption style="font:600 13px sans-serif;margin:0 0 4px">{caption}'
            f'</figcaption><iframe src="{src}" title="{caption}" width="{width}" height="{height}" '
            f'style="border:1px solid #ccc;border-radius:4px"></iframe></figure>'
        )
    return HTML(f'<div style="display:flex;flex-wrap:wrap;gap:12px">{"".join(frames)}</div>')
