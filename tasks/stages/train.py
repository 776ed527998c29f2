"""Stage `train`: fine-tune `train.base_model` on the augmented split, select on val, save the model.

The training itself is tasks/lib/training (the benchmarks run the same code).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tasks.lib.config import Params
from tasks.lib.io import file_md5, read_table, write_json
from tasks.lib.models import resolve_base_model
from tasks.lib.stage_runner import run_as_script
from tasks.lib.training import checkpoints, distributed, trainer
from tasks.lib.training.trainer import train

# What decides a checkpoint's meaning besides data and params: a checkpoint
# written by other training code is not resumed.
TRAINING_CODE = [Path(__file__), *sorted(Path(trainer.__file__).parent.glob("*.py"))]


def _code_digest() -> str:
    return hashlib.sha256(b"".join(path.read_bytes() for path in TRAINING_CODE)).hexdigest()


def run(params: Params) -> None:
    """Stage entry point: train on the augmented split, select on val, save the model.

    With `train.distributed.processes` > 1 this process starts torchrun, whose
    workers come back here as ranks; rank 0 writes the outputs.
    """
    config = params.train
    train_path, val_path = params.path("augmented"), params.path("val_split")
    base_model = resolve_base_model(config.base_model, params.root)
    run_dir = checkpoints.run_folder(
        params.path("cache"),
        file_md5(train_path),
        file_md5(val_path),
        config.model_dump_json(),
        base_model,
        _code_digest(),
    )
    if not distributed.is_worker():
        for stale in checkpoints.remove_stale(run_dir):
            print(f"train: removed checkpoints of other inputs: {stale}")
        if config.distributed.processes > 1:
            distributed.check_devices(config.distributed.processes)
            distributed.launch(config.distributed.processes, params.root)
            return
    metrics = train(
        read_table(train_path),
        read_table(val_path),
        list(params.data.labels),
        config,
        base_model,
        params.path("model"),
        run_dir,
        curves_dir=params.path("reports") / "train",
        task=params.task,
    )
    if not distributed.is_main_worker():
        return
    # The model is saved; its checkpoints are only needed by an unfinished run.
    shutil.rmtree(run_dir, ignore_errors=True)
    write_json(params.path("metrics") / "train.json", metrics)
    print(f"train: {json.dumps(metrics)}")


if __name__ == "__main__":
    run_as_script(run)
