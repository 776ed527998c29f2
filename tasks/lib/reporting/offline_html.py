"""HTML reports that render offline: what their pages load from CDNs, replaced by local copies.

A site of pages (Great Expectations' Data Docs) gets copies of the files under
`static/vendor/<package>-<version>/` and its pages point at them relatively, so the
folder renders wherever it is copied. A single page (DVCLive's training report, rewritten
while training runs) gets its scripts inlined. Either way, a page that would still load
anything from another machine afterwards is an error that names it: an address added by a
new version of Great Expectations or DVCLive belongs in tasks.lib.reporting.web_assets.CDN.
"""

from __future__ import annotations

import functools
import re
import shutil
from collections.abc import Mapping
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tasks.lib.errors import PipelineError
from tasks.lib.io import write_text
from tasks.lib.reporting.web_assets import CDN, Asset, WebAssets, css_urls

VENDOR = "static/vendor"  # in a site: where the copies go
# The script tags of a page of Vega-Lite charts (vegaEmbed); inline_scripts makes it self-contained.
VEGA_SCRIPTS = "".join(
    f'<script src="https://cdn.jsdelivr.net/npm/{name}"></script>' for name in ("vega@5", "vega-lite@5", "vega-embed@6")
)

_LOCAL_SCHEMES = {"", "file", "data", "blob", "about"}
_URL = re.compile(r"""https?://[^\s"'()<>\\]+""")
_QUERY = re.compile(r"[?#]")
_LOADER = re.compile(r"<(?:script|link)\b[^>]*>", re.IGNORECASE)
_TARGET = re.compile(r"""\b(?:src|href)\s*=\s*(["']?)([^"'\s>]*)\1""", re.IGNORECASE)
_SUBRESOURCE_INTEGRITY = re.compile(r"""\s+(?:integrity|crossorigin)(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+))?""", re.I)
_SCRIPT = re.compile(r"""<script\b[^>]*\bsrc\s*=\s*(["'])(.*?)\1[^>]*>\s*</script\s*>""", re.IGNORECASE)
_SOURCE_MAP = re.compile(r"\n?(?://|/\*)# sourceMappingURL=\S+?(?:\s*\*/)?\s*$")
# Attributes that load what they name, beyond `src` on any element.
_LOADING = {"link": "href", "object": "data", "body": "background", "image": "href", "use": "href"}


class NotOffline(PipelineError):
    """A report would still load something from another machine."""


def is_remote(url: str) -> bool:
    """Whether loading `url` from a page on disk leaves the machine."""
    url = url.strip()
    return url.startswith("//") or urlsplit(url).scheme.lower() not in _LOCAL_SCHEMES


class _Loads(HTMLParser):
    """Collects the addresses a page loads by itself: elements' sources, stylesheets, inline CSS."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_style = tag == "style"
        for name, value in attrs:
            if not value:
                continue
            if name in ("src", "poster", "xlink:href") or _LOADING.get(tag) == name:
                self.found.append(value)
            elif name in ("srcset", "imagesrcset"):
                self.found += [candidate.split()[0] for candidate in value.split(",") if candidate.strip()]
            elif name == "style":
                self.found += css_urls(value)
        if tag == "meta" and (dict(attrs).get("http-equiv") or "").lower() == "refresh":
            target = (dict(attrs).get("content") or "").partition("url=")[2].strip("'\" ")
            self.found += [target] if target else []

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.found += css_urls(data)


def page_loads(html: str) -> list[str]:
    """The addresses a page loads by itself, as written (links to pages or sites load nothing: not counted)."""
    parser = _Loads()
    parser.feed(html)
    parser.close()
    return parser.found


def remote_loads(html: str) -> list[str]:
    """The addresses a page would load from another machine."""
    return [url for url in page_loads(html) if is_remote(url)]


def _broken(file: Path, site: Path, urls: list[str]) -> list[str]:
    """The relative addresses among `urls` that name no file of `site` (from `file`'s folder)."""
    broken = []
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme or parts.netloc or not parts.path:
            continue
        target = (file.parent / unquote(parts.path)).resolve()
        if not target.is_file() or not target.is_relative_to(site.resolve()):
            broken.append(url)
    return broken


def _without_query(url: str) -> str:
    return _QUERY.split(url, maxsplit=1)[0]


def _drop_subresource_integrity(html: str) -> str:
    """`integrity`/`crossorigin` off script and link tags that now load a local file.

    A crossorigin request for a file:// page's own files fails in Chromium (the page's origin
    is opaque), and integrity needs it; the copies were checked against npm's sha512 instead.
    """

    def local(tag: re.Match[str]) -> str:
        target = _TARGET.search(tag.group(0))
        if target is None or is_remote(target.group(2)):
            return tag.group(0)
        return _SUBRESOURCE_INTEGRITY.sub("", tag.group(0))

    return _LOADER.sub(local, html)


def _copy(asset: Asset, assets: WebAssets, vendor: Path) -> None:
    """Copy one file (and what a stylesheet loads) under `vendor`; scripts and styles lose their source-map comment."""
    for item in assets.with_dependencies(asset):
        source, target = assets.file(item), vendor / assets.relative(item)
        target.parent.mkdir(parents=True, exist_ok=True)
        if item.path.endswith((".js", ".css")):
            target.write_text(_SOURCE_MAP.sub("", source.read_text(encoding="utf-8")), encoding="utf-8")
        else:
            shutil.copyfile(source, target)


def make_site_offline(site: Path, assets: WebAssets, local: Mapping[str, str] | None = None) -> None:
    """Point every page and stylesheet of `site` at local copies of what it loads from CDNs.

    The site is written in place (callers stage it: tasks.lib.io.atomic_dir).

    Args:
        site: the site's folder (its index.html at the top).
        assets: the installed web files (tasks.lib.reporting.web_assets.installed).
        local: remote addresses that files already in the site stand for -> their path in the site.

    Raises:
        NotOffline: a page or stylesheet would still load something remote, or a file the site does
            not hold; the message names it.
    """
    local = dict(local or {})
    missing = sorted(path for path in set(local.values()) if not (site / path).is_file())
    if missing:
        raise NotOffline(f"{site}: no {', '.join(missing)} to stand for the remote files it replaces")
    vendor, used, pages = site / VENDOR, set[Asset](), list[tuple[Path, list[str]]]()
    for file in sorted(site.rglob("*")):
        if file.suffix not in (".html", ".css") or vendor in file.parents:
            continue
        up = "/".join([".."] * len(file.parent.relative_to(site).parts)) or "."

        def replace(match: re.Match[str], up: str = up) -> str:
            url = _without_query(match.group(0))
            if url in CDN:
                used.add(CDN[url])
                return f"{up}/{VENDOR}/{assets.relative(CDN[url])}"
            return f"{up}/{local[url]}" if url in local else match.group(0)

        text = file.read_text(encoding="utf-8")
        rewritten = _URL.sub(replace, text)
        if file.suffix == ".html":
            rewritten = _drop_subresource_integrity(rewritten)
        loads = page_loads(rewritten) if file.suffix == ".html" else css_urls(rewritten)
        remote = sorted({url for url in loads if is_remote(url)})
        if remote:
            raise NotOffline(
                f"{file.relative_to(site)} would load {', '.join(remote)} from another machine: "
                "map each address to a local file in tasks/lib/reporting/web_assets.py (CDN)"
            )
        if rewritten != text:
            file.write_text(rewritten, encoding="utf-8")
        pages.append((file, loads))
    for asset in sorted(used, key=lambda a: (a.package, a.path)):
        _copy(asset, assets, vendor)
    broken = {f"{file.relative_to(site)}: {url}" for file, loads in pages for url in _broken(file, site, loads)}
    if broken:
        raise NotOffline(f"{site}: files load what the site does not hold: {'; '.join(sorted(broken))}")


@functools.lru_cache(maxsize=16)
def _inline_script(file: Path) -> str:
    """A script file's text made safe inside <script>...</script> (both sequences occur only in strings or comments).

    Cached: the training report inlines the same files at every log.
    """
    text = _SOURCE_MAP.sub("", file.read_text(encoding="utf-8"))
    return re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE).replace("<!--", "<\\!--")


def inline_scripts(page: Path, assets: WebAssets) -> None:
    """Put the scripts a single page loads from CDNs inside it, atomically, so the one file renders offline.

    Raises:
        NotOffline: the page would still load something remote; the message names it.
    """
    html = page.read_text(encoding="utf-8")

    def inline(match: re.Match[str]) -> str:
        asset = CDN.get(_without_query(match.group(2)))
        if asset is None:
            return match.group(0)
        return f"<script>{_inline_script(assets.file(asset))}</script>"

    rewritten = _SCRIPT.sub(inline, html)
    remote = remote_loads(rewritten)
    if remote:
        raise NotOffline(
            f"{page} would load {', '.join(sorted(set(remote)))} from another machine: "
            "map each address to a local file in tasks/lib/reporting/web_assets.py (CDN)"
        )
    write_text(page, rewritten)
