"""The Trainer the train and teacher stages run: each part is off unless its setting is on."""

from __future__ import annotations

from tasks.lib.training.adversarial import AdversarialSteps
from tasks.lib.training.distillation import DistillationLoss
from tasks.lib.training.sampler import ResumableTrainer


class StageTrainer(AdversarialSteps, DistillationLoss, ResumableTrainer):
    """Seeded, resumable batches (sampler), the distillation loss on rows with a teacher's logits
    (`distill`), and FGM steps (`adversarial`)."""
