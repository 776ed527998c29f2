"""Structured pruning of a fine-tuned BERT-family encoder: whole attention heads and feed-forward
neurons are removed, so the matrices shrink and the graph runs faster (a zero mask would not).

Importance is first-order (Michel et al., 2019, for heads; Molchanov et al., 2019, for neurons):
a gate of 1 multiplies each head's output and each neuron's activation, and a unit's importance
is the summed |d loss / d gate| over calibration texts, the loss being the cross-entropy against
the model's own predictions: what pruning must keep is the model's answers, which the gate then
checks against PyTorch. Scores are normalised per layer (L2, as Michel et al. do for heads) and
ranked across layers; every layer keeps at least one head and one neuron.

Written here rather than with a pruning library: torch.nn.utils.prune masks without shrinking
anything, and Torch-Pruning's dependency tracing would have to be taught transformers' attention
(heads of a fixed size read from the module) anyway; the BERT layout below is what is pruned, and
transformers' own `prune_linear_layer` does the slicing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tasks.lib.config import Task
from tasks.lib.errors import PipelineError


class UnsupportedModel(PipelineError, TypeError):
    """The model's layers are not laid out as BERT's, whose heads and neurons this module prunes."""


@dataclass(frozen=True)
class PrunedUnits:
    """How many heads and feed-forward neurons each layer keeps (before -> after)."""

    heads: list[tuple[int, int]]
    neurons: list[tuple[int, int]]

    def summary(self) -> str:
        heads = sum(after for _, after in self.heads), sum(before for before, _ in self.heads)
        neurons = sum(after for _, after in self.neurons), sum(before for before, _ in self.neurons)
        return f"{heads[0]} of {heads[1]} heads, {neurons[0]} of {neurons[1]} feed-forward neurons kept"


def encoder_layers(model: Any) -> list[Any]:
    """The encoder's layers, each checked to have BERT's attention and feed-forward modules."""
    layers = list(getattr(getattr(model.base_model, "encoder", None), "layer", None) or [])
    for layer in layers:
        attention = getattr(layer, "attention", None)
        if not (
            hasattr(getattr(attention, "self", None), "query")
            and hasattr(getattr(attention, "output", None), "dense")
            and hasattr(getattr(layer, "intermediate", None), "dense")
            and hasattr(getattr(layer, "output", None), "dense")
        ):
            layers = []
            break
    if not layers:
        raise UnsupportedModel(
            f"pruning: {type(model).__name__} is not laid out as BERT (encoder.layer[i].attention.self.query, "
            "intermediate.dense, output.dense); prune a BERT-family model (MiniLM, BERT, RoBERTa) or drop the variant"
        )
    return layers


def importance(
    model: Any, tokenizer: Any, texts: Sequence[Any], task: Task, batch_size: int, max_length: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer, the importance of each attention head and of each feed-forward neuron.

    Args:
        texts: calibration texts, or a tagger's sentences as lists of words.
    """
    layers = encoder_layers(model)
    head_gates = [torch.ones(layer.attention.self.num_attention_heads, requires_grad=True) for layer in layers]
    neuron_gates = [torch.ones(layer.intermediate.dense.out_features, requires_grad=True) for layer in layers]

    def gate_heads(gate: torch.Tensor) -> Any:
        def hook(module: Any, args: Any, output: Any) -> Any:
            values = output[0]
            shaped = values.view(*values.shape[:-1], gate.numel(), -1) * gate[:, None]
            return (shaped.view(values.shape), *output[1:])

        return hook

    def gate_neurons(gate: torch.Tensor) -> Any:
        return lambda module, args, output: output * gate

    handles = []
    for layer, head_gate, neuron_gate in zip(layers, head_gates, neuron_gates, strict=True):
        handles.append(layer.attention.self.register_forward_hook(gate_heads(head_gate)))
        handles.append(layer.intermediate.register_forward_hook(gate_neurons(neuron_gate)))
    heads = [np.zeros(g.numel()) for g in head_gates]
    neurons = [np.zeros(g.numel()) for g in neuron_gates]
    trainable = [p for p in model.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)  # only the gates' gradients are wanted
    try:
        for start in range(0, len(texts), batch_size):
            chunk = [list(t) if task == "token_classification" else t for t in texts[start : start + batch_size]]
            batch = tokenizer(
                chunk,
                is_split_into_words=task == "token_classification",
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            logits = model(**batch).logits
            if task == "token_classification":
                logits = logits[batch["attention_mask"].bool()]
            loss = torch.nn.functional.cross_entropy(logits, logits.argmax(-1).detach())
            gradients = torch.autograd.grad(loss, [*head_gates, *neuron_gates])
            for found, gradient in zip([*heads, *neurons], gradients, strict=True):
                found += gradient.abs().numpy()
    finally:
        for handle in handles:
            handle.remove()
        for parameter in trainable:
            parameter.requires_grad_(True)
    return heads, neurons


def _kept(scores: list[np.ndarray], share: float) -> list[np.ndarray]:
    """Per layer, the sorted indices kept when `share` of all units goes, the least important first
    (scores normalised per layer), each layer keeping its best unit."""
    normalised = [s / (np.linalg.norm(s) or 1.0) for s in scores]
    ranked = sorted(
        ((value, layer, unit) for layer, s in enumerate(normalised) for unit, value in enumerate(s)),
        key=lambda item: (item[0], item[1], item[2]),
    )
    removed: set[tuple[int, int]] = set()
    left = [len(s) for s in scores]
    for _, layer, unit in ranked:
        if len(removed) >= int(share * sum(len(s) for s in scores)):
            break
        if left[layer] > 1:
            removed.add((layer, unit))
            left[layer] -= 1
    return [np.array([u for u in range(len(s)) if (layer, u) not in removed]) for layer, s in enumerate(scores)]


def prune(
    model: Any, heads: list[np.ndarray], neurons: list[np.ndarray], head_share: float, neuron_share: float
) -> PrunedUnits:
    """Remove `head_share` of the heads and `neuron_share` of the feed-forward neurons, least
    important first (`importance`), in place."""
    from transformers.pytorch_utils import prune_linear_layer

    layers = encoder_layers(model)
    kept_heads, kept_neurons = _kept(heads, head_share), _kept(neurons, neuron_share)
    for layer, keep_heads, keep_neurons in zip(layers, kept_heads, kept_neurons, strict=True):
        attention = layer.attention.self
        size = attention.attention_head_size
        index: Any = torch.tensor([head * size + i for head in keep_heads for i in range(size)], dtype=torch.long)
        for name in ("query", "key", "value"):
            setattr(attention, name, prune_linear_layer(getattr(attention, name), index, dim=0))
        layer.attention.output.dense = prune_linear_layer(layer.attention.output.dense, index, dim=1)
        attention.num_attention_heads, attention.all_head_size = len(keep_heads), len(keep_heads) * size
        index = torch.tensor(keep_neurons, dtype=torch.long)
        layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, index, dim=0)
        layer.output.dense = prune_linear_layer(layer.output.dense, index, dim=1)
    return PrunedUnits(
        heads=[(len(s), len(k)) for s, k in zip(heads, kept_heads, strict=True)],
        neurons=[(len(s), len(k)) for s, k in zip(neurons, kept_neurons, strict=True)],
    )
