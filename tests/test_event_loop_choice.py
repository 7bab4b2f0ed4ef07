"""``python -m labtools serve`` runs on uvloop when it is installed, else on asyncio's loop, and
``LABTOOLS_LOOP`` (``asyncio`` or ``uvloop``) chooses (``labtools.cli.loop_factory``).

The choosing function alone, then real server processes: a build function of the learner's kind
(``PATH.py:start``, a plain ``websockets`` server) that answers each connection with the class
of the loop it runs on, and the mini chat, which answers a message on either loop and shuts
down cleanly on SIGTERM. A bad value, or uvloop asked for where it is missing, is refused in one
line before anything starts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import script_module
from test_cli import read_line
from websockets.sync.client import connect

from labtools import cli

ROOT = Path(__file__).resolve().parents[1]
UVLOOP = importlib.util.find_spec("uvloop") is not None
#: The loop a server process runs on with LABTOOLS_LOOP unset.
DEFAULT = "uvloop" if UVLOOP else "asyncio"
needs_uvloop = pytest.mark.skipif(not UVLOOP, reason="uvloop is not installed (pip install -r requirements.txt)")

PROBE = '''
import asyncio

from websockets.asyncio.server import serve


async def answer(connection):
    loop = type(asyncio.get_running_loop())
    await connection.send(f"{loop.__module__}.{loop.__qualname__}")
    await connection.wait_closed()


async def start(host, port):
    return await serve(answer, host, port)
'''


def env_with(loop: str | None) -> dict[str, str]:
    """This process's environment with ``LABTOOLS_LOOP`` set to ``loop`` (None: unset)."""
    env = {name: value for name, value in os.environ.items() if name != cli.LOOP_ENV}
    if loop is not None:
        env[cli.LOOP_ENV] = loop
    return env


def serve(app: str, loop: str | None) -> tuple[subprocess.Popen, str]:
    """``python -m labtools serve APP --port 0`` with ``LABTOOLS_LOOP=loop``, and its URL line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "labtools", "serve", app, "--port", "0"],
        cwd=ROOT, env=env_with(loop), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        url = read_line(process)
    except BaseException:
        process.kill()
        process.wait()
        raise
    assert url.startswith("http://127.0.0.1:"), (url, process.stderr.read().decode() if process.poll() else "")
    return process, url


def stop(process: subprocess.Popen) -> str:
    """SIGTERM ``process``, require a clean exit (0, no traceback) and return its stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read().decode() if process.stderr else ""
    assert code == 0 and "Traceback" not in stderr, (code, stderr)
    return stderr


def uvloop_mapped(pid: int) -> bool:
    """Whether process ``pid`` has uvloop's compiled event loop loaded (Linux's /proc)."""
    return any("/uvloop/loop." in line for line in Path(f"/proc/{pid}/maps").read_text().splitlines())


# ----- the choice ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", " "], ids=["unset", "empty", "blank"])
def test_unset_means_uvloop_when_installed_else_asyncio(value: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.LOOP_ENV, raising=False)
    if value is not None:
        monkeypatch.setenv(cli.LOOP_ENV, value)
    if UVLOOP:
        import uvloop

        assert cli.loop_factory() is uvloop.new_event_loop
    else:
        assert cli.loop_factory() is None


def test_asyncio_is_asyncios_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``None``: ``asyncio.Runner`` makes the loop ``asyncio.run`` would; uvloop is not imported."""
    monkeypatch.setenv(cli.LOOP_ENV, "asyncio")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # importing it now would raise ImportError
    assert cli.loop_factory() is None


@needs_uvloop
def test_uvloop_is_uvloops(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvloop

    monkeypatch.setenv(cli.LOOP_ENV, "uvloop")
    assert cli.loop_factory() is uvloop.new_event_loop


def test_without_uvloop_the_default_falls_back_and_asking_for_it_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as where it is not installed (Windows, PyPy)
    monkeypatch.delenv(cli.LOOP_ENV, raising=False)
    assert cli.loop_factory() is None
    monkeypatch.setenv(cli.LOOP_ENV, "uvloop")
    with pytest.raises(SystemExit) as refused:
        cli.loop_factory()
    message = str(refused.value.code)
    assert "\n" not in message and "uvloop is not installed" in message and "LABTOOLS_LOOP=asyncio" in message


@pytest.mark.parametrize("value", ["trio", "Asyncio", "uvloop,asyncio", "selector"])
def test_a_value_that_names_no_loop_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.LOOP_ENV, value)
    with pytest.raises(SystemExit) as refused:
        cli.loop_factory()
    message = str(refused.value.code)
    assert "\n" not in message and f"LABTOOLS_LOOP={value!r}" in message and "asyncio or uvloop" in message


# ----- real server processes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loop", "runs_on"),
    [(None, DEFAULT), ("asyncio", "asyncio"), pytest.param("uvloop", "uvloop", marks=needs_uvloop)],
    ids=["unset", "asyncio", "uvloop"],
)
def test_the_server_process_runs_on_the_chosen_loop(loop: str | None, runs_on: str, tmp_path: Path) -> None:
    """The served process itself says which loop runs it: a learner's start coroutine
    (``PATH.py:start``) answers each connection with its running loop's class."""
    probe = tmp_path / "loop_probe.py"
    probe.write_text(PROBE, encoding="utf-8")
    process, url = serve(f"{probe}:start", loop)
    try:
        with connect("ws" + url.removeprefix("http"), open_timeout=5) as socket:
            answer = socket.recv(timeout=5)
    finally:
        stop(process)
    assert answer.split(".")[0] == runs_on, answer
    if runs_on == "uvloop":
        assert answer == "uvloop.Loop"


@pytest.mark.parametrize("loop", [None, "asyncio"], ids=["unset", "asyncio"])
def test_minichat_answers_on_either_loop(loop: str | None) -> None:
    """The mini chat on the default loop and on asyncio's: a WebSocket connects, a message comes
    back to its sender, SIGTERM with the socket open exits 0; uvloop's compiled loop is loaded in
    the process exactly when it runs on uvloop (asyncio's choice does not even import it)."""
    process, url = serve("minichat", loop)
    try:
        assert uvloop_mapped(process.pid) == ((loop or DEFAULT) == "uvloop")
        with connect("ws" + url.removeprefix("http"), open_timeout=5) as socket:
            socket.send(json.dumps({"event": "msg-to-server", "data": {"text": f"hello on {loop or 'default'}"}}))
            while True:  # the connect's own frames (position) first
                frame = json.loads(socket.recv(timeout=5))
                if frame.get("event") == "msg-from-server":
                    break
            assert frame["data"]["text"] == f"hello on {loop or 'default'}"
            stop(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_command_refuses_a_bad_loop_in_one_line_before_starting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "labtools", "serve", "minichat", "--port", "0"],
        cwd=ROOT, env=env_with("tokio"), capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == ("labtools serve: LABTOOLS_LOOP='tokio' is not an event loop: "
                                     "choose asyncio or uvloop (unset: uvloop when installed, else asyncio)")


def test_the_command_refuses_uvloop_where_it_is_missing_in_one_line() -> None:
    """uvloop made unimportable in the process (as on Windows or PyPy), then the command as
    ``__main__`` runs it: asking for uvloop is a sentence and exit code 1, not a traceback."""
    code = ("import sys\nsys.modules['uvloop'] = None\nfrom labtools.cli import main\n"
            "raise SystemExit(main(['serve', 'minichat', '--port', '0']))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env_with("uvloop"), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "uvloop is not installed" in lines[0] and "Traceback" not in result.stderr, lines


# ----- the peer benchmark: the course on both loops -----------------------------------------------------


def peers_run():
    """benchmarks/peers/run.py as a module (its main() is not run)."""
    return script_module(ROOT / "benchmarks" / "peers" / "run.py")


@pytest.mark.parametrize("workload", ["broadcast", "chat"])
def test_the_peer_benchmark_runs_the_course_on_asyncio_only_when_asked(workload: str, tmp_path: Path) -> None:
    """``--servers course`` (and no --servers) keep meaning the current and before servers;
    ``course,asyncio`` adds course-asyncio, the same command with LABTOOLS_LOOP=asyncio, back to
    back with the current one; the before tree's server gets no LABTOOLS_LOOP (its own default)."""
    run = peers_run()
    plan = run.servers(workload, "node", Path("python"), tmp_path, (tmp_path / "before", "HEAD 0000000"))

    def roles(words: list[str]) -> list[str]:
        return [server.get("role", "peer") for server in plan if run.chosen(server, words)]

    assert "asyncio" not in roles([]) and roles(["course"]) == ["current", "before"]
    assert roles(["course", "asyncio"]) == ["current", "asyncio", "before"]
    assert roles(["course-asyncio"]) == ["asyncio"]
    by_role = {server.get("role"): server for server in plan}
    current, on_asyncio, before = by_role["current"], by_role["asyncio"], by_role["before"]
    assert on_asyncio["command"] == current["command"] and on_asyncio["env"][cli.LOOP_ENV] == "asyncio"
    assert (current["loop"], on_asyncio["loop"]) == (DEFAULT, "asyncio")
    assert cli.LOOP_ENV not in current["env"] and cli.LOOP_ENV not in before["env"] and "loop" not in before
    if workload == "chat":
        assert len({current["db"], on_asyncio["db"], before["db"]}) == 3
    chosen = [server for server in plan if run.chosen(server, ["course", "asyncio"])]
    assert [server["role"] for server in run.in_turn(chosen, 2)] == ["before", "asyncio", "current"]


def test_the_peer_benchmark_does_not_pass_its_own_loop_choice_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A LABTOOLS_LOOP in run.py's environment does not reach a server; a server's own env does."""
    run = peers_run()
    monkeypatch.setenv(cli.LOOP_ENV, "uvloop")
    show = [sys.executable, "-c", "import os, time\nprint('http://' + os.environ.get('LABTOOLS_LOOP', 'unset'), "
                                  "flush=True)\ntime.sleep(30)"]
    for env, seen in ((None, "unset"), ({cli.LOOP_ENV: "asyncio"}, "asyncio")):
        process, line = run.start_server("show", show, env=env)
        try:
            assert line == f"http://{seen}"
        finally:
            run.stop(process)
