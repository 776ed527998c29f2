"""Retention: old landing archives, rejected files, registry versions and notification lines are removed
by the rules of params.yaml `retention`, so an unattended workspace does not grow for ever.

Entries are ordered by age (their own modification time, or a version record's); the newest
`keep_last` always stay, older ones go once `max_age_days` old. The registry never removes the
version that serves, the one a rollback would restore, or a rolled-back one (Registry.protected).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from filelock import FileLock

from tasks.lib.config import Keep, Params
from tasks.lib.io import write_text
from tasks.lib.storage.registry import Registry

DAY_S = 86_400
# A landed file's snapshot lives while the file is checked; one left by a killed check goes after this.
SNAPSHOT_MAX_AGE_S = DAY_S


def expired(entries: list[tuple[float, Path]], keep: Keep, now: float) -> list[Path]:
    """Of (timestamp, path) pairs, those past the newest `keep_last` and older than `max_age_days`."""
    if keep.max_age_days is None:
        return []
    # Equal times (a burst of versions in one second) fall back to the name: vNNNN, dated folders.
    newest_first = sorted(entries, key=lambda entry: (entry[0], entry[1].name), reverse=True)
    cutoff = now - keep.max_age_days * DAY_S
    return [path for stamp, path in newest_first[keep.keep_last :] if stamp < cutoff]


def _folders(parent: Path) -> list[tuple[float, Path]]:
    if not parent.is_dir():
        return []
    return [(p.lstat().st_mtime, p) for p in parent.iterdir() if p.is_dir() and not p.is_symlink()]


def prune_folder(parent: Path, keep: Keep, now: float) -> list[Path]:
    """Remove the expired sub-folders of `parent` (files in it are left alone); returns them."""
    gone = expired(_folders(parent), keep, now)
    for path in gone:
        shutil.rmtree(path)
    return gone


def prune_snapshots(folder: Path, now: float) -> list[Path]:
    """Remove snapshot folders older than SNAPSHOT_MAX_AGE_S (a check killed before it cleaned up)."""
    gone = [path for stamp, path in _folders(folder) if stamp < now - SNAPSHOT_MAX_AGE_S]
    for path in gone:
        shutil.rmtree(path)
    return gone


def snapshots_folder(params: Params) -> Path:
    """Where landed files are snapshotted while checked: beside the archive (a rename moves one in)."""
    return params.path("archive").parent / ".snapshots"


def notifications_lock(path: Path) -> FileLock:
    """Held by whoever appends to or rewrites the notification log (tasks.lib.reporting.notify, prune_lines)."""
    return FileLock(f"{path}.lock")


def prune_lines(path: Path, keep_lines: int | None) -> int:
    """Keep the newest `keep_lines` lines of the notification log; returns how many were removed."""
    if keep_lines is None or not path.exists():
        return 0
    with notifications_lock(path):
        lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
        lines = [line + "\n" for line in lines if line]  # "\n" only: a record may hold other line breaks
        if len(lines) <= keep_lines:
            return 0
        write_text(path, "".join(lines[-keep_lines:]))
    return len(lines) - keep_lines


def expired_versions(registry: Registry, keep: Keep, now: float) -> list[str]:
    """The registry versions retention would remove (by their record's time), the protected ones left out."""
    entries = [(registry.created(version), Path(version)) for version in registry.list_versions()]
    protected = registry.protected()
    return [path.name for path in expired(entries, keep, now) if path.name not in protected]


def prune_versions(registry: Registry, keep: Keep, now: float) -> list[str]:
    """Remove expired registry versions; the registry keeps the protected ones."""
    return registry.remove(expired_versions(registry, keep, now), "retention.registry_versions")


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def prune(params: Params, now: float | None = None) -> dict[str, list[str] | int]:
    """Apply every rule of `retention`; returns what was removed, by kind."""
    now = time.time() if now is None else now
    rules, root = params.retention, params.root
    snapshots = snapshots_folder(params)
    return {
        "archive": [_shown(p, root) for p in prune_folder(params.path("archive"), rules.archive, now)],
        "rejected": [_shown(p, root) for p in prune_folder(params.path("rejected"), rules.rejected, now)],
        "snapshots": [_shown(p, root) for p in prune_snapshots(snapshots, now)],
        "registry_versions": prune_versions(Registry(params.location("registry")), rules.registry_versions, now),
        "team_reports": _prune_team_reports(params, now),
        "notification_lines": prune_lines(params.path("notifications"), rules.notification_lines),
    }


def _prune_team_reports(params: Params, now: float) -> list[str]:
    from tasks.lib.storage.team_workspace import prune_team_reports  # DVC's import: only where it is used

    keep = params.retention.team_reports
    return prune_team_reports(params.root, keep.keep_last, keep.max_age_days, now)
