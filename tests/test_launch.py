"""``lt.launch``: a learner's command run from a cell as a child of the kernel, with real
processes on real ports: it waits for the port, a re-run replaces it, ``stop_all`` stops it, a
program that fails says why, and it dies with a kernel killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import psutil
import pytest
from waiting import wait_until

import labtools as lt

SERVER = textwrap.dedent("""
    import http.server, sys
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"hello from a script")
        def log_message(self, *args): pass
    print("serving", flush=True)
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Hello).serve_forever()
""")


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "hello_server.py"
    path.write_text(SERVER)
    return path


def test_a_script_on_a_free_port_answers_and_says_its_command(script: Path) -> None:
    running = lt.launch("python", script.name, "{port}", cwd=script.parent, name="hello")
    with urllib.request.urlopen(running.url, timeout=5) as answer:
        assert answer.read() == b"hello from a script"
    assert running.command == f"python {script.name} {running.port}"
    wait_until(lambda: "serving" in running.output(), what="the script's output")
    running.stop()
    assert not running.alive


def test_running_the_cell_again_replaces_the_program(script: Path) -> None:
    first = lt.launch("python", script.name, "{port}", cwd=script.parent, name="hello")
    second = lt.launch("python", script.name, "{port}", cwd=script.parent, name="hello")
    assert not first.alive and second.alive
    lt.stop_all()
    assert not second.alive


def test_a_program_that_exits_says_why(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise SystemExit('no port for you')\n")
    with pytest.raises(RuntimeError, match=r"(?s)exited before it listened.*no port for you"):
        lt.launch("python", "broken.py", "{port}", cwd=tmp_path, name="broken")


def test_a_command_is_required() -> None:
    with pytest.raises(ValueError, match="needs a command"):
        lt.launch()


def test_the_program_dies_with_a_kernel_killed_by_sigkill(script: Path) -> None:
    kernel_code = textwrap.dedent(f"""
        import labtools as lt
        running = lt.launch("python", {str(script)!r}, "{{port}}", name="hello")
        print(running.process.pid, flush=True)
        import time; time.sleep(60)
    """)
    kernel = subprocess.Popen([sys.executable, "-c", kernel_code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert kernel.stdout is not None
        child = psutil.Process(int(kernel.stdout.readline()))
        kernel.send_signal(signal.SIGKILL)
        kernel.wait(10)
        wait_until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE,
                   what="the launched program to end with its kernel")
    finally:
        kernel.kill()
        kernel.wait()
