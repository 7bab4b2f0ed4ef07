"""The tree is the architecture (CONTRIBUTING.md, "Layout"): imports only point down the layers,
no module of labtools imports a private name (one starting with ``_``) from another, and no two
modules import each other, even through others (``if TYPE_CHECKING:`` and function-local imports
count: a cycle hidden there is still two modules that cannot be read one without the other)."""

from __future__ import annotations

import ast
from itertools import pairwise
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "labtools"

# Lower layers never import higher ones; a room may import itself and anything below it.
LAYERS: list[set[str]] = [
    {"runtime", "measure", "httphead"},
    {"handmade", "events"},
    {"cluster"},
    {"polling"},
    {"apps"},
    {"serving", "cli", "__main__", "processes", "deploy"},
    {"sim"},
    {"experiments"},
    {"plots", "exercises", "watch"},
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
MODULES = {module_name(p): p for p in SOURCES}


def module_graph() -> dict[str, dict[str, str]]:
    """Module -> {module it imports: ``file:line`` of that import}, for every labtools module.

    ``from x import y`` imports the module ``x.y`` when there is one, else the module ``x``;
    ``import x.y`` imports ``x.y``. The packages above the target, which Python initialises on
    the way, are not edges: every submodule would otherwise "cycle" through its own package.
    """
    graph: dict[str, dict[str, str]] = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(module, {})
        for target, names, line in imports(path):
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            targets = submodules if names and len(submodules) == len(names) else [*submodules, target]
            for t in targets:
                if t in MODULES and t != module:
                    edges.setdefault(t, f"{path.relative_to(PACKAGE)}:{line}")
    return graph


def find_cycles(graph: dict[str, dict[str, str]] | dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of ``graph`` that has one, as ``[a, b, ..., a]``.

    Tarjan's algorithm finds the components; the shortest cycle through the component's smallest
    node (breadth-first, inside the component) names it. Sorted, so the message is stable.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)

    cycles = []
    for component in components:
        start = min(component)
        if len(component) == 1 and start not in graph.get(start, ()):
            continue
        # Breadth-first from start back to start, staying inside the component.
        came_from: dict[str, str] = {}
        frontier = [start]
        while start not in came_from:
            following = []
            for node in frontier:
                for nxt in sorted(graph.get(node, ())):
                    if nxt in component and nxt not in came_from:
                        came_from[nxt] = node
                        following.append(nxt)
            frontier = following
        path = [start]
        node = came_from[start]
        while node != start:
            path.append(node)
            node = came_from[node]
        path.append(start)
        cycles.append(path[::-1])
    return sorted(cycles)


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


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}, []),
        ({"a": {"a"}}, [["a", "a"]]),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]),
        ({"top": {"a"}, "a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}, [["a", "b", "c", "a"]]),
        # Two components, each named by its shortest cycle through its smallest module.
        (
            {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "x": {"y"}, "y": {"x", "a"}},
            [["a", "b", "a"], ["x", "y", "x"]],
        ),
        # An edge to a module outside the graph is not a cycle.
        ({"a": {"elsewhere"}}, []),
    ],
)
def test_find_cycles(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert find_cycles(graph) == expected


def test_module_graph_sees_submodules_and_hidden_imports() -> None:
    graph = module_graph()
    # ``from . import handshake`` is an import of the submodule, not of the package.
    assert "labtools.handmade.handshake" in graph["labtools.handmade.connection"]
    assert "labtools.handmade" not in graph["labtools.handmade.connection"]
    # The package's own ``from .server import EventServer`` is an edge to the module.
    assert "labtools.events.server" in graph["labtools.events"]


def test_no_import_cycles() -> None:
    graph = module_graph()
    cycles = [
        " -> ".join(f"{a} ({graph[a][b]})" for a, b in pairwise(cycle)) + f" -> {cycle[-1]}"
        for cycle in find_cycles(graph)
    ]
    assert not cycles, "modules that import each other (each arrow: the import's file:line):\n" + "\n".join(cycles)


# ----- an app is its state and its handlers (issue 17) ------------------------------------------

#: Words of how a server reaches other nodes: the server's business, never an app's.
LOG_WORDS = {"log", "logs", "replica", "replicated", "broker", "stream", "redis", "adapter"}
#: The chat also tells its other nodes who is online (its cluster presence, on ``server.bus``);
#: the other apps do not even name a bus or a node.
NODE_WORDS = LOG_WORDS | {"bus", "node", "nodes"}
APP_SOURCES = [*sorted((PACKAGE / "apps").glob("*.py")), PACKAGE / "polling" / "server.py"]
CHAT_SOURCES = sorted((PACKAGE / "apps" / "chat").glob("*.py"))


def node_words(source: str, words: set[str] = NODE_WORDS) -> set[str]:
    """The identifiers of ``source`` (names, attributes, arguments, imports) that are, or have a
    ``_``-separated part that is, one of ``words``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.arg):
            names = [node.arg]
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            names = [alias.name for alias in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and
                                                             node.module else [])
        for name in names:
            parts = {part.lower() for piece in name.split(".") for part in piece.split("_")}
            if parts & words:
                found.add(name)
    return found


def test_the_word_finder_sees_node_words_and_not_their_neighbours() -> None:
    assert node_words("from ..cluster.replica import Replica\nlog = make_log(broker)") == {
        "cluster.replica", "Replica", "log", "make_log", "broker"}
    assert node_words("def login(catalog, blog_post): return catalog.logo") == set()


@pytest.mark.parametrize("path", APP_SOURCES + CHAT_SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_lesson_app_names_no_log_replica_broker_or_stream(path: Path) -> None:
    """The lesson apps read like the seed's servers: state and handlers. Scale-out is the server's
    adapter (``events.adapter``, ``cluster.adapter``), attached by ``serving``."""
    words = LOG_WORDS if path in CHAT_SOURCES else NODE_WORDS
    assert node_words(path.read_text(), words) == set(), f"{path.name} names how it runs on several nodes"
