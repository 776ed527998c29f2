"""The model registry: numbered versions, stages and a production pointer, outside DVC's graph.

`paths.registry` is a local folder or an object-store URL (`s3://bucket/prefix`, any fsspec
backend: tasks.lib.storage.object_store). Layout under it:
    versions/vNNNN/   the served model files, the gate report and `version.json` (lineage)
    production.json   which version serves now (replaced atomically)
    history.jsonl     every event (register, promote, rollback, archive) with its reason;
                      a move between versions with other labels records both label sets
Stages: the pointer's version is `production`; a version that served before,
or was archived by hand, is `archived`; any other is a `candidate`.

A version is complete before it is visible, and production moves only by
replacing the pointer whole, so a crash at any point leaves the previous
production model serving. Locally a version folder is copied beside and
renamed, and writers hold one file lock. In object storage a version counts
only once its `version.json`, uploaded last, exists; writers hold a lease made
of exclusively created objects (S3 conditional writes: no shared disk needed),
and a writer whose lease expired stops before it moves the pointer. Serving
hosts read a remote registry through a local cache of versions (`fetch`).

Integrity: `version.json` lists the SHA-256 of every file of its version
(`files`), and loading a version verifies them (tasks.lib.inference.production_model),
so a file changed after registration is refused, not served; promoting or rolling back to
a version verifies them too. The pointer is trusted only to name a version this registry
holds; a damaged one is reported (`pointer_problem`), and promote and rollback replace it.
A history line torn by a crash or a full disk is skipped and reported, never fatal. A write
that fails (a full disk: ENOSPC) is a RegistryError naming what could not be written and
where; the partial file is removed and the pointer and history stay as they were.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from tasks.lib.artifacts import CLASSIFIER_FILE, TOKENIZER_FILE, VERSION_FILE, graph_files
from tasks.lib.errors import PipelineError
from tasks.lib.io import current_umask, file_digest, read_json, write_json, write_text
from tasks.lib.storage.object_store import Lease, ObjectStore, StoreError

_VERSION = re.compile(r"v(\d{4,})")  # used with fullmatch: "v0001\n" is not a name
HISTORY_PROBLEM = "history_problem"  # an event that stands for lines of history.jsonl that could not be read
Stage = Literal["candidate", "production", "archived"]
# How long a remote registry's lease outlives a writer that stopped renewing it (killed): the
# others wait at most this long. A live writer renews it every third of it, however long it writes.
LEASE_TTL_S = 60
# Events that move the production pointer (they carry "from" and "to").
_MOVES = ("promote", "rollback")


class RegistryError(PipelineError, RuntimeError):
    """The registry is inconsistent or an operation on it is not allowed."""


def verify_files(folder: Path, complete: bool = True) -> bool:
    """Check every file a version's record lists against its SHA-256; raise on any difference.

    `complete`: the graph the record names, the tokenizer and the label file must all be listed
    (what loading a model needs). Returns False for a folder without a record or a version
    registered before records listed files (nothing to check: served, and /health says unverified).
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
    if unlisted and complete:
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


def _write_failure(what: str, where: str, exc: OSError) -> RegistryError:
    """A failed write as an error a person acts on: what, where, why (ENOSPC: free space)."""
    code = errno.errorcode.get(exc.errno or 0, "")
    why = f"{exc.strerror or exc}" + (f" ({code})" if code else "")
    hint = "; free space there and run it again" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return RegistryError(f"cannot write {what} to {where}: {why}{hint}")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


POINTER, HISTORY, VERSIONS = "production.json", "history.jsonl", "versions"


def default_cache() -> Path:
    """Where serving hosts keep the versions of remote registries (XDG_CACHE_HOME or ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "textclf" / "registry"


class Registry:
    def __init__(self, location: Path | str, cache: Path | None = None):
        """`location`: a folder or an object-store URL; `cache`: where `fetch` keeps remote versions."""
        self.store = ObjectStore(location)
        self.url = self.store.url
        self.local = self.store.local
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.cache = (cache or default_cache()) / digest
        self._lock: FileLock | None = None
        self._lease: Lease | None = None
        self._depth = 0  # locked() is re-entrant within one process

    # The folder layout of a local registry (tests and tools that work on files).

    def _folder(self) -> Path:
        if self.local is None:
            raise RegistryError(f"{self.url} is in object storage: it has no local folder")
        return self.local

    @property
    def root(self) -> Path:
        return self._folder()

    @property
    def versions(self) -> Path:
        return self._folder() / VERSIONS

    @property
    def pointer(self) -> Path:
        return self._folder() / POINTER

    @property
    def history(self) -> Path:
        return self._folder() / HISTORY

    def _key(self, version: str, name: str = "") -> str:
        return f"{VERSIONS}/{version}/{name}" if name else f"{VERSIONS}/{version}"

    def where(self, version: str, name: str = VERSION_FILE) -> str:
        """Where a version's file is, for messages: a path in a folder registry, a URL in object storage."""
        return f"{self.url}/{self._key(version, name)}"

    def _read(self, key: str) -> bytes | None:
        """An object's bytes, or None when it does not exist; RegistryError when the store fails."""
        try:
            return self.store.read_bytes(key)
        except FileNotFoundError:
            return None
        except StoreError as exc:
            raise RegistryError(str(exc)) from None

    @contextmanager
    def locked(self, timeout_s: float = 600) -> Iterator[None]:
        """Serialise writers (register, promote, rollback, archive, prune) across processes and hosts.

        A local folder: a file lock (released by the OS if the holder dies). Object storage:
        a lease (tasks.lib.storage.object_store.Lease), taken over after `lease_ttl_s` if its holder died.
        """
        if self.local is not None:
            if self._lock is None:
                self.local.mkdir(parents=True, exist_ok=True)
                self._lock = FileLock(str(self.local / ".lock"), timeout=timeout_s)
            with self._lock:
                yield
            return
        if self._depth == 0:
            self._lease = Lease(self.store, "lease", ttl_s=LEASE_TTL_S)
            try:
                self._lease.acquire(timeout_s)
            except StoreError as exc:
                raise RegistryError(str(exc)) from None
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._lease is not None:
                self._lease.release()
                self._lease = None

    def _still_held(self) -> None:
        """Before a change to a remote registry: the lease is still this writer's (else LeaseLost)."""
        if self._lease is not None:
            self._lease.held()

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

    def pointer_text(self) -> str | None:
        """The production pointer as stored (None: no production model yet)."""
        data = self._read(POINTER)
        return None if data is None else data.decode("utf-8", errors="replace")

    def production_version(self) -> str | None:
        text = self.pointer_text()
        return None if text is None else self.parse_pointer(text)

    def pointer_problem(self) -> str | None:
        """Why the production pointer names no version of this registry, or None (sound, or absent)."""
        try:
            version = self.production_version()
        except RegistryError as exc:
            return str(exc)
        if version is not None and not self.store.exists(self._key(version, VERSION_FILE)):
            return f"{self.url}/{POINTER} names {version}, which this registry does not hold (complete)"
        return None

    def _production_or_none(self) -> str | None:
        """The pointer's version, or None when there is none or it is damaged (then it may be replaced)."""
        return None if self.pointer_problem() else self.production_version()

    def last_production(self) -> str | None:
        """The version the history's last move made production (what a damaged pointer should say)."""
        moves = [e for e in self.events() if e["event"] in _MOVES and e.get("to")]
        return str(moves[-1]["to"]) if moves else None

    def verify(self, version: str) -> bool:
        """Check a version's files against the SHA-256 its record lists (in the store itself, remote or not).

        Returns False for a version registered before records listed files (nothing to check).

        Raises:
            RegistryError: a file is missing or differs from the registered one (named), or the record is damaged.
        """
        if self.local is not None:
            self._record_bytes(version)  # a name of this registry and a real folder of it
            return verify_files(self.versions / version, complete=False)
        listed = self.record(version).get("files")
        if listed is None:
            return False
        changed = []
        for name, digest in listed.items():
            key = self._key(version, name)
            try:
                with self.store.fs.open(self.store.path(key), "rb") as handle:
                    if hashlib.file_digest(handle, "sha256").hexdigest() != digest:
                        changed.append(f"{name} differs from the registered file")
            except FileNotFoundError:
                changed.append(f"{name} is missing")
            except Exception as exc:  # noqa: BLE001 - the backend's own errors: unreachable, denied
                raise RegistryError(f"{self.url}/{key}: cannot read ({type(exc).__name__}: {exc})") from None
        if changed:
            where = f"{self.url}/{self._key(version)}"
            raise RegistryError(f"{where}: " + "; ".join(changed) + " (changed after registration)")
        return True

    def _record_bytes(self, version: str) -> bytes:
        """A complete version's `version.json` as stored; RegistryError for a bad name or no such version."""
        if not _VERSION.fullmatch(version):
            raise RegistryError(f"{version!r} is not a version name (vNNNN)")
        if self.local is not None:
            folder = self.versions / version
            if folder.is_symlink() or not folder.resolve().is_relative_to(self.versions.resolve()):
                raise RegistryError(f"{folder}: a link out of the registry, not a version folder")
        data = self._read(self._key(version, VERSION_FILE))
        if data is None:
            raise RegistryError(f"no complete version {version} in {self.url}/{VERSIONS}")
        return data

    def record(self, version: str) -> dict[str, Any]:
        """A complete version's lineage record, with where it lives as `path` (a folder or a URL)."""
        data = self._record_bytes(version)
        where = f"{self.url}/{self._key(version)}"
        try:
            record = json.loads(data)
        except ValueError as exc:
            raise RegistryError(f"{where}/{VERSION_FILE}: damaged, not readable JSON ({exc})") from None
        return {**record, "path": where}

    def production(self) -> dict[str, Any] | None:
        """The production version's record, or None before the first promotion."""
        version = self.production_version()
        if version is None:
            return None
        if not self.store.exists(self._key(version, VERSION_FILE)):
            raise RegistryError(
                f"{self.url}/{POINTER} points at {version}, "
                f"but {self.url}/{self._key(version)} is missing or incomplete"
            )
        return self.record(version)

    def read_text(self, version: str, name: str) -> str | None:
        """A file of a version as text (e.g. its model card), or None when it has none."""
        data = self._read(self._key(version, name))
        return None if data is None else data.decode("utf-8")

    def fetch(self, version: str) -> Path:
        """A local folder holding the version's files, checked against its record's SHA-256 hashes.

        A local registry's own folder; for a remote one, a copy in `cache` (downloaded once: a
        version never changes), so a serving host keeps its files when the store is unreachable.
        """
        data = self._record_bytes(version)
        if self.local is not None:
            return self.versions / version
        folder = self.cache / version
        if (folder / VERSION_FILE).is_file():
            return folder
        try:
            listed = json.loads(data).get("files") or {}
        except ValueError as exc:
            raise RegistryError(f"{self.url}/{self._key(version, VERSION_FILE)}: damaged ({exc})") from None
        staging = self.cache / f".{version}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            for name in listed:
                self.store.download(self._key(version, name), staging / name)
            (staging / VERSION_FILE).write_bytes(data)
            verify_files(staging)  # what came down is what was registered
            staging.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, folder)
        except (StoreError, FileNotFoundError) as exc:
            raise RegistryError(f"{self.url}/{self._key(version)}: cannot download ({exc})") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    def labels(self, version: str) -> list[str] | None:
        """The labels a version predicts: its record's, else its classifier.json's; None if unreadable."""
        try:
            listed = self.record(version).get("labels")
            if listed:
                return [str(label) for label in listed]
            return [str(label) for label in json.loads(self.read_text(version, CLASSIFIER_FILE) or "")["labels"]]
        except (RegistryError, OSError, ValueError, KeyError, TypeError):
            return None

    def created(self, version: str) -> float:
        """When a version was registered (seconds since the epoch): its record's file time locally, else its field."""
        if self.local is not None:
            return (self.versions / version / VERSION_FILE).stat().st_mtime
        return dt.datetime.fromisoformat(self.record(version)["created_at"]).timestamp()

    def _version_names(self) -> list[str]:
        try:
            return [name for name in self.store.list(VERSIONS) if _VERSION.fullmatch(name)]
        except StoreError as exc:
            raise RegistryError(str(exc)) from None

    def list_versions(self) -> list[str]:
        """Complete versions, oldest first (one still being copied in has no version.json yet)."""
        return sorted(name for name in self._version_names() if self.store.exists(self._key(name, VERSION_FILE)))

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
        data = self._read(HISTORY)
        if data is None:
            return []
        found = []
        text = data.decode("utf-8", errors="replace")
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
            f"{self.url}/{HISTORY}:{e['line']}: unreadable, skipped ({e['text'][:60]!r})"
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
        production = self._production_or_none()  # a damaged pointer hides no version (pointer_problem says why)
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
        """Append one line in one write and sync it; a torn last line (no newline) is closed off first.

        Object stores cannot append: the history is rewritten whole, under the lease.
        """
        line = (json.dumps({"at": _now(), **event}) + "\n").encode()
        if self.local is None:
            before = self._read(HISTORY) or b""
            self._still_held()
            self.store.put(HISTORY, before + (b"\n" if before and not before.endswith(b"\n") else b"") + line)
            return
        # Unbuffered: a failed write leaves nothing in a buffer for close() to fail on again.
        with self.history.open("ab+", buffering=0) as handle:
            size = handle.seek(0, os.SEEK_END)
            if size > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = b"\n" + line
            try:
                rest = memoryview(line)
                while rest:
                    written = handle.write(rest)
                    if not written:
                        raise OSError(errno.EIO, "the file system wrote nothing")
                    rest = rest[written:]
                os.fsync(handle.fileno())
            except OSError as exc:
                # What was written of the line goes (a shorter file always fits): the history stays as it was;
                # should that fail too, the torn line stays, and reading skips and reports it.
                with suppress(OSError):
                    handle.truncate(size)
                raise _write_failure("the event", str(self.history), exc) from None

    def _next_version(self) -> str:
        numbers = [int(m.group(1)) for name in self._version_names() if (m := _VERSION.fullmatch(name))]
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
        if self.local is None:
            return self._register_remote(model_dir, record, files, attachments, reason, texts)
        with self.locked():
            version = self._next_version()
            staging = self.versions / f".{version}.tmp"
            shutil.rmtree(staging, ignore_errors=True)  # left by a crash during an earlier copy
            try:
                self._stage(staging, version, model_dir, record, files, attachments, texts)
            except OSError as exc:
                shutil.rmtree(staging, ignore_errors=True)  # a partial copy is no version: nothing of it stays
                raise _write_failure(f"version {version}", str(staging), exc) from None
            os.replace(staging, self.versions / version)
            self._append({"event": "register", "version": version, "reason": reason})
            return version

    def _stage(
        self,
        staging: Path,
        version: str,
        model_dir: Path,
        record: dict[str, Any],
        files: Sequence[str] | None,
        attachments: Sequence[Path],
        texts: Callable[[str], dict[str, str]] | None,
    ) -> None:
        """Copy a version's files into `staging` and write its record (with every file's hash) last.

        Raises:
            OSError: the first copy that failed (not copytree's list of every file it could not copy).
        """
        failures: list[OSError] = []

        def copy(source: str, target: str) -> object:
            try:
                return shutil.copy2(source, target)
            except OSError as exc:
                failures.append(exc)
                raise

        if files is None:
            try:
                shutil.copytree(model_dir, staging, copy_function=copy)
            except shutil.Error:
                if failures:
                    raise failures[0] from None
                raise
        else:
            staging.mkdir(parents=True)
            for name in files:
                shutil.copy2(model_dir / name, staging / name)
        for path in attachments:
            shutil.copy2(path, staging / path.name)
        for name, text in (texts(version) if texts else {}).items():
            write_text(staging / name, text)
        _modes_of_a_new_folder(staging)
        # Every file's hash: loading the version checks them (verify_files).
        hashes = {p.name: file_digest(p, "sha256") for p in sorted(staging.iterdir()) if p.is_file()}
        write_json(staging / VERSION_FILE, {"version": version, "created_at": _now(), **record, "files": hashes})

    def _register_remote(
        self,
        model_dir: Path,
        record: dict[str, Any],
        files: Sequence[str] | None,
        attachments: Sequence[Path],
        reason: str,
        texts: Callable[[str], dict[str, str]] | None,
    ) -> str:
        """`register` in object storage: every file uploaded, then `version.json` last (what makes it visible)."""
        with self.locked():
            # Only the lease holder writes: a version folder without a record is a dead writer's.
            for name in self._version_names():
                if not self.store.exists(self._key(name, VERSION_FILE)):
                    self.store.delete(self._key(name))
            version = self._next_version()
            sources = [model_dir / name for name in files] if files is not None else sorted(model_dir.iterdir())
            hashes: dict[str, str] = {}
            for path in [*sources, *attachments]:
                self._still_held()
                self.store.upload(path, self._key(version, path.name))
                hashes[path.name] = file_digest(path, "sha256")
            for name, text in (texts(version) if texts else {}).items():
                data = text.encode("utf-8")
                self.store.put(self._key(version, name), data)
                hashes[name] = hashlib.sha256(data).hexdigest()
            full = {"version": version, "created_at": _now(), **record, "files": dict(sorted(hashes.items()))}
            self._still_held()
            self.store.put(self._key(version, VERSION_FILE), json.dumps(full, indent=2).encode())
            self._append({"event": "register", "version": version, "reason": reason})
            return version

    def set_production(self, version: str, reason: str, event: Literal["promote", "rollback"] = "promote") -> None:
        """Point production at `version` (replaced whole, a damaged pointer too) and record the move.

        Raises:
            RegistryError: not a version of this registry, its files do not match their hashes, or
                the pointer or history cannot be written (then both are as they were).
        """
        with self.locked():
            self.record(version)  # a name of this registry, a real folder, a readable record
            self.verify(version)  # never point production at files that would be refused when loaded
            damaged = self.pointer_problem()
            # A damaged pointer: the move is from the production the history last recorded (a rollback
            # from it marks it rolled back, so the pipeline does not promote it again).
            previous = self.last_production() if damaged else self.production_version()
            move: dict[str, Any] = {"event": event, "from": previous, "to": version, "reason": reason}
            if damaged:
                move["replaced"] = f"a damaged pointer: {damaged}"[:300]
            before, after = (self.labels(previous) if previous else None), self.labels(version)
            if before is not None and after is not None and set(before) != set(after):
                # Clients see other labels from here on: the history says when and why.
                move["labels"] = {"from": before, "to": after}
            self._still_held()
            old = self._read(POINTER)
            try:
                self.store.put(POINTER, (json.dumps({"version": version, "since": _now()}, indent=2) + "\n").encode())
            except OSError as exc:
                raise _write_failure("the production pointer", f"{self.url}/{POINTER}", exc) from None
            try:
                self._append(move)
            except RegistryError as exc:
                self._restore_pointer(old, exc)
                raise

    def _restore_pointer(self, old: bytes | None, failure: RegistryError) -> None:
        """Put the pointer back after its move could not be recorded (a move the history does not tell is lost)."""
        try:
            if old is None:
                self.store.delete(POINTER)
            else:
                self.store.put(POINTER, old)
        except (OSError, StoreError) as exc:
            raise RegistryError(
                f"{failure}; the production pointer moved, but the history does not record it, and putting "
                f"the pointer back failed too ({exc})"
            ) from None

    def promote(self, version: str, reason: str) -> str | None:
        """Make a registered version production (also one that was archived or rolled back).

        Returns:
            The version that served before, if any.
        """
        with self.locked():
            previous = self._production_or_none()  # a damaged pointer is replaced
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
            # A damaged pointer: the production the history last recorded is the one rolled back from.
            current = self.last_production() if self.pointer_problem() else self.production_version()
            if current is None:
                raise RegistryError("no production model to roll back")
            if to is None:
                target, skipped = self.rollback_target(current)
                if target is None:
                    why = f" ({'; '.join(skipped)})" if skipped else ""
                    raise RegistryError(
                        f"{current} is the only version that has served and verifies: nothing to roll back to{why}"
                    )
            else:
                target = to
            if target == current and not self.pointer_problem():
                raise RegistryError(f"{target} is already production")
            self.set_production(target, reason, event="rollback")
            return current, target

    def rollback_target(self, current: str) -> tuple[str | None, list[str]]:
        """The version a rollback from `current` restores: the most recent previous production that is
        not rolled back and whose files verify; and why each more recent one was passed over."""
        skipped = []
        for version in self.previous_productions(current):
            try:
                self.verify(version)
            except RegistryError as exc:
                skipped.append(f"{version} passed over: {exc}")
                continue
            return version, skipped
        return None, skipped

    def _previous_production(self, current: str) -> str | None:
        """The version that most recently stopped serving, other than `current` and rolled-back ones."""
        return next(iter(self.previous_productions(current)), None)

    def previous_productions(self, current: str) -> list[str]:
        """Versions that served before, most recently ended first, without `current` and rolled-back ones."""
        ended: dict[str, int] = {}
        for index, event in enumerate(self.events()):
            if event["event"] in _MOVES and event.get("from"):
                ended[event["from"]] = index
        blocked = self.rollbacks()
        complete = set(self.list_versions())
        eligible = [v for v in ended if v != current and v not in blocked and v in complete]
        return sorted(eligible, key=lambda v: ended[v], reverse=True)

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
                self._still_held()
                if self.local is None:
                    # Its record first: a half-deleted version is never listed as complete.
                    self.store.delete(self._key(version, VERSION_FILE))
                    self.store.delete(self._key(version))
                    continue
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
        text = (self._read(HISTORY) or b"").decode("utf-8", errors="replace")
        for line in text.splitlines(keepends=True):
            try:
                event = json.loads(line)
                named = {event.get(key) for key in ("version", "from", "to")} - {None}
            except (ValueError, AttributeError):
                named = set()
            if not named or not named <= versions:
                kept.append(line if line.endswith("\n") else line + "\n")
        self._still_held()
        if self.local is None:
            self.store.put(HISTORY, "".join(kept).encode("utf-8"))
            return
        try:
            write_text(self.history, "".join(kept))
        except OSError as exc:
            raise _write_failure("the history", str(self.history), exc) from None

    def archive(self, version: str, reason: str) -> None:
        """Retire a candidate (production is left by promoting or rolling back, not by archiving)."""
        with self.locked():
            if version == self.production_version():
                raise RegistryError(f"{version} is production: promote another version or roll back first")
            self.record(version)
            self._append({"event": "archive", "version": version, "reason": reason})


def _modes_of_a_new_folder(folder: Path) -> None:
    """Give `folder` and its files the modes this process's umask gives new ones, not their source's:
    a version copied from a private folder (0700, a temporary one) must still be readable by the
    serving host's user (the serving image runs as its own)."""
    umask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
