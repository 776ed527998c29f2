"""Knowledge distillation (`train.distill`): a teacher's soft labels, and a student that learns from them.

The loss is Hinton et al.'s (2015): alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels),
where `_T` is a softmax at temperature T (T^2 keeps the soft part's gradients at the hard part's
scale). Augmentation's variants are treated as unlabelled text: they get the soft part only.

The teacher's logits are computed once, by the `teacher` stage, and travel as a table keyed by
text, so the student's stage never loads the teacher.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from transformers import Trainer

from tasks.lib.columns import TEXT
from tasks.lib.config import DistillConfig, DistributedConfig, TeacherConfig, TrainConfig
from tasks.lib.errors import PipelineError

# The train settings the teacher takes from `train` (dvc.yaml's teacher stage tracks each): all but
# those it sets itself (TeacherConfig's), its layers (all), distillation and adversarial steps
# (none) and processes (one).
STUDENT_SETTINGS = ("encoder_layers", "distill", "adversarial", "distributed")
INHERITED_SETTINGS = tuple(
    name for name in TrainConfig.model_fields if name not in TeacherConfig.model_fields and name not in STUDENT_SETTINGS
)


class MissingSoftLabels(PipelineError, ValueError):
    """The teacher's table lacks logits for rows the student trains on."""


def teacher_config(train: TrainConfig, teacher: TeacherConfig) -> TrainConfig:
    """The teacher's training settings: `teacher`'s, and `train`'s for the rest, with every layer
    of its base model, no distillation of its own, in one process."""
    inherited = {name: getattr(train, name) for name in INHERITED_SETTINGS}
    own = {
        "encoder_layers": None,
        "distill": train.distill.model_copy(update={"enabled": False}),
        "adversarial": train.adversarial.model_copy(update={"method": "none"}),
        "distributed": DistributedConfig(processes=1),
    }
    return TrainConfig(**inherited, **dict(teacher), **own)


def soft_label_table(texts: list[str], logits: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """One row per distinct text, with the teacher's logit of each label in a column named by it
    (what the teacher stage writes)."""
    table = pd.DataFrame(logits.astype(np.float32), columns=labels)
    table.insert(0, TEXT, texts)
    return table.drop_duplicates(TEXT, ignore_index=True)


def logits_for(texts: pd.Series, table: pd.DataFrame, labels: list[str]) -> np.ndarray:
    """The teacher's logits of each text, in `labels` order.

    Raises:
        MissingSoftLabels: a text the teacher did not label (its table is of other data), or a
            teacher with other labels.
    """
    teacher_labels = [column for column in table.columns if column != TEXT]
    if sorted(teacher_labels) != sorted(labels):
        raise MissingSoftLabels(
            f"train.distill: the teacher's logits are for labels {teacher_labels}, the student's labels are "
            f"{labels}; run the teacher stage on this data (dvc repro teacher)"
        )
    position = pd.Index(table[TEXT]).get_indexer(texts)
    if (position < 0).any():
        missing = texts[position < 0]
        raise MissingSoftLabels(
            f"train.distill: the teacher's logits lack {len(missing)} of {len(texts)} training rows "
            f"(first: {missing.iloc[0][:80]!r}); run the teacher stage on this data (dvc repro teacher)"
        )
    return table[labels].to_numpy(dtype=np.float32)[position]


def distillation_loss(student: Any, teacher: Any, labels: Any, hard: Any, temperature: float, alpha: float) -> Any:
    """Per-batch mean of the soft part (every row) and the hard part (rows with `hard` set)."""
    import torch.nn.functional as F

    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=-1),
        F.log_softmax(teacher / temperature, dim=-1),
        reduction="none",
        log_target=True,
    ).sum(dim=-1) * (temperature**2)
    cross_entropy = F.cross_entropy(student, labels, reduction="none") * hard
    return (alpha * soft + (1.0 - alpha) * cross_entropy).mean()


class DistillationLoss(Trainer):
    """Trainer part: the distillation loss on rows that carry `teacher_logits` (set `distill`)."""

    distill: DistillConfig | None = None

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        teacher, hard = inputs.pop("teacher_logits", None), inputs.pop("hard", None)
        if teacher is None or self.distill is None:  # validation rows: the plain loss
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**inputs)
        found = outputs.logits
        loss = distillation_loss(
            found, teacher.to(found.dtype), inputs["labels"], hard, self.distill.temperature, self.distill.alpha
        )
        return (loss, outputs) if return_outputs else loss
