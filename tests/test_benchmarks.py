"""Every benchmark runs its ``--quick`` smoke pass: it starts, measures, prints its figures and
exits 0 (a benchmark exits non-zero when what it measured is wrong: lost or duplicated messages).

These are not timed tests: the figures they print are read by people, not asserted on.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import script_module

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# Every script directly in benchmarks/, and the peer benchmark's driver (it installs the peers
# itself, from the package registries, into ignored folders).
SCRIPTS = sorted([p.name for p in BENCHMARKS.glob("*.py")] + ["peers/run.py"])


def quick_option(tree: ast.Module) -> bool:
    """Whether the script declares ``parser.add_argument("--quick", ...)``."""
    return any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"
        and any(isinstance(arg, ast.Constant) and arg.value == "--quick" for arg in node.args)
        for node in ast.walk(tree)
    )


def main_guard(tree: ast.Module) -> bool:
    """Whether the script has ``if __name__ == "__main__":`` at its top level."""
    return any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body)


def test_there_are_benchmarks() -> None:
    """Each benchmark is a script a person can run: it says what it measures and how to run it
    (a module docstring that shows ``--quick``), takes ``--quick``, runs as ``__main__``, and is
    smoke-tested by ``test_quick_pass``; and no script with a ``--quick`` pass is left out of it."""
    assert {"chat.py", "cluster.py", "fanout.py", "polling.py", "scale.py", "peers/run.py"} <= set(SCRIPTS)
    smoked = next(mark.args[1] for mark in test_quick_pass.pytestmark if mark.name == "parametrize")
    assert list(smoked) == SCRIPTS
    problems = []
    for script in SCRIPTS:
        tree = ast.parse((BENCHMARKS / script).read_text(encoding="utf-8"), filename=script)
        doc = ast.get_docstring(tree) or ""
        if not doc.strip():
            problems.append(f"{script}: no module docstring (what it measures, how to run it)")
        elif "--quick" not in doc:
            problems.append(f"{script}: its docstring does not show the --quick smoke pass")
        if not quick_option(tree):
            problems.append(f"{script}: no --quick option (parser.add_argument('--quick', ...))")
        if not main_guard(tree):
            problems.append(f"{script}: no `if __name__ == '__main__':`")
    hidden = {"node_modules"}
    for path in sorted(BENCHMARKS.rglob("*.py")):
        relative = path.relative_to(BENCHMARKS)
        if hidden & set(relative.parts) or any(part.startswith(".") for part in relative.parts):
            continue
        if relative.as_posix() not in SCRIPTS and quick_option(ast.parse(path.read_text(encoding="utf-8"))):
            problems.append(f"{relative}: has a --quick pass that test_quick_pass does not run")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_pass(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick"],
        cwd=BENCHMARKS.parent, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, f"{script} --quick exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert any(ch.isdigit() for ch in done.stdout), f"{script} --quick printed no figures:\n{done.stdout}"


def test_peers_course_before_repeated(tmp_path: Path) -> None:
    """The peer benchmark's --course-before (the course's servers as of HEAD, from `git archive`)
    with --repeat 2, the course's servers alone to stay quick: minichat and chat each run as
    'current' and 'before', interleaved with the two swapping places in the second repetition;
    every run measured; the tables show the runs' medians, and the comparison table a ratio
    current / before for CPU per delivery, CPU per message and memory per connection."""
    root = BENCHMARKS.parent
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout: no HEAD to run as 'before'")
    raw = tmp_path / "peers.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "peers/run.py"), "--quick", "--servers", "course", "--course-before",
         "--repeat", "2", "--json", str(raw)],
        cwd=root, capture_output=True, text=True, timeout=900,
    )
    out = done.stdout
    assert done.returncode == 0, f"exited {done.returncode}:\n{out}\n{done.stderr[-3000:]}"
    label = f"HEAD {head.stdout.strip()}"

    recorded = json.loads(raw.read_text())
    assert (recorded["repeat"], recorded["before"]) == (2, label)
    for workload, app in (("broadcast", "minichat"), ("chat", "chat")):
        runs = recorded["results"][workload]
        assert [(r["role"], r["repetition"]) for r in runs] == [
            ("current", 1), ("before", 1), ("before", 2), ("current", 2)], workload
        assert {r["server"] for r in runs} == {f"course (labtools {app})", f"course before ({label})"}
        assert not [r["error"] for r in runs if "error" in r]
        for r in runs:
            if workload == "broadcast":
                assert r["rssPerConnKiB"] > 0 and all(s["serverCpuUsPerDelivery"] > 0 for s in r["steps"])
            else:
                assert all(p["exactlyOnce"] and p["serverCpuUsPerMsg"] > 0 for p in r["closed"])

    assert "Each server ran 2 times, interleaved" in out
    tables, comparison = out.split(f"### The course against itself before the change ({label})\n", 1)
    # Both course servers in every table of both workloads: broadcast (2 rates, memory) and chat
    # (closed loop, open loop, set-up).
    assert tables.count(f"| course before ({label}) | ") == 6 and tables.count("| course (labtools ") == 6, out
    ratios = {}
    for line in comparison.strip().splitlines()[2:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        ratios[cells[0]] = cells[3]  # current / before, of the medians
    wanted = ["broadcast 1,000/s: server CPU µs/delivery", "broadcast 2,000/s: server CPU µs/delivery",
              "broadcast: RSS KiB per idle connection (100)", "chat closed P=10: server CPU µs/msg"]
    assert set(wanted) <= set(ratios), ratios
    assert all(re.fullmatch(r"\d+\.\d\d×", ratios[w]) for w in wanted), ratios


def test_the_trivial_chat_gives_the_load_generators_ceiling(tmp_path: Path) -> None:
    """``--servers trivial``: the chat in the course's protocol with no storage (the load
    generator's ceiling) runs alone, loses nothing, delivers each message once, and is listed
    without a database to check (not as a failed exactly-once check)."""
    raw = tmp_path / "peers.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "peers/run.py"), "--quick", "--only", "chat", "--servers", "trivial",
         "--json", str(raw)],
        cwd=BENCHMARKS.parent, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, f"exited {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    (run,) = json.loads(raw.read_text())["results"]["chat"]
    assert run["server"] == "trivial (Node ws, no storage)"
    for phase in run["closed"] + run["open"]:
        assert phase["acked"] == phase["sent"] > 0 and phase["missingDeliveries"] == phase["duplicateDeliveries"] == 0
        assert phase["storedRows"] is None and phase["exactlyOnce"] is None
    assert "no database / " in done.stdout


def test_the_broadcasts_size_is_chosen_on_the_command_line(tmp_path: Path) -> None:
    """``--clients``, ``--delivery-rates``, ``--broadcast-seconds``: the broadcast's size (the
    issue's 10,000 idle clients and 20 broadcasts at 5/s are ``--clients 10000 --delivery-rates
    50000 --broadcast-seconds 4``), here small; and a rate that is not a number is refused."""
    raw = tmp_path / "peers.json"
    command = [sys.executable, str(BENCHMARKS / "peers/run.py"), "--quick", "--only", "broadcast", "--servers",
               "course", "--clients", "30", "--delivery-rates", "300", "--broadcast-seconds", "1", "--json", str(raw)]
    done = subprocess.run(command, cwd=BENCHMARKS.parent, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"exited {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    (run,) = json.loads(raw.read_text())["results"]["broadcast"]
    assert run["clients"] == 30 and [step["targetDeliveriesPerS"] for step in run["steps"]] == [300]
    assert "### Broadcast, 30 clients, target 300 deliveries/s (10 msg/s from 10 senders)" in done.stdout
    wrong = subprocess.run([*command[:-6], "--delivery-rates", "5k"], cwd=BENCHMARKS.parent, capture_output=True,
                           text=True, timeout=60)
    assert wrong.returncode == 2 and "--delivery-rates: whole numbers" in wrong.stderr


def test_the_recorded_chaos_run_is_a_full_passing_run() -> None:
    """Lesson 11 shows ``notebooks/data/11_chaos_run.json``: a full-length run (10 minutes, 200
    users, every kind of fault), dated, every check passed; its figure draws."""
    from labtools.plots.nodes import chaos_latency

    recorded = json.loads((BENCHMARKS.parent / "notebooks/data/11_chaos_run.json").read_text())
    plan = recorded["plan"]
    assert not plan["quick"] and plan["seconds"] >= 600 and plan["chat"] + plan["minichat"] + plan["bands"] == 200
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", recorded["recorded"])
    kinds = {fault["kind"] for fault in recorded["faults"]}
    assert {"kill", "pause", "redis-restart", "redis-wipe", "blackhole", "malformed"} <= kinds, kinds
    assert recorded["checks"] and all(check["ok"] for check in recorded["checks"]), recorded["checks"]
    assert not recorded["deaths"] and not recorded["tracebacks"]
    figure = chaos_latency(recorded["latency"])
    assert {tick.get_text() for tick in figure.axes[0].get_xticklabels()} >= {"baseline", "kill", "redis-wipe"}


@pytest.mark.parametrize("mode", ["two-step", "copy-only", "none"])
def test_the_timelines_checkpoint_modes_change_only_what_they_say(tmp_path: Path, monkeypatch, mode: str) -> None:
    """``chat_timeline.py --checkpoints``: the store's own two steps (the log starts over after each
    second step), the first step alone (copied beside the writes, and no batch ever held back),
    or no checkpoint at all (the log only grows). The README's figures on what the resets cost
    rest on these."""
    from labtools import run
    from labtools.apps.chat import store as store_module

    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 100)
    timeline = script_module(BENCHMARKS / "chat_timeline.py")
    wal = tmp_path / "chat.db-wal"

    async def main() -> tuple[list[bool], int, list[int]]:
        store = store_module.Store(str(tmp_path / "chat.db"))
        await store.open()
        for k in range(50):
            await store.add_user(f"user{k}", f"user{k}", f"user{k}@example.test", "x")
        timeline.change_checkpoints(store, mode)
        steps: list[bool] = []
        copy = store._wal_checkpoint
        store._wal_checkpoint = lambda finish: (steps.append(finish), copy(finish))[1]
        sizes = []
        for round in range(40):
            await asyncio.gather(*(store.add_message(f"user{i}", f"user{(i * 7 + 1) % 50}", f"{round}-{i}", None)
                                   for i in range(50)))
            sizes.append(wal.stat().st_size)
            await store._run(lambda: None)  # a step begun after this round is done
        await store._run(lambda: None)  # and a second step begun as the first ended
        resets = store.checkpoints
        assert not store.checkpoint_errors
        await store.close()
        return steps, resets, sizes

    steps, resets, sizes = run(main())
    if mode == "two-step":
        assert resets == 20 and steps.count(True) == 20 and steps.count(False) == 20
        assert sizes[-1] <= 1.2 * sizes[9], sizes
    elif mode == "copy-only":
        # Copied every 100 messages, never held the batches back. (Here each copy also ran alone,
        # awaited between rounds, so it copied the whole log and the log started over; under load
        # a copy runs beside the writes, and never catches up.)
        assert resets == 0 and steps and not any(steps)
    else:
        assert resets == 0 and steps == [] and sizes[-1] > 2 * sizes[9]
