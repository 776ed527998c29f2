"""Watch the landing folder: hand each finished file to a callback once.

Polling (portable, works on network mounts where inotify does not): a file is
handed over when it has a data suffix, is not hidden or a temporary name, its
size and modification time have not changed for `settle_seconds`, and no process
holds it open for writing (a producer that pauses mid-file keeps it open: a
quiet file is not a finished one). A file whose handling raised is not retried
until it changes; the callback moves handled files away.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tasks.lib.data.landing import StillBeingWritten, is_ready, writers_of

log = logging.getLogger(__name__)
Signature = tuple[int, int]  # size, mtime in ns
MARKER_SUFFIX = ".done"  # `reviews.csv.done` says `reviews.csv` is complete (retrain.watch.completion: marker)


def marker_of(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


class LandingWatcher:
    """Polls `folder`; `handle(path)` is called for each settled file no process is writing, one at a time,
    in name order."""

    def __init__(
        self,
        folder: Path,
        handle: Callable[[Path], object],
        poll_seconds: float,
        settle_seconds: float,
        marker: bool = False,
    ):
        """`marker`: a file is ready only once its `.done` marker exists (removed after the file is handled)."""
        self.folder, self.handle = folder, handle
        self.poll_seconds, self.settle_seconds, self.marker = poll_seconds, settle_seconds, marker
        self._seen: dict[Path, tuple[Signature, float]] = {}  # signature, when it was first seen so
        self._failed: dict[Path, Signature] = {}

    def settled(self, now: float | None = None) -> list[Path]:
        """The files that are ready, unchanged for settle_seconds and closed by their writers (updates what was
        seen)."""
        now = time.monotonic() if now is None else now
        current: dict[Path, Signature] = {}
        if self.folder.is_dir():
            for path in sorted(self.folder.iterdir()):
                try:
                    if is_ready(path) and (not self.marker or marker_of(path).exists()):
                        stat = path.lstat()  # a link's own: a dangling link is handed over (and refused) too
                        current[path] = (stat.st_size, stat.st_mtime_ns)
                except FileNotFoundError:  # moved away between listing and stat
                    continue
        ready = []
        for path, signature in current.items():
            previous = self._seen.get(path)
            if previous is None or previous[0] != signature:
                self._seen[path] = (signature, now)
            elif (
                now - previous[1] >= self.settle_seconds
                and self._failed.get(path) != signature
                and not writers_of(path)  # quiet, but its writer may only have paused
            ):
                ready.append(path)
        self._seen = {p: seen for p, seen in self._seen.items() if p in current}
        self._failed = {p: s for p, s in self._failed.items() if p in current}
        return ready

    def poll_once(self) -> int:
        """Hand over every settled file; returns how many were handled without an error."""
        handled = 0
        for path in self.settled():
            try:
                self.handle(path)
                handled += 1
            except StillBeingWritten as exc:  # read again once it settles and no one writes it, changed or not
                log.info("landing: %s", exc)
                self._seen.pop(path, None)
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the watcher
                log.error("landing: %s: %s: %s", path.name, type(exc).__name__, str(exc).splitlines()[0])
                if os.path.lexists(path):
                    self._failed[path] = self._seen[path][0]
            if self.marker and not os.path.lexists(path):  # archived or rejected: its signal is spent
                marker_of(path).unlink(missing_ok=True)
        return handled

    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set."""
        log.info(
            "watching %s for new data (every %ss, settled after %ss)",
            self.folder,
            self.poll_seconds,
            self.settle_seconds,
        )
        if os.geteuid() != 0:
            log.info("not root: a file another user's process still writes is seen as finished once it settles")
        while not stop.is_set():
            self.poll_once()
            stop.wait(self.poll_seconds)
