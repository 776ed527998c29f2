"""The docs site works offline, in a real browser: Debian's chromium, driven by Playwright.

The site is built with `mkdocs build --strict` into a temporary folder and served by a plain
http.server on 127.0.0.1. Every page is opened with every request recorded and routed: one that
would leave 127.0.0.1 is aborted and fails the test (and the browser's only proxy is a closed
port on loopback, so nothing could leave even unrouted), as do console errors, page errors and
failed requests. Then Material's search (lunr in a web worker, the index from the site itself)
is typed into and must show results. Screenshots of the home page and a guide go to
$DOCS_SCREENSHOTS if set, else a folder under pytest's basetemp (`-rP` shows the line).

`make test` installs chromium (Debian's package) before the suite; `make install` does not.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.browser import GuardedPage, chromium, screenshot_folder
from tests.support.repo import REPO

pytestmark = pytest.mark.slow

LOCAL_SCHEMES = ("data", "blob", "about")
SEARCH_WORD = "quarantine"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site's folder; remembers every path asked for instead of logging it."""

    requested: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        type(self).requested.append(self.path)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs site as `mkdocs build --strict` writes it (the build's warnings fail it)."""
    out = tmp_path_factory.mktemp("docs-site") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(REPO / "mkdocs.yml"),
            "--site-dir",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    return out


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[tuple[str, list[str]]]:
    """The site on 127.0.0.1 (a free port): its base address, and the paths requested so far."""
    handler = type("Handler", (_QuietHandler,), {"requested": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, name="docs-site", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.requested
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Port 9 on loopback is closed: a request Playwright's routes did not see still cannot leave.
    with chromium(proxy={"server": "http://127.0.0.1:9", "bypass": "127.0.0.1"}) as launched:
        yield launched


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshot_folder(tmp_path_factory, "DOCS_SCREENSHOTS", "docs site")


class Visit(GuardedPage):
    """The docs site in one browser context: every request recorded, none may leave 127.0.0.1."""

    leaving = "request leaving 127.0.0.1"

    def __init__(self, browser: Any, base: str):
        self.host = urlsplit(base).netloc
        self.requests: list[str] = []
        super().__init__(browser, {"width": 1280, "height": 900})
        self.context.on("request", lambda request: self.requests.append(request.url))
        self.page.on("worker", lambda worker: worker.on("console", self._worker_console))

    def local(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in LOCAL_SCHEMES or (parts.scheme == "http" and parts.netloc == self.host)

    def _worker_console(self, message: Any) -> None:
        if message.type == "error":
            self.problems.append(f"worker console error: {message.text}")

    def open(self, url: str) -> list[str]:
        self.problems = []
        # networkidle: the search worker and the favicon load after `load`; leaving earlier aborts them.
        response = self.page.goto(url, wait_until="networkidle")
        if response is None or response.status != 200:
            self.problems.append(f"{url}: HTTP {response.status if response else 'no response'}")
        self.page.evaluate("document.fonts.ready.then(() => true)")
        return self.problems


def _pages(site: Path) -> list[str]:
    """Every page of the site, as the path a browser asks for (a folder's index.html as the folder)."""
    paths = []
    for page in sorted(site.rglob("*.html")):
        relative = page.relative_to(site).as_posix()
        paths.append(relative.removesuffix("index.html") if page.name == "index.html" else relative)
    return paths


def test_every_page_loads_offline_from_127_0_0_1(
    site: Path, served: tuple[str, list[str]], browser: Any, screenshots: Path
) -> None:
    base, requested = served
    pages = _pages(site)
    # The home page, getting started, the guides, concepts, reference, benchmarks, and Material's 404 page.
    assert {"", "getting-started/", "guides/serving/", "concepts/floor-plan/", "reference/params/", "404.html"} <= set(
        pages
    )
    visit = Visit(browser, base)
    problems = {}
    for path in pages:
        found = visit.open(f"{base}/{path}")
        if path == "404.html":  # opened directly it is a page like any other, answered 200
            found = [p for p in found if "404" not in p]
        title = visit.page.title()
        if not title or "textclf-retrain" not in title:
            found.append(f"unexpected title {title!r}")
        if path in ("", "guides/serving/"):
            visit.page.screenshot(
                path=screenshots / f"{path.strip('/').replace('/', '-') or 'home'}.png", full_page=False
            )
        if found:
            problems[path or "/"] = found
    leaving = [url for url in visit.requests if not visit.local(url)]
    visit.context.close()
    assert problems == {}
    assert leaving == []
    # The theme's own files came from this server: its stylesheet and script bundle.
    assert any(p.startswith("/assets/stylesheets/main.") for p in requested)
    assert any(p.startswith("/assets/javascripts/bundle.") for p in requested)


def test_search_finds_pages_offline(served: tuple[str, list[str]], browser: Any, screenshots: Path) -> None:
    base, requested = served
    visit = Visit(browser, base)
    visit.open(f"{base}/")
    visit.page.click("input.md-search__input", timeout=10_000)
    visit.page.locator("input.md-search__input").press_sequentially(SEARCH_WORD, delay=30)  # typed: keyup events
    visit.page.wait_for_selector("li.md-search-result__item", timeout=20_000)
    results = visit.page.locator("li.md-search-result__item")
    count = results.count()
    first = results.first.inner_text()
    meta = visit.page.inner_text(".md-search-result__meta")
    visit.page.screenshot(path=screenshots / "search.png")
    leaving = [url for url in visit.requests if not visit.local(url)]
    problems = visit.problems
    visit.context.close()
    assert problems == []
    assert leaving == []
    assert count > 0, meta
    assert "matching documents" in meta and SEARCH_WORD in first.lower()
    # lunr ran in the site's own web worker, on the site's own index.
    assert any(p.startswith("/assets/javascripts/workers/search.") for p in requested)
    assert "/search/search_index.json" in requested
