"""The model registry: numbered versions and a production pointer, outside DVC's graph.

Layout under `paths.registry`:
    versions/vNNNN/   the served model folder plus `version.json` (lineage)
    production.json   which version serves now (replaced atomically)
    history.jsonl     every change of production, with the reason
A version folder is complete before it gets its name, and production moves
only by an atomic rename of the pointer, so a crash at any point leaves the
previous production model serving.
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
from typing import Any

from filelock import FileLock

from tasks.config import PipelineError
from tasks.io import read_json, write_json

VERSION_FILE = "version.json"
_VERSION = re.compile(r"^v(\d{4,})$")


class RegistryError(PipelineError, RuntimeError):
    """The registry is inconsistent or an operation on it is not allowed."""


class Registry:
    def __init__(self, root: Path):
        self.root = root
        self.versions = root / "versions"
        self.pointer = root / "production.json"
        self.history = root / "history.jsonl"

    @contextmanager
    def locked(self, timeout_s: float = 600) -> Iterator[None]:
        """Serialise promotions and rollbacks (one writer at a time)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / ".lock"), timeout=timeout_s):
            yield

    def production(self) -> dict[str, Any] | None:
        """The production version's record, or None before the first promotion."""
        if not self.pointer.exists():
            return None
        version = read_json(self.pointer)["version"]
        folder = self.versions / version
        if not (folder / VERSION_FILE).exists():
            raise RegistryError(f"{self.pointer} points at {version}, but {folder} is missing or incomplete")
        return {**read_json(folder / VERSION_FILE), "path": str(folder)}

    def list_versions(self) -> list[str]:
        if not self.versions.exists():
            return []
        return sorted(p.name for p in self.versions.iterdir() if _VERSION.match(p.name))

    def find(self, model_md5: str) -> str | None:
        """The newest complete version holding this exact model, if any."""
        for version in reversed(self.list_versions()):
            record = self.versions / version / VERSION_FILE
            if record.exists() and read_json(record).get("model_md5") == model_md5:
                return version
        return None

    def _next_version(self) -> str:
        numbers = [int(_VERSION.match(v).group(1)) for v in self.list_versions()]  # type: ignore[union-attr]
        return f"v{max(numbers, default=0) + 1:04d}"

    def register(self, model_dir: Path, record: dict[str, Any], files: Sequence[str] | None = None) -> str:
        """Copy a model folder (or only `files` of it) in as a new version with its lineage record.

        Returns:
            The new version's name.
        """
        version = self._next_version()
        staging = self.versions / f".{version}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        if files is None:
            shutil.copytree(model_dir, staging)
        else:
            staging.mkdir(parents=True)
            for name in files:
                shutil.copy2(model_dir / name, staging / name)
        created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        write_json(staging / VERSION_FILE, {"version": version, "created_at": created, **record})
        os.replace(staging, self.versions / version)
        return version

    def set_production(self, version: str, reason: str) -> None:
        """Point production at `version` (atomic) and append the change to the history."""
        if not (self.versions / version / VERSION_FILE).exists():
            raise RegistryError(f"no complete version {version} in {self.versions}")
        previous = read_json(self.pointer)["version"] if self.pointer.exists() else None
        at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        write_json(self.pointer, {"version": version, "since": at})
        with self.history.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"at": at, "from": previous, "to": version, "reason": reason}) + "\n")
