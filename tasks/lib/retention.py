"""Retention: old landing archives, rejected files, registry versions and notification lines are removed
by the rules of params.yaml `retention`, so an unattended workspace does not grow for ever.

Entries are ordered by age (their own modification time, or a version's creation); the newest
`keep_last` always stay, older ones go once `max_age_days` old. Registry versions that serve, or
that a rollback would restore, are never removed.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tasks.lib.config import Keep, Params
from tasks.lib.io import write_text
from tasks.lib.registry import Registry

DAY_S = 86_400


def expired(entries: list[tuple[float, Path]], keep: Keep, now: float) -> list[Path]:
    """Of (timestamp, path) pairs, those past the newest `keep_last` and older than `max_age_days`."""
    if keep.max_age_days is None:
        return []
    newest_first = sorted(entries, key=lambda entry: entry[0], reverse=True)
    cutoff = now - keep.max_age_days * DAY_S
    return [path for stamp, path in newest_first[keep.keep_last :] if stamp < cutoff]


def prune_folder(parent: Path, keep: Keep, now: float) -> list[Path]:
    """Remove the expired sub-folders of `parent` (files in it are left alone); returns them."""
    if not parent.is_dir():
        return []
    entries = [(p.lstat().st_mtime, p) for p in parent.iterdir() if p.is_dir() and not p.is_symlink()]
    gone = expired(entries, keep, now)
    for path in gone:
        shutil.rmtree(path)
    return gone


def prune_lines(path: Path, keep_lines: int | None) -> int:
    """Keep the newest `keep_lines` lines of a log file; returns how many were removed."""
    if keep_lines is None or not path.exists():
        return 0
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    if len(lines) <= keep_lines:
        return 0
    write_text(path, "".join(lines[-keep_lines:]))
    return len(lines) - keep_lines


def prune(params: Params, now: float | None = None) -> dict[str, list[str] | int]:
    """Apply every rule of `retention`; returns what was removed, by kind."""
    now = time.time() if now is None else now
    rules = params.retention
    root = params.root
    registry = Registry(params.path("registry"))
    return {
        "archive": [str(p.relative_to(root)) for p in prune_folder(params.path("archive"), rules.archive, now)],
        "rejected": [str(p.relative_to(root)) for p in prune_folder(params.path("rejected"), rules.rejected, now)],
        "registry_versions": registry.prune(
            rules.registry_versions.keep_last, rules.registry_versions.max_age_days, now
        ),
        "notification_lines": prune_lines(params.path("notifications"), rules.notification_lines),
    }
