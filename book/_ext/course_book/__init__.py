"""The book's Sphinx extension: what turns the lessons, written to be run, into pages to read.

Three jobs, one module each: ``live_frames`` replaces the app pages a lesson embeds (frames on
the kernel's own ports, dead in a static page) with a note and a Binder link, and
``repository_links`` makes every relative link of a lesson land somewhere: another lesson's
page, or the file in the repository, and ``cell_magics`` highlights a ``%%writefile`` cell as
the language of the file it writes. ``urls`` builds the addresses both use from the one
``course_repository`` setting (conf.py reads it from ``COURSE_REPOSITORY``).
"""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx

from . import cell_magics, live_frames, repository_links
from .urls import PLACEHOLDER


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("course_repository", PLACEHOLDER, "env", types=[str])
    live_frames.setup(app)
    repository_links.setup(app)
    cell_magics.setup(app)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
