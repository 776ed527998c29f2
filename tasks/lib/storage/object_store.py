"""Objects under a root that is a local folder or an fsspec URL (`s3://bucket/prefix`, `gs://...`).

What the registry needs from storage, and no more, so that one registry works on a
shared disk and in object storage alike:

- `put`: readers see the old object or the new one, never part of one (a local file is
  written beside and renamed; an object store replaces an object in one PUT);
- `create`: exclusive creation, the one primitive that serialises writers on hosts that
  share no disk (a local file written beside and hard-linked into place; S3's conditional
  `If-None-Match: *`, which AWS S3, SeaweedFS and MinIO honour: s3fs's mode "xb");
- listings read fresh every time (s3fs caches them by default; another host's writes must
  show).

Credentials and endpoints come from the backend's usual environment (for S3:
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL), never from params.yaml.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tasks.lib.errors import PipelineError
from tasks.lib.io import atomic_path, current_umask, is_url


class StoreError(PipelineError, RuntimeError):
    """The store cannot be reached or refused an operation; the message names the URL."""


# s3fs turns an S3 error answer into an OSError by its code: EREMOTEIO (121) for 5xx "InternalError".
_REMOTE_IO = 121


def store_hint(exc: Exception, action: str) -> str | None:
    """What to check when a store refused `action`, from the backend's exception; None when nothing helps."""
    text = f"{type(exc).__name__} {exc}".lower()
    if (isinstance(exc, OSError) and exc.errno == _REMOTE_IO) or "internal error" in text or "internalerror" in text:
        return (
            "the store itself failed (an internal error, HTTP 5xx): it refused this object. Check the store's log and "
            "its free capacity (SeaweedFS: free volumes, -volume.max; MinIO: disk space), then run it again"
        )
    if isinstance(exc, PermissionError) or "accessdenied" in text or "access denied" in text or "forbidden" in text:
        return (
            f"access denied: this host's credentials may not {action} this key (AWS_ACCESS_KEY_ID or AWS_PROFILE, "
            "and the policy of its role: docs/guides/team.md)"
        )
    if "nosuchbucket" in text or "bucket does not exist" in text:
        return "the bucket does not exist: create it first (docs/guides/team.md)"
    if "read timeout" in text or "readtimeout" in text:
        # Reached, but no answer: SeaweedFS on a full disk holds a write open past the client's timeout.
        return (
            "the store took the request but did not answer in time: it may be overloaded or out of disk space "
            "(check its log and the free space of its data folder), then run it again"
        )
    if "connect" in text or "endpoint" in text:
        return (
            "the store cannot be reached: check AWS_ENDPOINT_URL (every host needs it for a store other than AWS S3) "
            "and the network"
        )
    return None


class ObjectStore:
    """Keys (`a/b/c.json`, `/`-separated) under one root."""

    def __init__(self, location: str | Path, **options: Any):
        import fsspec

        self.url = str(location).rstrip("/")
        self.local = None if is_url(location) else Path(str(location).removeprefix("file://"))
        if self.local is None:
            # Listings straight from the store: another host may have written since.
            options.setdefault("use_listings_cache", False)
            options.setdefault("skip_instance_cache", True)
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **options)
        else:
            self.fs, self.root = fsspec.filesystem("file"), str(self.local)

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def _fail(self, action: str, key: str, exc: Exception) -> StoreError:
        # Any exception of the backend: botocore's connection and permission errors are not OSError.
        hint = store_hint(exc, action)
        return StoreError(
            f"{self.url}/{key}: cannot {action} ({type(exc).__name__}: {exc})" + (f": {hint}" if hint else "")
        )

    def exists(self, key: str) -> bool:
        try:
            return bool(self.fs.exists(self.path(key)))
        except Exception as exc:
            raise self._fail("check", key, exc) from exc

    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError when there is none."""
        try:
            data: bytes = self.fs.cat_file(self.path(key))
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise self._fail("read", key, exc) from exc
        return data

    def put(self, key: str, data: bytes) -> None:
        """Write the object whole: a reader sees the previous bytes or these, never a part."""
        if self.local is not None:
            with atomic_path(self.local / key) as temporary:
                temporary.write_bytes(data)
            return
        try:
            self.fs.pipe_file(self.path(key), data)
        except Exception as exc:
            raise self._fail("write", key, exc) from exc

    def create(self, key: str, data: bytes) -> bool:
        """Create the object only if no object has this key; False when one has (another writer won)."""
        if self.local is not None:
            # Written beside, then hard-linked into place: the link fails if the name exists, and a
            # reader never sees the object before its bytes (open("xb") would show it empty).
            target = self.local / key
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, staged = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.chmod(staged, 0o666 & ~current_umask())
                os.link(staged, target)
            except FileExistsError:
                return False
            finally:
                os.unlink(staged)
            return True
        try:
            with self.fs.open(self.path(key), "xb") as file:
                file.write(data)
        except FileExistsError:
            return False
        except Exception as exc:
            # S3 answers an unmet If-None-Match with 412 PreconditionFailed, which s3fs raises as EINVAL.
            if "pre-condition" in str(exc).lower() or "precondition" in str(exc).lower():
                return False
            raise self._fail("create", key, exc) from exc
        return True

    def delete(self, key: str) -> None:
        """Remove the object (or every object under the prefix `key`); absent is not an error."""
        path = self.path(key)
        try:
            if not self.fs.exists(path):
                return
            folder = self.fs.isdir(path)
            self.fs.rm(path, recursive=True)
            if folder and self.local is None:
                # Stores with real folders (SeaweedFS's filer) keep an emptied one listed until
                # its own key goes; on S3 proper the key does not exist and this is a no-op.
                self.fs.rm_file(f"{path}/")
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self._fail("delete", key, exc) from exc

    def list(self, prefix: str = "") -> list[str]:
        """The names directly under `prefix` (objects and sub-prefixes), sorted; [] when there are none."""
        try:
            entries = self.fs.ls(self.path(prefix), detail=False)
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise self._fail("list", prefix, exc) from exc
        return sorted({str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in entries})

    def upload(self, source: Path, key: str) -> None:
        """Copy a local file in as `key` (whole: see `put`)."""
        if self.local is not None:
            self.put(key, source.read_bytes())
            return
        try:
            self.fs.put_file(str(source), self.path(key))
        except Exception as exc:
            raise self._fail("upload to", key, exc) from exc

    def download(self, key: str, target: Path) -> None:
        """Copy `key` to a local file, written beside and renamed (a crash leaves no half file)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        try:
            self.fs.get_file(self.path(key), str(partial))
            os.replace(partial, target)
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise self._fail("download", key, exc) from exc
        finally:
            partial.unlink(missing_ok=True)


class LeaseLost(StoreError):
    """Another writer took the lease (this one's expired): the operation must not go on."""


class Lease:
    """One writer at a time across hosts that share only the store.

    Generations `<name>/0000000001`, `.../0000000002`... are created exclusively: the writer
    whose `create` of the next generation succeeds holds the lease until it marks that
    generation released, or until `ttl_s` passes without a renewal. While it is held a thread
    renews it every `ttl_s / 3` (a long upload keeps it), so a writer killed while holding it
    blocks the others for at most `ttl_s`. A writer checks `held()` before each change it makes,
    so one that outlived its lease stops. Hosts' clocks must agree to well within `ttl_s` (NTP).
    """

    def __init__(self, store: ObjectStore, name: str = "lease", ttl_s: float = 60, poll_s: float = 0.5):
        self.store, self.name, self.ttl_s, self.poll_s = store, name, ttl_s, poll_s
        self.generation: int | None = None
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop_renewing = threading.Event()
        self._renewer: threading.Thread | None = None

    def _key(self, generation: int) -> str:
        return f"{self.name}/{generation:010d}"

    def _generations(self) -> list[int]:
        return sorted(int(name) for name in self.store.list(self.name) if name.isdigit())

    def _record(self, generation: int) -> dict[str, Any] | None:
        try:
            record: dict[str, Any] = json.loads(self.store.read_bytes(self._key(generation)))
        except FileNotFoundError:
            return None
        except ValueError:
            return {"released": False, "expires": 0}  # torn by a crash: as good as expired
        return record

    def acquire(self, timeout_s: float = 600) -> None:
        """Wait for the lease (at most `timeout_s`) and take it; StoreError if it stays taken."""
        deadline = time.monotonic() + timeout_s
        while True:
            latest = max(self._generations(), default=0)
            record = self._record(latest) if latest else None
            free = record is None or record.get("released") or float(record.get("expires", 0)) < time.time()
            if free:
                mine = {"owner": self.owner, "acquired": time.time(), "expires": time.time() + self.ttl_s}
                if self.store.create(self._key(latest + 1), json.dumps(mine).encode()):
                    self.generation = latest + 1
                    self._forget_before(latest - 10)
                    self._start_renewing()
                    return
                continue  # another writer took this generation: look again at once
            if time.monotonic() > deadline:
                raise StoreError(
                    f"{self.store.url}/{self.name}: held by {record.get('owner') if record else '?'} "
                    f"for over {timeout_s:.0f} s"
                )
            time.sleep(self.poll_s)

    def held(self) -> None:
        """Raise LeaseLost unless this writer still holds the lease (unexpired, no newer generation)."""
        if self.generation is None:
            raise LeaseLost(f"{self.store.url}/{self.name}: not held")
        record = self._record(self.generation)
        newer = max(self._generations(), default=0) > self.generation
        if newer or record is None or record.get("owner") != self.owner or float(record["expires"]) < time.time():
            raise LeaseLost(f"{self.store.url}/{self.name}: this writer's lease expired and another took it")

    def _start_renewing(self) -> None:
        self._stop_renewing.clear()
        self._renewer = threading.Thread(target=self._renew, args=(self.generation,), name="lease", daemon=True)
        self._renewer.start()

    def _renew(self, generation: int) -> None:
        """Push the generation's expiry forward until released; stop once another writer has it."""
        while not self._stop_renewing.wait(self.ttl_s / 3):
            try:
                record = self._record(generation)
                if record is None or record.get("owner") != self.owner or max(self._generations()) > generation:
                    return  # lost: held() says so to the writer
                record["expires"] = time.time() + self.ttl_s
                self.store.put(self._key(generation), json.dumps(record).encode())
            except StoreError:
                continue  # the store away for a moment: try again; held() fails the writer if it expires

    def release(self) -> None:
        if self.generation is None:
            return
        self._stop_renewing.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        record = self._record(self.generation)
        if record is not None and record.get("owner") == self.owner:
            self.store.put(self._key(self.generation), json.dumps({**record, "released": True}).encode())
        self.generation = None

    def _forget_before(self, generation: int) -> None:
        """Old generations go (the store keeps a short trail for a person to read)."""
        for old in self._generations():
            if old < generation:
                self.store.delete(self._key(old))

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
