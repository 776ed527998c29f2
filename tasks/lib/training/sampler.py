"""Length-grouped batches in an order fixed by seed and epoch, so a resumed run repeats it.

The Trainer's own length-grouped sampler draws its order from the global torch
RNG, whose state at an epoch's start depends on everything drawn before
(dropout included). A run resumed mid-epoch would then see other batches than
the run that was killed.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_pt_utils import (
    LengthGroupedSampler,
    get_length_grouped_indices,
)


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """Rows of similar length together (little padding), shuffled by (seed, epoch)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Any:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class ResumableTrainer(Trainer):
    """The Trainer with a training order that a resumed run reproduces."""

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset: Any = train_dataset if train_dataset is not None else self.train_dataset
        lengths = [len(row["input_ids"]) for row in dataset]
        return SeededLengthGroupedSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
            lengths,
            self.args.data_seed or self.args.seed,
        )
