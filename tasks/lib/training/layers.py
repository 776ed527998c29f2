"""Smaller models (`train.encoder_layers`): a base model cut to some of its encoder layers.

Used with or without distillation (tasks/lib/training/distillation.py), so it lives apart from it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.lib.errors import PipelineError


def keep_encoder_layers(model: Any, count: int) -> None:
    """Drop all but `count` evenly spaced encoder layers (the first and last kept), in place.

    DistilBERT's students start the same way, from every other layer of their teacher.

    Raises:
        PipelineError: the model has no `encoder.layer` list, or fewer layers than `count`.
    """
    import torch

    base: Any = getattr(model, model.base_model_prefix, None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise PipelineError(
            f"train.encoder_layers: {type(model).__name__} has no encoder.layer list to take layers from"
        )
    if count > len(layers):
        raise PipelineError(f"train.encoder_layers: {count} asked, the base model has {len(layers)}")
    kept = sorted({round(float(i)) for i in np.linspace(0, len(layers) - 1, count)})
    base.encoder.layer = torch.nn.ModuleList(layers[i] for i in kept)
    model.config.num_hidden_layers = len(kept)
