"""A workspace shared by the hosts of a team, through the DVC default remote.

One machine has no DVC remote and nothing here runs. With one (`textclf remote`),
every retraining run starts from the team's last successful run, whichever host
made it, and ends by publishing its own:

- **data and models**: `dvc push --run-cache` after a successful run; a worker
  fetches the run-cache entries (small YAML files) before the stages and
  `dvc repro --pull` brings only the outputs of the stages it restores, so a
  stage computed on one host is not computed again on another;
- **the workspace state** (`dvc.lock`, what git holds in a hand-run DVC project):
  published beside DVC's own folders in the remote; a worker checks it out
  (`dvc pull`), which brings the accepted dataset the next validation measures
  drift against;
- **accepted batches of new data** (`paths.incoming`, a dependency of ingest, not
  a DVC output): mirrored from the landing host to the remote, and from the remote
  to each worker. One landing host writes them (the watcher), so the mirror has
  one writer; its order (changed small files, then new files, then removals)
  keeps every intermediate state one the ingest stage reads correctly.

- **each run's reports** (Data Docs, training curves, the gate's report: `paths.reports`)
  under `textclf/reports/<run>/`, for passed and failed runs alike: the worker's clone is
  deleted when the run ends, so the run report links there (a presigned HTTPS link where the
  store signs, valid 7 days, and the store's URL).

The DVC remote's own configuration and credentials (`.dvc/config`,
`.dvc/config.local`, AWS_* variables) reach everything here: one setting, not two.
"""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.lib.data.incoming import LEDGER
from tasks.lib.errors import PipelineError
from tasks.lib.io import read_json

# Beside DVC's `files/` and `runs/` in the remote; `dvc gc --cloud` only walks `files/`.
TEAM_FOLDER = "textclf"
STATE_FILE = "dvc.lock"
REPORTS_FOLDER = "reports"
# SigV4's longest presigned link; after that the store's URL (and credentials) still open the page.
LINK_SECONDS = 7 * 86_400
# A run's reports folder: <UTC time>-<run name>, so names sort by time and retention reads their age.
RUN_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
# A listed file removed before it was read (the landing host mirroring at that moment): list again.
MIRROR_ATTEMPTS = 3


class TeamSyncError(PipelineError, RuntimeError):
    """The remote could not be read or written; the message names the remote and what failed."""


@dataclass(frozen=True)
class TeamRemote:
    """The DVC default remote of a workspace, as a filesystem (its own config and credentials)."""

    name: str
    url: str
    fs: Any  # dvc_objects FileSystem
    root: str  # the team's folder in the remote

    def path(self, *parts: str) -> str:
        return str(self.fs.join(self.root, *parts))


def team_remote(root: Path) -> TeamRemote | None:
    """The workspace's DVC default remote, or None (one machine, or a folder DVC cannot open as a repository:
    none, or one outside git, as the stages' unit tests make)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
    except DvcException:
        return None
    with repo:
        name = repo.config["core"].get("remote")
        if not name:
            return None
        remote = repo.cloud.get_remote(name)
        url = str(repo.config["remote"][name]["url"])
        return TeamRemote(name, url, remote.fs, str(remote.fs.join(remote.path, TEAM_FOLDER)))


def workspace_identity(root: Path) -> str:
    """What names this workspace to Prefect (events, the concurrency limit): its team's remote when it has
    one, so every host of the team shares it, else its own path."""
    remote = team_remote(root)
    key = f"remote:{remote.url}" if remote else str(root.resolve())
    return "textclf.workspace." + hashlib.sha256(key.encode()).hexdigest()[:16]


def _dvc(root: Path, dvc: str, *args: str, log: Callable[[str], object]) -> None:
    """`dvc <args>` in `root`, its output to `log`; raises TeamSyncError naming the command."""
    done = subprocess.run(
        [dvc, "--wait-for-lock", *args], cwd=root, capture_output=True, text=True, check=False, timeout=3600
    )
    for line in (done.stdout + done.stderr).splitlines():
        if line.strip():
            log(line)
    if done.returncode != 0:
        raise TeamSyncError(f"`dvc {' '.join(args)}` exited {done.returncode}: {(done.stderr or done.stdout)[-2000:]}")


def _local_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def _remote_files(remote: TeamRemote, folder: str) -> dict[str, int]:
    """name -> size of every file directly in `folder` of the remote."""
    if not remote.fs.exists(folder):
        return {}
    found = remote.fs.ls(folder, detail=True)
    return {
        remote.fs.name(entry["name"]): int(entry.get("size") or 0) for entry in found if entry.get("type") == "file"
    }


def _changed_small_file(remote: TeamRemote, source: Path, target: str) -> bool:
    return not remote.fs.exists(target) or remote.fs.read_bytes(target) != source.read_bytes()


def mirror_up(remote: TeamRemote, folder: Path, name: str) -> list[str]:
    """Make the remote's `name` folder hold exactly `folder`'s files; returns what changed there.

    The ledger of merged batches goes first (it ignores a merged file that is not there yet),
    then new files, then removals: a reader in between sees an older state or the new one.
    """
    target = remote.path(name)
    there = _remote_files(remote, target)
    here = _local_files(folder)
    changed = []
    ledger = here.get(LEDGER)
    if ledger is not None and _changed_small_file(remote, ledger, remote.fs.join(target, LEDGER)):
        remote.fs.put_file(str(ledger), remote.fs.join(target, LEDGER))
        changed.append(f"+{LEDGER}")
    for file_name, path in here.items():
        if file_name != LEDGER and there.get(file_name) != path.stat().st_size:
            remote.fs.put_file(str(path), remote.fs.join(target, file_name))
            changed.append(f"+{file_name}")
    for file_name in sorted(set(there) - set(here)):
        remote.fs.rm_file(remote.fs.join(target, file_name))
        changed.append(f"-{file_name}")
    return changed


def mirror_down(remote: TeamRemote, name: str, folder: Path) -> list[str]:
    """Make `folder` hold exactly the remote's `name` folder; returns what changed here.

    Written in the order mirror_up uses, each file by rename, so the ingest stage reads a consistent set.
    Local files the remote lacks are removed only when its ledger says they were merged into another.
    """
    source = remote.path(name)
    for attempt in range(MIRROR_ATTEMPTS):
        try:
            return _mirror_down_once(remote, source, folder)
        except FileNotFoundError:
            if attempt == MIRROR_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _mirror_down_once(remote: TeamRemote, source: str, folder: Path) -> list[str]:
    there = _remote_files(remote, source)
    here = _local_files(folder)
    folder.mkdir(parents=True, exist_ok=True)
    changed = []
    order = ([LEDGER] if LEDGER in there else []) + [n for n in there if n != LEDGER]
    for file_name in order:
        local = here.get(file_name)
        if file_name == LEDGER:
            if local is not None and local.read_bytes() == remote.fs.read_bytes(remote.fs.join(source, LEDGER)):
                continue
        elif local is not None and local.stat().st_size == there[file_name]:
            continue
        partial = folder / f".{file_name}.part"
        remote.fs.get_file(remote.fs.join(source, file_name), str(partial))
        partial.replace(folder / file_name)
        changed.append(f"+{file_name}")
    # Only what the team merged away: a batch this host accepted but could not share yet stays (and is read).
    merged_away = set()
    if (folder / LEDGER).exists():
        ledger = read_json(folder / LEDGER)
        merged_away = set(ledger.get("holds", [])) | set(ledger.get("replaces", []))
    for file_name in sorted((set(here) - set(there)) & merged_away):
        here[file_name].unlink()
        changed.append(f"-{file_name}")
    return changed


def pull_workspace(root: Path, incoming: Path, dvc: str, log: Callable[[str], object]) -> bool:
    """Before the stages: the team's accepted batches, last workspace state and run-cache entries.

    Returns:
        Whether the remote held a workspace state (False: the team's first run).
    Raises:
        TeamSyncError: the remote could not be read.
    """
    remote = team_remote(root)
    assert remote is not None, "pull_workspace needs a DVC default remote"
    try:
        changed = mirror_down(remote, "incoming", incoming)
        log(f"accepted batches from {remote.url}: " + (", ".join(changed) if changed else "up to date"))
        state = remote.path("state", STATE_FILE)
        has_state = bool(remote.fs.exists(state))
        if has_state:
            remote.fs.get_file(state, str(root / STATE_FILE))
    except OSError as exc:
        raise TeamSyncError(f"the DVC remote {remote.name} ({remote.url}) could not be read: {exc}") from exc
    if has_state:
        log(f"workspace state of the team's last successful run: {state}")
        # --force: a worker's outputs are the team's state, not an earlier run's of this host.
        _dvc(root, dvc, "pull", "--force", "--allow-missing", log=log)
    _fetch_run_cache(root, remote.name)
    return has_state


def _fetch_run_cache(root: Path, remote: str) -> None:
    """The run-cache entries only; `dvc repro --pull` fetches the outputs of those a stage uses.

    `dvc pull --run-cache` would download the outputs of every run ever pushed.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            repo.stage_cache.pull(remote)
    except (DvcException, OSError) as exc:
        raise TeamSyncError(f"the run-cache of DVC remote {remote} could not be read: {exc}") from exc


def publish_workspace(root: Path, dvc: str, log: Callable[[str], object]) -> None:
    """After a successful run: every output and the run-cache, then the workspace state that names them.

    The state goes last, so a host that reads it finds everything it names.
    """
    remote = team_remote(root)
    assert remote is not None, "publish_workspace needs a DVC default remote"
    _dvc(root, dvc, "push", "--run-cache", log=log)
    try:
        remote.fs.makedirs(remote.path("state"), exist_ok=True)
        remote.fs.put_file(str(root / STATE_FILE), remote.path("state", STATE_FILE))
    except OSError as exc:
        raise TeamSyncError(f"the DVC remote {remote.name} ({remote.url}) could not be written: {exc}") from exc
    log(f"published the workspace state to {remote.path('state', STATE_FILE)}")


def share_batches(root: Path, incoming: Path) -> list[str]:
    """After the landing host accepted a file: the remote's accepted batches become this host's."""
    remote = team_remote(root)
    if remote is None:
        return []
    try:
        return mirror_up(remote, incoming, "incoming")
    except OSError as exc:
        raise TeamSyncError(f"the DVC remote {remote.name} ({remote.url}) could not be written: {exc}") from exc


@dataclass(frozen=True)
class PublishedReports:
    """A run's reports in the team's remote: where they are and how a person opens each page."""

    remote: TeamRemote
    folder: str  # the run's folder in the remote's filesystem

    @property
    def url(self) -> str:
        """The folder as the store names it (`s3://bucket/.../reports/<run>`)."""
        protocol = url_protocol(self.remote.fs)
        return self.folder if protocol in ("local", "file") else f"{protocol}://{self.folder}"

    def link(self, page: str) -> str:
        """A link a browser opens: presigned where the store signs URLs (S3), else the store's own URL."""
        path = self.remote.fs.join(self.folder, page)
        backend = getattr(self.remote.fs, "fs", None)  # dvc_objects wraps an fsspec filesystem
        if backend is not None and hasattr(backend, "sign"):
            try:
                return str(backend.sign(path, expiration=LINK_SECONDS))
            except NotImplementedError:
                pass
        if self.url == self.folder:  # a folder every host mounts
            return Path(path).as_uri()
        return f"{self.url}/{page}"


def run_folder_name(run_name: str, now: float | None = None) -> str:
    """`<UTC time>-<run name>`: sorts by time, and says which Prefect run it was."""
    return time.strftime(RUN_TIME_FORMAT, time.gmtime(now)) + "-" + run_name


def publish_reports(root: Path, reports: Path, run: str) -> PublishedReports | None:
    """Every file under `reports` to the remote's `textclf/reports/<run>/`; None without a remote.

    Raises:
        TeamSyncError: the remote could not be written.
    """
    remote = team_remote(root)
    if remote is None or not reports.is_dir():
        return None
    published = PublishedReports(remote, remote.path(REPORTS_FOLDER, run))
    try:
        for file in sorted(reports.rglob("*")):
            relative = file.relative_to(reports)
            if file.is_file() and not any(part.startswith(".") for part in relative.parts):
                remote.fs.put_file(str(file), remote.fs.join(published.folder, *relative.parts))
    except OSError as exc:
        raise TeamSyncError(f"the DVC remote {remote.name} ({remote.url}) could not be written: {exc}") from exc
    return published


def prune_team_reports(root: Path, keep_last: int, max_age_days: float | None, now: float) -> list[str]:
    """Remove the reports of runs past the newest `keep_last` and older than `max_age_days`; returns them."""
    remote = team_remote(root)
    if remote is None or max_age_days is None:
        return []
    folder = remote.path(REPORTS_FOLDER)
    if not remote.fs.exists(folder):
        return []
    runs = sorted(
        (remote.fs.name(entry["name"]) for entry in remote.fs.ls(folder, detail=True) if entry["type"] == "directory"),
        reverse=True,
    )
    gone = []
    for name in runs[keep_last:]:
        try:
            stamp = calendar.timegm(time.strptime(name.split("-", 1)[0], RUN_TIME_FORMAT))
        except ValueError:
            continue  # not a run's folder: not ours to remove
        if stamp < now - max_age_days * 86_400:
            _remove_folder(remote, remote.fs.join(folder, name))
            gone.append(name)
    return gone


def _remove_folder(remote: TeamRemote, folder: str) -> None:
    """Every object under `folder`, then the folders themselves where a store keeps them (SeaweedFS's filer
    lists an emptied folder until its `name/` key is deleted; on AWS S3 that delete changes nothing)."""
    backend = remote.fs.fs  # the fsspec filesystem under dvc_objects'
    found = backend.find(folder, withdirs=True, detail=True)
    folders = sorted((path for path, info in found.items() if info["type"] == "directory"), key=len, reverse=True)
    backend.rm(folder, recursive=True)
    if url_protocol(remote.fs) not in ("local", "file"):
        for path in [*folders, folder]:
            with contextlib.suppress(FileNotFoundError):
                backend.rm_file(path.rstrip("/") + "/")


def url_protocol(fs: Any) -> str:
    """A filesystem's protocol as URLs write it (`s3`, `local`...)."""
    protocol = fs.protocol
    return str(protocol[0] if isinstance(protocol, (list, tuple)) else protocol)
