"""Where a training run keeps its checkpoints, and which one it may resume.

A run's checkpoints live under a folder named by a digest of everything that
decides the result (data files, params, base model, training code), so a
checkpoint from other inputs is never resumed: its folder is another one and
is deleted when a run starts. Inside, one subfolder per batch layout
(`b<batch>-a<accumulation>`): after an out-of-memory back-off the run goes on
with the smaller batch, and resuming must use the layout it was written with.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

_LAYOUT = re.compile(r"^b(\d+)-a(\d+)$")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Resume:
    """A complete checkpoint and the batch layout it was trained with."""

    path: Path
    step: int
    batch_size: int
    accumulation: int


def code_digest(stage: Path) -> str:
    """Digest of a training stage's module and of this package: a checkpoint written by other
    training code is not resumed."""
    files = [stage, *sorted(Path(__file__).parent.glob("*.py"))]
    return hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()


def run_folder(cache: Path, *fingerprint: str) -> Path:
    """The checkpoint folder of one combination of inputs."""
    digest = hashlib.sha256("\0".join(fingerprint).encode()).hexdigest()[:16]
    return cache / "checkpoints" / digest


def layout_folder(run: Path, batch_size: int, accumulation: int) -> Path:
    return run / f"b{batch_size}-a{accumulation}"


def remove_stale(run: Path) -> list[Path]:
    """Delete the checkpoint folders of other inputs; return what was deleted."""
    stale = [p for p in run.parent.iterdir() if p != run] if run.parent.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def complete(checkpoint: Path) -> bool:
    """Whether a checkpoint was written to the end."""
    # The Trainer writes trainer_state.json last: a checkpoint without a
    # readable one was cut off mid-write.
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def latest(run: Path) -> Resume | None:
    """The newest complete checkpoint of this run (incomplete ones are deleted), or None."""
    found: list[Resume] = []
    for layout in sorted(run.iterdir()) if run.is_dir() else []:
        shape = _LAYOUT.match(layout.name)
        if not shape or not layout.is_dir():
            continue
        for checkpoint in layout.iterdir():
            step = _CHECKPOINT.match(checkpoint.name)
            if not step:
                continue
            if complete(checkpoint):
                found.append(Resume(checkpoint, int(step.group(1)), int(shape.group(1)), int(shape.group(2))))
            else:
                shutil.rmtree(checkpoint, ignore_errors=True)
    # The smallest batch is the latest back-off; within it, the highest step.
    return min(found, key=lambda r: (r.batch_size, -r.step), default=None)
