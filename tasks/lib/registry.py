"""The model registry: numbered versions, stages and a production pointer, outside DVC's graph.

Layout under `paths.registry`:
    versions/vNNNN/   the served model files, the gate report and `version.json` (lineage)
    production.json   which version serves now (replaced atomically)
    history.jsonl     every event (register, promote, rollback, archive) with its reason;
                      a move between versions with other labels records both label sets
Stages: the pointer's version is `production`; a version that served before,
or was archived by hand, is `archived`; any other is a `candidate`.

A version folder is complete before it gets its name, and production moves
only by an atomic rename of the pointer, so a crash at any point leaves the
previous production model serving. Writers hold one file lock.

Integrity: `version.json` lists the SHA-256 of every file of its version
(`files`), and loading a version verifies them (tasks.lib.production_model),
so a file changed after registration is refused, not served. The pointer is
trusted only to name a version this registry holds. A history line torn by a
crash or a full disk is skipped and reported, never fatal.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from tasks.lib.artifacts import CLASSIFIER_FILE, TOKENIZER_FILE, VERSION_FILE, graph_files
from tasks.lib.errors import PipelineError
from tasks.lib.io import file_digest, read_json, write_json, write_text

_VERSION = re.compile(r"v(\d{4,})")  # used with fullmatch: "v0001\n" is not a name
HISTORY_PROBLEM = "history_problem"  # an event that stands for lines of history.jsonl that could not be read
Stage = Literal["candidate", "production", "archived"]
# Events that move the production pointer (they carry "from" and "to").
_MOVES = ("promote", "rollback")


class RegistryError(PipelineError, RuntimeError):
    """The registry is inconsistent or an operation on it is not allowed."""


def verify_files(folder: Path) -> bool:
    """Check every file a version's record lists against its SHA-256; raise on any difference.

    The graph the record names, the tokenizer and the label file must all be listed. Returns
    False for a folder without a record or a version registered before records listed files
    (nothing to check: served, and /health says unverified).
    """
    record = folder / VERSION_FILE
    if not record.exists():
        return False
    try:
        data = read_json(record)
    except ValueError as exc:
        raise RegistryError(f"{record}: damaged, not readable JSON ({exc})") from None
    listed = data.get("files")
    if listed is None:
        return False
    unlisted = {*graph_files(data.get("model_file") or ""), TOKENIZER_FILE, CLASSIFIER_FILE} - set(listed) - {""}
    if unlisted:
        raise RegistryError(f"{record}: does not list {sorted(unlisted)}: refusing to load files it cannot vouch for")
    changed = []
    for name, digest in listed.items():
        path = folder / name
        if not path.is_file():
            changed.append(f"{name} is missing")
        elif file_digest(path, "sha256") != digest:
            changed.append(f"{name} differs from the registered file")
    if changed:
        raise RegistryError(f"{folder}: refusing to load: " + "; ".join(changed) + " (changed after registration)")
    return True


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Registry:
    def __init__(self, root: Path):
        self.root = root
        self.versions = root / "versions"
        self.pointer = root / "production.json"
        self.history = root / "history.jsonl"
        self._lock: FileLock | None = None

    @contextmanager
    def locked(self, timeout_s: float = 600) -> Iterator[None]:
        """Serialise writers (promote, rollback, archive) across processes; re-entrant in one process."""
        if self._lock is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(str(self.root / ".lock"), timeout=timeout_s)
        with self._lock:
            yield

    # Reading

    def parse_pointer(self, text: str) -> str:
        """The version a pointer's text names; anything but a version name (vNNNN) is refused."""
        try:
            version = json.loads(text).get("version")
        except (ValueError, AttributeError):
            raise RegistryError(f"{self.pointer}: damaged (not a JSON object with a version)") from None
        if not isinstance(version, str) or not _VERSION.fullmatch(version):
            raise RegistryError(f"{self.pointer}: names {version!r}, which is not a version of this registry (vNNNN)")
        return version

    def production_version(self) -> str | None:
        try:
            return self.parse_pointer(self.pointer.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def record(self, version: str) -> dict[str, Any]:
        """A complete version's lineage record, with its folder as `path`."""
        if not _VERSION.fullmatch(version):
            raise RegistryError(f"{version!r} is not a version name (vNNNN)")
        folder = self.versions / version
        if folder.is_symlink() or not folder.resolve().is_relative_to(self.versions.resolve()):
            raise RegistryError(f"{folder}: a link out of the registry, not a version folder")
        if not (folder / VERSION_FILE).exists():
            raise RegistryError(f"no complete version {version} in {self.versions}")
        try:
            record = read_json(folder / VERSION_FILE)
        except ValueError as exc:
            raise RegistryError(f"{folder / VERSION_FILE}: damaged, not readable JSON ({exc})") from None
        return {**record, "path": str(folder)}

    def production(self) -> dict[str, Any] | None:
        """The production version's record, or None before the first promotion."""
        version = self.production_version()
        if version is None:
            return None
        if not (self.versions / version / VERSION_FILE).exists():
            raise RegistryError(
                f"{self.pointer} points at {version}, but {self.versions / version} is missing or incomplete"
            )
        return self.record(version)

    def labels(self, version: str) -> list[str] | None:
        """The labels a version predicts: its record's, else its classifier.json's; None if unreadable."""
        try:
            listed = self.record(version).get("labels")
            if listed:
                return [str(label) for label in listed]
            return [str(label) for label in read_json(self.versions / version / CLASSIFIER_FILE)["labels"]]
        except (RegistryError, OSError, ValueError, KeyError, TypeError):
            return None

    def list_versions(self) -> list[str]:
        """Complete versions, oldest first (a half-copied `.vNNNN.tmp` is not one)."""
        if not self.versions.exists():
            return []
        return sorted(
            p.name for p in self.versions.iterdir() if _VERSION.fullmatch(p.name) and (p / VERSION_FILE).exists()
        )

    def find(self, model_md5: str) -> str | None:
        """The newest complete, readable version holding this exact model, if any."""
        for version in reversed(self.list_versions()):
            try:
                if self.record(version).get("model_md5") == model_md5:
                    return version
            except RegistryError:
                continue  # a damaged record cannot be this model's home
        return None

    def events(self) -> list[dict[str, Any]]:
        """Every readable event, oldest first; unreadable lines become one `history_problem` event each."""
        if not self.history.exists():
            return []
        found = []
        text = self.history.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict):
                    raise ValueError("not an object")
            except ValueError:
                # A line torn by a crash or a full disk: report it, keep the rest usable.
                found.append({"event": HISTORY_PROBLEM, "line": number, "text": line[:200]})
                continue
            # Registries written before events had names only recorded production moves.
            found.append({"event": "promote", **event})
        return found

    def history_problems(self) -> list[str]:
        """A sentence per unreadable line of the history."""
        return [
            f"{self.history}:{e['line']}: unreadable, skipped ({e['text'][:60]!r})"
            for e in self.events()
            if e["event"] == HISTORY_PROBLEM
        ]

    def stages(self) -> dict[str, Stage]:
        """Every complete version's stage."""
        stages: dict[str, Stage] = dict.fromkeys(self.list_versions(), "candidate")
        for event in self.events():
            if event["event"] in _MOVES:
                touched = [event.get("from"), event.get("to")]
            else:
                touched = [event["version"]] if event["event"] == "archive" else []
            stages.update({v: "archived" for v in touched if v in stages})
        production = self.production_version()
        if production in stages:
            stages[production] = "production"
        return stages

    def rollbacks(self) -> dict[str, dict[str, Any]]:
        """Version -> the rollback that took it out of production, for those not promoted again since."""
        found: dict[str, dict[str, Any]] = {}
        for event in self.events():
            if event["event"] == "rollback" and event.get("from"):
                found[event["from"]] = event
            if event["event"] in _MOVES and event.get("to"):
                found.pop(event["to"], None)
        return found

    def rolled_back(self, version: str) -> dict[str, Any] | None:
        """The rollback that took `version` out of production, unless it was promoted again since."""
        return self.rollbacks().get(version)

    # Writing

    def _append(self, event: dict[str, Any]) -> None:
        """Append one line in one write and sync it; a torn last line (no newline) is closed off first."""
        line = (json.dumps({"at": _now(), **event}) + "\n").encode()
        with self.history.open("ab+") as handle:
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = b"\n" + line
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def _next_version(self) -> str:
        names = [p.name for p in self.versions.iterdir()] if self.versions.exists() else []
        numbers = [int(m.group(1)) for name in names if (m := _VERSION.fullmatch(name))]
        return f"v{max(numbers, default=0) + 1:04d}"

    def register(
        self,
        model_dir: Path,
        record: dict[str, Any],
        files: Sequence[str] | None = None,
        attachments: Sequence[Path] = (),
        reason: str = "registered",
        texts: Callable[[str], dict[str, str]] | None = None,
    ) -> str:
        """Copy a model folder (or only `files` of it, plus `attachments`) in as a new candidate version.

        `texts(version)` gives files to write into it (name -> text, e.g. its model card).

        Returns:
            The new version's name.
        """
        with self.locked():
            version = self._next_version()
            staging = self.versions / f".{version}.tmp"
            shutil.rmtree(staging, ignore_errors=True)  # left by a crash during an earlier copy
            if files is None:
                shutil.copytree(model_dir, staging)
            else:
                staging.mkdir(parents=True)
                for name in files:
                    shutil.copy2(model_dir / name, staging / name)
            for path in attachments:
                shutil.copy2(path, staging / path.name)
            for name, text in (texts(version) if texts else {}).items():
                write_text(staging / name, text)
            # Every file's hash: loading the version checks them (verify_files).
            hashes = {p.name: file_digest(p, "sha256") for p in sorted(staging.iterdir()) if p.is_file()}
            write_json(staging / VERSION_FILE, {"version": version, "created_at": _now(), **record, "files": hashes})
            os.replace(staging, self.versions / version)
            self._append({"event": "register", "version": version, "reason": reason})
            return version

    def set_production(self, version: str, reason: str, event: Literal["promote", "rollback"] = "promote") -> None:
        """Point production at `version` (one atomic rename) and record the move."""
        with self.locked():
            self.record(version)  # a name of this registry, a real folder, a readable record
            if not (self.versions / version / VERSION_FILE).exists():
                raise RegistryError(f"no complete version {version} in {self.versions}")
            previous = self.production_version()
            move: dict[str, Any] = {"event": event, "from": previous, "to": version, "reason": reason}
            before, after = (self.labels(previous) if previous else None), self.labels(version)
            if before is not None and after is not None and set(before) != set(after):
                # Clients see other labels from here on: the history says when and why.
                move["labels"] = {"from": before, "to": after}
            write_json(self.pointer, {"version": version, "since": _now()})
            self._append(move)

    def promote(self, version: str, reason: str) -> str | None:
        """Make a registered version production (also one that was archived or rolled back).

        Returns:
            The version that served before, if any.
        """
        with self.locked():
            previous = self.production_version()
            if previous == version:
                raise RegistryError(f"{version} is already production")
            self.set_production(version, reason)
            return previous

    def rollback(self, reason: str, to: str | None = None) -> tuple[str, str]:
        """Restore the previous production model (or `to`) and archive the current one, marked rolled back.

        Returns:
            (the version rolled back, the version now serving).
        """
        if not reason.strip():
            raise RegistryError("a rollback needs a reason (it is recorded in the history)")
        with self.locked():
            current = self.production_version()
            if current is None:
                raise RegistryError("no production model to roll back")
            target = to or self._previous_production(current)
            if target is None:
                raise RegistryError(f"{current} is the only version that has served: nothing to roll back to")
            if target == current:
                raise RegistryError(f"{target} is already production")
            self.set_production(target, reason, event="rollback")
            return current, target

    def _previous_production(self, current: str) -> str | None:
        """The version that most recently stopped serving, other than `current` and rolled-back ones."""
        ended: dict[str, int] = {}
        for index, event in enumerate(self.events()):
            if event["event"] in _MOVES and event.get("from"):
                ended[event["from"]] = index
        blocked = self.rollbacks()
        eligible = [
            v for v in ended if v != current and v not in blocked and (self.versions / v / VERSION_FILE).exists()
        ]
        return max(eligible, key=lambda v: ended[v], default=None)

    def protected(self) -> set[str]:
        """Versions retention must keep: production, the one a rollback would restore, and rolled-back
        ones (deleting those would let the pipeline register and promote the same model again)."""
        current = self.production_version()
        found = {current, self._previous_production(current) if current else None, *self.rollbacks()}
        return {version for version in found if version}

    def remove(self, versions: list[str], reason: str) -> list[str]:
        """Delete these versions (never a protected one); their events leave the history. Returns those deleted."""
        with self.locked():
            gone = [v for v in versions if v not in self.protected() and v in self.list_versions()]
            for version in gone:
                # Renamed out of sight first: a half-deleted version is never listed as complete.
                doomed = self.versions / f".{version}.deleting"
                os.replace(self.versions / version, doomed)
                shutil.rmtree(doomed)
            if gone:
                self._drop_events(set(gone))
                self._append({"event": "prune", "versions": gone, "reason": reason})
            return gone

    def _drop_events(self, versions: set[str]) -> None:
        """Rewrite the history without events that name only deleted versions (atomically)."""
        kept = []
        for line in self.history.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
            try:
                event = json.loads(line)
                named = {event.get(key) for key in ("version", "from", "to")} - {None}
            except (ValueError, AttributeError):
                named = set()
            if not named or not named <= versions:
                kept.append(line if line.endswith("\n") else line + "\n")
        write_text(self.history, "".join(kept))

    def archive(self, version: str, reason: str) -> None:
        """Retire a candidate (production is left by promoting or rolling back, not by archiving)."""
        with self.locked():
            if version == self.production_version():
                raise RegistryError(f"{version} is production: promote another version or roll back first")
            self.record(version)
            self._append({"event": "archive", "version": version, "reason": reason})
