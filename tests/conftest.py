"""Shared fixtures: the labtools loop is stopped after each test module, and a real browser
(Debian's Chromium driven by Playwright; never a downloaded browser) for the page tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

import labtools

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
