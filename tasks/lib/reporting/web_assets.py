"""The third-party web files the HTML reports and the API page load, from pinned npm packages in the venv.

Great Expectations' Data Docs and DVCLive's training report name Bootstrap, jQuery, Font
Awesome, Vega and others on CDNs, and FastAPI's API page (`textclf serve`'s /docs) Swagger UI.
`CDN` says which file of which npm package stands for each of those addresses; web-assets.lock
pins each package (version, tarball, npm's sha512 integrity); `make install` fetches them
(tasks.apps.fetch_web_assets) into `<venv>/share/textclf/web-assets/<name>-<version>/`.
tasks.lib.reporting.offline_html puts them in the reports; tasks.apps.api_page serves Swagger UI's.
"""

from __future__ import annotations

import posixpath
import re
import sys
import tomllib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from tasks.lib.errors import PipelineError

LOCK_FILE = Path(__file__).resolve().parents[3] / "web-assets.lock"
INSTALL_COMMAND = "`make install` (or `.venv/bin/python -m tasks.apps.fetch_web_assets`)"
STAMP = ".integrity"  # in each package's folder: the integrity of the tarball its files came from


class MissingWebAssets(PipelineError):
    """The files the HTML reports load are not installed: the message says which and how to install them."""


@dataclass(frozen=True)
class Package:
    """One npm package of the lock file."""

    name: str
    version: str
    resolved: str  # the tarball's address
    integrity: str  # npm's `dist.integrity`: sha512-<base64>

    @property
    def folder(self) -> str:
        """`<name without its scope>-<version>`, as npm names the tarball."""
        return f"{self.name.rpartition('/')[2]}-{self.version}"


@dataclass(frozen=True)
class Asset:
    """A file inside an npm package (its path without the tarball's top folder)."""

    package: str
    path: str


_JSDELIVR = "https://cdn.jsdelivr.net/npm/"
_UNPKG = "https://unpkg.com/"
_CDNJS = "https://cdnjs.cloudflare.com/ajax/libs/"
_TABLE = "bootstrap-table"
_FILTER = "dist/extensions/filter-control/bootstrap-table-filter-control"
_FONTS = "@fortawesome/fontawesome-free"
_DARK = "@forevolve/bootstrap-dark"
SWAGGER_UI = "swagger-ui-dist"
SWAGGER_UI_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")

# Every address the reports load from a CDN (without its query string) and the file that stands for it.
CDN: dict[str, Asset] = {
    # Great Expectations 1.24's Data Docs (render/view/templates: page.j2, index_page.j2, js_script_imports.j2).
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": Asset(
        "bootstrap", "dist/css/bootstrap.min.css"
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": Asset(
        "bootstrap", "dist/js/bootstrap.min.js"
    ),
    "https://code.jquery.com/jquery-3.7.1.min.js": Asset("jquery", "dist/jquery.min.js"),
    f"{_CDNJS}popper.js/1.12.9/umd/popper.min.js": Asset("popper.js", "dist/umd/popper.min.js"),
    f"{_UNPKG}bootstrap-table@1.19.1/dist/bootstrap-table.min.css": Asset(_TABLE, "dist/bootstrap-table.min.css"),
    f"{_UNPKG}bootstrap-table@1.19.1/dist/bootstrap-table.min.js": Asset(_TABLE, "dist/bootstrap-table.min.js"),
    f"{_UNPKG}bootstrap-table@1.19.1/{_FILTER}.min.js": Asset(_TABLE, f"{_FILTER}.min.js"),
    # The pages take the filter-control styles from 1.19.0 and its script from 1.19.1: 1.19.1's serve both.
    f"{_UNPKG}bootstrap-table@1.19.0/{_FILTER}.css": Asset(_TABLE, f"{_FILTER}.css"),
    f"{_UNPKG}bootstrap-table@1.19.0/{_FILTER}.min.css": Asset(_TABLE, f"{_FILTER}.min.css"),
    f"{_CDNJS}bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": Asset(
        "bootstrap-datepicker", "dist/css/bootstrap-datepicker.min.css"
    ),
    f"{_CDNJS}bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": Asset(
        "bootstrap-datepicker", "dist/js/bootstrap-datepicker.min.js"
    ),
    # Its fonts (../webfonts/*) come with it: see css_urls.
    f"{_CDNJS}font-awesome/6.6.0/css/all.min.css": Asset(_FONTS, "css/all.min.css"),
    # The pages name the unminified stylesheet (880 kB); the same package's minified build (150 kB) stands in.
    f"{_JSDELIVR}@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": Asset(
        _DARK, "dist/css/bootstrap-prefers-dark.min.css"
    ),
    f"{_JSDELIVR}vega@5": Asset("vega", "build/vega.min.js"),
    f"{_JSDELIVR}vega-lite@5": Asset("vega-lite", "build/vega-lite.min.js"),
    f"{_JSDELIVR}vega-embed@6": Asset("vega-embed", "build/vega-embed.min.js"),
    # DVCLive 3.49's training report (dvc_render.vega.VegaRenderer.SCRIPTS): the same majors.
    f"{_JSDELIVR}vega@5.20.2": Asset("vega", "build/vega.min.js"),
    f"{_JSDELIVR}vega-lite@5.2.0": Asset("vega-lite", "build/vega-lite.min.js"),
    f"{_JSDELIVR}vega-embed@6.18.2": Asset("vega-embed", "build/vega-embed.min.js"),
    # FastAPI 0.150's Swagger UI page (fastapi.openapi.docs.get_swagger_ui_html), `textclf serve`'s /docs.
    **{f"{_JSDELIVR}swagger-ui-dist@5/{name}": Asset(SWAGGER_UI, name) for name in SWAGGER_UI_FILES},
    "https://fastapi.tiangolo.com/img/favicon.png": Asset(SWAGGER_UI, "favicon-32x32.png"),
}

_CSS_URL = re.compile(r"""url\(\s*(["']?)(.*?)\1\s*\)|@import\s+(["'])(.*?)\3""", re.IGNORECASE)
_ABSOLUTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//|/|#)", re.IGNORECASE)


def css_urls(css: str) -> list[str]:
    """Every address a stylesheet loads: its `url(...)` and `@import` targets, as written."""
    return [match.group(2) if match.group(2) is not None else match.group(4) for match in _CSS_URL.finditer(css)]


def css_files(path: str, css: str) -> list[str]:
    """The package files a stylesheet at `path` loads by relative address (fonts, images)."""
    found = []
    for url in css_urls(css):
        if url and not _ABSOLUTE.match(url):
            target = posixpath.normpath(posixpath.join(posixpath.dirname(path), re.split(r"[?#]", url)[0]))
            if target.startswith("../"):
                raise ValueError(f"{path} loads {url}, outside its package")
            found.append(target)
    return sorted(set(found))


def read_lock(path: Path = LOCK_FILE) -> dict[str, Package]:
    """The packages of the lock file, by npm name."""
    with path.open("rb") as file:
        entries = tomllib.load(file)["packages"]
    return {name: Package(name=name, **entry) for name, entry in entries.items()}


def cdn_files(package: str) -> list[str]:
    """The files of `package` that stand for CDN addresses."""
    return sorted({asset.path for asset in CDN.values() if asset.package == package})


def default_root() -> Path:
    """Where `make install` puts the packages: inside the virtual environment that runs the pipeline."""
    return Path(sys.prefix) / "share" / "textclf" / "web-assets"


@dataclass(frozen=True)
class WebAssets:
    """The installed packages, checked complete."""

    root: Path
    packages: dict[str, Package]

    def relative(self, asset: Asset) -> str:
        """`<package folder>/<path>`: where the file lies under `root` (and under a report's copy)."""
        return f"{self.packages[asset.package].folder}/{asset.path}"

    def file(self, asset: Asset) -> Path:
        return self.root / self.relative(asset)

    def with_dependencies(self, asset: Asset) -> list[Asset]:
        """The asset and, for a stylesheet, the files it loads."""
        if not asset.path.endswith(".css"):
            return [asset]
        css = self.file(asset).read_text(encoding="utf-8")
        return [asset, *(Asset(asset.package, path) for path in css_files(asset.path, css))]


def installed(root: Path | None = None, lock: Path = LOCK_FILE, only: Collection[str] = ()) -> WebAssets:
    """The web files of the lock (or of its packages named in `only`), checked present; raises
    MissingWebAssets naming what is missing and the fix."""
    root = root or default_root()
    if not lock.is_file():
        raise MissingWebAssets(
            f"no {lock}: it pins the web files the HTML reports load (it sits beside pyproject.toml)"
        )
    packages = {name: package for name, package in read_lock(lock).items() if not only or name in only}
    assets = WebAssets(root, packages)
    missing = []
    for name, package in packages.items():
        stamp = root / package.folder / STAMP
        if not stamp.is_file() or stamp.read_text(encoding="ascii").strip() != package.integrity:
            missing.append(f"{name} {package.version}")
            continue
        for path in cdn_files(name):
            asset = Asset(name, path)
            needed = assets.with_dependencies(asset) if assets.file(asset).is_file() else [asset]
            missing += [f"{name} {package.version}: {a.path}" for a in needed if not assets.file(a).is_file()]
    unlocked = sorted({asset.package for asset in CDN.values() if not only or asset.package in only} - set(packages))
    missing += [f"{name} (not in {lock.name})" for name in unlocked]
    if missing:
        raise MissingWebAssets(
            f"the HTML reports need web files that are not installed in {root}: {', '.join(missing)}. "
            f"Install them with {INSTALL_COMMAND}: it fetches the npm packages pinned in {lock.name}."
        )
    return assets


def swagger_ui(root: Path | None = None) -> Path:
    """The folder of the installed Swagger UI files (`textclf serve`'s /docs); raises MissingWebAssets.

    A serving install holds the package, not the source tree, so no lock file lies beside it: there the
    folder that `make install-serve` fetched (checked against the lock then, and stamped) is taken.
    """
    root = root or default_root()
    if LOCK_FILE.is_file():
        return root / installed(root, only=(SWAGGER_UI,)).packages[SWAGGER_UI].folder
    stamped = sorted(root.glob(f"{SWAGGER_UI}-*/{STAMP}"), key=lambda stamp: stamp.stat().st_mtime)
    if stamped and all((stamped[-1].parent / name).is_file() for name in SWAGGER_UI_FILES):
        return stamped[-1].parent
    raise MissingWebAssets(
        f"the API page's files (Swagger UI, npm's {SWAGGER_UI}) are not installed in {root}: `make install-serve` "
        f"fetches them (python -m tasks.apps.fetch_web_assets --only {SWAGGER_UI} --lock web-assets.lock)"
    )
