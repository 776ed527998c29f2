"""Debian's chromium, driven by Playwright, for the tests of pages people look at (HTML reports,
the docs site). Never `playwright install`: that downloads a browser."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")


@contextlib.contextmanager
def chromium(**launch: Any) -> Iterator[Any]:
    """A headless chromium for the block (`launch`: more options of Playwright's `launch`); fails the test
    with what to install when Playwright or the browser is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `make install` installs it (pyproject.toml's test extra)")
    if not CHROMIUM.is_file():
        pytest.fail(f"no {CHROMIUM}: `make test` installs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), **launch)
        try:
            yield browser
        finally:
            browser.close()


class GuardedPage:
    """One browser context whose every request is routed: a request the page may make (`local`) goes
    through, any other is aborted and recorded; console errors, page errors and failed loads are
    recorded too. `problems` holds what went wrong since the last `open` of a subclass."""

    leaving = "request leaving the machine"

    def __init__(self, browser: Any, viewport: dict[str, int]):
        self.context = browser.new_context(viewport=viewport)
        self.problems: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("requestfailed", self._failed)

    def local(self, url: str) -> bool:
        raise NotImplementedError

    def _route(self, route: Any) -> None:
        url = route.request.url
        if self.local(url):
            route.continue_()
        else:
            self.problems.append(f"{self.leaving}: {url}")
            route.abort("blockedbyclient")

    def _failed(self, request: Any) -> None:
        if self.local(request.url):  # the others were aborted above, and recorded there
            self.problems.append(f"failed to load {request.url}: {request.failure}")


def screenshot_folder(tmp_path_factory: pytest.TempPathFactory, variable: str, what: str) -> Path:
    """Where a browser test saves its screenshots: the folder the environment `variable` names (a CI job
    can keep it), else a new one under pytest's basetemp; printed, so `-rP` shows it."""
    chosen = os.environ.get(variable)
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp(f"{what.replace(' ', '-')}-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots of the {what}: {folder}")
    return folder


class ServedPage(GuardedPage):
    """Pages of one HTTP server (`origin`, e.g. http://127.0.0.1:8000): a request anywhere else is a problem."""

    def __init__(self, browser: Any, origin: str, viewport: dict[str, int] | None = None):
        self.origin = origin.rstrip("/")
        super().__init__(browser, viewport or {"width": 1280, "height": 800})

    def local(self, url: str) -> bool:
        return url == self.origin or url.startswith(f"{self.origin}/")


def api_operations(browser: Any, origin: str) -> tuple[list[str], list[str]]:
    """`textclf serve`'s API page at `origin`/docs as a person sees it: the operations Swagger UI lists
    ("METHOD /path"), and what went wrong (a request leaving the server, a console error...)."""
    visit = ServedPage(browser, origin)
    try:
        visit.page.goto(f"{visit.origin}/docs")
        listed = visit.page.locator(".opblock-summary")
        listed.first.wait_for(timeout=20_000)
        operations = [
            f"{block.locator('.opblock-summary-method').inner_text()} "
            f"{block.locator('.opblock-summary-path').get_attribute('data-path')}"
            for block in listed.all()
        ]
        return operations, visit.problems
    finally:
        visit.context.close()
