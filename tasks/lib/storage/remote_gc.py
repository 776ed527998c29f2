"""`textclf gc`: what a team's DVC remote holds that nothing needs any more, removed.

See docs/guides/team.md#garbage-collection.

Every run pushes its outputs and its run-cache entries (`dvc push --run-cache`), so the remote
grows with every run. `dvc gc --cloud` is no answer from a worker's clone: it keeps only what that
clone's workspace and git history name, so it does not know the team's state (the last successful
run's dvc.lock, kept in the remote at textclf/state/), nor the lineage of the versions that serve,
and it leaves the run-cache alone. This keeps, and removes every other object of `files/md5/` and
every other run-cache entry of `runs/`:

- the objects the team state names (a fresh worker pulls them, and restores its stages from them);
- the objects the lineage records of the registry's protected versions name (production, the version
  a rollback would restore, rolled-back ones: their data and model hashes);
- per stage (entries with the same command), the run-cache entries of the newest
  `retention.remote_runs.keep_last` runs, and older ones until `max_age_days`, with every object they
  name, and any entry a worker restores the team state's stage from;
- anything written less than `min_age_hours` ago, whatever names it: a run pushing now has not yet
  published the state that will name its objects.

Written here rather than taken from DVC: DVC's gc walks a repository's revisions, not a remote's
own state files or run-cache, and has no notion of the registry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from tasks.lib.config import Keep, Params
from tasks.lib.storage.registry import Registry
from tasks.lib.storage.retention import expired, expired_versions
from tasks.lib.storage.team_workspace import STATE_FILE, TeamRemote, TeamSyncError

OBJECTS = "files/md5"
RUN_CACHE = "runs"


@dataclass
class Collection:
    """What one gc found and (unless a dry run) removed."""

    objects_kept: int = 0
    objects_removed: list[str] = field(default_factory=list)
    entries_kept: int = 0
    entries_removed: list[str] = field(default_factory=list)
    bytes_before: int = 0
    bytes_removed: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "objects_kept": self.objects_kept,
            "objects_removed": len(self.objects_removed),
            "run_cache_entries_kept": self.entries_kept,
            "run_cache_entries_removed": len(self.entries_removed),
            "bytes_before": self.bytes_before,
            "bytes_removed": self.bytes_removed,
            "bytes_after": self.bytes_before - self.bytes_removed,
        }


def hashes_of_lock(data: Any, sections: tuple[str, ...] = ("deps", "outs")) -> set[str]:
    """Every md5 a dvc.lock (its `stages`) or a run-cache entry (one stage's) names in `sections`."""
    stages = data.get("stages", {}).values() if isinstance(data, dict) and "stages" in data else [data]
    found = set()
    for stage in stages:
        for entry in [item for section in sections for item in (stage or {}).get(section, [])]:
            if isinstance(entry, dict) and entry.get("md5"):
                found.add(str(entry["md5"]))
    return found


def hashes_of_record(record: dict[str, Any]) -> set[str]:
    """The DVC hashes a registry version's lineage record carries (its model's, its data's)."""
    found = {str(record["model_md5"])} if record.get("model_md5") else set()
    data = record.get("data") or {}
    return found | {str(value) for key, value in data.items() if key.endswith("_md5") and value}


def object_path(base: str, md5: str) -> str:
    return f"{base}/{OBJECTS}/{md5[:2]}/{md5[2:]}"


def _mtime(info: dict[str, Any]) -> float:
    """An fsspec entry's modification time: S3's LastModified, a local file's mtime."""
    stamp = info.get("LastModified") or info.get("mtime") or info.get("last_modified") or 0
    return stamp.timestamp() if isinstance(stamp, datetime) else float(stamp)


def _listing(remote: TeamRemote, folder: str) -> dict[str, dict[str, Any]]:
    """path -> fsspec info of every file under `folder` of the remote (empty when it does not exist)."""
    fs = remote.fs.fs
    if not fs.exists(folder):
        return {}
    found = fs.find(folder, detail=True)
    if not isinstance(found, dict):  # DVC's local filesystem lists paths only
        found = {path: fs.info(path) for path in found}
    return {str(path): info for path, info in found.items() if info.get("type", "file") == "file"}


def _read(remote: TeamRemote, path: str) -> bytes:
    try:
        return bytes(remote.fs.fs.cat_file(path))
    except OSError as exc:
        raise TeamSyncError(
            f"{path}: could not be read from the DVC remote {remote.name} ({remote.url}): {exc}"
        ) from exc


class RemoteCollector:
    """One gc of a team's remote: `plan()` what to keep, then `collect()` (or a dry run)."""

    def __init__(self, remote: TeamRemote, runs: Keep, protected_records: Iterable[dict[str, Any]], min_age_s: float):
        self.remote, self.runs, self.min_age_s = remote, runs, min_age_s
        self.base = str(PurePosixPath(remote.root).parent)
        self.records = list(protected_records)

    def _named_objects(self, hashes: Iterable[str], objects: dict[str, dict[str, Any]]) -> set[str]:
        """The object paths of `hashes`, a directory's (`.dir`) listed files with it, where the remote has them."""
        paths = set()
        for md5 in hashes:
            path = object_path(self.base, md5)
            if path not in objects:
                continue
            paths.add(path)
            if md5.endswith(".dir"):
                listed = json.loads(_read(self.remote, path))
                paths |= {object_path(self.base, str(e["md5"])) for e in listed if e.get("md5")} & objects.keys()
        return paths

    def _entries_by_stage(self, entries: dict[str, dict[str, Any]]) -> Iterator[list[tuple[float, str, Any]]]:
        """The run-cache entries, read, grouped by stage: by their command. (DVC files an entry under a key
        of the stage's command, deps and params, so each new input set has a folder of its own.)"""
        stages: dict[str, list[tuple[float, str, Any]]] = {}
        for path, info in entries.items():
            entry = yaml.safe_load(_read(self.remote, path))
            command = str(entry.get("cmd")) if isinstance(entry, dict) else path
            stages.setdefault(command, []).append((_mtime(info), path, entry))
        yield from stages.values()

    def plan(self, now: float) -> Collection:
        """What stays and what goes, nothing removed yet."""
        state_path = self.remote.path("state", STATE_FILE)
        try:
            objects = _listing(self.remote, f"{self.base}/{OBJECTS}")
            entries = _listing(self.remote, f"{self.base}/{RUN_CACHE}")
            state = yaml.safe_load(_read(self.remote, state_path)) if self.remote.fs.exists(state_path) else None
        except OSError as exc:
            where = f"the DVC remote {self.remote.name} ({self.remote.url})"
            raise TeamSyncError(f"{where} could not be read: {exc}") from exc
        if state is None:
            raise TeamSyncError(
                f"{state_path}: no team state in the DVC remote {self.remote.name}, so nothing says what is live; "
                "gc runs once a team run has published one"
            )
        live = hashes_of_lock(state) | {md5 for record in self.records for md5 in hashes_of_record(record)}
        state_outputs = hashes_of_lock(state, ("outs",))
        kept_entries, gone_entries = set(), []
        for stage_entries in self._entries_by_stage(entries):
            aged = {str(path) for path in expired([(s, Path(p)) for s, p, _ in stage_entries], self.runs, now)}
            for stamp, path, entry in stage_entries:
                recent = now - stamp < self.min_age_s
                # An entry a worker restores a stage of the team state from (every output of it the state's)
                # stays, whatever its age; one that shares only some outputs with the state is another run's.
                outputs = hashes_of_lock(entry, ("outs",))
                if path not in aged or recent or (outputs and outputs <= state_outputs):
                    kept_entries.add(path)
                    live |= hashes_of_lock(entry)
                else:
                    gone_entries.append(path)
        keep = self._named_objects(live, objects)
        plan = Collection(entries_kept=len(kept_entries), entries_removed=sorted(gone_entries))
        plan.bytes_before = sum(int(info.get("size") or 0) for info in [*objects.values(), *entries.values()])
        for path, info in objects.items():
            if path in keep or now - _mtime(info) < self.min_age_s:
                plan.objects_kept += 1
            else:
                plan.objects_removed.append(path)
        plan.objects_removed.sort()
        plan.bytes_removed = sum(int(objects[p].get("size") or 0) for p in plan.objects_removed) + sum(
            int(entries[p].get("size") or 0) for p in plan.entries_removed
        )
        return plan

    def collect(self, dry_run: bool = False, now: float | None = None) -> Collection:
        """Plan, then remove (run-cache entries first: no entry is left naming a removed object)."""
        plan = self.plan(time.time() if now is None else now)
        if not dry_run:
            try:
                for batch in (plan.entries_removed, plan.objects_removed):
                    if batch:
                        self.remote.fs.fs.rm(batch)
            except OSError as exc:
                raise TeamSyncError(
                    f"the DVC remote {self.remote.name} ({self.remote.url}) refused a removal: {exc}"
                ) from exc
        return plan


def garbage_collect(params: Params, dry_run: bool = False, min_age_hours: float = 24) -> dict[str, Any]:
    """`textclf gc`: registry versions by retention.registry_versions, then the team's DVC remote (if any).

    Returns:
        What was (or, with `dry_run`, would be) removed, by kind, and the remote's bytes before and after.
    """
    from tasks.lib.storage.team_workspace import team_remote  # DVC's import: only where it is used

    now = time.time()
    registry = Registry(params.location("registry"))
    versions = expired_versions(registry, params.retention.registry_versions, now)
    if not dry_run:
        versions = registry.remove(versions, "textclf gc: retention.registry_versions")
    done: dict[str, Any] = {"dry_run": dry_run, "registry_versions_removed": versions}
    remote = team_remote(params.root)
    if remote is None:
        done["remote"] = "no DVC default remote: nothing else to collect"
        return done
    records = [registry.record(version) for version in sorted(registry.protected())]
    collector = RemoteCollector(remote, params.retention.remote_runs, records, min_age_hours * 3600)
    done["remote"] = remote.url
    done |= collector.collect(dry_run, now).summary()
    return done
