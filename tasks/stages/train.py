"""Stage `train`: fine-tune `train.base_model` on the augmented split, select on val, save the model.

With `train.distill.enabled` the model learns from the teacher stage's logits too.

The training itself is tasks/lib/training (the benchmarks run the same code).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from tasks.lib.columns import TEXT
from tasks.lib.config import Params
from tasks.lib.io import file_md5, read_table, write_json
from tasks.lib.stage_runner import run_as_script
from tasks.lib.training import checkpoints, distributed
from tasks.lib.training.distillation import logits_for
from tasks.lib.training.models import resolve_base_model
from tasks.lib.training.trainer import train

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    """Stage entry point: train on the augmented split, select on val, save the model.

    With `train.distributed.processes` > 1 this process starts torchrun, whose
    workers come back here as ranks; rank 0 writes the outputs.
    """
    config = params.train
    train_path, val_path = params.path("augmented"), params.path("val_split")
    teacher_path = params.path("teacher_logits")
    base_model = resolve_base_model(config.base_model, params.root)
    run_dir = checkpoints.run_folder(
        params.path("cache"),
        file_md5(train_path),
        file_md5(val_path),
        *([file_md5(teacher_path)] if config.distill.enabled else []),
        config.model_dump_json(),
        base_model,
        checkpoints.code_digest(Path(__file__)),
    )
    if not distributed.is_worker():
        for stale in checkpoints.remove_stale(run_dir):
            log.info(f"train: removed checkpoints of other inputs: {stale}")
        if config.distributed.processes > 1:
            distributed.check_devices(config.distributed.processes)
            distributed.launch(config.distributed.processes, params.root)
            return
    train_rows = read_table(train_path)
    labels = list(params.data.labels)
    soft_labels = logits_for(train_rows[TEXT], read_table(teacher_path), labels) if config.distill.enabled else None
    metrics = train(
        train_rows,
        read_table(val_path),
        labels,
        config,
        base_model,
        params.path("model"),
        run_dir,
        curves_dir=params.path("reports") / "train",
        task=params.task,
        soft_labels=soft_labels,
    )
    if not distributed.is_main_worker():
        return
    # The model is saved; its checkpoints are only needed by an unfinished run.
    shutil.rmtree(run_dir, ignore_errors=True)
    write_json(params.path("metrics") / "train.json", metrics)
    log.info(f"train: {json.dumps(metrics)}")


if __name__ == "__main__":
    run_as_script(run)
