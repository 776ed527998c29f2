"""`python -m tasks.apps.fetch_web_assets`: fetch the npm packages of web-assets.lock into the venv (`make install`).

Each tarball comes from the address the lock names and must match the sha512 integrity the
lock pins (the value npm's registry publishes, which `npm install` checks the same way);
then only the files the reports use are kept: those of tasks.lib.reporting.web_assets.CDN and what
their stylesheets load (Font Awesome's fonts). A package whose folder already holds its
integrity stamp is not fetched again, so a second run downloads nothing. Plain Python, so a
machine needs no Node.js; proxies come from the usual environment variables (urllib).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tasks.lib.reporting.web_assets import (
    LOCK_FILE,
    STAMP,
    MissingWebAssets,
    Package,
    cdn_files,
    css_files,
    default_root,
    installed,
    read_lock,
)


class FetchFailed(RuntimeError):
    """A tarball could not be downloaded, or is not the one the lock pins."""


def download(package: Package, timeout: float = 120.0) -> bytes:
    """The package's tarball, checked against the lock's integrity."""
    try:
        with urllib.request.urlopen(package.resolved, timeout=timeout) as response:
            data: bytes = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise FetchFailed(f"{package.name} {package.version}: cannot download {package.resolved}: {exc}") from exc
    algorithm, _, expected = package.integrity.partition("-")
    if algorithm != "sha512":
        raise FetchFailed(f"{package.name}: the lock's integrity must be sha512, not {algorithm!r}")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")
    if actual != expected:
        raise FetchFailed(
            f"{package.name} {package.version}: {package.resolved} is not the pinned tarball "
            f"(sha512-{actual}, the lock pins {package.integrity})"
        )
    return data


def files_to_keep(package: str, members: dict[str, bytes]) -> list[str]:
    """The package's CDN files and, transitively, what their stylesheets load."""
    todo, keep = list(cdn_files(package)), set()
    while todo:
        path = todo.pop()
        if path in keep:
            continue
        if path not in members:
            raise FetchFailed(f"{package}: the tarball has no {path}")
        keep.add(path)
        if path.endswith(".css"):
            todo += css_files(path, members[path].decode("utf-8"))
    return sorted(keep)


def unpack(data: bytes) -> dict[str, bytes]:
    """The tarball's regular files by path, without npm's top folder (`package/`)."""
    members = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive:
            file = archive.extractfile(member) if member.isfile() else None
            if file is not None:
                members[member.name.partition("/")[2]] = file.read()
    return members


def install(package: Package, root: Path) -> bool:
    """Fetch, check and unpack one package into `root/<folder>` unless it is there; True if it was fetched."""
    target = root / package.folder
    stamp = target / STAMP
    if stamp.is_file() and stamp.read_text(encoding="ascii").strip() == package.integrity:
        return False
    members = unpack(download(package))
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{package.folder}.", dir=root))
    try:
        for path in files_to_keep(package.name, members):
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / path).write_bytes(members[path])
        (staging / STAMP).write_text(package.integrity + "\n", encoding="ascii")
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the files from a service running as another user
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=default_root(), help="where to install (default: %(default)s)")
    parser.add_argument("--lock", type=Path, default=LOCK_FILE, help="default: %(default)s")
    parser.add_argument(
        "--only", action="append", default=[], metavar="PACKAGE", help="this package of the lock only (repeatable)"
    )
    args = parser.parse_args(argv)
    try:
        packages = [package for name, package in read_lock(args.lock).items() if not args.only or name in args.only]
        if unknown := sorted(set(args.only) - {package.name for package in packages}):
            raise ValueError(f"{args.lock} pins no {', '.join(unknown)}")
        fetched = [package.folder for package in packages if install(package, args.root)]
        installed(args.root, args.lock, only=args.only)  # what the pipeline (or the server) will check
    except (FetchFailed, MissingWebAssets, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if fetched:
        print(f"web assets for the HTML reports in {args.root}: fetched {', '.join(fetched)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
