"""Shared fixtures: the labtools loop is stopped after each test module, a real browser
(Debian's Chromium driven by Playwright; never a downloaded browser) for the page tests, and a
real Redis (Debian's redis-server) for the tests of several nodes.

Skip or fail: a laptop without redis-server or haproxy skips the tests that need them, with the
command that installs them; CI (the ``CI`` variable set) installs both, so there a missing one
fails the test instead of hiding it."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

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


def script_module(path: Path) -> ModuleType:
    """A script that is not a package's module (a benchmark) loaded as one; its ``main`` is not run."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


# --- markers: browser, redis, notebook, slow (registered in pyproject.toml) ------------------------
#
# Assigned here, from what a test uses, never by a ``pytestmark`` in the test files:
#
# * ``notebook`` and ``slow``: every nbval cell (the items of the ``.ipynb`` files);
# * ``browser`` and ``slow``: a test that uses the ``browser`` fixture (directly or through one
#   of its fixtures), or whose code or fixtures launch Playwright/Chromium, and every test of
#   ``BROWSER_MODULES``;
# * ``redis``: a test that uses ``redis_server`` (or a fixture of its own that starts a
#   ``RedisServer``), whose code or fixtures call ``require_redis``/``require_haproxy`` or start a
#   ``RedisServer``, ``FrontDoor`` or ``Deployment``, or that runs in a two-node or front-door mode
#   of ``deployments.MODES``;
# * ``slow``: every test of ``SLOW_MODULES`` (but those of ``QUICK_TESTS``), every test that uses
#   a fixture of ``SLOW_FIXTURES`` and every test named in ``SLOW_TESTS`` (measured with
#   ``--durations``: about 10 s or more on a 2-core machine).
#
# ``pytest -m "not slow"`` is then the inner loop: unit, contract, hardening and Redis tests.

BROWSER_MODULES = {"test_run_all.py"} | {p.name for p in Path(__file__).parent.glob("test_browser_*.py")}
SLOW_MODULES = {
    "test_run_all.py",  # Run All of every notebook, then every cell again, twice
    "test_benchmarks.py",  # the benchmarks' smoke passes, each a subprocess: minutes
}
QUICK_TESTS = {"test_benchmarks.py::test_there_are_benchmarks"}  # in a slow module, but reads files only
SLOW_FIXTURES = {  # fixture: why
    "jupyter": "starts a real JupyterLab (test_binder_proxy.py): ~4 s before the test begins",
    "busy_core": "keeps a core busy for Run All (test_run_all.py)",
}
BOOK_BUILD = "the book of every notebook, built once for these tests: ~10 s idle, ~25 s on busy cores"
SLOW_TESTS = {  # "module::test" (every parametrization of it): why, as measured
    "test_scale.py::test_measurements_calibrate_the_cost_model": "9 s on 2 idle cores, over 10 s on busy ones",
    "test_book.py::test_every_lesson_has_a_page_listed_in_order": BOOK_BUILD,
    "test_book.py::test_pages_show_the_committed_outputs": BOOK_BUILD,
    "test_book.py::test_live_pages_become_a_note_with_a_binder_link": BOOK_BUILD,
    "test_book.py::test_every_lesson_page_has_its_binder_link": BOOK_BUILD,
    "test_book.py::test_each_kind_of_link_lands": "a Sphinx build of a made-up repository: ~4 s, twice that when busy",
    "test_book.py::test_a_link_to_nothing_fails_the_build": "a Sphinx build of a made-up repository: ~4 s",
}
REDIS_FIXTURES = {"redis_server", "redis_url"}
REDIS_MODES = {"two-nodes", "front-door"}  # deployments.MODES that need Redis (and HAProxy)
REDIS_EXERCISES = {"11.3"}  # exercises whose checker deploys nodes on Redis behind HAProxy
BROWSER_CODE = re.compile(r"\b(?:sync_playwright|async_playwright|chromium\.launch)\b")
REDIS_CODE = re.compile(r"\b(?:require_redis|require_haproxy|RedisServer\.start|FrontDoor\.start|Deployment\.start)\(")


@functools.cache
def _source(function: Callable[..., Any]) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def _code(item: pytest.Item) -> str:
    """The source of the test function and of every fixture it needs (transitively)."""
    functions = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for definitions in (info.name2fixturedefs.values() if info is not None else ()):
        functions.extend(definition.func for definition in definitions)
    return "\n".join(_source(function) for function in functions if function is not None)


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.name
        if item.path.suffix == ".ipynb" or type(item).__name__ == "IPyNbCell":
            item.add_marker(pytest.mark.notebook)
            item.add_marker(pytest.mark.slow)
            continue
        fixtures = set(getattr(item, "fixturenames", ()))
        code = _code(item)
        params = getattr(getattr(item, "callspec", None), "params", {})
        name = f"{module}::{getattr(item, 'originalname', item.name)}"
        if "browser" in fixtures or module in BROWSER_MODULES or BROWSER_CODE.search(code):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)
        if fixtures & REDIS_FIXTURES or REDIS_CODE.search(code) or any(
            isinstance(value, str) and value in REDIS_MODES for value in params.values()
        ) or params.get("id") in REDIS_EXERCISES:
            item.add_marker(pytest.mark.redis)
        slow_module = module in SLOW_MODULES and name not in QUICK_TESTS
        if slow_module or name in SLOW_TESTS or fixtures & SLOW_FIXTURES.keys():
            item.add_marker(pytest.mark.slow)
