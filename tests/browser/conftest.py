"""Browser tests: Debian's Chromium driven by Playwright against a real `compresso serve`."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration import harness

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
VIEWPORT = {"width": 1280, "height": 900}
# Screenshots go to a scratch folder unless this names one (`make screenshots` sets docs/screenshots),
# so a test run never leaves the work tree modified.
SCREENSHOTS_ENV = "COMPRESSO_TEST_SCREENSHOTS_DIR"


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Installs Debian's Chromium when it is missing; a failed install fails the tests, never skips them."""
    if not CHROMIUM.exists():
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.fail(f"{CHROMIUM} is missing and cannot be installed here (needs root and apt-get)")
        result = subprocess.run(
            "apt-get update && apt-get install -y chromium", shell=True, capture_output=True, text=True, check=False
        )
        if result.returncode != 0 or not CHROMIUM.exists():
            pytest.fail(f"installing chromium failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return CHROMIUM


# Module scope: Playwright's sync API keeps an asyncio loop running while it is open, which would
# break later tests that call asyncio.run().
@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`compresso serve` with its own SQLite data dir and port, as a user would start it."""
    with harness.embedded_server(tmp_path_factory.mktemp("serve")) as running:
        yield running.base_url, running.log


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    chosen = os.environ.get(SCREENSHOTS_ENV)
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport=VIEWPORT, base_url=server[0], accept_downloads=True)
    context.set_default_timeout(30_000)
    opened = context.new_page()
    yield opened
    context.close()
