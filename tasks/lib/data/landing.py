"""New labelled data: check one file on its own, add it to the dataset as a batch, archive or reject it.

An accepted file becomes a batch in `paths.incoming` (`b0003-<sha>.parquet`,
the raw schema, rows pointing at the archived original); the ingest stage
appends every batch to the source data, so the next run trains on it and DVC
versions the result. The original moves to `paths.archive/<data version>/`
with a receipt; a rejected file moves to `paths.rejected/<time>-<name>/` with
its validation report. Nothing is deleted.

The file is judged by the row rules of `validate` (their policies: a `fail`
rule rejects the file; `quarantine`/`warn` rows go on and the validate stage
sets them aside). Dataset rules (size, class balance, drift) judge the whole
dataset in the pipeline's validate stage, not a batch.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from tasks.lib.columns import ROW_ID, SOURCE_FILE
from tasks.lib.config import Params
from tasks.lib.data.incoming import accepted_names, batch_id, consolidate, data_version, incoming_lock, next_number
from tasks.lib.data.readers import DataError, data_format, read_file
from tasks.lib.errors import PipelineError
from tasks.lib.io import (
    atomic_path,
    write_json,
    write_table,
    write_text,
)
from tasks.lib.storage.retention import snapshots_folder
from tasks.lib.storage.team_workspace import share_batches

log = logging.getLogger(__name__)
RECEIPT = "receipt.json"
FLAGGED_ROWS = "rows.jsonl"  # beside a rejected file's report
# Names a writer is still working on (write-then-rename is the safe way to drop a file).
IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")


@dataclass(frozen=True)
class Receipt:
    """What happened to one file."""

    file: str
    accepted: bool
    reason: str
    rows: int
    sha256: str
    at: str
    moved_to: str  # the archived or rejected copy
    batch: str | None = None
    data_version: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def is_ready(path: Path) -> bool:
    """A data file a writer has finished with: not hidden, not a temporary name, a supported format.

    Links, folders and other non-regular entries with a data name count too: they are handed
    over to be refused, with a notification, rather than passed over in silence.
    """
    name = path.name
    return not name.startswith(".") and not name.endswith(IN_PROGRESS_SUFFIXES) and data_format(name) is not None


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Verdict:
    """A file judged on its own: its rows (None: unreadable) and, when it is rejected, why."""

    rows: pd.DataFrame | None
    reason: str | None = None  # None: accepted
    report: str = ""  # Markdown
    flagged: list[dict[str, object]] | None = None  # every flagged row, as the quarantine file has them


class StillBeingWritten(PipelineError, RuntimeError):
    """The file changed while it was read: it is left where it is, to be read once it is finished."""


# `textclf ingest-new`'s exit code when a file was left in place for that reason (0 accepted, 1 rejected).
STILL_BEING_WRITTEN = 3
# ... and when a file could not be stored (a full disk): left in place, and a notification already sent.
NOT_STORED = 4


class NotStored(PipelineError, RuntimeError):
    """Writing a landed file's copy, batch or receipt failed (a full disk): nothing was added, what was
    written is removed, and the file stays where it landed."""

    @classmethod
    def of(cls, exc: OSError, path: Path, folder: Path) -> NotStored:
        """The error for `exc`, raised while `path` was stored in `folder`."""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            why = "the file system that holds it is full" if exc.errno == errno.ENOSPC else "the disk quota is used up"
        else:
            why = f"{exc.strerror or type(exc).__name__}"
        return cls(
            f"{display_name(path.name)}: not added: writing to {folder} failed ({why}; errno {exc.errno}). "
            f"What was written is removed and the file stays in {path.parent}; once there is room, "
            f"`textclf ingest-new {path}` (or a change to the file) reads it again"
        )


def writers_of(path: Path) -> list[int]:
    """The ids of the processes that hold `path` open for writing, as /proc shows them (Linux).

    A producer that pauses mid-file keeps it open: its size and time stamp stand still, but it is
    not finished. Without /proc (another system) nothing is found; a process of another user is
    seen only by root (docs/guides/unattended.md#a-file-is-read-once-it-is-finished).
    """
    try:
        target = path.stat()
    except OSError:
        return []
    found = []
    for pid in (name for name in _listing("/proc") if name.isdigit()):
        for fd in _listing(f"/proc/{pid}/fd"):
            link = f"/proc/{pid}/fd/{fd}"
            try:
                opened = os.stat(link)
                if (opened.st_ino, opened.st_dev) != (target.st_ino, target.st_dev):
                    continue
                writable = os.lstat(link).st_mode & stat.S_IWUSR  # the link's own mode is the descriptor's access
            except OSError:  # closed, or the process ended, since the listing
                continue
            if writable:
                found.append(int(pid))
                break
    return found


def _listing(folder: str) -> list[str]:
    """The names in `folder`, none when it cannot be listed (a process that ended, another user's)."""
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _still_written(path: Path) -> StillBeingWritten | None:
    """The error for a file some process still holds open for writing, or None."""
    pids = writers_of(path)
    if not pids:
        return None
    return StillBeingWritten(
        f"{display_name(path.name)} is still open for writing (process {', '.join(map(str, pids))}): "
        "left in place, to be read once the writer closes it"
    )


def _rows_in_metadata(path: Path) -> int | None:
    """A Parquet file's row count from its footer (None: not Parquet, or no readable footer)."""
    if path.suffix.lower() != ".parquet":
        return None
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # noqa: BLE001 - a damaged file: the reader names the problem
        return None


def check_file(path: Path, params: Params) -> Verdict:
    """Read and judge one file with the row rules of `validate`, within `retrain.max_file_rows`."""
    from tasks.lib.validation.checks import check
    from tasks.lib.validation.features import TokenCounter
    from tasks.lib.validation.report import render, summary

    limit = params.retrain.max_file_rows
    declared = _rows_in_metadata(path)
    if declared is not None and declared > limit:
        reason = f"{declared} rows (Parquet metadata), over retrain.max_file_rows {limit}"
        return Verdict(None, reason, f"## {path.name}: too large\n\n{reason}; not read.\n")
    # A compressed file may hold no more than an uncompressed one may be.
    expanded = min(params.data.max_expanded_bytes, params.retrain.max_file_bytes)
    try:
        frame = read_file(path, params.data.model_copy(update={"max_expanded_bytes": expanded}), task=params.task)
    except DataError as exc:
        return Verdict(None, f"cannot be read: {exc}", f"## {path.name}: cannot be read\n\n{exc}\n")
    if len(frame) > limit:
        reason = f"{len(frame)} rows, over retrain.max_file_rows {limit}"
        return Verdict(None, reason, f"## {path.name}: too large\n\n{reason}.\n")
    counter = TokenCounter(params.train.base_model, params.root)
    # In this process whatever validate.engine says: a landing file is at most retrain.max_file_rows.
    outcome = check(frame, params.data, params.validate_, counter, dataset_rules=False, task=params.task)
    if outcome.passed:
        return Verdict(frame)
    report = summary(outcome, len(frame), params.validate_.report_text)
    failed = ", ".join(f"{name} ({report['rules'][name]['rows']} rows)" for name in report["failed_rules"])
    text = render(report, Path(FLAGGED_ROWS)) + "\n"
    unknown = outcome.rules.get("label_in_set")  # sequence classification only
    if unknown is not None and unknown.rows:
        from tasks.lib.validation.unknown_labels import unknown_labels_advice

        advice = unknown_labels_advice(frame, params.data, params.location("registry"), params.split.seed)
        text += f"\n{advice}\n" if advice else ""
    return Verdict(frame, f"failed validation: {failed}", text, outcome.records)


def display_name(name: str) -> str:
    """A file name as text that can be printed and logged: bytes that are not UTF-8 shown as escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def refusal(path: Path) -> str | None:
    """Why a landing entry is not read at all, or None: only regular files with UTF-8 names are taken."""
    if display_name(path.name) != path.name:
        return "its name is not valid UTF-8 (rename it)"
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link: only regular files are read (what it points at was not read, moved or deleted)"
    if not stat.S_ISREG(mode):
        return "not a regular file (a folder, device or pipe)"
    return None


def _unique_folder(parent: Path, name: str) -> Path:
    folder, n = parent / name, 1
    while folder.exists():
        n += 1
        folder = parent / f"{name}-{n}"
    return folder


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _hand_over(source: Path, target: Path, move: bool) -> None:
    """Move (a rename: a link moves as a link) or copy `source`; a link is never followed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if move:
        shutil.move(source, target)  # a rename within the filesystem: a link moves as a link
    elif source.is_symlink() or source.is_file():
        shutil.copy2(source, target, follow_symlinks=False)


def _reject(params: Params, path: Path, sha: str, verdict: Verdict, move: bool, copy: bool = True) -> Receipt:
    """Report and receipt in a new rejected folder, with the file moved there (or copied; `copy` False: left)."""
    at = _now()
    name = display_name(path.name)
    folder = _unique_folder(params.path("rejected"), f"{at:%Y%m%dT%H%M%S}-{name}")
    rows = 0 if verdict.rows is None else len(verdict.rows)
    receipt = Receipt(
        display_name(_relative(path, params.root)),
        False,
        verdict.reason or "",
        rows,
        sha,
        at.isoformat(),
        _relative(folder / name, params.root),
    )
    try:
        folder.mkdir(parents=True)
        write_text(folder / "report.md", verdict.report)
        if verdict.flagged:
            write_text(
                folder / FLAGGED_ROWS,
                "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in verdict.flagged),
            )
        write_json(folder / RECEIPT, receipt.as_dict())
        if move or copy:
            _hand_over(path, folder / name, move)
    except OSError as exc:  # a full disk: no half-written folder (a partial copy) is left behind
        shutil.rmtree(folder, ignore_errors=True)
        raise NotStored.of(exc, path, folder.parent) from None
    return receipt


def ingest_new(params: Params, path: Path, move: bool) -> Receipt:
    """Judge `path`; accepted: add it as the next batch and archive it; else move it to the rejected folder.

    Args:
        move: move the file (it is in the landing folder) rather than copy it (someone else's file).
    Raises:
        DataError: the file does not exist.
    """
    if not os.path.lexists(path):
        raise DataError(path, "no such file")
    path = path.parent.resolve() / path.name  # the folder resolved, never the file: a link stays a link
    refused = refusal(path)
    too_large = refused is None and path.stat().st_size > params.retrain.max_file_bytes
    if too_large:
        refused = f"{path.stat().st_size} bytes, over retrain.max_file_bytes {params.retrain.max_file_bytes}"
    if refused is not None:
        name = display_name(path.name)
        verdict = Verdict(None, refused, f"## {name}: refused\n\n{refused}.\n")
        return _reject(params, path, "", verdict, move, copy=not too_large)  # a huge file is never copied
    writing = _still_written(path)
    if writing is not None:  # a producer that paused: what it writes next must not go into a file taken away
        raise writing
    with _snapshot(params, path) as (snapshot, sha, opened):
        # Hashed, judged and archived: the same bytes, read once.
        verdict = _about(check_file(snapshot, params), snapshot, path)  # outside the lock: it only reads
        return _add(params, path, (snapshot, sha, opened), verdict, move)


def _about(verdict: Verdict, snapshot: Path, original: Path) -> Verdict:
    """The verdict's messages naming the file as it landed, not its snapshot."""

    def named(text: str) -> str:
        return text.replace(str(snapshot), str(original))

    return Verdict(
        verdict.rows, None if verdict.reason is None else named(verdict.reason), named(verdict.report), verdict.flagged
    )


def _read_once(path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    """At most `limit` + 1 bytes of a regular file, opened without following a link, and its state when opened."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO swapped in must not block
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode):
            raise StillBeingWritten(f"{display_name(path.name)} was replaced by something that is not a file")
        return handle.read(limit + 1), opened


def _changed(path: Path, opened: os.stat_result) -> bool:
    """Whether `path` is no longer the file, of the size and time stamp, that was read."""
    try:
        now = path.lstat()
    except FileNotFoundError:
        return True
    fields = ("st_ino", "st_dev", "st_size", "st_mtime_ns")
    return any(getattr(now, name) != getattr(opened, name) for name in fields)


@contextmanager
def _snapshot(params: Params, path: Path) -> Iterator[tuple[Path, str, os.stat_result]]:
    """The file's bytes, read once into a private copy (same name), their SHA-256, and the file's state.

    Raises:
        StillBeingWritten: it changed while it was read (grew, was rewritten or swapped for a link).
    """
    later = (
        f"{display_name(path.name)} changed while it was read: left in place, to be read once it is "
        "finished (write under a .part name and rename, or use a .done marker)"
    )
    try:
        data, opened = _read_once(path, params.retrain.max_file_bytes)
    except OSError:  # ELOOP: a link was swapped in after the check; it is refused on the next look
        raise StillBeingWritten(later) from None
    if len(data) != opened.st_size or _changed(path, opened):
        raise StillBeingWritten(later)
    root = snapshots_folder(params)
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="snapshot-", dir=root))
    except OSError as exc:
        raise NotStored.of(exc, path, root) from None
    try:  # removed however it ends: a partial copy on a full disk must not keep it full
        snapshot = staging / path.name
        try:
            snapshot.write_bytes(data)
        except OSError as exc:
            raise NotStored.of(exc, path, root) from None
        yield snapshot, hashlib.sha256(data).hexdigest(), opened
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _add(
    params: Params, path: Path, snapshot: tuple[Path, str, os.stat_result], verdict: Verdict, move: bool
) -> Receipt:
    """Accepted: the snapshot becomes the next batch and the archived original; else the file is rejected.

    Raises:
        StillBeingWritten: the file changed since it was read; nothing was added (it is read again later).
    """
    copy, sha, opened = snapshot
    with incoming_lock(params.root):
        incoming = params.path("incoming")
        same = [batch_id(name) for name in accepted_names(incoming) if name.endswith(f"-{sha[:16]}.parquet")]
        if same:
            reason = f"the same bytes were accepted before as batch {same[0]}"
            verdict = Verdict(None, reason, f"## {path.name}: not added\n\n{reason}.\n")
        if verdict.reason is not None:
            return _reject(params, path, sha, verdict, move)
        frame = verdict.rows
        assert frame is not None
        if move and _changed(path, opened):  # deleting it would lose what was written since the read
            raise StillBeingWritten(f"{display_name(path.name)} changed after it was read: left in place")
        writing = _still_written(path)
        if writing is not None:  # opened for writing since the first look: it may grow after the read
            raise writing
        batch = incoming / f"b{next_number(incoming):04d}-{sha[:16]}.parquet"
        version = data_version(incoming, [batch.name])
        archived = params.path("archive") / version / path.name
        # Rows point at the archived original; ids are unique across batches of the same file name.
        frame[ROW_ID] = batch_id(batch) + "/" + frame[ROW_ID]
        frame[SOURCE_FILE] = _relative(archived, params.root)
        receipt = Receipt(
            _relative(path, params.root),
            True,
            "accepted",
            len(frame),
            sha,
            _now().isoformat(),
            _relative(archived, params.root),
            batch_id(batch),
            version,
        )
        _commit(path, copy, archived, (batch, frame), receipt)
        if move:  # at once: the checks above saw the file closed and unchanged a moment ago
            path.unlink()
        try:
            consolidate(incoming, params.retrain.consolidate_after)
        except OSError as exc:  # the batch is in; the merge is only tidying, tried again at the next file
            log.warning("incoming batches not merged (%s): tried again with the next file", exc)
        # A team's workers read the batches from the DVC remote. Done last: when the remote is
        # unreachable the file is still accepted here, and the next acceptance shares it too.
        share_batches(params.root, incoming)
    return receipt


def _commit(path: Path, copy: Path, archived: Path, batch: tuple[Path, pd.DataFrame], receipt: Receipt) -> None:
    """Archive the snapshot, then write the batch (the commit point), then the receipt; all or nothing.

    A crash before the batch leaves the landing file to be read again, after it the file is a known
    duplicate. A failed write (a full disk) removes whatever of the three was written.

    Raises:
        NotStored: a write failed; nothing was added.
    """
    folder = archived.parent
    made = not folder.exists()
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _move_into(copy, archived)
        written.append(archived)
        write_table(batch[0], batch[1])
        written.append(batch[0])
        write_json(folder / RECEIPT, receipt.as_dict())
    except OSError as exc:
        for done in written:
            done.unlink(missing_ok=True)
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        failed = batch[0].parent if written == [archived] else folder  # the batch's folder, or the archive's
        raise NotStored.of(exc, path, failed) from None


def _move_into(source: Path, target: Path) -> None:
    """Rename `source` to `target`; on another file system (an archive mounted elsewhere), copy it to a
    temporary name there first, so a failed copy leaves no partial file under the target's name."""
    try:
        os.replace(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    with atomic_path(target) as partial:  # removed when the copy fails
        shutil.copyfile(source, partial)


def summary_line(receipt: Receipt) -> str:
    """One line for logs and the CLI."""
    if receipt.accepted:
        return (
            f"{receipt.file}: accepted as batch {receipt.batch} ({receipt.rows} rows), "
            f"data version {receipt.data_version}; archived as {receipt.moved_to}"
        )
    return f"{receipt.file}: REJECTED ({receipt.reason}); file and report in {Path(receipt.moved_to).parent}"
