"""Bottleneck adapters (`train.peft: adapter`): a small residual MLP after chosen linear layers.

Houlsby et al. (2019) add one after each attention and feed-forward block; Pfeiffer et al. (2021)
keep only the feed-forward one at about the same accuracy, which is the default here
(`train.adapter.modules`). Each adapter computes y + up(gelu(down(y))) on the layer's output y,
with `up` starting at zero, so training starts from the base model's exact function.

Written here rather than taken from AdapterHub's `adapters`: that library pins transformers
~=4.57 and this project runs transformers 5, and peft has no bottleneck adapters. Adapters are
not linear, so unlike LoRA they cannot be merged into the weights: a saved model keeps them
(config.json's `bottleneck_adapters` and their weights in model.safetensors) and
`restore_adapters` puts them back when it is loaded; the ONNX export then carries them as plain
MatMuls, and every serving variant runs them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from tasks.lib.errors import ConfigError, PipelineError

CONFIG_KEY = "bottleneck_adapters"  # config.json: {"size": bottleneck width, "modules": pattern}
PREFIX = "adapter_"  # the adapters' parameter names start with it


class AdaptedLinear(torch.nn.Linear):
    """A linear layer with a bottleneck adapter on its output; the layer's own weights keep their names."""

    def __init__(self, base: torch.nn.Linear, size: int):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None)
        self.weight, self.bias = base.weight, base.bias
        self.adapter_down = torch.nn.Linear(base.out_features, size)
        self.adapter_up = torch.nn.Linear(size, base.out_features)
        torch.nn.init.zeros_(self.adapter_up.weight)
        torch.nn.init.zeros_(self.adapter_up.bias)
        self.to(base.weight.device, base.weight.dtype)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        output = super().forward(inputs)
        return output + self.adapter_up(torch.nn.functional.gelu(self.adapter_down(output)))


def add_adapters(model: Any, size: int, modules: str) -> list[str]:
    """Put an adapter of width `size` after every linear layer whose name `modules` (a regular
    expression, `re.search`) finds, and record both in the model's config; returns the names."""
    found = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not isinstance(module, AdaptedLinear) and re.search(modules, name)
    ]
    if not found:
        raise ConfigError(f"train.adapter.modules: {modules!r} finds no linear layer of {type(model).__name__}")
    for name in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, AdaptedLinear(getattr(parent, child), size))
    setattr(model.config, CONFIG_KEY, {"size": size, "modules": modules})
    return found


def restore_adapters(model: Any, model_dir: Path) -> Any:
    """A model loaded with `from_pretrained` from a folder saved with adapters gets them back, with their
    trained weights (from_pretrained drops them as unexpected keys); others are returned as they are."""
    settings = getattr(model.config, CONFIG_KEY, None)
    if not settings:
        return model
    from safetensors.torch import load_file

    add_adapters(model, settings["size"], settings["modules"])
    saved = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        saved.update({key: value for key, value in load_file(file).items() if f".{PREFIX}" in key})
    expected = {key for key in model.state_dict() if f".{PREFIX}" in key}
    if set(saved) != expected:
        raise PipelineError(
            f"{model_dir}: config.json names bottleneck adapters, but the weights hold "
            f"{len(saved)} of their {len(expected)} tensors"
        )
    model.load_state_dict(saved, strict=False)
    return model
