"""Adversarial training (`train.adversarial`): FGM, the fast gradient method on word embeddings.

Miyato et al. (2017): after a batch's backward pass, its word embeddings are moved `epsilon`
(L2 length over the batch) along the gradient of the loss, the batch goes forward and backward
again from there, and the optimizer steps on the sum of both gradients, so the model learns to
keep its answer in a neighbourhood of each text. The step is added to the embedding layer's
output by a forward hook, so it works whether the embeddings train or not (LoRA, IA3, BitFit).
Costs about twice the time per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import Trainer

from tasks.lib.config import AdversarialConfig


def adversarial_step(gradient: torch.Tensor, epsilon: float) -> torch.Tensor | None:
    """`epsilon` along `gradient`, or None where the gradient is zero or not finite."""
    norm = torch.linalg.vector_norm(gradient.float())
    if not torch.isfinite(norm) or norm == 0:
        return None
    return (epsilon * gradient / norm).detach()


@contextmanager
def _hooked(module: torch.nn.Module, hook: Any) -> Iterator[None]:
    """A forward hook on `module` for the length of a `with` block."""
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class AdversarialSteps(Trainer):
    """Trainer part: with `adversarial` set to fgm, each training step adds the perturbed batch's gradient."""

    adversarial: AdversarialConfig | None = None

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        if self.adversarial is None or self.adversarial.method == "none":
            return super().training_step(model, inputs, num_items_in_batch)
        embeddings = self.accelerator.unwrap_model(model).get_input_embeddings()
        seen: list[torch.Tensor] = []

        def keep_output(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
            if not output.requires_grad:  # frozen embeddings: the gradient is still wanted here
                output = output.detach().requires_grad_()
            output.retain_grad()
            seen.append(output)
            return output

        # Copies: a step may take keys out of its inputs (the distillation loss does).
        with _hooked(embeddings, keep_output):
            loss = super().training_step(model, dict(inputs), num_items_in_batch)
        step = adversarial_step(seen[0].grad, self.adversarial.epsilon) if seen and seen[0].grad is not None else None
        if step is not None:
            with _hooked(embeddings, lambda module, args, output: output + step.to(output.dtype)):
                super().training_step(model, dict(inputs), num_items_in_batch)
        return loss  # the clean batch's loss is what the curves show
