"""Stage `teacher`: with `train.distill.enabled`, fine-tune the teacher and write its logits for every
augmented training row (the student's soft labels); otherwise write empty outputs.

The teacher trains like the model does (tasks/lib/training), with `teacher`'s settings over
`train`'s. It is its own DVC stage so that it is retrained only when its data or settings
change, not with every change to the student.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd

from tasks.lib.columns import TEXT
from tasks.lib.config import Params
from tasks.lib.io import atomic_dir, file_md5, read_table, write_json, write_table
from tasks.lib.stage_runner import run_as_script

log = logging.getLogger(__name__)

NO_TEACHER = "No teacher: train.distill.enabled is false in params.yaml.\n"


def run(params: Params) -> None:
    """Stage entry point: train the teacher and label the training rows, or write empty outputs."""
    model_dir, table_path = params.path("teacher"), params.path("teacher_logits")
    metrics_path = params.path("metrics") / "teacher.json"
    if not params.train.distill.enabled:
        # DVC tracks the outputs whether or not there is a teacher; the student reads none of them.
        for folder in (model_dir, params.path("reports") / "teacher"):
            with atomic_dir(folder) as staging:
                (staging / "README.txt").write_text(NO_TEACHER, encoding="utf-8")
        write_table(table_path, pd.DataFrame({TEXT: pd.Series([], dtype="string")}))
        write_json(metrics_path, {"enabled": False})
        log.info("teacher: train.distill.enabled is false; nothing to train")
        return
    # Imported here: without distillation (the default) the stage runs in every pipeline run and
    # should not spend seconds importing torch and transformers.
    from tasks.lib.training import checkpoints
    from tasks.lib.training.distillation import soft_label_table, teacher_config
    from tasks.lib.training.logits import torch_logits
    from tasks.lib.training.models import model_labels, resolve_base_model
    from tasks.lib.training.trainer import train

    config = teacher_config(params.train, params.teacher)
    train_path, val_path = params.path("augmented"), params.path("val_split")
    base_model = resolve_base_model(config.base_model, params.root)
    run_dir = checkpoints.run_folder(
        params.path("cache") / "teacher",
        file_md5(train_path),
        file_md5(val_path),
        config.model_dump_json(),
        base_model,
        checkpoints.code_digest(Path(__file__)),
    )
    checkpoints.remove_stale(run_dir)
    rows = read_table(train_path)
    metrics = train(
        rows,
        read_table(val_path),
        list(params.data.labels),
        config,
        base_model,
        model_dir,
        run_dir,
        curves_dir=params.path("reports") / "teacher",
    )
    shutil.rmtree(run_dir, ignore_errors=True)
    texts = rows[TEXT].tolist()
    logits = torch_logits(model_dir, texts, batch_size=config.batch_size * 2, max_length=config.max_length)
    write_table(table_path, soft_label_table(texts, logits, model_labels(model_dir)))
    write_json(metrics_path, {"enabled": True, "base_model": config.base_model, **metrics})
    log.info(f"teacher: {json.dumps(metrics)}")


if __name__ == "__main__":
    run_as_script(run)
