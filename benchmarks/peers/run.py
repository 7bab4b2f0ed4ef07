"""Peer benchmarks: the course's servers against Socket.IO peers, one load generator, one run.

    python benchmarks/peers/run.py            # the full run (about 5 minutes on 2 cores)
    python benchmarks/peers/run.py --quick    # a few seconds per server: a CI smoke pass

Installs the peers' dependencies when missing (``npm ci`` into benchmarks/peers/node_modules,
a venv benchmarks/peers/.venv-peers from requirements-peers.txt), starts each server in a
process of its own on a free port, runs ``loadgen.mjs`` (Node.js) against it, stops it, checks
the chat's database (stored rows == acknowledged messages, no duplicates), and prints one
Markdown table per workload with ratios against the course's server. See README.md here.

Exits non-zero when node or npm is missing, a server does not start, the load generator fails,
an exactly-once check fails, or messages are lost (closed loop, the lowest open-loop rate, and,
with --quick, the broadcast).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV = HERE / ".venv-peers"
REQUIREMENTS = HERE / "requirements-peers.txt"
P99_GOAL_MS = 100.0

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


# ----- processes ---------------------------------------------------------------------------------------


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    name: str, command: list[str], timeout: float = 30.0, root: Path = ROOT
) -> tuple[subprocess.Popen, str]:
    """Start ``command`` in its own session; wait for the ``http://…`` line it prints once listening."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
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


def servers(
    workload: str, node: str, peer_python: Path, folder: Path, before: Path | None = None
) -> list[dict[str, Any]]:
    """Each server under test: its name, protocol, command, and (chat) its SQLite file.

    ``before``: another checkout of the course (``--course-before``), whose chat is run too,
    right after this one's, so that a change is measured against the code it replaces in one run.
    """
    course = [sys.executable, "-m", "labtools", "serve"]
    if workload == "broadcast":
        return [
            {"name": "course (labtools minichat)", "proto": "course",
             "command": [*course, "minichat", "--port", "{port}"]},
            {"name": "Node ws (raw)", "proto": "course",
             "command": [node, "server_ws.mjs", "--port", "{port}"]},
            {"name": "bare websockets broadcast()", "proto": "course",
             "command": [sys.executable, "server_websockets.py", "--port", "{port}"]},
            {"name": "Node Socket.IO 4", "proto": "sio",
             "command": [node, "server.mjs", "minichat", "--port", "{port}"]},
            {"name": "python-socketio (aiohttp)", "proto": "sio",
             "command": [str(peer_python), "server_sio.py", "--port", "{port}"]},
        ]
    earlier = [] if before is None else [
        {"name": f"course before ({before.name})", "proto": "course", "db": folder / "before.db", "root": before,
         "command": [*course, "chat", "--port", "{port}", "--db", "{db}"]}]
    return [
        {"name": "course (labtools chat)", "proto": "course", "db": folder / "course.db",
         "command": [*course, "chat", "--port", "{port}", "--db", "{db}"]},
        *earlier,
        {"name": "Node Socket.IO 4 + sqlite3", "proto": "sio", "db": folder / "sqlite3.db",
         "command": [node, "server.mjs", "chat", "--driver", "sqlite3", "--port", "{port}", "--db", "{db}"]},
        {"name": "Node Socket.IO 4 + better-sqlite3", "proto": "sio", "db": folder / "better.db",
         "command": [node, "server.mjs", "chat", "--driver", "better-sqlite3", "--port", "{port}", "--db", "{db}"]},
        {"name": "python-socketio + aiosqlite", "proto": "sio", "db": folder / "aiosqlite.db",
         "command": [str(peer_python), "server_sio.py", "--port", "{port}", "--db", "{db}"]},
    ]


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


def run_server(server: dict[str, Any], workload: str, node: str, size: dict[str, Any], tag: str) -> dict[str, Any]:
    port = free_port()
    command = [part.format(port=port, db=server.get("db", "")) for part in server["command"]]
    started = time.monotonic()
    print(f"\n## {workload}: {server['name']}", file=sys.stderr, flush=True)
    process, url = start_server(server["name"], command, root=server.get("root", ROOT))
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
    result["wallS"] = round(time.monotonic() - started, 1)
    if workload == "chat" and "error" not in result:
        verify_db(server["db"], result["closed"] + result["open"])
    return result


# ----- checks and tables -----------------------------------------------------------------------------------


def failures_of(result: dict[str, Any], quick: bool) -> list[str]:
    name = result["server"]
    if "error" in result:
        return [f"{name}: {result['error'].splitlines()[0]}"]
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
        if not phase["exactlyOnce"]:
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


def chat_tables(results: list[dict[str, Any]]) -> str:
    ok = [r for r in results if "error" not in r]
    if not ok:
        return "(no chat results)"
    course = ok[0] if ok[0]["server"].startswith("course") else None
    out = []
    for index, pairs in enumerate(ok[0]["closed"][i]["pairs"] for i in range(len(ok[0]["closed"]))):
        ref = course["closed"][index] if course else {}
        rows = []
        for r in ok:
            p = r["closed"][index]
            rows.append([
                r["server"], fmt(p["msgPerS"], 0), ratio(p["msgPerS"], ref.get("msgPerS")),
                fmt(p["ackP50"]), fmt(p["ackP99"]), ratio(p["ackP99"], ref.get("ackP99")), fmt(p["deliveryP99"]),
                fmt(p["serverCpuUsPerMsg"]), ratio(p["serverCpuUsPerMsg"], ref.get("serverCpuUsPerMsg")),
                fmt(p["serverCpuPct"], 0), fmt(p["loadgenCpuPct"], 0), fmt(p["rateLimitedRetries"], 0),
                f"{p['storedRows']:,} / {p['acked']:,}" + ("" if p["exactlyOnce"] else " ✗"),
            ])
        out.append(f"### Private chat, closed loop, P={pairs} pairs ({2 * pairs} users)\n\n" + table(
            ["server", "msg/s", "x vs course", "ack p50 ms", "ack p99 ms", "x vs course", "delivery p99 ms",
             "server CPU µs/msg", "x vs course", "server CPU %", "loadgen CPU %", "rate-limited retries",
             "rows / acked"], rows))
    rows = []
    best_ref = None
    for r in ok:
        good = [p for p in r["open"] if p["sustained"]]
        best = max(good, key=lambda p: p["rate"]) if good else None
        if course is not None and r is course:
            best_ref = best["rate"] if best else None
        steps = "; ".join(
            f"{p['rate']:,}: p99 {fmt(p['ackP99'])} ms, lost {p['lost']}" + ("" if p["sustained"] else " ✗")
            for p in r["open"]
        )
        rows.append([
            r["server"], fmt(best["rate"], 0) if best else "none", ratio(best["rate"] if best else None, best_ref),
            fmt(best["ackP99"]) if best else "–", fmt(best["serverCpuUsPerMsg"]) if best else "–",
            fmt(best["loadgenCpuPct"], 0) if best else "–", steps,
        ])
    pairs = ok[0]["open"][0]["pairs"] if ok[0]["open"] else "?"
    out.append(f"### Private chat, open loop ({pairs} pairs): highest rate with p99 ≤ {P99_GOAL_MS:g} ms and "
               "nothing lost\n\n" + table(
                   ["server", "max msg/s", "x vs course", "ack p99 ms there", "server CPU µs/msg there",
                    "loadgen CPU % there", "steps (msg/s: ack p99, lost)"], rows))
    setup = [[r["server"], fmt(r["users"], 0), fmt(r["signUpS"]), fmt(r["connectS"]), fmt(r["wallS"])] for r in ok]
    out.append("### Chat set-up (not measured above)\n\n" + table(
        ["server", "users", "sign-up s", "connect s", "whole server run s"], setup))
    return "\n\n".join(out)


def broadcast_tables(results: list[dict[str, Any]]) -> str:
    ok = [r for r in results if "error" not in r]
    if not ok:
        return "(no broadcast results)"
    course = ok[0] if ok[0]["server"].startswith("course") else None
    out = []
    clients = ok[0]["clients"]
    for index, step0 in enumerate(ok[0]["steps"]):
        ref = course["steps"][index] if course else {}
        rows = []
        for r in ok:
            s = r["steps"][index]
            rows.append([
                r["server"], fmt(s["deliveriesPerS"], 0), fmt(s["p50"]), fmt(s["p99"]), ratio(s["p99"], ref.get("p99")),
                fmt(s["serverCpuUsPerDelivery"], 2),
                ratio(s["serverCpuUsPerDelivery"], ref.get("serverCpuUsPerDelivery")),
                fmt(s["serverCpuPct"], 0), fmt(s["loadgenCpuPct"], 0), fmt(s["loadgenCpuUsPerDelivery"], 2),
                fmt(s["lost"], 0),
            ])
        out.append(
            f"### Broadcast, {clients:,} clients, target {step0['targetDeliveriesPerS']:,} deliveries/s "
            f"({step0['messagesPerS']:g} msg/s from {ok[0]['senders']} senders)\n\n" + table(
                ["server", "deliveries/s", "p50 ms", "p99 ms", "x vs course", "server CPU µs/delivery",
                 "x vs course", "server CPU %", "loadgen CPU %", "loadgen CPU µs/delivery", "lost"], rows))
    ref_rss = course["rssPerConnKiB"] if course else None
    rows = [[r["server"], fmt(r["rssPerConnKiB"], 1), ratio(r["rssPerConnKiB"], ref_rss),
             fmt(r["rssIdleKiB"] / 1024), fmt(r["rssConnectedKiB"] / 1024), fmt(r["connectS"])] for r in ok]
    out.append(f"### Memory: RSS per idle connection ({clients:,} clients)\n\n" + table(
        ["server", "KiB per idle connection", "x vs course", "RSS, none connected (MiB)", "RSS, all connected (MiB)",
         "connect s"], rows))
    return "\n\n".join(out)


# ----- main -----------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny version of everything (CI smoke pass)")
    parser.add_argument("--only", choices=["chat", "broadcast"], help="run one workload")
    parser.add_argument("--json", type=Path, help="also write the raw results to this file")
    parser.add_argument("--course-before", type=Path, metavar="CHECKOUT",
                        help="also run the chat of another checkout of the course (e.g. `git worktree add` of the"
                             " commit before a change): measured in the same run, listed as 'course before'")
    args = parser.parse_args()
    node, npm = need_node()
    started = time.monotonic()
    install_node_modules(node, npm)
    peer_python = install_venv()
    _raise_fd_limit()
    size = QUICK if args.quick else FULL
    tag = f"r{int(time.time())}"
    results: dict[str, list[dict[str, Any]]] = {"broadcast": [], "chat": []}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="peers-bench-") as folder:
        for workload in ("broadcast", "chat"):
            if args.only and workload != args.only:
                continue
            before = args.course_before.resolve() if args.course_before else None
            for server in servers(workload, node, peer_python, Path(folder), before if workload == "chat" else None):
                try:
                    result = run_server(server, workload, node, size, tag)
                except (RuntimeError, OSError, subprocess.SubprocessError, sqlite3.Error) as error:
                    result = {"server": server["name"], "workload": workload, "error": str(error)}
                results[workload].append(result)
                failures += failures_of(result, args.quick)
    elapsed = time.monotonic() - started
    title = "quick" if args.quick else "full"
    print(f"# Peer benchmarks ({title} run, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"node {subprocess.run([node, '--version'], capture_output=True, text=True).stdout.strip()}, "
          f"Python {sys.version.split()[0]}; {elapsed:.0f} s)\n")
    print("Ratios are server / course: above 1× is more for msg/s, and more cost for CPU, latency and memory.\n")
    if results["broadcast"]:
        print(broadcast_tables(results["broadcast"]) + "\n")
    if results["chat"]:
        print(chat_tables(results["chat"]) + "\n")
    if args.json:
        recorded = {"recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "run": title,
                    "cores": os.cpu_count(), "results": results}
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
