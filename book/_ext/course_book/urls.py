"""Addresses derived from the repository's URL: a file in it, and a notebook on Binder."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

PLACEHOLDER = "https://github.com/OWNER/REPO"
BRANCH = "HEAD"  # the README's Binder badge launches HEAD too
BINDER = "https://mybinder.org"


def repository_file(repository: str, path: str, *, folder: bool = False, anchor: str | None = None) -> str:
    """The page of ``path`` (relative to the repository's root) on the forge, GitHub-style."""
    kind = "tree" if folder else "blob"
    url = f"{repository.rstrip('/')}/{kind}/{BRANCH}/{quote(path)}"
    return f"{url}#{anchor}" if anchor else url


def binder_notebook(repository: str, path: str) -> str:
    """Where Binder opens ``path`` (a notebook, relative to the root) in JupyterLab."""
    parts = urlsplit(repository.rstrip("/"))
    # GitHub has its own provider on Binder; any other git host goes through the generic one.
    spec = f"gh{parts.path}" if parts.netloc == "github.com" else f"git/{quote(repository, safe='')}"
    return f"{BINDER}/v2/{spec}/{BRANCH}?urlpath=lab/tree/{quote(path)}"
