"""Peer benchmarks: the course's servers against Socket.IO peers, one load generator, one run.

    python benchmarks/peers/run.py            # the full run (about 5 minutes on 2 cores)
    python benchmarks/peers/run.py --quick    # a few seconds per server: a CI smoke pass
    python benchmarks/peers/run.py --course-before --repeat 3   # + the course as of HEAD; 3 runs each
    python benchmarks/peers/run.py --only broadcast --clients 10000 --delivery-rates 50000 --broadcast-seconds 4

Installs the peers' dependencies when missing (``npm ci`` into benchmarks/peers/node_modules,
a venv benchmarks/peers/.venv-peers from requirements-peers.txt), starts each server in a
process of its own on a free port, runs ``loadgen.mjs`` (Node.js) against it, stops it, checks
the chat's database (stored rows == acknowledged messages, no duplicates), and prints one
Markdown table per workload with ratios against the course's server. See README.md here.

The course's servers are ``python -m labtools serve``, which runs on uvloop when it is installed
(``LABTOOLS_LOOP``, labtools/cli.py). ``--servers course,asyncio`` also runs them on asyncio's
loop, listed as ``course-asyncio``, with a table uvloop / asyncio (see ``course_servers``).

``--course-before`` also runs the course's servers (minichat and chat) as of a git revision
(``--before REV``, HEAD by default: the code without the working tree's uncommitted change),
which ``git archive`` extracts into the run's temporary folder, back to back with this working
tree's, and prints a table current / before. ``--repeat N`` runs every server N times,
interleaved (A B C, A B C, ...; the course's current and before swap places in even runs), and
prints the median of each figure with its spread (min–max). ``--json FILE`` writes every run's
raw result. ``--clients``, ``--delivery-rates`` and ``--broadcast-seconds`` change the broadcast's
size: 10,000 clients at 50,000 deliveries/s for 4 s are 20 broadcasts at 5/s to all of them.

Exits non-zero when node or npm is missing, a server does not start, the load generator fails,
an exactly-once check fails, or messages are lost (closed loop, the lowest open-loop rate, and,
with --quick, the broadcast).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV = HERE / ".venv-peers"
REQUIREMENTS = HERE / "requirements-peers.txt"
P99_GOAL_MS = 100.0
#: The variable that chooses a course server's event loop (labtools/cli.py): asyncio or uvloop.
LOOP_ENV = "LABTOOLS_LOOP"
#: The loop ``python -m labtools serve`` of this working tree runs on when LOOP_ENV is unset.
DEFAULT_LOOP = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
#: The roles of the course's own servers, run back to back (``in_turn``).
COURSE_ROLES = ("current", "asyncio", "before")

FULL = {
    "closedPairs": [50, 100, 200], "openPairs": 200, "openRates": [1000, 2000, 5000, 10000], "chatSeconds": 8,
    "clients": 1000, "deliveryRates": [5000, 10000], "broadcastSeconds": 5, "warmupSeconds": 1.0,
}
QUICK = {
    "closedPairs": [10], "openPairs": 10, "openRates": [100, 200], "chatSeconds": 2,
    "clients": 100, "deliveryRates": [1000, 2000], "broadcastSeconds": 2, "warmupSeconds": 0.5,
}

CHILDREN: list[subprocess.Popen] = []


# ----- set-up ------------------------------------------------------------------------------------------


def need_node() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(name for name, path in (("node", node), ("npm", npm)) if path is None)
        sys.exit(f"peers benchmark: {missing} not found on PATH; install Node.js 20 or newer (with npm) to run it")
    return node, npm


def run_checked(command: list[str], **kwargs: Any) -> None:
    print(f"$ {' '.join(command)}", file=sys.stderr, flush=True)
    subprocess.run(command, check=True, **kwargs)


def install_node_modules(node: str, npm: str) -> None:
    """``npm ci`` when node_modules is missing or older than the lock; native modules built locally if needed."""
    stamp = HERE / "node_modules" / ".package-lock.json"
    lock = HERE / "package-lock.json"
    env = dict(os.environ)
    if Path("/usr/include/node/common.gypi").exists():
        env.setdefault("npm_config_nodedir", "/usr")  # build from the installed headers, no download
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        run_checked([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, env=env)
    probe = [node, "-e", "require('better-sqlite3'); require('sqlite3'); require('socket.io'); require('ws')"]
    if subprocess.run(probe, cwd=HERE, capture_output=True).returncode != 0:
        run_checked([npm, "rebuild", "better-sqlite3", "sqlite3"], cwd=HERE, env=env)
        subprocess.run(probe, cwd=HERE, check=True)


def install_venv() -> Path:
    """The Python peer's own venv (never the course's), rebuilt when requirements-peers.txt changes."""
    python = VENV / "bin" / "python"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = VENV / ".requirements.sha256"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    if not python.exists():
        run_checked([sys.executable, "-m", "venv", str(VENV)])
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run_checked([*pip, "-r", str(REQUIREMENTS)])
    stamp.write_text(digest + "\n")
    return python


def git(*arguments: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *arguments], check=True, capture_output=True,
                          text=True).stdout.strip()


def resolve_before(rev: str) -> tuple[str, str]:
    """(the commit ``rev`` names, a label such as ``HEAD 0c9c9c6``); exits when it names no commit.

    Done before anything is installed or run: a mistyped revision costs nothing."""
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        short = git("rev-parse", "--short", commit)
    except (subprocess.CalledProcessError, FileNotFoundError) as error:
        detail = (getattr(error, "stderr", None) or "").strip()
        where = f"peers benchmark: --before {rev}: not a commit of {ROOT}"
        raise SystemExit(where + (f": {detail}" if detail else "")) from error
    return commit, short if rev == short else f"{rev} {short}"


def extract(commit: str, folder: Path) -> Path:
    """The course's tree at ``commit``, extracted with ``git archive`` into ``folder``.

    Reads the repository's objects only (no worktree, no index, no ref is touched), so it works
    while the working tree is being edited; the extracted tree lives in the run's temporary folder.
    """
    root = folder / f"before-{commit[:12]}"
    root.mkdir()
    print(f"$ git archive {commit} | tar -x -C {root}", file=sys.stderr, flush=True)
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", commit], stdout=subprocess.PIPE)
    assert archive.stdout is not None
    try:
        subprocess.run(["tar", "-x", "-C", str(root)], stdin=archive.stdout, check=True)
    finally:
        archive.stdout.close()
        code = archive.wait()
    if code != 0:
        raise SystemExit(f"peers benchmark: git archive {commit} failed (exit code {code})")
    return root


def course_env(root: Path, cache: Path) -> dict[str, str]:
    """The environment of a course server run from ``root``: that tree first on PYTHONPATH, and the
    run's bytecode cache (``precompile``) as the only place Python reads and writes bytecode."""
    return dict(os.environ, PYTHONPYCACHEPREFIX=str(cache),
                PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))


def precompile(roots: list[Path], folder: Path) -> Path:
    """Fill one bytecode cache in the run's folder, which the course's servers then use
    (PYTHONPYCACHEPREFIX), so that the current and the before server start alike and nothing
    is written into the trees themselves.

    With a cache prefix Python looks for *every* module's bytecode there, the standard library's
    and the venv's included; a server that found it empty would compile some 360 modules at start
    (a second of CPU, a few MiB more RSS before the first client) whenever PYTHONDONTWRITEBYTECODE
    is set. So: every module of each tree's labtools (``compileall``), then what its servers import
    (``labtools.cli``, the apps minichat and chat, and uvloop when installed, imported once with
    writing allowed)."""
    cache = folder / "pycache"
    warm = ("import importlib, labtools.cli\n"
            "for app in ('minichat', 'chat'):\n"
            "    importlib.import_module('labtools.apps.' + app)\n"
            "try:\n    import uvloop\nexcept ImportError:\n    pass\n")
    for root in roots:
        env = course_env(root, cache)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "labtools")], env=env, check=False,
                       stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, "-c", warm], cwd=HERE, env=env, check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)  # a tree that does not import: its server says so at start
    return cache


def check_course_root(root: Path) -> None:
    """A server started with ``root`` first on PYTHONPATH must import labtools from there (not from
    the course's editable install): otherwise 'before' would silently be the current code."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    found = subprocess.run([sys.executable, "-c", "import labtools; print(labtools.__file__)"], cwd=HERE, env=env,
                           capture_output=True, text=True)
    if found.returncode != 0:
        raise SystemExit(f"peers benchmark: labtools does not import from {root}:\n{found.stderr.strip()[-800:]}")
    path = Path(found.stdout.strip()).resolve()
    if not path.is_relative_to(root.resolve()):
        raise SystemExit(f"peers benchmark: a server run from {root} would import labtools from {path}")


# ----- processes ---------------------------------------------------------------------------------------


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    name: str, command: list[str], timeout: float = 30.0, root: Path = ROOT, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """Start ``command`` in its own session; wait for the ``http://…`` line it prints once listening.

    ``LABTOOLS_LOOP`` is never inherited from this process: a course server runs on its code's own
    default loop unless its ``env`` says otherwise (``course_servers``)."""
    inherited = {key: value for key, value in os.environ.items() if key != LOOP_ENV}
    env = dict(inherited, **(env or {}),
               PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen(
        command, cwd=HERE, stdout=subprocess.PIPE, text=True, env=env,
        preexec_fn=_raise_fd_limit, start_new_session=True,
    )
    CHILDREN.append(process)
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(timeout=0.2):
            line = process.stdout.readline().strip()
            if line.startswith("http://"):
                return process, line
            if line == "" and process.poll() is not None:
                break
        elif process.poll() is not None:
            break
    stop(process)
    raise RuntimeError(f"{name}: the server did not start (exit code {process.returncode})")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL after 10 s."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if process in CHILDREN:
        CHILDREN.remove(process)


def kill_children() -> None:
    for process in list(CHILDREN):
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        CHILDREN.remove(process)


def loadgen(node: str, config: dict[str, Any], timeout: float) -> dict[str, Any]:
    process = subprocess.Popen(
        [node, str(HERE / "loadgen.mjs"), json.dumps(config)], cwd=HERE, stdout=subprocess.PIPE, text=True,
        preexec_fn=_raise_fd_limit, start_new_session=True,
    )
    CHILDREN.append(process)
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        stop(process)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"the load generator printed no result (exit code {process.returncode})"}
    return json.loads(lines[-1])


# ----- the servers ---------------------------------------------------------------------------------------


def course_servers(workload: str, folder: Path, before: tuple[Path, str] | None) -> list[dict[str, Any]]:
    """The course's server for ``workload`` (minichat or chat) from this working tree, on its
    default loop (uvloop when installed: ``python -m labtools serve``); the same server on
    asyncio's loop (``course-asyncio``, ``LABTOOLS_LOOP=asyncio``), which runs only when a word of
    ``--servers`` names it (``asyncio``, ``course-asyncio``: ``chosen``); and, with ``before`` =
    (root, label) (``--course-before``), the same server from that other tree, on whatever loop
    that tree's own code runs (an older tree, which knows no ``LABTOOLS_LOOP``: asyncio's). All
    run back to back (``in_turn``): a change, or the loop, is measured against what it replaces in
    one run."""
    app = "minichat" if workload == "broadcast" else "chat"
    current = {"name": f"course (labtools {app})", "role": "current", "proto": "course", "loop": DEFAULT_LOOP,
               "command": [sys.executable, "-m", "labtools", "serve", app, "--port", "{port}"],
               "env": {"PYTHONPYCACHEPREFIX": str(folder / "pycache")}}  # see precompile()
    if workload == "chat":
        current["command"] += ["--db", "{db}"]
        current["db"] = folder / "course.db"
    on_asyncio = {**current, "name": f"course-asyncio (labtools {app})", "role": "asyncio", "loop": "asyncio",
                  "opt_in": "asyncio", "env": {**current["env"], LOOP_ENV: "asyncio"}}
    if workload == "chat":
        on_asyncio["db"] = folder / "course-asyncio.db"
    if before is None:
        return [current, on_asyncio]
    root, label = before
    earlier = {key: value for key, value in current.items() if key != "loop"}
    earlier.update(name=f"course before ({label})", role="before", root=root)
    if workload == "chat":
        earlier["db"] = folder / "before.db"
    return [current, on_asyncio, earlier]


def chosen(server: dict[str, Any], words: list[str]) -> bool:
    """Whether ``--servers WORD,...`` runs ``server``: every server when no word is given, else the
    servers whose name contains a word (case-insensitive). A server marked ``opt_in`` (the course
    on asyncio's loop; the trivial chat) runs only when a word that contains its mark names it
    (``asyncio``, ``course-asyncio``; ``trivial``), so that ``course`` keeps meaning the course's
    current (and before) server, and a run without ``--servers`` the course and its peers."""
    name = server["name"].lower()
    mark = server.get("opt_in")
    if mark is not None:
        return any(mark in word and word in name for word in words)
    return not words or any(word in name for word in words)


def servers(
    workload: str, node: str, peer_python: Path, folder: Path, before: tuple[Path, str] | None = None
) -> list[dict[str, Any]]:
    """Each server under test: its name, protocol, command, and (chat) its SQLite file.

    ``before``: (root, label) of another tree of the course (``--course-before``), whose server
    for the workload runs too (``course_servers``).
    """
    if workload == "broadcast":
        return [
            *course_servers(workload, folder, before),
            {"name": "Node ws (raw)", "proto": "course",
             "command": [node, "server_ws.mjs", "--port", "{port}"]},
            {"name": "bare websockets broadcast()", "proto": "course",
             "command": [sys.executable, "server_websockets.py", "--port", "{port}"]},
            {"name": "Node Socket.IO 4", "proto": "sio",
             "command": [node, "server.mjs", "minichat", "--port", "{port}"]},
            {"name": "python-socketio (aiohttp)", "proto": "sio",
             "command": [str(peer_python), "server_sio.py", "--port", "{port}"]},
        ]
    return [
        *course_servers(workload, folder, before),
        {"name": "Node Socket.IO 4 + sqlite3", "proto": "sio", "db": folder / "sqlite3.db",
         "command": [node, "server.mjs", "chat", "--driver", "sqlite3", "--port", "{port}", "--db", "{db}"]},
        {"name": "Node Socket.IO 4 + better-sqlite3", "proto": "sio", "db": folder / "better.db",
         "command": [node, "server.mjs", "chat", "--driver", "better-sqlite3", "--port", "{port}", "--db", "{db}"]},
        {"name": "python-socketio + aiosqlite", "proto": "sio", "db": folder / "aiosqlite.db",
         "command": [str(peer_python), "server_sio.py", "--port", "{port}", "--db", "{db}"]},
        # The load generator's ceiling (no storage, no Socket.IO): runs only when named, 'trivial'.
        {"name": "trivial (Node ws, no storage)", "proto": "course", "opt_in": "trivial",
         "command": [node, "server_trivial.mjs", "--port", "{port}"]},
    ]


def in_turn(plan: list[dict[str, Any]], repetition: int) -> list[dict[str, Any]]:
    """The servers in the order repetition ``repetition`` runs them: the plan's order, except that
    the course's own servers (current, course-asyncio, before: back to back) run in reverse order
    in even repetitions (two of them swap places), so that none is always the one that runs after
    the others (after a warmer machine, a fuller page cache)."""
    order = list(plan)
    places = [i for i, server in enumerate(order) if server.get("role") in COURSE_ROLES]
    if repetition % 2 == 0 and len(places) > 1:
        for i, server in zip(places, reversed([order[i] for i in places]), strict=True):
            order[i] = server
    return order


def verify_db(db: Path, phases: list[dict[str, Any]]) -> None:
    """Per phase: rows stored with the phase's clientIds vs acknowledged messages, and duplicates."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        for phase in phases:
            rows, bodies, keys = connection.execute(
                "SELECT COUNT(*), COUNT(DISTINCT body), COUNT(DISTINCT sender || '/' || client_id)"
                " FROM messages WHERE client_id LIKE ?", (phase["tag"] + "-%",)
            ).fetchone()
            phase["storedRows"] = rows
            phase["storedDuplicates"] = rows - min(bodies, keys)
            answered = phase["acked"] + sum(phase["errors"].values())
            if phase["storedDuplicates"]:
                phase["exactlyOnce"] = False
            elif answered == phase["sent"] and not phase["errors"]:
                phase["exactlyOnce"] = rows == phase["acked"]  # every message answered: strict
            else:  # timeouts or errors: what was stored may include unanswered messages
                phase["exactlyOnce"] = phase["acked"] <= rows <= phase["sent"]
    connection.close()


def run_server(
    server: dict[str, Any], workload: str, node: str, size: dict[str, Any], tag: str, repetition: int = 1
) -> dict[str, Any]:
    """One run of one server: start it, load it, stop it; a fresh database per repetition."""
    port = free_port()
    db = server.get("db")
    if db is not None and repetition > 1:
        db = db.with_name(f"{db.stem}-{repetition}{db.suffix}")
    command = [part.format(port=port, db=db or "") for part in server["command"]]
    started = time.monotonic()
    print(f"\n## {workload}: {server['name']}" + (f" (run {repetition})" if repetition > 1 else ""),
          file=sys.stderr, flush=True)
    process, url = start_server(server["name"], command, root=server.get("root", ROOT), env=server.get("env"))
    config: dict[str, Any] = {
        "name": server["name"], "proto": server["proto"], "url": url, "pid": process.pid,
        "clkTck": os.sysconf("SC_CLK_TCK"), "runTag": tag, "workload": workload, "p99GoalMs": P99_GOAL_MS,
        "senders": 10, "watchdogS": 1800,
    }
    if workload == "chat":
        config.update(closedPairs=size["closedPairs"], openPairs=size["openPairs"], openRates=size["openRates"],
                      seconds=size["chatSeconds"], warmupSeconds=size["warmupSeconds"])
    else:
        config.update(clients=size["clients"], deliveryRates=size["deliveryRates"], seconds=size["broadcastSeconds"])
    try:
        result = loadgen(node, config, timeout=1800)
    finally:
        stop(process)
    result["server"] = server["name"]
    result["role"] = server.get("role", "peer")
    result["repetition"] = repetition
    if "loop" in server:  # the course's current and asyncio servers; a before tree's is its own
        result["loop"] = server["loop"]
    result["wallS"] = round(time.monotonic() - started, 1)
    if workload == "chat" and "error" not in result and db is None:  # the trivial server stores nothing
        for phase in result["closed"] + result["open"]:
            phase.update(storedRows=None, storedDuplicates=0, exactlyOnce=None)
    elif workload == "chat" and "error" not in result:
        verify_db(db, result["closed"] + result["open"])
        for suffix in ("", "-wal", "-shm"):  # checked: a repetition's database is not needed any more
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    return result


# ----- checks and tables -----------------------------------------------------------------------------------


def failures_of(result: dict[str, Any], quick: bool) -> list[str]:
    name = result["server"]
    if "error" in result:
        message = result["error"].splitlines()[0]
        return [message if message.startswith(name) else f"{name}: {message}"]
    found = []
    if result.get("droppedConnections"):
        found.append(f"{name}: {result['droppedConnections']} connections closed by the server")
    if result["workload"] == "broadcast":
        for step in result["steps"]:
            if quick and (step["lost"] or step["duplicated"]):
                found.append(f"{name}: broadcast {step['targetDeliveriesPerS']}/s lost {step['lost']}, "
                             f"duplicated {step['duplicated']}")
        return found
    for phase in result["closed"] + result["open"]:
        if phase["exactlyOnce"] is False:  # None: a server without a database (nothing to check)
            found.append(f"{name}: {phase['tag']}: {phase['storedRows']} rows stored "
                         f"({phase['storedDuplicates']} duplicates) for {phase['acked']} acknowledged")
        if phase["duplicateDeliveries"]:
            found.append(f"{name}: {phase['tag']}: {phase['duplicateDeliveries']} duplicate deliveries")
    for phase in result["closed"]:
        lost = phase["unacked"] + sum(phase["errors"].values()) + phase["missingDeliveries"]
        if lost:
            found.append(f"{name}: closed P={phase['pairs']}: {lost} lost or failed {phase['errors']}")
    first = result["open"][0] if result["open"] else None
    if first is not None and first["lost"]:
        found.append(f"{name}: open R={first['rate']}: {first['lost']} lost {first['errors']}")
    return found


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:,.{digits}f}"
    return str(value)


def ratio(value: Any, reference: Any) -> str:
    if not isinstance(value, (int, float)) or not isinstance(reference, (int, float)) or not reference:
        return "–"
    return f"{value / reference:.2f}×"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# With --repeat N every server has N results: a cell is the median of the N figures, then their spread
# (min–max), and "x vs course" is the median of the per-run ratios (each run's server against the same
# run's course, minutes apart: the pair shares what the machine did then). One run prints as before.

Runs = dict[int, dict[str, Any]]  # repetition -> the result of one run of one server
Figure = Callable[[dict[str, Any]], Any]


def figure(*path: str | int) -> Figure:
    """The figure at ``path`` in a result: figure("steps", 0, "p99")(r) is r["steps"][0]["p99"]."""
    def get(result: dict[str, Any]) -> Any:
        for key in path:
            result = result[key]
        return result
    return get


def grouped(results: list[dict[str, Any]]) -> list[tuple[str, str, Runs]]:
    """(server, role, its runs without error) per server with at least one, in the order run; a
    server that failed in some runs is named with how many it has ("2 of 3 runs")."""
    found: dict[str, tuple[str, Runs]] = {}
    for r in results:
        _, runs = found.setdefault(r["server"], (r.get("role", "peer"), {}))
        if "error" not in r:
            runs[r.get("repetition", 1)] = r
    planned = max((r.get("repetition", 1) for r in results), default=1)
    return [(name if len(runs) == planned else f"{name} ({len(runs)} of {planned} runs)", role, runs)
            for name, (role, runs) in found.items() if runs]


def runs_of(groups: list[tuple[str, str, Runs]], role: str) -> Runs | None:
    return next((runs for _, r, runs in groups if r == role), None)


def numbers(runs: Runs, get: Figure) -> list[float]:
    values = (get(r) for r in runs.values())
    return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def cell(runs: Runs, get: Figure, digits: int = 1) -> str:
    """The median of a figure over the runs, with its spread (min–max) when there are several."""
    values = numbers(runs, get)
    low, high = fmt(min(values, default=None), digits), fmt(max(values, default=None), digits)
    return fmt(median(values), digits) + ("" if low == high else f" ({low}–{high})")


def paired(runs: Runs, reference: Runs | None, get: Figure) -> str:
    """The median of the per-run ratios run / reference (same repetition), with their spread."""
    ratios = []
    for repetition, r in runs.items():
        ref = reference.get(repetition) if reference else None
        if ref is not None:
            a, b = get(r), get(ref)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
                ratios.append(a / b)
    if not ratios:
        return "–"
    low, high = f"{min(ratios):.2f}", f"{max(ratios):.2f}"
    return f"{statistics.median(ratios):.2f}×" + ("" if low == high else f" ({low}–{high})")


def best_open(result: dict[str, Any]) -> dict[str, Any]:
    """The open-loop step with the highest sustained rate ({} when none was sustained)."""
    good = [p for p in result["open"] if p["sustained"]]
    return max(good, key=lambda p: p["rate"]) if good else {}


def chat_tables(results: list[dict[str, Any]]) -> str:
    groups = grouped(results)
    if not groups:
        return "(no chat results)"
    course = runs_of(groups, "current")
    first = next(iter(groups[0][2].values()))
    several = any(len(runs) > 1 for _, _, runs in groups)
    out = []
    for index, phase in enumerate(first["closed"]):
        rows = []
        for name, _, runs in groups:
            def at(key: str, index: int = index) -> Figure:
                return figure("closed", index, key)
            exact = all(r["closed"][index]["exactlyOnce"] is not False for r in runs.values())
            stored, acked = numbers(runs, at("storedRows")), sum(numbers(runs, at("acked")))
            rows.append([
                name, cell(runs, at("msgPerS"), 0), paired(runs, course, at("msgPerS")),
                cell(runs, at("ackP50")), cell(runs, at("ackP99")), paired(runs, course, at("ackP99")),
                cell(runs, at("deliveryP99")), cell(runs, at("serverCpuUsPerMsg")),
                paired(runs, course, at("serverCpuUsPerMsg")), cell(runs, at("serverCpuPct"), 0),
                cell(runs, at("loadgenCpuPct"), 0), cell(runs, at("rateLimitedRetries"), 0),
                (f"{sum(stored):,} / {acked:,}" if stored else f"no database / {acked:,}") + ("" if exact else " ✗"),
            ])
        pairs = phase["pairs"]
        out.append(f"### Private chat, closed loop, P={pairs} pairs ({2 * pairs} users)\n\n" + table(
            ["server", "msg/s", "x vs course", "ack p50 ms", "ack p99 ms", "x vs course", "delivery p99 ms",
             "server CPU µs/msg", "x vs course", "server CPU %", "loadgen CPU %", "rate-limited retries",
             "rows / acked" + (" (all runs)" if several else "")], rows))

    def best_rate(r: dict[str, Any]) -> int:
        return best_open(r).get("rate", 0)

    def there(key: str) -> Figure:
        return lambda r: best_open(r).get(key)

    rows = []
    for name, _, runs in groups:
        steps = " · ".join(
            (f"#{repetition}: " if several else "") + "; ".join(
                f"{p['rate']:,}: p99 {fmt(p['ackP99'])} ms, lost {p['lost']}" + ("" if p["sustained"] else " ✗")
                for p in r["open"])
            for repetition, r in runs.items()
        )
        none = not any(best_open(r) for r in runs.values())
        rows.append([
            name, "none" if none else cell(runs, best_rate, 0), "–" if none else paired(runs, course, best_rate),
            cell(runs, there("ackP99")), cell(runs, there("serverCpuUsPerMsg")), cell(runs, there("loadgenCpuPct"), 0),
            steps,
        ])
    pairs = first["open"][0]["pairs"] if first["open"] else "?"
    out.append(f"### Private chat, open loop ({pairs} pairs): highest rate with p99 ≤ {P99_GOAL_MS:g} ms and "
               "nothing lost" + (" (none counts as 0 in the median)" if several else "") + "\n\n" + table(
                   ["server", "max msg/s", "x vs course", "ack p99 ms there", "server CPU µs/msg there",
                    "loadgen CPU % there", "steps (msg/s: ack p99, lost)"], rows))
    setup = [[name, fmt(first["users"], 0), cell(runs, figure("signUpS")), cell(runs, figure("connectS")),
              cell(runs, figure("wallS"))] for name, _, runs in groups]
    out.append("### Chat set-up (not measured above)\n\n" + table(
        ["server", "users", "sign-up s", "connect s", "whole server run s"], setup))
    return "\n\n".join(out)


def broadcast_tables(results: list[dict[str, Any]]) -> str:
    groups = grouped(results)
    if not groups:
        return "(no broadcast results)"
    course = runs_of(groups, "current")
    first = next(iter(groups[0][2].values()))
    out = []
    clients = first["clients"]
    for index, step0 in enumerate(first["steps"]):
        rows = []
        for name, _, runs in groups:
            def at(key: str, index: int = index) -> Figure:
                return figure("steps", index, key)
            rows.append([
                name, cell(runs, at("deliveriesPerS"), 0), cell(runs, at("p50")), cell(runs, at("p99")),
                paired(runs, course, at("p99")), cell(runs, at("serverCpuUsPerDelivery"), 2),
                paired(runs, course, at("serverCpuUsPerDelivery")),
                cell(runs, at("serverCpuPct"), 0), cell(runs, at("loadgenCpuPct"), 0),
                cell(runs, at("loadgenCpuUsPerDelivery"), 2), cell(runs, at("lost"), 0),
            ])
        out.append(
            f"### Broadcast, {clients:,} clients, target {step0['targetDeliveriesPerS']:,} deliveries/s "
            f"({step0['messagesPerS']:g} msg/s from {first['senders']} senders)\n\n" + table(
                ["server", "deliveries/s", "p50 ms", "p99 ms", "x vs course", "server CPU µs/delivery",
                 "x vs course", "server CPU %", "loadgen CPU %", "loadgen CPU µs/delivery", "lost"], rows))
    rows = [[name, cell(runs, figure("rssPerConnKiB")), paired(runs, course, figure("rssPerConnKiB")),
             cell(runs, lambda r: r["rssIdleKiB"] / 1024), cell(runs, lambda r: r["rssConnectedKiB"] / 1024),
             cell(runs, figure("connectS"))] for name, _, runs in groups]
    out.append(f"### Memory: RSS per idle connection ({clients:,} clients)\n\n" + table(
        ["server", "KiB per idle connection", "x vs course", "RSS, none connected (MiB)", "RSS, all connected (MiB)",
         "connect s"], rows))
    return "\n\n".join(out)


def before_table(results: dict[str, list[dict[str, Any]]], label: str) -> str:
    """The course against itself before the change (``comparison_table``)."""
    return comparison_table(
        results, "before", ("current", "before"), f"The course against itself before the change ({label})",
        ("course (current)", f"course before ({label})"),
        "(no comparison with the course before: the current or the before server has no result)")


def loop_table(results: dict[str, list[dict[str, Any]]]) -> str:
    """The course on its default loop (uvloop when installed) against itself on asyncio's."""
    loop = next((r["loop"] for runs in results.values() for r in runs if r.get("role") == "current" and "loop" in r),
                DEFAULT_LOOP)
    return comparison_table(
        results, "asyncio", (loop, "asyncio"), f"The course on {loop}'s event loop against asyncio's",
        (f"course ({loop})", "course-asyncio"),
        "(no comparison of the loops: the course or course-asyncio has no result)")


def comparison_table(results: dict[str, list[dict[str, Any]]], role: str, names: tuple[str, str], title: str,
                     columns: tuple[str, str], missing: str) -> str:
    """The course's current server against its server of ``role`` (before, asyncio), per figure:
    the medians (spread) of both (``columns``: their headers), the ratio of the medians (``names``:
    "current / before"), the median of the per-run ratios (spread), and the load generator's CPU
    (median) in both servers' runs."""
    rows = []
    of = f"{names[0]} / {names[1]}"

    def compare(what: str, current: Runs, other: Runs, get: Figure, digits: int, loadgen: Figure | None) -> None:
        of_medians = ratio(median(numbers(current, get)), median(numbers(other, get)))
        loadgen_cpu = "–" if loadgen is None else (
            f"{fmt(median(numbers(current, loadgen)), 0)} / {fmt(median(numbers(other, loadgen)), 0)}")
        rows.append([what, cell(current, get, digits), cell(other, get, digits), of_medians,
                     paired(current, other, get), loadgen_cpu])

    for workload in ("broadcast", "chat"):
        groups = grouped(results.get(workload, []))
        current, other = runs_of(groups, "current"), runs_of(groups, role)
        if not current or not other:
            continue
        first = next(iter(current.values()))
        if workload == "broadcast":
            for index, step in enumerate(first["steps"]):
                compare(f"broadcast {step['targetDeliveriesPerS']:,}/s: server CPU µs/delivery", current, other,
                        figure("steps", index, "serverCpuUsPerDelivery"), 2, figure("steps", index, "loadgenCpuPct"))
            compare(f"broadcast: RSS KiB per idle connection ({first['clients']:,})", current, other,
                    figure("rssPerConnKiB"), 1, None)
        else:
            for index, phase in enumerate(first["closed"]):
                loadgen = figure("closed", index, "loadgenCpuPct")
                compare(f"chat closed P={phase['pairs']}: server CPU µs/msg", current, other,
                        figure("closed", index, "serverCpuUsPerMsg"), 1, loadgen)
                compare(f"chat closed P={phase['pairs']}: msg/s", current, other,
                        figure("closed", index, "msgPerS"), 0, loadgen)
    if not rows:
        return missing
    return f"### {title}\n\n" + table(
        ["figure", *columns, f"{of} (of the medians)", f"{of} per run: median (min–max)", f"loadgen CPU %: {of}"],
        rows)


# ----- main -----------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny version of everything (CI smoke pass)")
    parser.add_argument("--only", choices=["chat", "broadcast"], help="run one workload")
    parser.add_argument("--json", type=Path, help="also write the raw results to this file")
    parser.add_argument(
        "--course-before", nargs="?", const="", metavar="CHECKOUT",
        help="also run the course's servers (minichat for the broadcast, chat for the chat) from the code before"
             " the change, back to back with the current one, listed as 'course before', with a table current /"
             " before. Without CHECKOUT the code is the git revision --before (HEAD unless given), extracted"
             " with `git archive` into the run's temporary folder; with CHECKOUT, that directory (e.g. made"
             " by `git worktree add`)")
    parser.add_argument(
        "--before", metavar="REV",
        help="the git revision --course-before runs (implies --course-before; default HEAD: the working tree's"
             " uncommitted change against the last commit; once the change is committed, HEAD~1 or a merge base)")
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N",
        help="run each server N times, interleaved (A B C, A B C, ...: the machine's drift hits every server"
             " alike); print the median of each figure with its spread (min–max), and ratios against the course"
             " as the median of the per-run ratios (default 1)")
    parser.add_argument(
        "--servers", metavar="WORD[,WORD...]",
        help="only the servers whose name contains one of these words (case-insensitive): e.g. 'course' runs"
             " the course's servers alone (with --course-before, current and before). The course on asyncio's"
             " loop (course-asyncio; the course's current server runs on uvloop when it is installed) runs only"
             " when a word names it: 'course,asyncio' runs the course on both loops, with a table uvloop / asyncio."
             " So does the trivial chat (Node ws, no storage: the load generator's ceiling): 'trivial'")
    parser.add_argument("--clients", type=int, metavar="N",
                        help="broadcast: clients connected (default 1,000; 100 with --quick)")
    parser.add_argument("--delivery-rates", metavar="R[,R...]",
                        help="broadcast: the target deliveries per second of each step (default 5000,10000;"
                             " 1000,2000 with --quick); messages per second = R / clients")
    parser.add_argument("--broadcast-seconds", type=float, metavar="S",
                        help="broadcast: seconds each step sends (default 5; 2 with --quick)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be 1 or more")
    try:
        rates = [int(r) for r in args.delivery_rates.split(",")] if args.delivery_rates else None
    except ValueError:
        parser.error("--delivery-rates: whole numbers separated by commas, e.g. 5000,10000")
    if (args.clients is not None and args.clients < 1) or (rates is not None and min(rates) < 1) \
            or (args.broadcast_seconds is not None and args.broadcast_seconds <= 0):
        parser.error("--clients, --delivery-rates and --broadcast-seconds must be positive")
    if args.course_before and args.before:
        parser.error("--before REV and --course-before CHECKOUT name two different 'before': give one")
    words = [w.strip().lower() for w in (args.servers or "").split(",") if w.strip()]
    checkout: Path | None = None
    revision: tuple[str, str] | None = None  # (commit, label)
    if args.course_before:
        checkout = Path(args.course_before).resolve()
        if not (checkout / "labtools").is_dir():
            parser.error(f"--course-before {args.course_before}: no labtools/ in that directory"
                         " (a git revision goes to --before)")
    elif args.course_before is not None or args.before:
        revision = resolve_before(args.before or "HEAD")
    node, npm = need_node()
    started = time.monotonic()
    install_node_modules(node, npm)
    peer_python = install_venv()
    _raise_fd_limit()
    size = dict(QUICK if args.quick else FULL)
    size.update({key: value for key, value in (("clients", args.clients), ("deliveryRates", rates),
                                               ("broadcastSeconds", args.broadcast_seconds)) if value is not None})
    tag = f"r{int(time.time())}"
    results: dict[str, list[dict[str, Any]]] = {"broadcast": [], "chat": []}
    failures: list[str] = []
    before: tuple[Path, str] | None = None
    with tempfile.TemporaryDirectory(prefix="peers-bench-") as folder:
        if checkout is not None:
            before = (checkout, checkout.name)
        elif revision is not None:
            before = (extract(revision[0], Path(folder)), revision[1])
        plans = {workload: [server for server in servers(workload, node, peer_python, Path(folder), before)
                            if chosen(server, words)]
                 for workload in ("broadcast", "chat") if not args.only or workload == args.only}
        roles = {server.get("role") for plan in plans.values() for server in plan}
        # Before any load: each course tree that will run imports labtools from itself.
        if roles & {"current", "asyncio"}:
            check_course_root(ROOT)
        if "before" in roles and before is not None:
            check_course_root(before[0])
        precompile([ROOT] + ([before[0]] if before else []), Path(folder))
        for workload, plan in plans.items():
            for repetition in range(1, args.repeat + 1):  # interleaved: every server once, then again
                run_tag = tag if args.repeat == 1 else f"{tag}n{repetition}"
                for server in in_turn(plan, repetition):
                    try:
                        result = run_server(server, workload, node, size, run_tag, repetition)
                    except (RuntimeError, OSError, subprocess.SubprocessError, sqlite3.Error) as error:
                        result = {"server": server["name"], "role": server.get("role", "peer"),
                                  "repetition": repetition, "workload": workload, "error": str(error)}
                    results[workload].append(result)
                    failures += [failure + (f" (run {repetition})" if args.repeat > 1 else "")
                                 for failure in failures_of(result, args.quick)]
    elapsed = time.monotonic() - started
    title = "quick" if args.quick else "full"
    print(f"# Peer benchmarks ({title} run, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"node {subprocess.run([node, '--version'], capture_output=True, text=True).stdout.strip()}, "
          f"Python {sys.version.split()[0]}; {elapsed:.0f} s)\n")
    print("Ratios are server / course: above 1× is more for msg/s, and more cost for CPU, latency and memory.\n")
    loops = [f"the course on {DEFAULT_LOOP}'s (`python -m labtools serve`'s default)"] if "current" in roles else []
    loops += ["course-asyncio on asyncio's (LABTOOLS_LOOP=asyncio)"] if "asyncio" in roles else []
    loops += ["the course before on the one its own code chooses"] if "before" in roles else []
    if loops:
        print("Event loops: " + ", ".join(loops) + ".\n")
    if args.repeat > 1:
        print(f"Each server ran {args.repeat} times, interleaved. A figure is the median of its runs, their spread "
              "(min–max) in brackets; a ratio is the median of the per-run ratios (each run against the same "
              "run's course), their spread in brackets.\n")
    if results["broadcast"]:
        print(broadcast_tables(results["broadcast"]) + "\n")
    if results["chat"]:
        print(chat_tables(results["chat"]) + "\n")
    if before is not None:
        print(before_table(results, before[1]) + "\n")
    if "asyncio" in roles:
        print(loop_table(results) + "\n")
    if args.json:
        recorded = {"recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "run": title,
                    "cores": os.cpu_count(), "repeat": args.repeat, "before": before[1] if before else None,
                    "results": results}
        args.json.write_text(json.dumps(recorded, indent=1) + "\n")
    if failures:
        print("## Failures\n")
        for failure in failures:
            print(f"- {failure}")
        return 1
    print("All checks passed: every server started, stored rows == acknowledged messages, nothing lost.")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        kill_children()
