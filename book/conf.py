"""Sphinx configuration of the course as a book: the committed notebooks, with their outputs.

Build from the repository root (README, "The course as a book")::

    python -m sphinx -b html -W --keep-going -n -c book -d book/_build/doctrees . book/_build/html

Why the source folder is the repository root and this folder only holds the configuration
(``-c book``): the lessons stay where they are, in ``notebooks/``, never copied, so a renamed,
added or split lesson is in the book at its next build; and a notebook's relative links
(``05_band_votes.ipynb``, ``../PROTOCOL.md``) mean in the book what they mean in the repository,
so ``_ext/course_book/repository_links.py`` can tell a link to another lesson from a link to a
file that is not a page, and send the latter to the repository. ``include_patterns`` keeps everything else
out. The notebooks are never executed here (``nb_execution_mode = "off"``): the book shows the
outputs committed with them.

The repository's address is set in one place, the ``COURSE_REPOSITORY`` environment variable
(default: the placeholder ``https://github.com/OWNER/REPO``); the Binder buttons and the links to
the repository's files derive from it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BOOK = Path(__file__).resolve().parent
sys.path.insert(0, str(BOOK / "_ext"))

from course_book.urls import BRANCH, PLACEHOLDER, binder_notebook  # noqa: E402  (importable once _ext is on the path)

REPOSITORY = os.environ.get("COURSE_REPOSITORY", PLACEHOLDER).rstrip("/")

project = "Real-time web communication in Python, measured"
author = "the course's authors"
copyright = "the course's authors; text and figures CC BY 4.0, code MIT"

extensions = ["myst_nb", "course_book"]
course_repository = REPOSITORY

root_doc = "book/index"
include_patterns = ["book/index.md", "notebooks/[0-9][0-9]_*.ipynb"]
# Folders the source-file scan would otherwise walk (include_patterns filters files, not folders).
exclude_patterns = [".venv", ".git", "**/.ipynb_checkpoints", "book/_build", "**/node_modules", "**/.venv-peers"]

nb_execution_mode = "off"
# A lesson's conclusions are Markdown outputs (IPython.display.Markdown): read as MyST, like the
# Markdown cells, so their links are resolved and checked the same way.
nb_render_markdown_format = "myst"
myst_heading_anchors = 6
# The index page's link to the first lesson on Binder (a lesson's page has the theme's button).
myst_enable_extensions = ["substitution"]
myst_substitutions = {
    "binder_start": f"[launch the course on Binder]({binder_notebook(REPOSITORY, 'notebooks/00_start_here.ipynb')})"
}

html_theme = "sphinx_book_theme"
html_title = "Real-time web in Python, measured"
html_theme_options = {
    "repository_url": REPOSITORY,
    "repository_branch": BRANCH,
    "path_to_docs": "",
    "use_repository_button": True,
    "launch_buttons": {"binderhub_url": "https://mybinder.org", "notebook_interface": "jupyterlab"},
}
html_extra_path = ["_extra"]  # the site root's index.html, a redirect to book/index.html
