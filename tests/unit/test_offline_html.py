"""Reports that render offline, without a browser: pages rewritten to local copies, what is left remote named,
missing web files named with the command that installs them, tarballs checked against the lock's sha512.

The browser test (tests/integration/test_reports_offline.py) opens the real reports; these use
stand-in files laid out as `make install` lays out the real ones.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
from pathlib import Path

import pytest

from tasks.apps.fetch_web_assets import FetchFailed, install
from tasks.lib.reporting.offline_html import NotOffline, inline_scripts, make_site_offline, remote_loads
from tasks.lib.reporting.web_assets import (
    CDN,
    STAMP,
    Asset,
    MissingWebAssets,
    Package,
    WebAssets,
    css_files,
    installed,
    read_lock,
    swagger_ui,
)

FONT_AWESOME = "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css"
BOOTSTRAP_JS = "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js"
VEGA = "https://cdn.jsdelivr.net/npm/vega@5.20.2"
LOGO = "https://example.org/logo.png"
FA_CSS = '@font-face{src:url(../webfonts/fa-solid-900.woff2) format("woff2")}\n/*# sourceMappingURL=all.min.css.map */'


@pytest.fixture
def assets(tmp_path: Path) -> WebAssets:
    """Every file the lock's packages must provide, as stand-ins; checked as the pipeline checks them."""
    root = tmp_path / "web-assets"
    packages = read_lock()
    for url, asset in CDN.items():
        file = root / packages[asset.package].folder / asset.path
        file.parent.mkdir(parents=True, exist_ok=True)
        text = FA_CSS if url == FONT_AWESOME else f"/* {asset.path} */ var x = '</script>';\n//# sourceMappingURL=x.map"
        file.write_text(text)
    fonts = root / packages["@fortawesome/fontawesome-free"].folder / "webfonts"
    fonts.mkdir()
    (fonts / "fa-solid-900.woff2").write_bytes(b"wOF2")
    for package in packages.values():
        (root / package.folder / STAMP).write_text(package.integrity + "\n")
    return installed(root)


def page(*head: str, body: str = "") -> str:
    return f"<!DOCTYPE html><html><head>{''.join(head)}</head><body>{body}</body></html>"


def test_a_site_points_at_local_copies_from_every_folder_and_holds_them(tmp_path, assets):
    site = tmp_path / "site"
    (site / "static/images").mkdir(parents=True)
    (site / "static/images/logo.png").write_bytes(b"png")
    loads = (
        f'<link rel="stylesheet" href="{FONT_AWESOME}">',
        f'<script src="{BOOTSTRAP_JS}" integrity="sha384-abc" crossorigin="anonymous"></script>',
        f"<style>.brand {{ background: url('{LOGO}') }}</style>",
    )
    links = '<a href="https://greatexpectations.io">GX</a>'
    (site / "index.html").write_text(page(*loads, body=f'<img src="{LOGO}?d=123">{links}'))
    (site / "validations/rows").mkdir(parents=True)
    (site / "validations/rows/run.html").write_text(page(*loads))
    make_site_offline(site, assets, {LOGO: "static/images/logo.png"})

    index, deep = (site / "index.html").read_text(), (site / "validations/rows/run.html").read_text()
    assert remote_loads(index) == remote_loads(deep) == []
    assert '<link rel="stylesheet" href="./static/vendor/fontawesome-free-6.6.0/css/all.min.css">' in index
    # A file:// page cannot make the cross-origin request that integrity checks need: both go.
    assert '<script src="../../static/vendor/bootstrap-4.3.1/dist/js/bootstrap.min.js"></script>' in deep
    assert "url('../../static/images/logo.png')" in deep and '<img src="./static/images/logo.png">' in index
    assert links in index  # a link loads nothing
    vendor = site / "static/vendor"
    css = (vendor / "fontawesome-free-6.6.0/css/all.min.css").read_text()
    assert "sourceMappingURL" not in css and "fa-solid-900.woff2" in css
    assert (vendor / "fontawesome-free-6.6.0/webfonts/fa-solid-900.woff2").read_bytes() == b"wOF2"
    assert sorted(p.name for p in vendor.glob("*")) == ["bootstrap-4.3.1", "fontawesome-free-6.6.0"]


@pytest.mark.parametrize(
    ("element", "remote"),
    [
        ('<script src="https://cdn.example.com/new.js"></script>', "https://cdn.example.com/new.js"),
        ('<link rel="icon" href="//cdn.example.com/icon.ico">', "//cdn.example.com/icon.ico"),
        ("<style>@import url('https://fonts.example.com/css');</style>", "https://fonts.example.com/css"),
        ('<style>@import "https://fonts.example.com/css";</style>', "https://fonts.example.com/css"),
        ('<div style="background-image: url(https://example.com/bg.png)"></div>', "https://example.com/bg.png"),
        ('<img srcset="local.png 1x, https://example.com/big.png 2x">', "https://example.com/big.png"),
        ('<iframe src="https://www.example.com/embed/x"></iframe>', "https://www.example.com/embed/x"),
    ],
)
def test_what_a_page_would_still_load_from_another_machine_is_named(tmp_path, assets, element, remote):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(page(body=element))
    with pytest.raises(NotOffline, match=rf"index\.html would load {re.escape(remote)} from another machine"):
        make_site_offline(site, assets)


def test_links_and_forms_load_nothing():
    body = '<a href="https://example.com">x</a><form action="https://example.com/subscribe"></form>'
    assert remote_loads(page(body=body)) == []


def test_a_page_naming_a_file_the_site_lacks_is_an_error(tmp_path, assets):
    site = tmp_path / "site"
    (site / "validations").mkdir(parents=True)
    (site / "validations/run.html").write_text(page('<link rel="icon" href="static/images/favicon.ico">'))
    with pytest.raises(NotOffline, match=r"validations/run\.html: static/images/favicon\.ico"):
        make_site_offline(site, assets)


def test_a_single_page_gets_its_scripts_inside_it(tmp_path, assets):
    report = tmp_path / "report.html"
    report.write_text(page(f'<script src="{VEGA}"></script>', body="<script>vegaEmbed('#a', {});</script>"))
    inline_scripts(report, assets)
    html = report.read_text()
    assert "<script src=" not in html and "/* build/vega.min.js */" in html and remote_loads(html) == []
    # The script's own '</script>' cannot end the element early; the source map it names is not there.
    assert "var x = '<\\/script>';" in html and "sourceMappingURL" not in html


def test_missing_web_files_are_named_with_the_command_that_installs_them(tmp_path, assets):
    (assets.file(Asset("vega", "build/vega.min.js"))).unlink()
    (assets.root / "jquery-3.7.1" / STAMP).write_text("sha512-another\n")  # fetched for another version of the lock
    with pytest.raises(MissingWebAssets) as raised:
        installed(assets.root)
    message = str(raised.value)
    assert "vega 5.33.1: build/vega.min.js" in message and "jquery 3.7.1" in message and "make install" in message
    with pytest.raises(MissingWebAssets, match=r"bootstrap 4\.3\.1"):
        installed(tmp_path / "nothing-here")


def test_stylesheet_references_stay_inside_their_package():
    assert css_files("css/all.min.css", FA_CSS) == ["webfonts/fa-solid-900.woff2"]
    assert css_files("a.css", "b{background:url(data:image/png;base64,xx)} c{background:url('#x')}") == []
    with pytest.raises(ValueError, match="outside its package"):
        css_files("css/a.css", "b{background:url(../../../etc/passwd)}")


def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_tarball_is_checked_against_the_lock_and_only_what_the_reports_use_is_kept(tmp_path):
    data = tarball(
        {
            "css/all.min.css": FA_CSS.encode(),
            "webfonts/fa-solid-900.woff2": b"wOF2",
            "js/all.js": b"not used by the reports",
        }
    )
    (tmp_path / "fa.tgz").write_bytes(data)
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    package = Package("@fortawesome/fontawesome-free", "6.6.0", (tmp_path / "fa.tgz").as_uri(), integrity)
    root = tmp_path / "assets"
    assert install(package, root) and not install(package, root)  # the second time: already there
    kept = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert kept == [
        "fontawesome-free-6.6.0/.integrity",
        "fontawesome-free-6.6.0/css/all.min.css",
        "fontawesome-free-6.6.0/webfonts/fa-solid-900.woff2",
    ]
    tampered = Package(package.name, "6.6.1", package.resolved, "sha512-" + base64.b64encode(b"x" * 64).decode())
    with pytest.raises(FetchFailed, match="is not the pinned tarball"):
        install(tampered, root)
    assert not (root / "fontawesome-free-6.6.1").exists()
    assert (root / "fontawesome-free-6.6.0").stat().st_mode & 0o777 == 0o755  # readable by a service's own user


def test_the_api_page_finds_its_files_with_the_lock_or_by_their_stamp_in_a_serving_install(
    tmp_path, assets, monkeypatch
):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from tasks.apps.api_page import add_api_page
    from tasks.lib.reporting import web_assets

    folder = swagger_ui(assets.root)
    assert folder.name == f"swagger-ui-dist-{read_lock()['swagger-ui-dist'].version}"
    monkeypatch.setattr(web_assets, "LOCK_FILE", tmp_path / "not-installed.lock")  # a serving install: no lock
    assert swagger_ui(assets.root) == folder
    (folder / "swagger-ui.css").unlink()
    with pytest.raises(MissingWebAssets, match="make install-serve"):
        swagger_ui(assets.root)
    app = FastAPI(docs_url=None)
    add_api_page(app, assets.root)
    answer = TestClient(app).get("/docs")  # says what is missing, not a blank page
    assert answer.status_code == 404 and "make install-serve" in answer.text and "/openapi.json" in answer.text
