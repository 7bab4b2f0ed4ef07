"""Shared fixtures: the labtools loop is stopped after each test module, a real browser
(Debian's Chromium driven by Playwright; never a downloaded browser) for the page tests, and a
real Redis (Debian's redis-server) for the tests of several nodes.

Skip or fail: a laptop without redis-server or haproxy skips the tests that need them, with the
command that installs them; CI (the ``CI`` variable set) installs both, so there a missing one
fails the test instead of hiding it."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import psutil
import pytest

import labtools
from labtools.deploy import haproxy_available, redis_available
from labtools.deploy.haproxy import missing_message as haproxy_missing
from labtools.deploy.redis import RedisServer
from labtools.deploy.redis import missing_message as redis_missing

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(autouse=True, scope="module")
def _stop_labtools_services() -> Iterator[None]:
    yield
    labtools.stop_all()


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium for the whole session (tests open their own pages/contexts)."""
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}; .ci/run installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def skip_or_fail(message: str) -> None:
    """Skip on a laptop; fail on CI, which installs everything (``.ci/run``)."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_redis() -> None:
    if not redis_available():
        skip_or_fail(redis_missing())


def require_haproxy() -> None:
    if not haproxy_available():
        skip_or_fail(haproxy_missing())


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the module's own, on a free port, stopped after the module."""
    require_redis()
    server = labtools.run(RedisServer.start())
    yield server
    labtools.run(server.aclose())


def gone(pid: int, within: float) -> bool:
    """Whether process ``pid`` ended (or is a zombie nobody reaped yet) within ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False
