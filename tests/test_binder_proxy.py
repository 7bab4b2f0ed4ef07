"""The mini chat as a learner on Binder reaches it: through JupyterLab's jupyter-server-proxy.

On Binder the browser cannot reach the kernel's ports; it gets ``/user/.../proxy/PORT/``
instead, and the page's WebSocket has to work through that prefix too. This test starts a real
JupyterLab (a subprocess, always killed), serves the mini chat in this process, and opens
``http://127.0.0.1:JPORT/proxy/MINIPORT/`` in Chromium, authenticated the way a learner is.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import labtools as lt
from labtools.events import EventClient
from labtools.serving import browser_url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A JupyterLab on a free port with a known token: yields (base URL, token)."""
    root = tmp_path_factory.mktemp("lab")
    token = secrets.token_hex(16)
    port = free_port()
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(root / "runtime"), JUPYTER_CONFIG_DIR=str(root / "config"))
    env.pop("JUPYTERHUB_SERVICE_PREFIX", None)
    log = (root / "jupyter.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
            "--allow-root",
        ],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail("JupyterLab exited:\n" + Path(log.name).read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("JupyterLab did not answer in 90 s:\n" + Path(log.name).read_text()[-3000:])
            time.sleep(0.25)
        yield base, token
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def test_browser_url_follows_the_hub_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ana-1234/")
    assert browser_url(8765) == "/user/ana-1234/proxy/8765/"
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX")
    assert browser_url(8765) == "http://127.0.0.1:8765/"


def test_a_message_round_trips_over_the_proxied_websocket(browser, jupyter: tuple[str, str]) -> None:
    base, token = jupyter
    minichat = lt.serve("minichat", name="proxied-minichat")
    context = browser.new_context()
    try:
        page = context.new_page()
        # The learner's browser carries JupyterLab's login cookie; the token URL sets it.
        page.goto(f"{base}/proxy/{minichat.port}/?token={token}")
        page.wait_for_selector("#messages", timeout=20_000)
        page.wait_for_selector('#status[data-status="online"]', timeout=20_000)
        assert page.url.startswith(f"{base}/proxy/{minichat.port}/")

        async def kernel_side() -> EventClient:
            return await EventClient.connect(minichat.ws_url, name="kernel")

        kernel = lt.run(kernel_side())
        try:
            page.fill("#name", "Ana")
            page.fill("#text", "through the proxy")
            page.press("#text", "Enter")
            page.locator("#messages li", has_text="through the proxy").wait_for(timeout=10_000)
            data = lt.run(kernel.wait_for("msg-from-server", timeout=10))
            assert data["text"] == "through the proxy" and data["name"] == "Ana"
            lt.run(kernel.emit("msg-to-server", {"text": "from the kernel", "name": "Pedro"}))
            page.locator("#messages li", has_text="from the kernel").wait_for(timeout=10_000)
        finally:
            lt.run(kernel.aclose())
        assert any(r.startswith("GET /") for r in minichat.stats()["routes"])
    finally:
        context.close()
        minichat.stop()


def test_without_the_token_the_proxy_refuses(jupyter: tuple[str, str]) -> None:
    base, _token = jupyter
    minichat = lt.serve("minichat", name="unproxied-minichat")
    try:
        request = urllib.request.Request(f"{base}/proxy/{minichat.port}/")
        opener = urllib.request.build_opener(NoRedirect())
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(request, timeout=10)
        assert refused.value.code in (302, 403)
    finally:
        minichat.stop()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None
