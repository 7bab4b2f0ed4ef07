"""The tree is the architecture (CONTRIBUTING.md, "Layout"): imports only point down the layers,
and no module of labtools imports a private name (one starting with ``_``) from another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "labtools"

# Lower layers never import higher ones; a room may import itself and anything below it.
LAYERS: list[set[str]] = [
    {"runtime", "measure", "httphead"},
    {"handmade", "events", "polling", "cluster"},
    {"apps"},
    {"serving", "cli", "__main__", "processes", "deploy"},
    {"sim"},
    {"plots", "exercises"},
    {"__init__"},
]
LAYER_OF = {room: level for level, rooms in enumerate(LAYERS) for room in rooms}


def room_of(module: str) -> str:
    """``labtools.sim.crowd`` -> ``sim``; ``labtools`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(absolute module, imported names, line)`` for every labtools import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "labtools":
                continue
            names = [alias.name for alias in node.names]
            # ``from . import runtime`` imports a module: count it as importing that room.
            if target == "labtools":
                for name in names:
                    found.append((f"labtools.{name}", [], node.lineno))
            else:
                found.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "labtools":
                    found.append((alias.name, [], node.lineno))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_room_has_a_layer() -> None:
    rooms = {room_of(module_name(p)) for p in SOURCES}
    assert rooms <= set(LAYER_OF), f"rooms with no layer in this test and CONTRIBUTING.md: {rooms - set(LAYER_OF)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_and_are_public(path: Path) -> None:
    mine = room_of(module_name(path))
    for target, names, line in imports(path):
        theirs = room_of(target)
        assert LAYER_OF[theirs] <= LAYER_OF[mine], (
            f"{path.name}:{line}: {mine} (layer {LAYER_OF[mine]}) imports {target} (layer {LAYER_OF[theirs]})"
        )
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{path.name}:{line}: imports private {private} from {target}"
