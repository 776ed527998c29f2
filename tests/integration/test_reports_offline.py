"""Every HTML report the pipeline writes renders offline, in a real browser: Debian's chromium, driven by Playwright.

The reports come from the real stages on tiny data: validate's Data Docs (every page) and
train's DVCLive report. Each page is opened from disk with every request routed: one that
would leave the machine is aborted and fails the test, as do console errors, page errors,
a failed load of the page's own files and an image that does not load. The test also
checks that what the pages load took effect (Bootstrap's layout and dark mode,
bootstrap-table's tables, Font Awesome's font, Vega's charts) and saves a screenshot of
each page, Data Docs also in dark mode, into the folder it prints: $REPORT_SCREENSHOTS if set,
else one under pytest's basetemp (`-rP` shows the line).

`make test` installs chromium (Debian's package) before the suite; `make install` does not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pandas as pd
import pytest
import yaml

from tasks.lib.config import load_params
from tasks.lib.io import read_table, write_table
from tasks.lib.reporting.offline_html import VENDOR
from tasks.lib.training.curves import CURVES
from tasks.stages import augment, ingest, split, train, validate
from tests.support.browser import GuardedPage, chromium, screenshot_folder
from tests.support.repo import deep_merge, repo_params, tiny_overrides

pytestmark = pytest.mark.slow

LOCAL_SCHEMES = ("file:", "data:", "blob:")

# What the pages' own files must have done, checked in the page (each a JS expression that is true).
DATA_DOCS_LOADED = {
    "Bootstrap's styles": "getComputedStyle(document.querySelector('nav.navbar')).display === 'flex'",
    "jQuery, Popper and Bootstrap's scripts": "typeof Popper === 'function' && typeof jQuery.fn.modal === 'function'",
    "bootstrap-table drew the tables": "document.querySelectorAll('div.bootstrap-table table').length > 0",
    "bootstrap-datepicker": "typeof jQuery.fn.datepicker === 'function'",
    "Vega, Vega-Lite and vega-embed": "typeof vega.View === 'function' && typeof vegaLite.compile === 'function'"
    " && typeof vegaEmbed === 'function'",
    "Font Awesome's font, where the page shows icons": "!document.querySelector('.fas, .far, .fa')"
    " || [...document.fonts].some(f => f.family.includes('Font Awesome') && f.status === 'loaded')",
}
DARK_MODE = "getComputedStyle(document.body).backgroundColor !== 'rgb(255, 255, 255)'"
CHARTS_DRAWN = "document.querySelectorAll('.vega-embed canvas.marks, .vega-embed svg.marks').length"

# Every image of the page, <img> and CSS backgrounds, loaded (again, through the routes): [address, loaded?].
IMAGES = """async () => {
  const urls = new Set([...document.images].map(i => i.currentSrc || i.src));
  for (const element of document.querySelectorAll('*')) {
    for (const match of getComputedStyle(element).backgroundImage.matchAll(/url\\("(.*?)"\\)/g)) urls.add(match[1]);
  }
  return Promise.all([...urls].filter(u => u).map(url => new Promise(done => {
    const image = new Image();
    image.onload = () => done([url, image.naturalWidth > 0]);
    image.onerror = () => done([url, false]);
    image.src = url;
  })));
}"""
# True once READY (a JS expression) holds, false after 10 s.
WAIT_UNTIL = """async () => {
  for (const end = Date.now() + 10000; Date.now() < end; await new Promise(wake => setTimeout(wake, 50))) {
    try { if (READY) return true; } catch {}
  }
  return false;
}"""
# The files the page names in <script src>, <link href> and <img src>, as absolute addresses.
NAMED = """() => [...document.querySelectorAll('script[src], link[href], img[src]')].map(e => e.src || e.href)"""


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A workspace after validate (one repeated row quarantined) and a short training run: its reports folder."""
    root = tmp_path_factory.mktemp("reports-offline")
    overrides = deep_merge(
        tiny_overrides(tiny_model_dir),
        {
            "data": {"demo": {"rows": 240}},
            "augment": {"synonym": {"ratio": 0.0}, "backtranslation": {"ratio": 0.0}},
            "train": {"epochs": 2, "eval_steps": 11},
        },
    )
    (root / "params.yaml").write_text(yaml.safe_dump(deep_merge(repo_params(), overrides)))
    params = load_params(root)
    ingest.run(params)
    raw = read_table(params.path("raw"))
    repeat = raw.iloc[[0]].assign(row_id="repeat:1", source_line=len(raw) + 1)  # a failed expectation with its row
    write_table(params.path("raw"), pd.concat([raw, repeat], ignore_index=True))
    for stage in (validate, split, augment, train):
        stage.run(params)
    return params.path("reports")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


class Visit(GuardedPage):
    """One report page at a time, from files: nothing may load from the network."""

    def __init__(self, browser: Any):
        super().__init__(browser, {"width": 1280, "height": 800})

    def local(self, url: str) -> bool:
        return url.startswith(LOCAL_SCHEMES)

    def open(self, page: Path, loaded: dict[str, str], shot: Path, ready: str = "true") -> list[str]:
        """Load `page`, wait until `ready` (JS), check `loaded`, its files and images, save a screenshot.

        Returns what went wrong.
        """
        self.problems = []
        self.page.goto(page.as_uri())
        self.page.evaluate("document.fonts.ready.then(() => true)")
        if not self.page.evaluate(WAIT_UNTIL.replace("READY", ready)):
            self.problems.append(f"not ready within 10 s: {ready}")
        for name, test in loaded.items():
            if not self.page.evaluate(f"() => {{ try {{ return Boolean({test}); }} catch {{ return false; }} }}"):
                self.problems.append(f"did not take effect: {name}")
        self._check_files_and_images()
        self.page.screenshot(path=shot, full_page=True)
        return self.problems

    def dark(self, shot: Path) -> list[str]:
        """The same page in dark mode (its stylesheet loads other images): checked and saved too."""
        self.problems = []
        self.page.emulate_media(color_scheme="dark")
        if not self.page.evaluate(DARK_MODE):
            self.problems.append("did not take effect: the dark-mode stylesheet")
        self._check_files_and_images()
        self.page.screenshot(path=shot, full_page=True)
        self.page.emulate_media(color_scheme="light")
        return self.problems

    def _check_files_and_images(self) -> None:
        for url in self.page.evaluate(NAMED):
            parts = urlsplit(url)
            if parts.scheme == "file" and not Path(unquote(parts.path)).is_file():
                self.problems.append(f"names a missing file: {url}")
        self.problems += [f"image did not load: {url}" for url, ok in self.page.evaluate(IMAGES) if not ok]


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshot_folder(tmp_path_factory, "REPORT_SCREENSHOTS", "HTML reports")


def _shot_name(page: Path, root: Path, scheme: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", str(page.relative_to(root).with_suffix(""))) + f"-{scheme}.png"


def test_data_docs_render_offline(reports: Path, browser: Any, screenshots: Path) -> None:
    site = reports / "data_docs"
    pages = sorted(site.rglob("*.html"))
    # The index, a page per suite and a page per validation run (rows, classes, dataset).
    assert len(pages) == 7 and (site / "index.html") in pages
    assert (site / VENDOR).is_dir()
    visit = Visit(browser)
    problems = {}
    for page in pages:
        found = visit.open(page, DATA_DOCS_LOADED, screenshots / _shot_name(page, site, "light"))
        found += visit.dark(screenshots / _shot_name(page, site, "dark"))
        if found:
            problems[str(page.relative_to(site))] = found
    visit.context.close()
    assert problems == {}
    rows = next((site / "validations" / "rows").rglob("*.html")).read_text(encoding="utf-8")
    assert "duplicate_exact" in rows and "repeat:1" in rows  # the failed expectation and its row are on the page


def test_training_report_renders_offline(reports: Path, browser: Any, screenshots: Path) -> None:
    report = reports / "train" / "report.html"
    visit = Visit(browser)
    # vega-embed draws each curve once Vega's scripts ran: a canvas per DVCLive curve.
    drawn = {"Vega drew every curve": f"{CHARTS_DRAWN} === {len(CURVES)}"}
    problems = visit.open(report, drawn, screenshots / "train-report.png", ready=f"{CHARTS_DRAWN} >= {len(CURVES)}")
    visit.context.close()
    assert problems == []
    assert "<script src=" not in report.read_text(encoding="utf-8")  # one file: the scripts are inside it


def test_the_registry_page_renders_offline(onnx_folder: Path, tmp_path: Path, browser: Any, screenshots: Path) -> None:
    """Issue 44: `textclf registry report`: every version, its test metric over time with its interval,
    production and the rollback target marked, each version's lineage, gate report and card."""
    import json

    from tasks.apps.cli import main
    from tasks.lib.storage.registry import Registry

    registry = Registry(tmp_path / "registry")
    gate = tmp_path / "gate.md"
    for number, accuracy in enumerate((0.91, 0.93, 0.92), start=1):
        gate.write_text(f"## Gate: passed\n\n| rule | value |\n|---|---|\n| accuracy | {accuracy} |\n")
        metrics = {"evaluate": {"accuracy": accuracy, "interval": {"accuracy": [accuracy - 0.02, accuracy + 0.015]}}}
        # What the registry holds is shown, never run: a commit field with markup in it.
        record = {"model_md5": f"m{number}", "metrics": metrics, "git_commit": "<script>alert(1)</script>"}
        version = registry.register(onnx_folder, record, attachments=[gate], texts=lambda v: {"README.md": f"# {v}"})
        written = registry.versions / version / "version.json"  # registered on three days
        written.write_text(json.dumps(json.loads(written.read_text()) | {"created_at": f"2026-11-0{number}T10:00:00"}))
        if number < 3:
            registry.promote(version, "better")
    registry.rollback("v0002 misbehaves")  # v0001 serves again; v0003 is a candidate

    page = tmp_path / "registry.html"
    report = ["registry", "--registry", str(registry.root), "report", "--out", str(page)]
    assert main(["--root", str(tmp_path), *report]) == 0
    visit = Visit(browser)
    drawn = {"Vega drew the chart": f"{CHARTS_DRAWN} === 1"}
    problems = visit.open(page, drawn, screenshots / "registry.png", ready=f"{CHARTS_DRAWN} >= 1")
    rows = visit.page.evaluate("() => [...document.querySelectorAll('table tr')].slice(1).map(r => r.innerText)")
    details = visit.page.evaluate("() => [...document.querySelectorAll('details summary')].map(s => s.innerText)")
    points = visit.page.evaluate(
        "() => document.querySelectorAll('.vega-embed svg .mark-symbol.role-mark path').length"
    )
    visit.context.close()
    assert problems == []
    assert [row.split("\t")[:2] for row in rows] == [
        ["v0001", "production"],
        ["v0002", "archived"],
        ["v0003", "candidate"],
    ]
    assert "0.9300 (0.9100-0.9450)" in rows[1] and "rolled back: v0002 misbehaves" in rows[1]
    assert "<script>aler" in rows[0]  # shown as text (the commit's first 12 characters)
    assert details == ["lineage record (version.json)", "gate report", "model card"] * 3
    assert points == 3
    text = page.read_text(encoding="utf-8")
    assert "<script src=" not in text and "| accuracy | 0.92 |" in text
