"""Code cells that are another language behind a cell magic, highlighted as that language.

MyST-NB highlights every code cell as the kernel's language (``ipython3``). A cell such as
``%%writefile my_chat_page/index.html`` (the "build it yourself" files) holds HTML, JavaScript
or CSS, which the IPython lexer rejects: Sphinx warns, and the ``-W`` build fails. The file's
suffix, or the magic's name, says what the cell holds.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform

BY_SUFFIX = {
    ".html": "html", ".htm": "html", ".js": "javascript", ".mjs": "javascript", ".css": "css",
    ".py": "python", ".json": "json", ".sh": "bash", ".cfg": "ini", ".conf": "text", ".txt": "text",
    ".md": "markdown", ".yml": "yaml", ".yaml": "yaml", ".toml": "toml",
}
BY_MAGIC = {"html": "html", "javascript": "javascript", "js": "javascript", "bash": "bash", "sh": "bash"}


def language_of(source: str) -> str | None:
    """The language of a cell that starts with a cell magic, or None when it does not."""
    if not source.startswith("%%"):
        return None
    magic, *arguments = source.splitlines()[0][2:].split()
    if magic in {"writefile", "file"}:
        files = [a for a in arguments if not a.startswith("-")]
        return BY_SUFFIX.get(PurePosixPath(files[-1]).suffix.lower(), "text") if files else "text"
    return BY_MAGIC.get(magic)


class CellMagics(SphinxTransform):
    default_priority = 500

    def apply(self, **kwargs: object) -> None:
        for block in self.document.findall(nodes.literal_block):
            if block.get("language") in {"ipython3", "ipython", "python"}:
                language = language_of(block.astext())
                if language:
                    block["language"] = language


def setup(app: Sphinx) -> None:
    app.add_transform(CellMagics)
