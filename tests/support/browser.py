"""Debian's chromium, driven by Playwright, for the tests of pages people look at (HTML reports,
the docs site). Never `playwright install`: that downloads a browser."""

from __future__ import annotations

import contextlib
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
