"""The model registry: numbered versions, stages and a production pointer, outside DVC's graph.

Layout under `paths.registry`:
    versions/vNNNN/   the served model files, the gate report and `version.json` (lineage)
    production.json   which version serves now (replaced atomically)
    history.jsonl     every event (register, promote, rollback, archive) with its reason
Stages: the pointer's version is `production`; a version that served before,
or was archived by hand, is `archived`; any other is a `candidate`.

A version folder is complete before it gets its name, and production moves
only by an atomic rename of the pointer, so a crash at any point leaves the
previous production model serving. Writers hold one file lock.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from tasks.lib.artifacts import VERSION_FILE
from tasks.lib.errors import PipelineError
from tasks.lib.io import read_json, write_json

_VERSION = re.compile(r"^v(\d{4,})$")
Stage = Literal["candidate", "production", "archived"]
# Events that move the production pointer (they carry "from" and "to").
_MOVES = ("promote", "rollback")


class RegistryError(PipelineError, RuntimeError):
    """The registry is inconsistent or an operation on it is not allowed."""


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

    def production_version(self) -> str | None:
        return read_json(self.pointer)["version"] if self.pointer.exists() else None

    def record(self, version: str) -> dict[str, Any]:
        """A complete version's lineage record, with its folder as `path`."""
        folder = self.versions / version
        if not (folder / VERSION_FILE).exists():
            raise RegistryError(f"no complete version {version} in {self.versions}")
        return {**read_json(folder / VERSION_FILE), "path": str(folder)}

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

    def list_versions(self) -> list[str]:
        """Complete versions, oldest first (a half-copied `.vNNNN.tmp` is not one)."""
        if not self.versions.exists():
            return []
        return sorted(p.name for p in self.versions.iterdir() if _VERSION.match(p.name) and (p / VERSION_FILE).exists())

    def find(self, model_md5: str) -> str | None:
        """The newest complete version holding this exact model, if any."""
        for version in reversed(self.list_versions()):
            if read_json(self.versions / version / VERSION_FILE).get("model_md5") == model_md5:
                return version
        return None

    def events(self) -> list[dict[str, Any]]:
        if not self.history.exists():
            return []
        lines = self.history.read_text(encoding="utf-8").splitlines()
        # Registries written before events had names only recorded production moves.
        return [{"event": "promote", **json.loads(line)} for line in lines if line.strip()]

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
        with self.history.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"at": _now(), **event}) + "\n")

    def _next_version(self) -> str:
        names = [p.name for p in self.versions.iterdir()] if self.versions.exists() else []
        numbers = [int(m.group(1)) for name in names if (m := _VERSION.match(name))]
        return f"v{max(numbers, default=0) + 1:04d}"

    def register(
        self,
        model_dir: Path,
        record: dict[str, Any],
        files: Sequence[str] | None = None,
        attachments: Sequence[Path] = (),
        reason: str = "registered",
    ) -> str:
        """Copy a model folder (or only `files` of it, plus `attachments`) in as a new candidate version.

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
            write_json(staging / VERSION_FILE, {"version": version, "created_at": _now(), **record})
            os.replace(staging, self.versions / version)
            self._append({"event": "register", "version": version, "reason": reason})
            return version

    def set_production(self, version: str, reason: str, event: Literal["promote", "rollback"] = "promote") -> None:
        """Point production at `version` (one atomic rename) and record the move."""
        with self.locked():
            if not (self.versions / version / VERSION_FILE).exists():
                raise RegistryError(f"no complete version {version} in {self.versions}")
            previous = self.production_version()
            write_json(self.pointer, {"version": version, "since": _now()})
            self._append({"event": event, "from": previous, "to": version, "reason": reason})

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

    def archive(self, version: str, reason: str) -> None:
        """Retire a candidate (production is left by promoting or rolling back, not by archiving)."""
        with self.locked():
            if version == self.production_version():
                raise RegistryError(f"{version} is production: promote another version or roll back first")
            self.record(version)
            self._append({"event": "archive", "version": version, "reason": reason})
