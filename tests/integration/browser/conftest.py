"""Browser-test fixtures: the session-wide cluster (``cluster``, with its app proxy) behind a webserver
serving the console, and Debian's Chromium driven headless by Playwright (sync API).

* ``console``: the webserver (module :mod:`ai.backend.testutils.web`), one per test session.
* ``browser``: one Chromium for this package's tests (stopped after them: see the fixture).
* ``user_page`` / ``admin_page``: a fresh browser context logged in as the fixture user / admin through the
  login form; the test fails if the page raised a JavaScript error.
* ``new_page(who=None)``: a fresh, not-logged-in page (``who`` = a dict with ``email`` and ``password``
  logs it in).
* ``shot(page, name)``: a full-page screenshot kept under ``test-artifacts/screenshots/<name>.png``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ai.backend.manager.fixtures import ADMIN, USER
from ai.backend.testutils.cluster import REPO, Cluster
from ai.backend.testutils.web import WebServer, launch_webserver

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("BAI_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("BAI_TEST_ARTIFACTS", REPO / "test-artifacts")) / "screenshots"
#: Playwright's default wait for a locator; container starts on a loaded 2-core machine take a while.
DEFAULT_TIMEOUT_MS = 30_000


@pytest.fixture(scope="session")
def console(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    w = launch_webserver(tmp_path_factory.mktemp("console"), cluster.endpoint)
    try:
        yield w
    finally:
        w.shutdown()


# Package scope, not session: while the sync Playwright runs, asyncio.run() fails in this process, and the
# rest of tests/integration (run after this package, in the same process) needs it.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: run scripts/setup.sh --test (it installs Debian's)")
    pw = playwright_sync.sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


def login(page: Any, who: dict[str, Any]) -> None:
    """Log ``page`` in through the login form as ``who`` and wait for the sessions page."""
    page.goto("/login")
    page.get_by_label("Email or user name").fill(who["email"])
    page.get_by_label("Password").fill(who["password"])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/sessions*")


class PageFactory:
    """Fresh browser contexts on the console; each page's JavaScript errors are collected."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.browser, self.base_url = browser, base_url
        self.contexts: list[Any] = []
        self.errors: list[str] = []

    def __call__(self, who: dict[str, Any] | None = None, **context_args: Any) -> Any:
        ctx = self.browser.new_context(base_url=self.base_url, accept_downloads=True, **context_args)
        ctx.set_default_timeout(DEFAULT_TIMEOUT_MS)
        self.contexts.append(ctx)
        page = ctx.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        if who is not None:
            login(page, who)
        return page

    def close(self) -> None:
        for ctx in self.contexts:
            ctx.close()


@pytest.fixture
def new_page(browser: Any, console: WebServer) -> Iterator[PageFactory]:
    factory = PageFactory(browser, console.url)
    try:
        yield factory
    finally:
        factory.close()
    assert not factory.errors, f"JavaScript errors in the console: {factory.errors}"


@pytest.fixture
def user_page(new_page: PageFactory) -> Any:
    return new_page(USER)


@pytest.fixture
def admin_page(new_page: PageFactory) -> Any:
    return new_page(ADMIN)


@pytest.fixture(scope="session")
def shot() -> Callable[[Any, str], Path]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
