"""Every relative link of a lesson lands somewhere: another lesson's page, or the repository.

The book's sources are the repository itself (conf.py), so MyST reads a lesson's link
``../PROTOCOL.md`` or ``../labtools/apps/chat.py`` as a path in the repository. Such a file is
not a page of the book: MyST would call ``PROTOCOL.md`` an unknown document and copy a ``.py``
in as a download. Both become links to the file's page in the repository (a folder's too),
which is what a reader of the book wants. A link to a path that exists nowhere is left alone,
so MyST reports it and the ``-W`` build fails.

Anchors: JupyterLab, where the lessons are written and run, gives a heading the id of its text
with spaces as hyphens (``#1.-The-smallest-chat``); MyST gives it GitHub's slug
(``#1-the-smallest-chat``). An anchor that is not a slug of its target but whose slug is gets
that slug, so a link that works in JupyterLab works in the book too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docutils import nodes
from myst_parser.slugs import github_slugify
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform
from sphinx.transforms.post_transforms import SphinxPostTransform

from .urls import repository_file


def outside_file(srcdir: Path, docdir: Path, target: str) -> tuple[str, bool] | None:
    """The repository path of ``target`` and whether it is a folder, when it names a file or
    folder of the repository; None when it names nothing. ``target`` is relative to the folder
    ``docdir``, or to the root when it starts with ``/`` (as in MyST)."""
    path = (srcdir / target.lstrip("/") if target.startswith("/") else docdir / target).resolve()
    if not path.is_relative_to(srcdir) or not path.exists():
        return None
    return path.relative_to(srcdir).as_posix(), path.is_dir()


class OutsideLinks(SphinxTransform):
    """Links to repository files that are not pages become links to the repository (at read
    time, before Sphinx registers a download and copies the file into the book)."""

    default_priority = 870  # before MyST resolves anchors (879)

    def apply(self, **kwargs: Any) -> None:
        srcdir = Path(self.env.srcdir).resolve()
        docdir = (srcdir / self.env.docname).parent
        links = (addnodes.pending_xref, addnodes.download_reference)
        for node in list(self.document.findall(lambda n: isinstance(n, links))):
            if node.get("reftype") != "myst":
                continue
            target = self.outside_target(node, srcdir)
            if target is None:
                continue
            found = outside_file(srcdir, docdir, target)
            if found is None:
                continue
            path, folder = found
            anchor = node.get("reftargetid")
            url = repository_file(self.config.course_repository, path, folder=folder, anchor=anchor)
            node.replace_self(external(node, url))
        self.fix_local_anchors()

    def outside_target(self, node: nodes.Element, srcdir: Path) -> str | None:
        """The relative path a MyST link names when it is not a page of the book."""
        domain, target = node.get("refdomain"), node.get("reftarget", "")
        if isinstance(node, addnodes.download_reference):
            return target
        if domain == "doc" and target not in self.env.found_docs:
            # MyST turned the path into a docname: find the file it came from.
            for suffix in self.config.source_suffix:
                if (srcdir / f"{target}{suffix}").is_file():
                    return f"/{target}{suffix}"
            return None
        if domain is None and target and not target.startswith("#") and "://" not in target:
            return target.split("#", 1)[0]
        return None

    def fix_local_anchors(self) -> None:
        """``[x](#Some-Heading)`` written for JupyterLab: the MyST slug when only it matches."""
        slugs = getattr(self.document, "myst_slugs", {})
        for ref in self.document.findall(nodes.reference):
            uri = ref.get("refuri", "")
            if ref.get("id_link") and uri.startswith("#"):
                anchor = uri[1:]
                if anchor not in slugs and github_slugify(anchor) in slugs:
                    ref["refuri"] = "#" + github_slugify(anchor)


class LessonAnchors(SphinxPostTransform):
    """``[x](05_band_votes.ipynb#Some-Heading)``: the target lesson's slug when only it matches."""

    default_priority = 8  # before MyST resolves references to documents (9)

    def run(self, **kwargs: Any) -> None:
        for node in self.document.findall(addnodes.pending_xref):
            if node.get("reftype") != "myst" or node.get("refdomain") != "doc" or not node.get("reftargetid"):
                continue
            metadata = self.env.metadata.get(node["reftarget"], {})
            slugs = metadata.get("myst_slugs", {})
            anchor = node["reftargetid"]
            if anchor not in slugs and github_slugify(anchor) in slugs:
                node["reftargetid"] = github_slugify(anchor)


def external(node: nodes.Element, url: str) -> nodes.reference:
    """A plain link to ``url`` with ``node``'s text (or the URL when the link had none)."""
    text = node.astext() or url
    return nodes.reference(text, text, refuri=url, classes=["external"])


def setup(app: Sphinx) -> None:
    app.add_transform(OutsideLinks)
    app.add_post_transform(LessonAnchors)
